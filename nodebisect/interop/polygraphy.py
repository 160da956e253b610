"""PyTorch's values as Polygraphy golden outputs: check any backend against them with ``polygraphy run``.

Polygraphy (NVIDIA) compares runners; its ``--load-outputs`` reads a ``RunResults`` JSON and its
``--load-inputs`` a list of feed dicts. Written here without importing polygraphy, in the
format its ``polygraphy/json/serde.py`` reads (arrays as base64 ``np.save`` bytes), so a
user can run TensorRT, another execution provider or another onnxruntime against the
reference values nodebisect compared, tensor by tensor::

    polygraphy run model.onnx --onnxrt --load-inputs inputs.json --load-outputs golden.json \\
        --onnx-outputs v1 v2 ... --atol 1e-4 --rtol 1e-3
"""

from __future__ import annotations

import base64
import io
import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from nodebisect.prepared import Prepared
from nodebisect.records import LocateResult
from nodebisect.report.atomic import write_bytes, write_text

RUNNER = "pytorch"
MODEL = "model.onnx"
GOLDEN = "golden.json"
INPUTS = "inputs.json"
README = "README.txt"
# Up to this many compared tensors the command names each; beyond, ``'*'`` marks every tensor
# (Polygraphy >= 0.53 compares those the golden values hold; older versions: ``mark all``).
NAMED_OUTPUTS = 40


def golden_tensors(result: LocateResult, prep: Prepared) -> dict[str, np.ndarray]:
    """ONNX value name -> the reference's value, for every node value the run could compare, in graph order.

    Cast to the ONNX value's declared dtype and shape where they differ only in form (a
    0-d tensor as [1]); a value whose size differs is left out (Polygraphy would refuse it).
    """
    from nodebisect.onnxgraph import value_types

    types = value_types(prep.onnx_model)
    out: dict[str, np.ndarray] = {}
    for node in result.nodes:
        if not node.mapped_to or node.mapped_to not in prep.acts.values or not node.onnx_value:
            continue
        value = np.asarray(prep.acts.values[node.mapped_to])
        dtype, dims = types.get(node.onnx_value, (None, None))
        if dtype is not None and value.dtype != dtype:
            value = value.astype(dtype)
        if dims is not None and all(d is not None for d in dims) and list(value.shape) != dims:
            if int(np.prod(dims)) != value.size:
                continue
            value = value.reshape(dims)
        out[node.onnx_value] = value
    return out


def ndarray_json(array: np.ndarray) -> dict[str, Any]:
    """Polygraphy's ``ndarray`` encoding: base64 of the ``np.save`` bytes."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return {"array": base64.b64encode(buf.getvalue()).decode(), "polygraphy_class": "ndarray"}


def run_results(outputs: dict[str, np.ndarray], runner: str = RUNNER) -> dict[str, Any]:
    """A Polygraphy ``RunResults`` of one iteration of ``runner`` (what ``--save-outputs`` writes)."""
    iteration = {
        "outputs": {name: {"values": ndarray_json(a), "polygraphy_class": "LazyArray"} for name, a in outputs.items()},
        "runtime": 0.0,
        "runner_name": runner,
        "polygraphy_class": "IterationResult",
    }
    return {"lst": [[runner, [iteration]]], "polygraphy_class": "RunResults"}


def inputs_json(feeds: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Polygraphy's inputs file: a list of feed dicts (one iteration)."""
    return [{name: ndarray_json(np.asarray(a)) for name, a in feeds.items()}]


def command(result: LocateResult, tensors: list[str], folder: str = ".") -> str:
    """The ``polygraphy run`` line that checks onnxruntime against the golden values under the run's tolerance.

    Polygraphy's ``--atol``/``--rtol`` pass an element within either bound; nodebisect's
    ``atol + rtol * |expected|`` is close to it, so a tensor near the edge may differ.
    """
    tol = result.tolerance.get("float32") or next(iter(result.tolerance.values()), None) or {"rtol": 1e-3, "atol": 1e-4}
    path = (lambda name: shlex.quote(str(Path(folder) / name)))
    return (
        f"polygraphy run {path(MODEL)} --onnxrt --load-inputs {path(INPUTS)} --load-outputs {path(GOLDEN)} "
        f"--onnx-outputs {' '.join(shlex.quote(t) for t in tensors) if len(tensors) <= NAMED_OUTPUTS else shlex.quote('*')} "
        f"--atol {tol.get('atol', 1e-4):g} --rtol {tol.get('rtol', 1e-3):g}"
    )


def write_polygraphy(result: LocateResult, prep: Prepared, out_dir: str | Path) -> Path:
    """Write model.onnx, golden.json (runner ``pytorch``), inputs.json and README.txt into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    golden = golden_tensors(result, prep)
    write_model(prep.onnx_model, out / MODEL)
    write_text(out / GOLDEN, json.dumps(run_results(golden)))
    write_text(out / INPUTS, json.dumps(inputs_json(prep.feeds)))
    write_text(out / README, readme(result, list(golden)))
    return out


def readme(result: LocateResult, tensors: list[str]) -> str:
    from nodebisect.report.interop_wording import polygraphy_readme

    return polygraphy_readme(result.model, len(tensors), command(result, tensors))


def write_model(model: Any, path: Path) -> None:
    """The ONNX model as compared; weights past 1 GiB go to ``model.onnx.data`` beside it (protobuf's 2 GiB cap)."""
    import onnx

    from nodebisect.onnxgraph import initializer_bytes

    if initializer_bytes(model) < 2**30:
        write_bytes(path, model.SerializeToString())
        return
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save(copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data")


__all__ = ["RUNNER", "command", "golden_tensors", "inputs_json", "run_results", "write_model", "write_polygraphy"]
