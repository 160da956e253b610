"""onnxoptimizer, unmodified: ``onnxoptimizer.optimize(model, passes)``; knob: the pass list.

The default list is ``get_fuse_and_elimination_passes()`` (what ``optimize(model)``
runs); passes are named by onnxoptimizer's own names (``fuse_bn_into_conv``).
"""

from __future__ import annotations

from typing import Any

import onnx


def items(reference: onnx.ModelProto) -> list[str]:
    import onnxoptimizer

    return list(onnxoptimizer.get_fuse_and_elimination_passes())


def apply(reference: onnx.ModelProto, disabled: frozenset[str], feeds: dict[str, Any], spec: Any) -> onnx.ModelProto:
    import onnxoptimizer

    passes = [p for p in items(reference) if p not in disabled]
    if not passes:
        model = onnx.ModelProto()
        model.CopyFrom(reference)
        return model
    return onnxoptimizer.optimize(reference, passes)


def knob_kwargs(disabled: list[str], reference: onnx.ModelProto, spec: Any) -> dict[str, Any]:
    return {"passes": [p for p in _defaults() if p not in disabled]}


def _defaults() -> list[str]:
    import onnxoptimizer

    return list(onnxoptimizer.get_fuse_and_elimination_passes())
