"""``repro/torch_repro.py``: the culprit's aten call alone in PyTorch, beside onnxruntime's answer (issue #22.9).

The ONNX repro (``report.repro``) convinces an onnxruntime or exporter maintainer that
the subgraph is wrong; a PyTorch maintainer wants the op they own, called on the same
values. The script calls ``torch.ops.aten.<op>`` on the captured arguments
(``torch_args.npz``), runs the ONNX repro's subgraph (``model.onnx`` on ``inputs.npz``)
in onnxruntime, and prints both answers side by side at the elements that differ most,
with the mechanism when the evidence shows it. Pure text here: the script imports
torch, nodebisect's report never does.
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

SIDE_BY_SIDE = 5  # elements printed


def torch_files(call: dict[str, Any], rtol: float, atol: float, mechanism: str = "") -> dict[str, bytes]:
    """``torch_repro.py`` and ``torch_args.npz`` for ``call`` (``diagnose.torch_call.aten_call``)."""
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in call["arrays"].items()})
    return {"torch_repro.py": torch_script(call, rtol, atol, mechanism).encode("utf-8"), "torch_args.npz": buf.getvalue()}


def torch_script(call: dict[str, Any], rtol: float, atol: float, mechanism: str = "") -> str:
    """The script's text: the aten call with its arguments as source, then the side-by-side comparison."""
    target = str(call["target"]).removeprefix("aten.")
    arguments = list(call["args"]) + [f"{k}={v}" for k, v in call["kwargs"].items()]
    shapes = "\n".join(
        f"    {name}: {call['dtypes'].get(name, str(np.asarray(a).dtype))} {list(np.asarray(a).shape)}" for name, a in call["arrays"].items()
    )
    why = textwrap.fill(f"Mechanism: {mechanism.rstrip('.')}.", 88) if mechanism else "The mechanism is not known: compare the answers below."
    return (
        _TEMPLATE.replace("@WHY@", why.replace('"""', "'''"))
        .replace("@SHAPES@", shapes or "    (no tensor arguments)")
        .replace("@TARGET@", str(call["target"]))
        .replace("@CALL@", f"torch.ops.aten.{target}(\n            " + ",\n            ".join(arguments) + ",\n        )")
        .replace("@DTYPES@", repr(dict(call["dtypes"])))
        .replace("@RTOL@", repr(rtol))
        .replace("@ATOL@", repr(atol))
        .replace("@SHOWN@", str(SIDE_BY_SIDE))
    )


_TEMPLATE = '''"""The culprit's PyTorch call alone, written by nodebisect:
@TARGET@ on the values PyTorch computed it from in the model, beside
onnxruntime's answer for the same values (the ONNX repro's subgraph, model.onnx on
inputs.npz). Needs torch, numpy and onnxruntime.

    python torch_repro.py      # exit 1 while the two answers differ; 0 once they agree

@WHY@

Arguments (torch_args.npz):
@SHAPES@
"""

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DTYPES = @DTYPES@
RTOL, ATOL = @RTOL@, @ATOL@
_data = np.load(HERE / "torch_args.npz")
T = {name: torch.from_numpy(_data[name]).to(getattr(torch, DTYPES.get(name, str(_data[name].dtype)))) for name in _data.files}


def pytorch():
    """The aten call as the model made it."""
    with torch.no_grad():
        out = @CALL@
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out.detach().float().numpy() if out.dtype == torch.bfloat16 else out.detach().numpy()


def onnxruntime_answer():
    """The ONNX repro's subgraph on PyTorch's own input values."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = np.load(HERE / "inputs.npz")
    return session.run(None, {i.name: inputs[i.name] for i in session.get_inputs()})[0]


def main():
    torch_value, ort_value = pytorch(), onnxruntime_answer()
    t, o = torch_value.astype(np.float64), np.asarray(ort_value).astype(np.float64)
    if t.shape != o.shape:
        print(f"shapes differ: PyTorch {list(t.shape)}, onnxruntime {list(o.shape)}")
        return 1
    with np.errstate(invalid="ignore"):
        same = (t == o) | (np.isnan(t) & np.isnan(o))
        diff = np.where(same, 0.0, np.where(np.isfinite(t) & np.isfinite(o), np.abs(t - o), np.inf))
        bad = diff > ATOL + RTOL * np.abs(np.where(np.isfinite(t), t, 0.0))
    print(f"torch {torch.__version__}: @TARGET@ -> {list(t.shape)} {torch_value.dtype}")
    print(f"{'element':<24} {'PyTorch':>16} {'onnxruntime':>16}")
    for flat in np.argsort(-diff, axis=None, kind="stable")[:@SHOWN@]:
        index = [int(i) for i in np.unravel_index(flat, t.shape)] if t.ndim else []
        print(f"{str(index):<24} {t.reshape(-1)[flat]:>+16.6g} {o.reshape(-1)[flat]:>+16.6g}")
    finite = diff[np.isfinite(diff)]
    print(f"{int(bad.sum())} of {bad.size} element(s) differ beyond {ATOL:g} + {RTOL:g} * |PyTorch|; "
          f"max |PyTorch - onnxruntime| = {(finite.max() if finite.size else 0.0):.6g}" + (" (and NaN/Inf placement)" if np.isinf(diff).any() else ""))
    return 1 if bad.any() else 0


if __name__ == "__main__":
    sys.exit(main())
'''


__all__ = ["torch_files", "torch_script"]
