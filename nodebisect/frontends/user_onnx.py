"""Read and validate the user's own ``--onnx`` file, and check it belongs to the model.

Bad files are the user's, not our crash: every failure is a ``BadInputError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodebisect.errors import BadInputError

# onnx.checker costs ~1 s on a 400 MB model; above this size onnxruntime's own load checks suffice.
CHECKER_MAX_BYTES = 64 * 1024 * 1024
# A user's ONNX file "belongs" to the model when this share of its node outputs
# carry FX names of the model's exported program.
MIN_OWNERSHIP = 0.2


def check_onnx_file(path: str) -> None:
    """Refuse a ``--onnx`` path that is missing, empty, unreadable or not an ONNX graph, before any torch work.

    The pipeline calls this before it loads and exports the model: a typo in the
    path used to cost the whole load and export of a real model before the error.
    Only the graph is parsed here (external data stays on disk, no checker).
    """
    _read(path, external_data=False)


def _read(path: str, external_data: bool) -> Any:
    import onnx

    file = Path(path)
    if not file.exists():
        raise BadInputError(f"ONNX file not found: {path}")
    if not file.is_file():
        raise BadInputError(f"--onnx {path} is not a file", tip="pass the .onnx file itself")
    if file.stat().st_size == 0:
        raise BadInputError(f"ONNX file is empty: {path}")
    try:
        model = onnx.load(str(file), load_external_data=external_data)  # external data next to the file is read from there
    except PermissionError as exc:
        raise BadInputError(f"cannot read {path}: permission denied") from exc
    except Exception as exc:  # noqa: BLE001
        raise BadInputError(f"cannot read {path} as ONNX: {(str(exc).splitlines() or [type(exc).__name__])[0][:200]}", tip="the file may be truncated") from exc
    if not model.graph.node:
        raise BadInputError(f"{path} has no ONNX graph nodes", tip="is it really an ONNX model?")
    return model


def load_user_onnx(path: str) -> Any:
    """The ONNX model in ``path`` (external data read from beside it), checked when small enough."""
    import onnx

    from nodebisect.onnxgraph import initializer_bytes, topologically_sorted

    file = Path(path)
    model = topologically_sorted(_read(path, external_data=True), owned=True)  # some tools leave theirs unsorted
    try:
        # Large models (also small .onnx files with external data): onnxruntime validates them on load,
        # and the checker would have to serialize a proto that may exceed protobuf's 2 GB.
        if file.stat().st_size <= CHECKER_MAX_BYTES and initializer_bytes(model) <= CHECKER_MAX_BYTES:
            onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - a corrupt graph is the user's file, not our crash
        raise BadInputError(f"{path} is not a valid ONNX model: {str(exc).strip().splitlines()[0][:200]}", tip="the file may be truncated or corrupted; re-export it") from exc
    return model


def check_model_fits(prep: Any, gm: Any, onnx_path: str | None, module_level: bool) -> None:
    """The ONNX model takes these inputs, and a user's ``--onnx`` file holds this model's values.

    Raises:
        BadInputError: an input count or shape the model does not take; another model's file.
    """
    from nodebisect.onnxgraph import check_feeds_fit
    from nodebisect.values.graphmap import overlap

    if onnx_path:  # the user's file: its values must be this model's
        check_value_ownership(onnx_path, overlap(gm), len(gm.output_map), len(prep.onnx_model.graph.output), module_level)
    if len(prep.flat_inputs) != len(gm.graph_inputs):
        raise BadInputError(
            f"the ONNX model takes {len(gm.graph_inputs)} input(s), the model was given {len(prep.flat_inputs)}",
            tip="the ONNX file and the inputs must come from the same model",
        )
    check_feeds_fit(prep.onnx_model, prep.feeds, onnx_path)
    if onnx_path:  # node names can coincide between exports of two models; the signature cannot
        check_signature(prep.onnx_model, prep.feeds, [prep.acts.values[n] for n in prep.acts.outputs if n in prep.acts.values])


def check_value_ownership(path: str, share: float, outputs_mapped: int, outputs: int, module_level: bool) -> None:
    """Refuse an ONNX file whose values are not the model's (``share`` of its values carry the model's FX names).

    Module-level mapping (the TorchScript exporter) compares far fewer values;
    its scopes are checked by ``frontends.torchscript.export.check_scope_ownership`` instead.
    """
    owned = share >= MIN_OWNERSHIP or module_level
    if not owned or outputs_mapped < outputs:
        raise BadInputError(
            f"{path} does not look like an export of this model ({share:.0%} of its values match the model's exported program)",
            tip="pass the ONNX file exported from this model with torch.onnx.export(..., dynamo=True)",
        )


def check_signature(model: Any, feeds: dict[str, Any], expected_outputs: list[Any]) -> None:
    """Refuse an ONNX graph whose inputs or outputs do not have the model's shapes and dtypes.

    Node names can coincide between two exports (a Linear+Tanh graph for a
    Linear+ReLU model both name ``node_linear``); the signature cannot. A
    symbolic dimension (``dim_param``) or a missing one matches any size.

    Args:
        model: the user's ``onnx.ModelProto``.
        feeds: the model's inputs by ONNX input name (numpy arrays).
        expected_outputs: PyTorch's outputs, in the graph's output order (numpy arrays).

    Raises:
        BadInputError: with the first input or output that does not fit.
    """
    import numpy as np
    from onnx import helper

    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    problems = []
    missing = [i.name for i in graph_inputs if i.name not in feeds]
    if missing:
        problems.append(f"it takes input(s) {missing} the model does not have (the model's: {sorted(feeds)})")
    for info in graph_inputs:
        if info.name in feeds:
            problem = _value_mismatch(info, np.asarray(feeds[info.name]), helper)
            if problem:
                problems.append(f"input {info.name!r} {problem}")
    outputs = list(model.graph.output)
    if len(outputs) != len(expected_outputs):
        problems.append(f"it has {len(outputs)} output(s), the model {len(expected_outputs)}")
    else:
        for info, value in zip(outputs, expected_outputs):
            problem = _value_mismatch(info, np.asarray(value), helper)
            if problem:
                problems.append(f"output {info.name!r} {problem}")
    if problems:
        raise BadInputError(
            "the --onnx file is not an export of this model: " + "; ".join(problems[:3]),
            tip="pass the ONNX file exported from this very model (same inputs), or leave out --onnx to export it",
        )


def _value_mismatch(info: Any, value: Any, helper: Any) -> str:
    """Why a graph input/output declaration does not fit ``value`` ("" when it does)."""
    tensor = info.type.tensor_type
    if not info.type.HasField("tensor_type"):
        return ""
    if tensor.elem_type:
        try:
            declared = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        except (KeyError, ValueError):
            declared = None
        if declared is not None and declared != value.dtype and not (str(value.dtype) == "float32" and str(declared) == "bfloat16"):
            return f"is {declared}, the model's is {value.dtype}"
    if tensor.HasField("shape"):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if len(dims) != value.ndim or any(d is not None and d != s for d, s in zip(dims, value.shape)):
            shown = [d if d is not None else "?" for d in dims]
            return f"has shape {shown}, the model's is {list(value.shape)}"
    return ""
