"""Known transformations of an ONNX model (float16, quantization, optimizers) and their knob searches.

``transform_and_bisect(reference, "fp16", feeds, out_dir)`` applies the real tool,
unmodified, and when its candidate departs from the reference names the fix by
the tool's own knob: the rule, pass or fusion to switch off, or the reference
nodes to keep out (``registry``: the transformations; ``search``: the pure
searches; ``judge``: the precision-aware match; ``bisect``: the steps).
The tools are the optional extra ``nodebisect[transforms]``, imported only here.
"""

from __future__ import annotations

from nodebisect.transforms.registry import TRANSFORMS, MissingToolError, lookup
from nodebisect.transforms.record import TransformRecord

__all__ = ["TRANSFORMS", "MissingToolError", "TransformRecord", "lookup", "transform_and_bisect"]


def transform_and_bisect(*args: object, **kwargs: object) -> TransformRecord:
    """See ``nodebisect.transforms.bisect.transform_and_bisect`` (imported on call: onnx, onnxruntime)."""
    from nodebisect.transforms.bisect import transform_and_bisect as run

    return run(*args, **kwargs)  # type: ignore[arg-type]
