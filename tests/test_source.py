"""Follow drift to its source (issue #11.1): a defect too small for the tolerance, amplified later.

A small Llama (RMSNorm: x * rsqrt(mean(x^2) + eps)) with one node edited in its
exported graph. The edit's error is averaged back under the tolerance by the
ReduceMean/eps Add and blown up again by rsqrt: the first value the search finds
bad with good inputs is the amplifier, right on PyTorch's inputs (inherited).
nodebisect must name the edited node and list the amplifier.
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest
import torch

import nodebisect

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faults  # noqa: E402

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # a two-layer Llama, located five times


class TinyLlama(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=1000, use_cache=False,
        )
        self.m = transformers.LlamaModel(cfg).eval()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.m(input_ids=ids).last_hidden_state


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, tuple[torch.Tensor], onnx.ModelProto, Path]:
    from nodebisect.frontends.dynamo import export_onnx
    from nodebisect.frontends.loading.load import build_loaded_model

    model = TinyLlama().eval()
    ids = torch.randint(0, 1000, (1, 12), generator=torch.Generator().manual_seed(0))
    clean = export_onnx(build_loaded_model(model, (ids,))).model
    return model, (ids,), clean, tmp_path_factory.mktemp("llama")


def _eps_add(model: onnx.ModelProto) -> str:
    """An RMSNorm's `variance + eps` Add (it feeds the rsqrt), in the second layer."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    adds = [n.name for n in model.graph.node if n.op_type == "Add" and any(c.op_type in ("Sqrt", "Reciprocal", "Rsqrt") for c in readers.get(n.output[0], []))]
    assert len(adds) >= 3
    return adds[2]


def _projection(model: onnx.ModelProto) -> str:
    linears = [n.name for n in model.graph.node if n.op_type == "MatMul" and faults.fx_node_of(n).startswith("linear")]
    return linears[len(linears) // 2]


@pytest.mark.parametrize("oracle", ["off", "auto"])
@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda m: faults.swap_op(m, _eps_add(m), "Sub"), id="rmsnorm_eps_add_to_sub"),
        pytest.param(lambda m: faults.corrupt_initializer(m, _projection(m), scale=1.05), id="projection_weight_scaled"),
    ],
)
def test_the_source_is_named_not_the_amplifier(llama, edit, oracle) -> None:  # type: ignore[no-untyped-def]
    """Without the float64 oracle the search stops at the amplifier and follows the drift upstream;
    with it, the edited value is seen directly (beyond its natural noise) and confirmed locally."""
    model, inputs, clean, tmp = llama
    faulted, edited = edit(clean)
    path = tmp / f"{edited}.onnx"
    onnx.save(faulted, str(path))
    result = nodebisect.locate(model, inputs, onnx_path=str(path), check_capture=False, oracle=oracle)
    fd = result.first_divergent
    assert result.verdict == "diverged" and fd is not None
    assert fd.onnx_node == edited, f"named {fd.onnx_node} ({fd.cause}), amplifiers {fd.amplifiers}"
    assert fd.cause == "conversion"
    if oracle == "off":
        assert fd.amplifiers, "the amplifier the search stopped at first is listed"
        assert fd.amplifiers[0] != edited
        assert fd.local_error["rel_l2"] > fd.local_error["limit"]
        # Every node of the cone alone on PyTorch's inputs, as Model Explorer's local-error overlay shows it.
        from nodebisect.report.model_explorer import overlays

        assert fd.cone_errors[edited] == pytest.approx(fd.local_error["max_abs"]) and len(fd.cone_errors) > 2
        local = overlays(result)["nodebisect_local_error.json"]["main_graph"]["results"]
        assert set(local) == set(fd.cone_errors) and fd.amplifiers[0] in local


def test_the_clean_export_still_matches(llama) -> None:  # type: ignore[no-untyped-def]
    model, inputs, _clean, _tmp = llama
    assert nodebisect.locate(model, inputs, check_capture=False).verdict == "match"
