"""An exporter's exception, answered like a divergence: stage, cause class, frames, remedy.

One classifier for both exporters (dynamo and TorchScript). It reads the whole
exception chain: the messages (the dynamo exporter says ``step N/3``, names the
FX node it was executing and quotes the model's "Original traceback"), and the
real traceback frames. Frames are sorted into three kinds by ``nodebisect.frames``
(the rule every stack nodebisect reads goes by): internal (torch, onnx, the standard
library, nodebisect itself, generated code), library (``transformers``, ``timm``, ...)
and user (everything else).

``source`` names the innermost user frame, or where there is none the innermost
library frame, so it is never empty when any frame is known;
``library_source`` always names the library frame separately.

Known model-library patterns name the model setting that avoids them
(``use_cache=False`` for a cache object in the outputs,
``attn_implementation="eager"`` for attention code that does not decompose),
with the exact ``--model-setting`` flag to add.
"""

from __future__ import annotations

import inspect
import linecache
import re
from dataclasses import dataclass
from typing import Any

from nodebisect.errors import BadInputError, ExportFailedError
from nodebisect.frames import INTERNAL, LIBRARY, USER, frame_kind, innermost

# Stages, in the order an export runs them.
CAPTURE = "capture (torch.export)"
DECOMPOSITION = "decomposition"
TRANSLATION = "translation to ONNX"
OPTIMIZER = "ONNX optimizer"
SERIALIZATION = "serialization"
TORCHSCRIPT = "torchscript export"

# Cause classes.
UNSUPPORTED_OUTPUT = "unsupported output type"
UNSUPPORTED_INPUT = "unsupported input type"
DATA_DEPENDENT = "data-dependent control flow"
UNSUPPORTED_OP = "unsupported op"
FAILING_OP = "failing op"
DECOMPOSITION_FAILURE = "decomposition failure"
DYNAMIC_SHAPES = "dynamic shape constraint"
UNSUPPORTED_PYTHON = "unsupported Python construct"
ARGUMENTS = "argument passing"
OTHER = "exporter error"

_STEP_RE = re.compile(r"step (\d)/3")
_TARGET_RE = re.compile(r"target=(?:torch\.ops\.)?([\w.]+)")
_TS_OP_RE = re.compile(r"operator '(aten|prim|onnx)::(\w+)'")
_NO_FUNCTION_RE = re.compile(r"No ONNX function found for <OpOverload\(op='([\w.]+)', overload='(\w+)'\)>")
_FRAME_RE = re.compile(r'File "([^"]+)", line (\d+)(?:, in (\S+))?\n(?:[ \t]+(\S[^\n]*))?')
_OUTPUT_TYPE_RE = re.compile(r"Found <class '([\w.]+)'> in output|unsupported type: (\w+)|output of unsupported type (\w+)")
_VIEW_RE = re.compile(r"Cannot view a tensor with shape|view size is not compatible with input tensor's size and stride")


@dataclass
class Frame:
    file: str
    line: int
    code: str = ""
    function: str = ""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _missing_package(error: ImportError) -> BadInputError:
    """The package the model's code imports while it is traced, absent here: the user's environment to fix (exit 2).

    monai's ``OptionalImportError`` (an ``ImportError``) and a plain ``ModuleNotFoundError`` alike: the
    exporter only ran the model's code, so "file at pytorch" would send the user to the wrong place.
    """
    name = getattr(error, "name", None) or (re.search(r"No module named '([\w.]+)'", str(error)) or [None, None])[1]
    package = (name or "").split(".")[0]
    what = f"the package {package!r}" if package else "a package"
    return BadInputError(
        f"the model's code needs {what}, which is not installed here ({type(error).__name__}: {_first_line(error)})",
        tip=f"pip install {package}, then run again" if package else "install what the model's code imports, then run again",
    )


