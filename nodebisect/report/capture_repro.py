"""A repro for a capture verdict: eager PyTorch vs ``torch.export`` on the same inputs.

A capture divergence happens before any ONNX exists, so the ONNX repro bundle
cannot show it. This writes a script (text only: the report never imports
torch) that loads the model the way ``nodebisect locate`` did, runs it eagerly
and as ``torch.export.export(model, args).module()``, and exits 1 while the
two differ, 0 once they agree.
"""

from __future__ import annotations

from nodebisect.records import STAGE_CAPTURE, LocateResult
from nodebisect.values.compare import DEFAULT_TOLERANCES

CAPTURE_REPRO = "capture_repro.py"


def capture_script(result: LocateResult) -> str:
    """The script for a capture verdict on a ``file.py:factory`` / ``pkg.module:factory`` model ("" otherwise)."""
    fd = result.first_divergent
    spec = result.model or ""
    if fd is None or fd.stage != STAGE_CAPTURE or ":" not in spec or spec.endswith((".pt2", ".pt", ".pth")):
        return ""
    tol = DEFAULT_TOLERANCES["float32"]
    return _SCRIPT.format(spec=spec, rtol=tol.rtol, atol=tol.atol, module=fd.framework.module or "", fx_node=fd.onnx_node)


_SCRIPT = '''"""Repro written by nodebisect: eager PyTorch and torch.export compute different outputs.

nodebisect found the first difference at FX node {fx_node!r} (module {module!r}): the
exported program, and so every ONNX file made from it, computes something else than
eager PyTorch. Run from the folder nodebisect ran in:

    python capture_repro.py [INPUTS.pt]

Exits 1 while eager and export differ, 0 once they agree. Needs torch and the model's code.
"""

import importlib
import importlib.util
import sys

import torch
import torch.utils._pytree as pytree

MODEL = {spec!r}
RTOL, ATOL = {rtol}, {atol}


def load_model():
    where, name = MODEL.rsplit(":", 1)
    if where.endswith(".py"):
        spec = importlib.util.spec_from_file_location("nodebisect_user_model", where)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    made = getattr(module, name)()
    model, args = made if isinstance(made, tuple) else (made, None)
    if args is None and hasattr(model, "example_inputs"):
        args = model.example_inputs()
    if len(sys.argv) > 1:
        args = torch.load(sys.argv[1], weights_only=True)
    args = args if isinstance(args, tuple) else (args,)
    return model.eval(), args  # nodebisect compares the model in eval mode


def main():
    model, args = load_model()
    with torch.no_grad():
        eager = pytree.tree_leaves(model(*args))
        exported = torch.export.export(model, args).module()
        export = pytree.tree_leaves(exported(*args))
    differ = False
    for i, (e, x) in enumerate(zip(eager, export)):
        if not isinstance(e, torch.Tensor):
            continue
        gap = (e.float() - x.float()).abs().max().item() if e.numel() else 0.0
        ok = torch.allclose(e.float(), x.float(), rtol=RTOL, atol=ATOL, equal_nan=True)
        print(f"output {{i}}: max abs difference eager vs torch.export {{gap:.6g}}" + ("" if ok else "  <- differs"))
        differ |= not ok
    print("MISMATCH REPRODUCED: torch.export changed what the model computes" if differ else "OK: eager and torch.export agree")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
'''
