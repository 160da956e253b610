"""Make a ``Prepared`` from a loaded model: export (or read ``--onnx``), capture, feeds.

The dynamo path keeps the decomposed ExportedProgram whose FX names are the
ONNX value names; the TorchScript path lives in ``frontends.torchscript`` and
ends in the same ``Prepared``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from nodebisect.frontends.loading.load import LoadedModel
from nodebisect.prepared import Prepared, memory_available
from nodebisect.run import Options, RunLog

if TYPE_CHECKING:
    from nodebisect.runtime.handle import Ort


def check_device(device: str) -> None:
    """``--device cuda`` needs a CUDA device torch can see."""
    import torch

    from nodebisect.errors import BadInputError

    if device == "cuda" and not torch.cuda.is_available():
        raise BadInputError("--device cuda asked for, but torch sees no CUDA device", tip="use --device cpu")


def export_and_capture(loaded: LoadedModel, opts: Options, log: RunLog, ort: Ort | None = None) -> Prepared:
    """Export with the chosen exporter and capture the reference activations.

    ``ort``: the onnxruntime handle; as soon as the ONNX model exists it starts
    writing its weights file (``warm_up``), which then runs while PyTorch captures.
    The TorchScript path also runs one session through it (ties between values).

    Raises:
        ExportFailedError: the exporter failed (the pipeline turns it into ``export_failed``).
    """
    if loaded.kind == "keras":  # tf2onnx's path, TensorFlow as the reference
        from nodebisect.frontends.keras.prepare import prepare_keras

        with log.timed("export_and_capture"):
            return prepare_keras(loaded.exported, opts, log, ort)
    from nodebisect.errors import ExportFailedError
    from nodebisect.frontends.export_failure import as_reference_failure

    try:
        if opts.exporter == "torchscript":
            from nodebisect.frontends.torchscript.export import prepare_torchscript

            with log.timed("export_and_capture"):
                prep = prepare_torchscript(loaded, opts, log.stage, ort)
            return with_feeds(prep)
        return _prepare_dynamo(loaded, opts, log, ort)
    except ExportFailedError as exc:
        if opts.onnx_path:  # the user exported the file; the export for the reference is what failed
            raise as_reference_failure(exc) from exc.__cause__
        raise


def _prepare_dynamo(loaded: LoadedModel, opts: Options, log: RunLog, ort: Ort | None) -> Prepared:
    from nodebisect.frontends.capture import capture_fx, flat_user_inputs
    from nodebisect.frontends.dynamo import export_onnx, export_program
    from nodebisect.frontends.user_onnx import load_user_onnx
    from nodebisect.onnxgraph import opset_of

    exported = user_model = None
    dynamic = opts.dynamic or _observed_shapes_vary(loaded, log)
    if opts.onnx_path:  # the ONNX model is the user's: only the program its value names come from
        user_model = load_user_onnx(opts.onnx_path)
        _inputs_fit(user_model, loaded, opts.onnx_path)  # another model's file: refused before torch.export
        with log.timed("torch_export"):
            exported = export_program(loaded, opset=opts.opset, dynamic=dynamic)
    if exported is None:
        with log.timed("export"):
            exported = export_onnx(loaded, opset=opts.opset, dynamic=dynamic)
    onnx_model = user_model if user_model is not None else exported.model
    opset = exported.opset or opset_of(onnx_model)
    if ort is not None:
        ort.warm_up(onnx_model)
    t = log.stage("capture")
    budget = opts.memory_budget if opts.memory_budget is not None else memory_available() // 4
    acts = capture_fx(exported.program, loaded.args, loaded.kwargs, device=opts.device, memory_budget=budget)
    log.timings["capture"] = time.perf_counter() - t
    notes = []
    if acts.spilled:
        notes.append(
            f"reference activations beyond {budget / 2**20:.0f} MiB ({acts.spilled / 2**20:.0f} MiB) were spilled to disk and memory-mapped"
        )
    flat = [a for a in flat_user_inputs(exported.program, loaded.args, loaded.kwargs) if hasattr(a, "dtype")]
    prep = Prepared(
        onnx_model=onnx_model, acts=acts, flat_inputs=flat, program=exported.program, opset=opset, original=exported.original, notes=notes
    )
    prep.oracle = _oracle(prep, loaded.args, loaded.kwargs, opts, budget, log)
    return with_feeds(prep)


def _inputs_fit(model: Any, loaded: LoadedModel, path: str) -> None:
    """Refuse a ``--onnx`` file whose inputs cannot take the model's, before the export and the capture run.

    Only plain positional tensor inputs, as many as the file's: anything else (keyword
    inputs, non-tensor arguments) is left to the checks after capture, which see the
    program's own input order.
    """
    import torch

    from nodebisect.frontends.capture import to_numpy
    from nodebisect.onnxgraph import check_feeds_fit

    inits = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    if loaded.kwargs or len(names) != len(loaded.args) or not all(isinstance(a, torch.Tensor) for a in loaded.args):
        return
    check_feeds_fit(model, {name: to_numpy(t) for name, t in zip(names, loaded.args)}, path)


def _oracle(prep: Prepared, args: tuple[Any, ...], kwargs: dict[str, Any], opts: Options, budget: int, log: RunLog) -> Any:
    """The float64 oracle of the program's floating values, when asked for and affordable.

    It runs in a thread (``oracle.OracleRun``) while the pipeline goes on: the stage
    checks, the mapping and onnxruntime's first session no longer wait for it (it
    cost 7-18 % of a BERT-base locate when it ran here). Its timing and its note, if
    it fails, are written when the pipeline first waits for it, the note where it
    stood when the oracle ran in line.
    """
    from nodebisect.frontends.oracle import OracleRun

    if not opts.judges_noise():
        return {}
    floats = {n for n in prep.acts.order if prep.acts.values[n].dtype.kind == "f"}
    need = 2 * sum(prep.acts.values[n].nbytes for n in floats)
    if opts.oracle == "auto" and (prep.acts.spilled or need > budget):
        log.note(f"the float64 oracle ({need / 2**20:.0f} MiB) does not fit the memory budget: values are judged by the fixed tolerance only")
        return {}
    log.stage("run the program in float64 (each value's natural noise)")
    at = len(log.notes)

    def done(seconds: float, error: str) -> None:
        log.timings["oracle"] = seconds
        if error:
            log.notes.insert(at, f"the float64 oracle could not run ({error}): values are judged by the fixed tolerance only")

    return OracleRun(lambda: _oracle_or_reason(prep.program, args, kwargs, floats), done)


def _oracle_or_reason(program: Any, args: tuple[Any, ...], kwargs: dict[str, Any], floats: set[str]) -> tuple[dict[str, Any], str]:
    """The float64 oracle's values, or none and the first line of why it could not run."""
    from nodebisect.frontends.oracle import capture_oracle

    try:
        return capture_oracle(program, args, kwargs, floats), ""
    except Exception as exc:  # noqa: BLE001 - the oracle refines tolerances; the fixed ones stand without it
        return {}, str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__