def classify_export_error(
    exc: BaseException,
    *,
    exporter: str = "dynamo",
    opset: int | None = None,
    module: Any = None,
    program: Any = None,
) -> ExportFailedError:
    """The exporter's exception as a classified ``ExportFailedError`` (with ``details``).

    Args:
        exc: what ``torch.onnx.export`` raised.
        exporter: "dynamo" | "torchscript".
        opset: the opset asked for, for the message.
        module: the eager module, where one exists (names the forward an output came from).
        program: the captured ExportedProgram, where capture succeeded (its node
            stack traces name the source line of an op that failed later).
    """
    chain = _chain(exc)
    missing = next((e for e in chain if isinstance(e, ImportError)), None)
    if missing is not None:  # the model's own code cannot import a package: nothing for an exporter to fix
        raise _missing_package(missing) from exc
    text = "\n".join(f"{type(e).__name__}: {e}" for e in chain)
    root = _root(chain)
    root_msg = _first_line(root)
    stage = _stage(text, chain, exporter)
    target = _target(text, exporter)
    cause, remedy, settings = _cause(text, stage, target, exporter)
    frames = _frames(chain, text, program, target)
    user = innermost(frames, USER, lambda f: f.file)
    lib = innermost(frames, LIBRARY, lambda f: f.file)
    if cause in (UNSUPPORTED_OUTPUT, UNSUPPORTED_INPUT) and module is not None:
        # The output is built in the model's forward; the frames at hand are torch's flattening.
        lib = _forward_frame(module) or lib
    at = user or lib
    said = f"{type(root).__name__}: {_shorten(root_msg)}"
    message = _message(exporter, stage, target, cause, said, opset)
    tip = remedy
    if settings:
        tip = f"{remedy}; add {' '.join('--model-setting ' + s for s in settings)} to go on to the numeric comparison"
    tip += "; --debug shows the exporter's traceback"
    error = ExportFailedError(message, tip=tip, step=stage, target=target, source=at.where if at else "")
    error.__cause__ = exc  # the chain stays readable before ``raise ... from exc`` (export_repro reads it)
    error.details = {
        "stage": stage,
        "cause": cause,
        "code": at.code if at else "",
        "library_source": lib.where if lib else "",
        "library_code": lib.code if lib else "",
        "remedy": remedy,
        "settings": settings,
        "exporter": exporter,
        "said": said,
        "opset": opset,
    }
    return error


def _message(exporter: str, stage: str, target: str, cause: str, said: str, opset: int | None, for_onnx_file: bool = False) -> str:
    """The failure's one line: what failed, where, its cause class and the exporter's own words."""
    on = f" on {target}" if target else ""
    if exporter == "torchscript":
        what = "the TorchScript export of the model (its module scopes and values for the --onnx file)" if for_onnx_file else "TorchScript ONNX export"
        return f"{what} failed (opset {opset or '?'}){on}: {cause}. {said}"
    if for_onnx_file and stage in (CAPTURE, DECOMPOSITION):
        what = "torch.export of the model (the reference values for the --onnx file; the file itself was not exported here)"
    elif for_onnx_file:
        what = "nodebisect's own export of the model (the reference values for the --onnx file; the file itself was not exported here)"
    else:
        what = "ONNX export"
    return f"{what} failed in {stage}{on}: {cause}. {said}"


def as_reference_failure(error: ExportFailedError) -> ExportFailedError:
    """``error`` said as what it is with ``--onnx``: the user exported the file; the export nodebisect
    runs for the reference values (torch.export of the same model) is what failed.

    Without this the user read "ONNX export failed" about a file they had exported themselves.
    """
    d = getattr(error, "details", None)
    if not d or "said" not in d:
        return error
    error.message = _message(d["exporter"], d["stage"], error.target, d["cause"], d["said"], d.get("opset"), for_onnx_file=True)
    error.args = (error.message,)
    d["for_onnx_file"] = True
    return error


# -- reading the chain -----------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 20 and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


def _root(chain: list[BaseException]) -> BaseException:
    """The innermost exception, skipping the exporter's own wrappers where a better one is inside."""
    return chain[-1]


