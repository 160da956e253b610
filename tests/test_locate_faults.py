"""End to end: one node of a real exported model is edited; ``locate`` must name it.

Each case copies the clean export of a tiny architecture (built once per session
in conftest.py), injects one fault (tests/faults.py), saves it, prepares
``prepare(model, args, onnx_path=...)`` once and searches it under the "all" and
"bisect" strategies (``locate(prepared, strategy=...)``). The CNN's rows are the
fast tier; the transformers' are marked slow.

* A fault on a node that is its FX node's whole lowering (LayerNormalization,
  a residual Add, a Gemm / Conv) must be named exactly.
* A fault inside a decomposed op (the Softmax inside SDPA, a MatMul inside a
  Linear lowered as MatMul + Add) can only be *measured* at the node carrying
  the FX value; the search must stop at that segment, with the edited node in
  ``segment``, and first in it where the evidence allows (see RANKING below).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import faults
import onnx
import pytest

from nodebisect import locate, prepare

CONVERSION = "conversion"

# (architecture, fault) -> the fault. Node choice is made by the fault's finder
# on the clean graph, in the middle of it.
DECOMPOSED: set[str] = set()


# The transformers are the slow tier; the tiny CNN's rows stay in the fast one.
SLOW_ARCHS = {"bert", "gpt2", "vit", "bert_raw"}


def tier(arch: str) -> list[Any]:
    return [pytest.mark.slow] if arch in SLOW_ARCHS else []


def case(arch: str, name: str, fault: Any, *, inside: bool = False) -> Any:
    """One row of the table; ``inside``: the fault edits a node inside a decomposed op."""
    if inside:
        DECOMPOSED.add(f"{arch}-{name}")
    return pytest.param(arch, name, fault, id=f"{arch}-{name}", marks=tier(arch))


CASES = [
    case("cnn", "conv_weight_noise", faults.weight(("Conv",), noise=0.5)),
    case("cnn", "relu_to_sigmoid", faults.op_swap("Relu", "Sigmoid")),
    case("bert", "layernorm_epsilon", faults.layernorm_epsilon(1.0)),
    case("bert", "add_to_sub", faults.add_to_sub()),
    case("bert", "matmul_weight_scale", faults.weight(("MatMul",), scale=1.5), inside=True),
    case("bert", "sdpa_softmax_axis", faults.softmax_axis_in_attention(2), inside=True),
    case("bert", "sdpa_scale_mul_to_div", faults.mul_in_attention_to("Div"), inside=True),
    case("gpt2", "layernorm_epsilon", faults.layernorm_epsilon(1.0)),
    case("gpt2", "add_to_sub", faults.add_to_sub()),
    case("gpt2", "gemm_weight_noise", faults.weight(("Gemm",), noise=0.5)),
    case("gpt2", "sdpa_softmax_axis", faults.softmax_axis_in_attention(2), inside=True),
    case("gpt2", "sdpa_scale_mul_to_pow", faults.mul_in_attention_to("Pow"), inside=True),
    case("vit", "layernorm_epsilon", faults.layernorm_epsilon(1.0)),
    case("vit", "add_to_sub", faults.add_to_sub()),
    case("vit", "matmul_weight_noise", faults.weight(("MatMul",), noise=0.5), inside=True),
    case("vit", "sdpa_softmax_axis", faults.softmax_axis_in_attention(2), inside=True),
]
STRATEGIES = [pytest.param("all", id="all"), pytest.param("bisect", id="bisect")]

# Decomposed-op cases where nothing in the evidence can single out the edited
# node, so ``segment[0]`` is not expected to be it (the test still requires it
# in the segment). Keyed by case id; the value says why. (A corrupted linear weight,
# once listed here, is now named by comparing each initializer with its parameter.)
RANKING_UNSUPPORTED: dict[str, str] = {
    # A false lead in suspects, not a missing one: GPT-2's causal mask is exported as a
    # constant additive mask of -3.4e38 where PyTorch's SDPA decomposition adds -inf, so
    # the mask Add "leaves PyTorch's decomposition" even in the clean export, and every
    # fault downstream of it in the segment is blamed on that Add (score 0.88).
}


def session_bound(mapped_values: int) -> int:
    """The most ORT sessions a bisect run may use: well under one per probe."""
    return 2 * math.ceil(math.log2(max(mapped_values, 2))) + 4


_PREPARED: dict[str, tuple[Any, str]] = {}
_RUNS: dict[tuple[str, str], tuple[Any, str, onnx.ModelProto]] = {}


def run_case(zoo: Any, arch: str, fault: Any, case_id: str, strategy: str, tmp_path: Path) -> tuple[Any, str, onnx.ModelProto]:
    """Inject, save and prepare once per case, search once per (case, strategy); later tests reuse the run.

    ``prepare`` loads the faulted file and captures PyTorch's values; each strategy only searches it again.
    """
    if case_id not in _PREPARED:
        built = zoo[arch]
        faulted, edited = fault(built.onnx)
        path = tmp_path / f"{case_id}.onnx"
        onnx.save(faulted, str(path))
        _PREPARED[case_id] = (prepare(built.model, built.args, onnx_path=str(path)), edited)
    key = (case_id, strategy)
    if key not in _RUNS:
        prepared, edited = _PREPARED[case_id]
        _RUNS[key] = (locate(prepared, strategy=strategy), edited, zoo[arch].onnx)
    return _RUNS[key]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("arch", "name", "fault"), CASES)
def test_locate_names_the_edited_node(zoo: Any, arch: str, name: str, fault: Any, strategy: str, tmp_path: Path) -> None:
    result, edited, clean = run_case(zoo, arch, fault, f"{arch}-{name}", strategy, tmp_path)
    place = faults.placement(clean, edited)

    assert result.verdict == "diverged", result.notes
    fd = result.first_divergent
    assert fd is not None
    assert fd.stage == CONVERSION
    assert fd.cause == CONVERSION, fd.explanation
    assert fd.framework.fx_node == faults.fx_node_of(next(n for n in clean.graph.node if n.name == edited))
    assert (place == faults.INSIDE) == (f"{arch}-{name}" in DECOMPOSED), f"{edited} is {place}"
    if place == faults.ALONE:
        assert fd.onnx_node == edited
        assert fd.segment == [edited] or fd.segment[0] == edited
    else:
        assert place == faults.INSIDE, f"{edited} is {place}: the case does not test what it claims"
        assert fd.onnx_node == faults.carrier_of(clean, edited)
        assert edited in fd.segment, fd.segment
    assert fd.onnx_node not in (clean.graph.node[0].name, clean.graph.node[-1].name)

    sessions = result.stats["ort_sessions"]
    if strategy == "bisect":
        assert sessions < session_bound(result.stats["mapped_values"]), [s.probes for s in result.steps]
        # The search measured far fewer values than a run that marks them all.
        assert result.stats["compared_values"] < result.stats["mapped_values"]


def _decomposed_cases() -> list[Any]:
    out = []
    for case in CASES:
        if case.id not in DECOMPOSED:
            continue
        marks = list(case.marks)
        if case.id in RANKING_UNSUPPORTED:
            marks.append(pytest.mark.xfail(strict=True, reason=RANKING_UNSUPPORTED[case.id]))
        out.append(pytest.param(*case.values, id=case.id, marks=marks))
    return out


@pytest.mark.parametrize(("arch", "name", "fault"), _decomposed_cases())
def test_edited_node_is_most_suspect(zoo: Any, arch: str, name: str, fault: Any, tmp_path: Path) -> None:
    """Inside a decomposed op, the edited node (not the carrier) leads ``segment``."""
    result, edited, clean = run_case(zoo, arch, fault, f"{arch}-{name}", "all", tmp_path)
    assert faults.placement(clean, edited) == faults.INSIDE
    fd = result.first_divergent
    assert fd is not None
    assert fd.segment[0] == edited, [(s.onnx_node, s.score, s.reason) for s in fd.suspects[:3]]
    assert fd.suspects[0].onnx_node == edited


@pytest.mark.parametrize(
    ("arch", "strategy"),
    [pytest.param(arch, strategy, marks=tier(arch)) for arch, strategy in [("cnn", "all"), ("cnn", "bisect"), ("bert", "auto"), ("gpt2", "auto"), ("vit", "auto")]],
)
def test_clean_export_matches(zoo: Any, arch: str, strategy: str, tmp_path: Path) -> None:
    built = zoo[arch]
    path = tmp_path / "clean.onnx"
    onnx.save(built.onnx, str(path))
    result = locate(built.model, built.args, onnx_path=str(path), strategy=strategy)
    assert result.verdict == "match", (result.notes, [o.metrics for o in result.outputs if not o.ok])
    assert result.first_divergent is None
    assert result.outputs and all(o.ok for o in result.outputs)
    if strategy == "bisect":
        assert result.stats["ort_sessions"] == 1  # the outputs alone, nothing to search


@pytest.mark.slow
def test_raw_transformers_model_returning_model_output(zoo: Any, tmp_path: Path) -> None:
    """Users pass ``BertModel`` itself, whose forward returns a ModelOutput."""
    built = zoo["bert_raw"]
    clean_path = tmp_path / "clean.onnx"
    onnx.save(built.onnx, str(clean_path))
    assert locate(built.model, built.args, onnx_path=str(clean_path)).verdict == "match"

    faulted, edited = faults.layernorm_epsilon(1.0)(built.onnx)
    bad_path = tmp_path / "bad.onnx"
    onnx.save(faulted, str(bad_path))
    result = locate(built.model, built.args, onnx_path=str(bad_path))
    assert result.verdict == "diverged"
    assert result.first_divergent.onnx_node == edited
    assert result.first_divergent.cause == CONVERSION


@pytest.mark.slow
def test_locate_without_onnx_path_exports_and_matches(zoo: Any) -> None:
    """The tool's own export of a real transformer matches PyTorch."""
    built = zoo["gpt2"]
    result = locate(built.model, built.args)
    assert result.verdict == "match"
    assert result.stats["mapped_values"] > 20
