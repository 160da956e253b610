"""The culprit's framework call as data, for a torch-level repro beside the ONNX one (issue #22.9).

A maintainer of the exporter reads an aten call faster than an ONNX subgraph: the
reference's own op (``Reference.op``) with its arguments, each tensor by PyTorch's
captured value (or the parameter it reads) and each other argument as Python source
text. ``report.torch_repro`` turns it into ``repro/torch_repro.py`` + ``torch_args.npz``.
No torch here: arguments are read by duck typing (a reference node has a ``name``; a
torch dtype, device or memory format prints as its own source text).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_BYTES = 64 * 1024 * 1024  # tensors larger than this make no repro worth mailing


def aten_call(acts: Any, fx_name: str | None) -> dict[str, Any] | None:
    """``{"target", "args", "kwargs", "arrays", "dtypes", "output"}`` for the op behind ``fx_name``, or None.

    ``args``/``kwargs`` hold source text per argument (``T['x']`` for a tensor held in
    ``arrays``); ``dtypes`` the reference dtype of each tensor (bfloat16 is stored widened).
    """
    op = acts.op(fx_name) if fx_name else None
    if op is None or not str(op.target).startswith("aten."):
        return None
    arrays: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}

    def text(arg: Any) -> str:
        name = getattr(arg, "name", None)
        if name is not None and hasattr(arg, "op"):  # a reference node: a tensor
            value = acts.values.get(name)
            if value is None:
                value = acts.parameter(name)
            if value is None:
                raise LookupError(name)
            arrays[name] = np.asarray(value)
            dtypes[name] = str(acts.dtypes.get(name) or np.asarray(value).dtype)
            return f"T[{name!r}]"
        if isinstance(arg, (list, tuple)):
            inner = ", ".join(text(a) for a in arg)
            return f"[{inner}]" if isinstance(arg, list) else f"({inner}{',' if len(arg) == 1 else ''})"
        if type(arg).__module__.startswith("torch"):
            kind = type(arg).__name__
            return f'torch.device("{arg}")' if kind == "device" else str(arg)  # torch.float32, torch.contiguous_format
        if isinstance(arg, float) and not np.isfinite(arg):
            return f'float("{arg}")'
        return repr(arg)

    try:
        args = [text(a) for a in op.args]
        kwargs = {k: text(v) for k, v in op.kwargs.items()}
    except LookupError:
        return None
    if sum(a.nbytes for a in arrays.values()) > MAX_BYTES:
        return None
    return {"target": str(op.target), "args": args, "kwargs": kwargs, "arrays": arrays, "dtypes": dtypes, "output": fx_name}