def _shorten(text: str, limit: int = 240) -> str:
    """``text`` cut at a word boundary near ``limit``, marked with an ellipsis."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + " …"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _stage(text: str, chain: list[BaseException], exporter: str) -> str:
    if exporter == "torchscript":
        return TORCHSCRIPT
    files = [tb.tb_frame.f_code.co_filename for e in chain for tb in _tbs(e)]
    if any("/onnxscript/optimizer" in f or "/onnxscript/rewriter" in f for f in files):
        return OPTIMIZER
    match = _STEP_RE.search(text)
    if match:
        return {"1": CAPTURE, "2": DECOMPOSITION, "3": TRANSLATION}.get(match.group(1), TRANSLATION)
    if any(("/onnx/" in f and "serial" in f) or "external_data" in f or f.endswith("onnx/__init__.py") for f in files):
        return SERIALIZATION
    if any("/torch/export/" in f or "/torch/_dynamo/" in f for f in files):
        return CAPTURE
    return TRANSLATION


def _tbs(exc: BaseException) -> list[Any]:
    out = []
    tb = exc.__traceback__
    while tb is not None:
        out.append(tb)
        tb = tb.tb_next
    return out


def _target(text: str, exporter: str) -> str:
    m = _TS_OP_RE.search(text) if exporter == "torchscript" else None
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    m = _NO_FUNCTION_RE.search(text)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    m = _TARGET_RE.search(text)
    if m:
        return m.group(1)
    m = _TS_OP_RE.search(text)
    return f"{m.group(1)}.{m.group(2)}" if m else ""


Cause = tuple[str, str, list[str]]


def _cause(text: str, stage: str, target: str, exporter: str) -> Cause:
    """(cause class, remedy, model settings that avoid it): known patterns first, then by op and stage."""
    return _pattern_cause(text, target, exporter) or _op_or_stage_cause(text, stage, target, exporter)


def _pattern_cause(text: str, target: str, exporter: str) -> Cause | None:
    """Patterns with a remedy of their own (outputs, arguments, control flow, shapes, attention)."""
    out = _OUTPUT_TYPE_RE.search(text)
    if out:
        type_name = next(g for g in out.groups() if g)
        short = type_name.rsplit(".", 1)[-1]
        if "Cache" in short:
            return (
                UNSUPPORTED_OUTPUT,
                f"the model returns a {short} (its key/value cache), which the exporter cannot flatten; "
                "the cache is only for generation: set use_cache=False (the prefill computation is the same)",
                ["use_cache=False"],
            )
        return (
            UNSUPPORTED_OUTPUT,
            f"the model returns a {short}, which the exporter cannot flatten: return tensors (or tuples/dicts of tensors), "
            f"or register {short} with torch.utils._pytree.register_dataclass",
            [],
        )
    if "multiple values for argument" in text:
        arg = re.search(r"multiple values for argument '(\w+)'", text)
        name = arg.group(1) if arg else "an argument"
        settings = ["use_cache=False"] if name == "use_cache" else []
        return (
            ARGUMENTS,
            f"the exporter passed {name} twice (inputs given as keywords are also appended positionally by the TorchScript exporter): "
            "pass the inputs positionally in forward's order, or use --exporter dynamo",
            settings,
        )
    if re.search(r"data-dependent|GuardOnDataDependentSymNode|DataDependentOutputException|UserError: .*data dependent", text, re.I):
        return (
            DATA_DEPENDENT,
            "the model branches (if / while / int() / .item()) on a tensor's value at the source line named: "
            "rewrite it without Python control flow on tensor values (torch.where, torch.cond, or torch._check for a known bound)",
            [],
        )
    if re.search(r"Constraints violated|ConstraintViolation|specialized it to be a constant|Not all values of \w+ .* are valid", text):
        return (
            DYNAMIC_SHAPES,
            "a dimension marked dynamic is fixed by the model's code (or a guard contradicts it): "
            "drop --dynamic, or keep that dimension static",
            [],
        )
    if exporter == "torchscript" and re.search(r"Only tuples, lists and Variables are supported|unsupported type", text):
        return (UNSUPPORTED_INPUT, "the TorchScript exporter traces tensors, tuples and lists only: pass tensors, or use --exporter dynamo", [])
    if _VIEW_RE.search(text) or "scaled_dot_product" in target or "scaled_dot_product" in text:
        return (
            DECOMPOSITION_FAILURE,
            f"{target or 'an attention op'} fails on the strides the exporter's attention decomposition produces "
            "(a view of a non-contiguous tensor); the model's eager attention exports: set attn_implementation=eager",
            ["attn_implementation=eager"],
        )
    return None


def _op_or_stage_cause(text: str, stage: str, target: str, exporter: str) -> Cause:
    """An op the exporter cannot convert, else what the failing stage says."""
    if "No ONNX function found" in text or _TS_OP_RE.search(text) and "not supported" in text:
        where = target or "the op"
        if exporter == "torchscript":
            return (UNSUPPORTED_OP, _symbolic_remedy(where), [])
        return (
            UNSUPPORTED_OP,
            f"the exporter has no ONNX translation for {where}: rewrite that call with supported ops, "
            "or register a translation (torch.onnx.export(..., custom_translation_table={...}))",
            [],
        )
    if re.search(r"torch\._dynamo\.exc\.Unsupported|Unsupported: ", text):
        return (UNSUPPORTED_PYTHON, "torch.export cannot trace a Python construct at the source line named: rewrite it with tensor ops", [])
    if stage == DECOMPOSITION:
        return (DECOMPOSITION_FAILURE, f"decomposing {target or 'an op'} failed: rewrite that call, or try another --opset", [])
    if stage == TRANSLATION and target:
        return (FAILING_OP, f"translating {target} to ONNX raised: rewrite that call or try another --opset (an exporter bug worth reporting)", [])
    if stage == OPTIMIZER:
        return (OTHER, "the exporter's ONNX optimizer failed: export with torch.onnx.export(..., optimize=False) to skip it", [])
    if stage == SERIALIZATION:
        return (OTHER, "writing the ONNX model failed: for models over 2 GB export with external data", [])
    if stage == TORCHSCRIPT and "symbolic" in text.lower():
        return (FAILING_OP, "a TorchScript symbolic function failed: try another --opset, or --exporter dynamo", [])
    if stage == CAPTURE:
        return (OTHER, "torch.export could not capture the model at the source line named: make that code traceable", [])
    return (OTHER, "see the exporter's message", [])


def _symbolic_remedy(op: str) -> str:
    """For the TorchScript exporter: the first opset with a symbolic for ``op``, or none at all."""
    first = None
    try:
        from torch.onnx._internal.torchscript_exporter import registration

        name = op.replace(".", "::", 1)
        first = next((v for v in range(7, 27) if registration.registry.is_registered_op(name, v)), None)
    except Exception:  # noqa: BLE001 - torch internals; the generic remedy stands
        return f"the TorchScript exporter has no symbolic for {op} at this opset: try a newer --opset, or --exporter dynamo"
    if first is None:
        return (
            f"the TorchScript exporter has no symbolic for {op} at any opset: use --exporter dynamo, "
            "or register one with torch.onnx.register_custom_op_symbolic"
        )
    return f"the TorchScript exporter converts {op} from opset {first}: pass --opset {first} (or newer), or use --exporter dynamo"


# -- frames ----------------------------------------------------------------------------


def _frames(chain: list[BaseException], text: str, program: Any, target: str) -> list[Frame]:
    """Frames outermost first: the model's "Original traceback" where quoted, else the real traceback,
    else the failing FX node's stack trace."""
    quoted = _quoted_frames(text)
    if quoted:
        return quoted
    real: list[Frame] = []
    for e in reversed(chain):  # the innermost exception's frames are the deepest
        for tb in _tbs(e):
            code = tb.tb_frame.f_code
            real.append(Frame(code.co_filename, tb.tb_lineno, linecache.getline(code.co_filename, tb.tb_lineno).strip(), code.co_name))
    if any(frame_kind(f.file) != INTERNAL for f in real):
        # Only frames under the exporter's own call count (not nodebisect's caller).
        return [f for f in real if frame_kind(f.file) != INTERNAL]
    return _node_frames(program, target, text)


def _quoted_frames(text: str) -> list[Frame]:
    _, sep, after = text.partition("Original traceback:")
    if not sep:
        return []
    block = after.split("\n\n", 1)[0] if "Use tlparse" not in after else after.split("Use tlparse", 1)[0]
    return [Frame(m.group(1), int(m.group(2)), (m.group(4) or "").strip(), m.group(3) or "") for m in _FRAME_RE.finditer(block)]


def _node_frames(program: Any, target: str, text: str) -> list[Frame]:
    """The stack trace torch.export recorded on the failing node (by name, else by op)."""
    if program is None:
        return []
    name = re.search(r"(?:translating node|While executing) %(\w+)", text)
    nodes = list(program.graph.nodes)
    node = next((n for n in nodes if name and n.name == name.group(1)), None)
    if node is None and target:
        node = next((n for n in nodes if n.op == "call_function" and str(n.target).replace("torch.ops.", "").endswith(target)), None)
    trace = (node.meta.get("stack_trace") or "") if node is not None else ""
    return [Frame(m.group(1), int(m.group(2)), (m.group(4) or "").strip(), m.group(3) or "") for m in _FRAME_RE.finditer(trace)]


def _forward_frame(module: Any) -> Frame | None:
    """The ``forward`` of the innermost model-library module (an output type comes from there)."""
    candidates = [module] + [m for _n, m in getattr(module, "named_modules", lambda: [])()]
    for mod in candidates:
        forward = getattr(type(mod), "forward", None)
        try:
            forward = inspect.unwrap(forward)  # decorated forwards (transformers' can_return_tuple)
            file = inspect.getsourcefile(forward) or ""
            lines, start = inspect.getsourcelines(forward)
        except (OSError, TypeError, ValueError):
            continue
        if frame_kind(file) == LIBRARY and hasattr(mod, "config"):
            return Frame(file, start, next((ln.strip() for ln in lines if ln.strip().startswith("def ")), ""), "forward")
    return None
