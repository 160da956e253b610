"""Export a loaded model to ONNX with the dynamo exporter, keeping its ExportedProgram.

The ONNX value names the dynamo exporter writes are the FX node names of the
*decomposed* ExportedProgram it translated (``ONNXProgram.exported_program``):
that program, not the user's eager module, is what reference activations are
captured from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx
import torch

from nodebisect.errors import ExportFailedError
from nodebisect.frontends.export_failure import CAPTURE, DECOMPOSITION, TRANSLATION, classify_export_error
from nodebisect.frontends.loading.load import LoadedModel
from nodebisect.frontends.quiet import quiet_torch


@dataclass
class Exported:
    """The ONNX model and the program its value names come from."""

    model: onnx.ModelProto | None  # None from export_program: the ONNX file is the user's
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
    original = loaded.exported if loaded.exported is not None else _torch_export(loaded, dynamic)
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
        raise export_failure(exc, loaded, original) from exc
    if program is None:
        raise ExportFailedError("the exporter returned no program", step="export")
    model = program.model_proto
    opset_used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset or 0)
    return Exported(model=model, program=program.exported_program, opset=opset_used, original=original)


def unoptimized_export(prep: Any, loaded: LoadedModel, opset: int | None = None) -> onnx.ModelProto:
    """The prepared program translated again with ``optimize=False`` (the exporter's optimizer off).

    Kept on ``prep`` so that a prepared model searched again does not export again;
    the stage check compares it with the optimized graph at the culprit's value.
    """
    if prep.unoptimized_onnx is None:
        program_only = LoadedModel(module=None, exported=prep.program, args=loaded.args, kwargs=loaded.kwargs)
        prep.unoptimized_onnx = export_onnx(program_only, opset=opset, optimize=False).model
    return prep.unoptimized_onnx


def export_program(loaded: LoadedModel, opset: int | None = None, dynamic: bool = False) -> Exported | None:
    """torch.export and the exporter's own step 2 (decomposition, type promotion), without translating to ONNX.

    All the mapping needs when the ONNX file is the user's (``--onnx``): the program
    whose FX node names the dynamo exporter writes as ONNX value names, made by the
    exporter's own function with the registry it would build for ``opset`` (its
    decomposition table follows the ops that registry implements). A second ONNX
    export cost as much again as the first (4.5 s on BERT-base) for a model that
    was thrown away. ``Exported.model`` is None.

    Returns None where only the full exporter will do: torch.export fails here (its
    other capture strategies are the exporter's), or torch's internals moved. The
    caller then runs ``export_onnx``, which also classifies a real failure.
    """
    original = loaded.exported if loaded.exported is not None else _torch_export(loaded, dynamic)
    if original is None:
        return None
    try:
        from torch.onnx._constants import ONNX_DEFAULT_OPSET
        from torch.onnx._internal.exporter import _constants, _core, _registration

        with quiet_torch():  # building the registry warns of every missing torchvision op
            # torch.onnx.export's registry: below the torchlib opset it builds the torchlib one.
            registry = _registration.ONNXRegistry.from_torchlib(opset_version=max(opset or ONNX_DEFAULT_OPSET, _constants.TORCHLIB_OPSET))
            program = _core._prepare_exported_program_for_export(original, registry=registry)
    except Exception:  # noqa: BLE001 - the full export decides (and classifies a failure)
        return None
    return Exported(model=None, program=program, opset=0, original=original)


def _torch_export(loaded: LoadedModel, dynamic: bool) -> Any:
    """The eager module captured by torch.export (non-strict), or None.

    Done by us rather than the exporter so the pre-decomposition program stays at
    hand for the decomposition-stage check; on failure the exporter's own capture
    strategies (strict, draft) get their turn.
    """
    if loaded.module is None or isinstance(loaded.module, torch.jit.ScriptModule):
        return None
    try:
        with quiet_torch():
            return torch.export.export(
                loaded.module,
                tuple(loaded.args),
                kwargs=loaded.kwargs or None,
                strict=False,
                dynamic_shapes=auto_dynamic_shapes(loaded) if dynamic else None,
            )
    except Exception:  # noqa: BLE001
        return None


def auto_dynamic_shapes(loaded: LoadedModel) -> Any:
    """``Dim.AUTO`` for every dimension of every positional tensor input (kwargs stay static, but for
    the calls an InputObserver recorded: an LLM's growing ``input_ids`` come as keywords)."""
    from torch.export import Dim

    spec = tuple({i: Dim.AUTO for i in range(a.dim())} if isinstance(a, torch.Tensor) else None for a in loaded.args)
    if loaded.kwargs:
        observed = bool(getattr(loaded, "observed", None))
        keywords = {k: {i: Dim.AUTO for i in range(v.dim())} if observed and isinstance(v, torch.Tensor) else None for k, v in loaded.kwargs.items()}
        return {**dict(zip(_arg_names(loaded), spec)), **keywords}
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


# The ``step`` strings reports have always carried, per classified stage.
_STEPS = {
    CAPTURE: "torch.export (capture the graph)",
    DECOMPOSITION: "decomposition",
    TRANSLATION: "translate to ONNX",
}


def export_failure(exc: BaseException, loaded: LoadedModel, original: Any = None) -> ExportFailedError:
    """The dynamo exporter's exception, classified (stage, cause, frames, remedy) with a repro script where one is found."""
    error = classify_export_error(exc, exporter="dynamo", module=loaded.module, program=original)
    program = original
    if original is not None and error.step in (DECOMPOSITION, TRANSLATION):
        # The failing node is a node of the decomposed program: its stack trace names the source line.
        program = decomposed(original) or original
        if not error.source and program is not original:
            error = classify_export_error(exc, exporter="dynamo", module=loaded.module, program=program)
    error.step = _STEPS.get(error.step, error.step)
    try:
        from nodebisect.frontends.export_repro import repro_script

        error.details["repro_script"] = repro_script(error, loaded, original, program if program is not original else None)
    except Exception:  # noqa: BLE001 - a repro is a help; the classified failure stands without it
        error.details["repro_script"] = ""
    return error


def decomposed(program: Any) -> Any:
    """``program`` decomposed as the exporter decomposes it (its step 2, before type promotion), or None."""
    try:
        from torch.onnx._internal.exporter import _fx_passes, _registration

        with quiet_torch(), torch.fx.experimental._config.patch(backed_size_oblivious=True):
            return _fx_passes.decompose_with_registry(program, _registration.ONNXRegistry.from_torchlib())
    except Exception:  # noqa: BLE001 - torch internals: without them the captured program still serves
        return None
