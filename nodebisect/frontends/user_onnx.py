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


def load_user_onnx(path: str) -> Any:
    """The ONNX model in ``path`` (external data read from beside it), checked when small enough."""
    import onnx

    from nodebisect.onnxgraph import initializer_bytes

    file = Path(path)
    if not file.exists():
        raise BadInputError(f"ONNX file not found: {path}")
    if file.stat().st_size == 0:
        raise BadInputError(f"ONNX file is empty: {path}")
    try:
        model = onnx.load(str(file))  # external data next to the file is read from there
    except Exception as exc:  # noqa: BLE001
        raise BadInputError(f"cannot read {path} as ONNX: {str(exc).splitlines()[0][:200]}", tip="the file may be truncated") from exc
    if not model.graph.node:
        raise BadInputError(f"{path} has no ONNX graph nodes", tip="is it really an ONNX model?")
    try:
        # Large models (also small .onnx files with external data): onnxruntime validates them on load,
        # and the checker would have to serialize a proto that may exceed protobuf's 2 GB.
        if file.stat().st_size <= CHECKER_MAX_BYTES and initializer_bytes(model) <= CHECKER_MAX_BYTES:
            onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - a corrupt graph is the user's file, not our crash
        raise BadInputError(f"{path} is not a valid ONNX model: {str(exc).strip().splitlines()[0][:200]}", tip="the file may be truncated or corrupted; re-export it") from exc
    return model


def check_ownership(path: str, share: float, outputs_mapped: int, outputs: int, module_level: bool) -> None:
    """Refuse an ONNX file whose values are not the model's (``share`` of its values carry the model's FX names).

    Module-level mapping (the TorchScript exporter) compares far fewer values;
    its scopes are checked in ``frontends.torchscript`` instead.
    """
    owned = share >= MIN_OWNERSHIP or module_level
    if not owned or outputs_mapped < outputs:
        raise BadInputError(
            f"{path} does not look like an export of this model ({share:.0%} of its values match the model's exported program)",
            tip="pass the ONNX file exported from this model with torch.onnx.export(..., dynamo=True)",
        )
