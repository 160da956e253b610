"""The minimal repro bundle: the culprit's local ONNX subgraph, its data, a script.

A maintainer should be able to reproduce the divergence without the user's
model, torch or nodebisect: ``repro.py`` needs only numpy and onnxruntime, runs
the subgraph with the same graph optimization level and EP, compares with
PyTorch's values under the same tolerance, and exits 1 while the mismatch
reproduces (0 once fixed). ``test_data_set_0/`` repeats the data in the ONNX
backend-test layout for other runtimes. ``build_repro`` returns the files as
bytes; the bundle writer writes them.
"""

from __future__ import annotations

import io
import textwrap
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from nodebisect.prepared import ReproData
from nodebisect.run import ORT_OPT_LEVELS
from nodebisect.values.compare import DEFAULT_TOLERANCES

DEFAULT_RTOL = DEFAULT_TOLERANCES["float32"].rtol
DEFAULT_ATOL = DEFAULT_TOLERANCES["float32"].atol
PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def build_repro(
    data: ReproData,
    tolerance: dict[str, dict[str, float]],
    scrub: Callable[[str], str] | None = None,
    reference: str = "PyTorch",
) -> dict[str, bytes]:
    """Files of the bundle, by path relative to the bundle folder.

    Args:
        data: the culprit's local subgraph and its reference inputs / outputs.
        tolerance: ``LocateResult.tolerance`` (dtype -> rtol/atol actually used).
        scrub: applied to the model's metadata strings (stack traces) when redacting.
        reference: whose values ``expected.npz`` holds, for the script's docstring.
    """
    model = _clean_model(data.model_bytes, scrub)
    inputs = {k: np.asarray(v) for k, v in data.inputs.items()}
    expected = {k: np.asarray(v) for k, v in data.expected.items()}
    first = next(iter(expected.values()), None)
    dtype = str(first.dtype) if first is not None else "float32"
    tol = tolerance.get(dtype) or tolerance.get("float32") or {}
    rtol = float(tol.get("rtol", DEFAULT_RTOL))
    atol = float(tol.get("atol", DEFAULT_ATOL))
    files = {
        "model.onnx": model.SerializeToString(),
        "inputs.npz": _npz(inputs),
        "expected.npz": _npz(expected),
        "repro.py": script(rtol, atol, data.opt_level, data.ep, data.note, _pointwise(model), data.signed_zeros,
                            reference).encode("utf-8"),
    }
    if data.unoptimized is not None:  # stage graph_optimization: the ops before the exporter folded them
        plain_bytes, plain_inputs = data.unoptimized
        plain = _clean_model(plain_bytes, scrub)
        files["unoptimized/model.onnx"] = plain.SerializeToString()
        files["unoptimized/ops.txt"] = (", ".join(sorted({n.op_type for n in plain.graph.node})) + "\n").encode("utf-8")
        files["unoptimized/inputs.npz"] = _npz({k: np.asarray(v) for k, v in plain_inputs.items()})
    graph_inputs = [i.name for i in model.graph.input if i.name in inputs]
    for i, name in enumerate(graph_inputs):
        files[f"test_data_set_0/input_{i}.pb"] = numpy_helper.from_array(inputs[name], name).SerializeToString()
    graph_outputs = [o.name for o in model.graph.output if o.name in expected]
    for i, name in enumerate(graph_outputs):
        files[f"test_data_set_0/output_{i}.pb"] = numpy_helper.from_array(expected[name], name).SerializeToString()
    return files


def script(
    rtol: float, atol: float, opt_level: str, ep: str, note: str = "", pointwise: bool = False, signed_zeros: bool = False,
    reference: str = "PyTorch",
) -> str:
    """The standalone check script (numpy + onnxruntime only).

    ``note`` says what model.onnx holds; ``pointwise`` (every node element-wise)
    lets it print the inputs at the worst element (through a MatMul they mean nothing).
    ``signed_zeros``: a later node divides by the value or takes its sign, so a -0.0
    turned +0.0 is the bug and the script must fail on it, as the search did.
    """
    level = ORT_OPT_LEVELS.get(opt_level, "ORT_ENABLE_ALL")
    providers = PROVIDERS.get(ep, PROVIDERS["cpu"])
    holds = textwrap.fill(f"It holds {note}." if note else "It holds the divergent node with its local subgraph.", 88)
    holds = holds.replace('"' * 3, "'" * 3).replace("{", "{{").replace("}", "}}")
    return _SCRIPT.replace("@HOLDS@", holds).replace("PyTorch", reference).format(
        rtol=repr(rtol),
        atol=repr(atol),
        level=level,
        opt_level=opt_level,
        providers=repr(providers),
        pointwise=repr(pointwise),
        signed_zeros=repr(signed_zeros),
    )


