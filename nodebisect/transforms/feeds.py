"""The inputs a transformation is checked (and calibrated) on: an .npz, or seeded values of the declared shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from nodebisect.errors import BadInputError


def model_feeds(model: onnx.ModelProto, inputs: str | Path | dict[str, np.ndarray] | None, seed: int = 0) -> dict[str, np.ndarray]:
    """``inputs`` (a dict, or an .npz keyed by input name) checked against the model, else seeded normal values.

    A dimension without a size is 1; integer inputs get small non-negative values (indices, ids).
    """
    initializers = {t.name for t in model.graph.initializer}
    declared = [i for i in model.graph.input if i.name not in initializers]
    if inputs is not None:
        feeds = dict(np.load(str(inputs))) if not isinstance(inputs, dict) else dict(inputs)
        missing = [i.name for i in declared if i.name not in feeds]
        if missing:
            raise BadInputError(f"the inputs lack {', '.join(missing)}; the model takes {', '.join(i.name for i in declared)}")
        return {i.name: np.asarray(feeds[i.name]) for i in declared}
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in declared:
        tensor = inp.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type) if tensor.elem_type else np.float32
        if np.dtype(dtype).kind in "iu":
            feeds[inp.name] = rng.integers(0, 4, size=shape).astype(dtype)
        elif np.dtype(dtype).kind == "b":
            feeds[inp.name] = np.ones(shape, dtype=bool)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds
