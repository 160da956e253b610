"""Export a loaded model to ONNX with the dynamo exporter, keeping its ExportedProgram.

The ONNX value names the dynamo exporter writes are the FX node names of the
*decomposed* ExportedProgram it translated (``ONNXProgram.exported_program``):
that program, not the user's eager module, is what reference activations are
captured from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import onnx
import torch

from nodebisect.errors import ExportFailedError
from nodebisect.frontends.loading import LoadedModel
from nodebisect.frontends.quiet import quiet_torch


@dataclass
class Exported:
    """The ONNX model and the program its value names come from."""

    model: onnx.ModelProto
    program: Any  # torch.export.ExportedProgram (decomposed)
    opset: int
    original: Any = None  # the ExportedProgram before decomposition, where we have it


def export_onnx(loaded: LoadedModel, opset: int | None = None, optimize: bool = True, dynamic: bool = False) -> Exported:
    """Run ``torch.onnx.export(..., dynamo=True)`` and keep the decomposed program.

    With ``dynamic``, every dimension of every positional tensor input is
    exported as ``Dim.AUTO`` (torch.export keeps dynamic what the code allows),
    so the model can be compared at other shapes than the example's.

    Raises:
        ExportFailedError: with the failing step and, where the exporter says so,
            the aten op and the user's source line.
    """
    original = loaded.exported
    if original is None and loaded.module is not None and not isinstance(loaded.module, torch.jit.ScriptModule):
        # Capture the graph ourselves so the pre-decomposition program stays at
        # hand for the decomposition-stage check; on failure the exporter's own
        # capture strategies (strict, draft) get their turn.
        try:
            with quiet_torch():
                original = torch.export.export(
                    loaded.module,
                    tuple(loaded.args),
                    kwargs=loaded.kwargs or None,
                    strict=False,
                    dynamic_shapes=auto_dynamic_shapes(loaded) if dynamic else None,
                )
        except Exception:  # noqa: BLE001
            original = None
    target = original if original is not None else loaded.module
    try:
        with quiet_torch():
            program = torch.onnx.export(
                target,
                loaded.args,
                kwargs=loaded.kwargs or None,
                dynamo=True,
                opset_version=opset,
                optimize=optimize,
                verbose=False,
                external_data=False,
            )
    except Exception as exc:  # noqa: BLE001 - every exporter failure becomes a verdict
        raise _export_failure(exc) from exc
    if program is None:
        raise ExportFailedError("the exporter returned no program", step="export")
    model = program.model_proto
    opset_used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset or 0)
    return Exported(model=model, program=program.exported_program, opset=opset_used, original=original)


def auto_dynamic_shapes(loaded: LoadedModel) -> Any:
    """``Dim.AUTO`` for every dimension of every positional tensor input (kwargs stay static)."""
    from torch.export import Dim

    spec = tuple({i: Dim.AUTO for i in range(a.dim())} if isinstance(a, torch.Tensor) else None for a in loaded.args)
    if loaded.kwargs:
        return {**dict(zip(_arg_names(loaded), spec)), **{k: None for k in loaded.kwargs}}
    return spec


def _arg_names(loaded: LoadedModel) -> list[str]:
    import inspect

    params = inspect.signature(loaded.module.forward).parameters if loaded.module is not None else {}
    return list(params)[: len(loaded.args)]


def dynamic_dims(model: onnx.ModelProto) -> list[list[int]]:
    """Per ONNX graph input (in order), the indices of its symbolic dimensions.

    The ONNX graph decides: a dimension torch.export specialized (e.g. a Linear's
    feature size) stays a fixed number there, and only symbolic ones may vary.
    """
    initializers = {t.name for t in model.graph.initializer}
    found = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        dims = vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else []
        # The exporter may spell a specialized size as a numeric dim_param ("4").
        found.append([i for i, d in enumerate(dims) if not d.HasField("dim_value") and not d.dim_param.isdigit()])
    return found


_STEP_RE = re.compile(r"step (\d)/3")
_TARGET_RE = re.compile(r"target=(torch\.ops\.)?([\w.]+)")
_FILE_RE = re.compile(r'File "([^"]+)", line (\d+)')


def _export_failure(exc: BaseException) -> ExportFailedError:
    """Turn the exporter's exception chain into step / aten op / source line."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 20:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    text = "\n".join(str(e) for e in chain)
    steps = {"1": "torch.export (capture the graph)", "2": "decomposition", "3": "translate to ONNX"}
    match = _STEP_RE.search(text)
    step = steps.get(match.group(1), "export") if match else "export"
    target_match = _TARGET_RE.search(text)
    target = target_match.group(2) if target_match else ""
    source = ""
    for e in chain:
        tb = e.__traceback__
        while tb is not None:
            fname = tb.tb_frame.f_code.co_filename
            if not _is_library_file(fname):
                source = f"{fname}:{tb.tb_lineno}"
            tb = tb.tb_next
    for m in _FILE_RE.finditer(text):
        if not _is_library_file(m.group(1)):
            source = f"{m.group(1)}:{m.group(2)}"
    root = chain[-1]
    root_msg = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    message = f"ONNX export failed at step '{step}'"
    if target:
        message += f" on {target}"
    message += f": {type(root).__name__}: {root_msg[:240]}"
    return ExportFailedError(
        message,
        tip=(
            f"rewrite or register {target} (or try another --opset), then re-run; --debug shows the exporter's traceback"
            if target
            else (
                "make the model traceable by torch.export at the source line named (no branching on tensor values), "
                "then re-run; --debug shows the exporter's traceback"
                if step.startswith("torch.export")
                else "--debug shows the exporter's traceback"
            )
        ),
        step=step,
        target=target,
        source=source,
    )


def _is_library_file(path: str) -> bool:
    # "<string>", "<eval_with_key>": code generated by torch, never the user's file.
    return path.startswith("<") or any(s in path for s in ("site-packages", "dist-packages", "/torch/", "/onnxscript/", "<frozen", "/nodebisect/", "/lib/python"))