def capture_inputs(prep: Prepared, args: tuple[Any, ...], kwargs: dict[str, Any], device: str) -> Prepared:
    """The same exported model with reference values and feeds for another input set (``--trials``)."""
    from nodebisect.frontends.capture import capture_fx, flat_user_inputs

    acts = capture_fx(prep.program, args, kwargs, device=device)
    flat = [a for a in flat_user_inputs(prep.program, args, kwargs) if hasattr(a, "dtype")]
    trial = with_feeds(replace(prep, acts=acts, flat_inputs=flat, notes=[]))  # acts: no exact answers yet
    if prep.oracle:  # a trial whose oracle fails is judged by the fixed tolerance
        trial.oracle = _oracle_or_reason(prep.program, args, kwargs, set(prep.oracle))[0]
    return trial


def with_feeds(prep: Prepared) -> Prepared:
    """``prep`` with its inputs as numpy feeds keyed by the ONNX graph's input names.

    Left empty when the counts differ: the pipeline reports that mismatch once it
    has checked that the ONNX file belongs to the model.
    """
    from nodebisect.frontends.capture import to_numpy

    graph = prep.onnx_model.graph
    inits = {t.name for t in graph.initializer}
    names = [i.name for i in graph.input if i.name not in inits]
    if len(names) == len(prep.flat_inputs):
        prep.feeds = {name: to_numpy(t) for name, t in zip(names, prep.flat_inputs)}
    return prep


def _observed_shapes_vary(loaded: LoadedModel, log: RunLog) -> bool:
    """Observed calls of several shapes (prefill, decode) need one export with dynamic dimensions."""
    from nodebisect.frontends.observed_inputs import shapes_vary

    if not loaded.observed or not shapes_vary([("", loaded.args, loaded.kwargs), *loaded.observed]):
        return False
    log.note("the observed calls differ in shape: exported with dynamic dimensions (as --dynamic)")
    return True