def _clean_model(model_bytes: bytes, scrub: Callable[[str], str] | None) -> onnx.ModelProto:
    """Drop unused nodes/initializers and toposort, keeping node metadata (provenance)."""
    original = onnx.load_from_string(model_bytes)
    model = original
    try:
        import onnx_graphsurgeon as gs

        graph = gs.import_onnx(original)
        graph.cleanup().toposort()
        cleaned = gs.export_onnx(graph)
        # graphsurgeon drops metadata_props; they carry the PyTorch stack trace.
        meta = {n.name: list(n.metadata_props) for n in original.graph.node}
        for node in cleaned.graph.node:
            node.metadata_props.extend(meta.get(node.name, []))
        cleaned.ir_version = original.ir_version
        del cleaned.opset_import[:]
        cleaned.opset_import.extend(original.opset_import)
        model = cleaned
    except Exception:  # noqa: BLE001 - the uncleaned subgraph is still a valid repro
        model = original
    if scrub is not None:
        for node in model.graph.node:
            node.doc_string = scrub(node.doc_string)
            for prop in node.metadata_props:
                prop.value = scrub(prop.value)
        for prop in model.metadata_props:
            prop.value = scrub(prop.value)
        model.graph.doc_string = scrub(model.graph.doc_string)
    return model


def _pointwise(model: onnx.ModelProto) -> bool:
    from nodebisect.values.worst import ELEMENTWISE

    return all(node.op_type in ELEMENTWISE for node in model.graph.node)


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


_SCRIPT = '''"""Minimal repro written by nodebisect: one ONNX subgraph that onnxruntime computes
differently from PyTorch. Needs only numpy and onnxruntime.

    python repro.py      # exit 1: the mismatch reproduces; exit 0: fixed

@HOLDS@

model.onnx    the subgraph
inputs.npz    PyTorch's own values of the subgraph's inputs
expected.npz  PyTorch's value of the output
"""

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
RTOL = {rtol}
ATOL = {atol}
OPT_LEVEL = "{opt_level}"
PROVIDERS = {providers}
POINTWISE = {pointwise}  # every node element-wise: the inputs at the worst element explain it
SIGNED_ZEROS = {signed_zeros}  # a later node divides by this value or takes its sign: -0.0 != +0.0 here


def compare(actual, expected):
    """Max abs error and the fraction of elements outside |a - e| <= ATOL + RTOL * |e|."""
    a = np.asarray(actual).astype(np.float64)
    e = np.asarray(expected).astype(np.float64)
    if a.shape != e.shape:
        return float("inf"), 1.0
    finite = np.isfinite(a) & np.isfinite(e)
    same_special = (np.isnan(a) & np.isnan(e)) | (np.isinf(a) & np.isinf(e) & (np.sign(a) == np.sign(e)))
    diff = np.where(finite, np.abs(a - e), 0.0)
    good = np.where(finite, diff <= ATOL + RTOL * np.abs(np.where(finite, e, 0.0)), same_special)
    if SIGNED_ZEROS:
        good &= ~flipped_zeros(a, e)
    max_abs = float(diff.max()) if finite.any() else 0.0
    if (~finite & ~same_special).any():
        max_abs = float("inf")
    return max_abs, float(1.0 - good.mean()) if good.size else 0.0


def worst(actual, expected, inputs):
    """The element that departs most, with the subgraph's inputs at the same index."""
    a = np.asarray(actual).astype(np.float64)
    e = np.asarray(expected).astype(np.float64)
    if a.shape != e.shape or e.size == 0:
        return ""
    with np.errstate(invalid="ignore", over="ignore"):
        both = np.isfinite(a) & np.isfinite(e)
        same = (np.isnan(a) & np.isnan(e)) | (np.isinf(a) & np.isinf(e) & (np.sign(a) == np.sign(e)))
        score = np.where(both, np.abs(a - e), np.where(same, -1.0, np.inf))
    flipped = flipped_zeros(a, e) if SIGNED_ZEROS else np.zeros(e.shape, bool)
    if flipped.any() and compare(np.where(flipped, e, a), e)[1] == 0:  # only the signs differ: show one
        score = np.where(flipped, np.inf, score)
    flat = int(np.argmax(score))
    index = list(np.unravel_index(flat, e.shape)) if e.ndim else []
    parts = []
    for name in inputs.files:
        value = inputs[name]
        if value.size == 1 or (POINTWISE and value.shape == e.shape):
            parts.append(f"{{name}}={{fmt(value.reshape(-1)[flat if value.size > 1 else 0])}}")
    where = "[" + ", ".join(str(int(i)) for i in index) + "]"
    given = (", ".join(parts) + " -> ") if parts else ""
    return f"worst element at {{where}}: {{given}}PyTorch {{fmt(e.reshape(-1)[flat])}}, onnxruntime {{fmt(a.reshape(-1)[flat])}}"


def flipped_zeros(a, e):
    """Zeros of the opposite sign: equal under any tolerance, but 1 / -0.0 is -inf and 1 / +0.0 is +inf."""
    return (a == 0) & (e == 0) & (np.signbit(a) != np.signbit(e))


def unoptimized(names, expected):
    """The same value before the exporter's graph optimizer (unoptimized/, when written): the unfused ops."""
    folder = HERE / "unoptimized"
    if not (folder / "model.onnx").is_file():
        return
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    inputs = np.load(folder / "inputs.npz")
    ops = (folder / "ops.txt").read_text().strip() if (folder / "ops.txt").is_file() else "the unfused ops"
    got = session.run(names, {{i.name: inputs[i.name] for i in session.get_inputs()}})
    for name, value in zip(names, got):
        max_abs, mismatch = compare(value, expected[name])
        verdict = "matches PyTorch" if mismatch == 0 else "differs from PyTorch too"
        print(f"before the exporter's optimizer ({{ops}}; unoptimized/model.onnx, onnxruntime optimizations off): "
              f"{{name}} max abs error {{max_abs:.9g}}, {{mismatch:.1%}} of elements out of tolerance: {{verdict}}")


def fmt(v):
    v = float(v)
    if v != v:
        return "nan"
    if v == 0.0:
        return "-0.0" if np.signbit(v) else "+0.0"
    return f"{{v:+.5g}}"


def main():
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.{level}
    available = ort.get_available_providers()
    providers = [p for p in PROVIDERS if p in available] or ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(HERE / "model.onnx"), options, providers=providers)
    inputs = np.load(HERE / "inputs.npz")
    expected = np.load(HERE / "expected.npz")
    feeds = {{i.name: inputs[i.name] for i in session.get_inputs()}}
    names = list(expected.files)
    actual = session.run(names, feeds)
    print(f"onnxruntime {{ort.__version__}}, providers {{providers}}, graph optimization {{OPT_LEVEL}}")
    print(f"tolerance: |actual - expected| <= {{ATOL:g}} + {{RTOL:g}} * |expected|" + (", and zeros keep their sign" if SIGNED_ZEROS else ""))
    failed = False
    for name, got in zip(names, actual):
        max_abs, mismatch = compare(got, expected[name])
        print(f"{{name}}: max abs error {{max_abs:.9g}}, {{mismatch:.1%}} of elements out of tolerance")
        if mismatch > 0:
            print("  " + worst(got, expected[name], inputs))
        failed = failed or mismatch > 0
    unoptimized(names, expected)
    if failed:
        print("MISMATCH REPRODUCED: onnxruntime differs from PyTorch")
        return 1
    print("OK: onnxruntime matches PyTorch within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


__all__ = ["build_repro", "script"]
