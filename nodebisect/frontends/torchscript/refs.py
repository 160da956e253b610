"""Function-level reference values on the TorchScript path, from the graph the exporter itself translates.

Module hooks (``scopes``) give a reference only where an ``nn.Module`` returns,
so a plain function call between modules (``F.interpolate``, a functional
softmax, ``1 / x``, ``F.avg_pool2d(..., divisor_override=3)``) was judged at the
next module's output. This module gives every aten call of the traced graph its
own reference value and ties it to the exact ONNX value its lowering produced.

Why this route. Matching afterwards (a ``torch.export`` of the same module,
its FX nodes paired with the TorchScript ONNX nodes by module scope, op type
and order) guesses: the two tracers record different op sets (``1 / x`` is
``reciprocal`` + ``mul`` in one, ``div`` in the other; ``linear`` may or may
not decompose), and torch.export fails on models the TorchScript tracer takes.
The exporter itself knows: it translates one TorchScript node at a time, in
Python (``_run_symbolic_function``), so it is listened to there.

1. Values. Just before ``_jit_pass_erase_number_types`` (the last pass after
   which the graph is still a runnable TorchScript graph), the graph the
   exporter is about to translate is evaluated node by node on the export's own
   inputs and parameters (``torchscript_eval.evaluate``); each aten output is
   copied when it is produced, so later in-place ops cannot change it. Its
   node outputs are the very ``Value`` objects the translation then reads (same
   ``unique()``). The raw trace would not do: earlier passes replace nodes
   (``canonicalize_graph_fuser_ops`` rebuilds every ``x + 1``), and a replaced
   node's value could not be tied to what the exporter translates.
2. Identity. Around each symbolic call, the ONNX nodes it created get a tag
   attribute naming the call, and the node producing each returned value gets
   a tag naming the aten output it carries. The tags travel through the
   exporter's later passes and into the file, where they are read and removed.
   Tagging changes nothing else: the stripped file is byte-identical to an
   untagged export (asserted in the tests).
3. Trust. A value is used only where the mapping is unambiguous and still true
   after the exporter's later rewrites: a tagged ONNX value must be read only by
   lowerings of aten calls that read that aten output (a node the exporter
   rewrote in place, like a Conv with a BatchNorm folded into it, fails this:
   its value is the BatchNorm's now), its dtype and shape must agree, and the
   evaluated graph must agree with the eager module's hooked outputs wherever
   both give a value (else the exporter's pre-translation passes already
   changed numerics, or eager took another path than the trace, and no
   function-level value is used at all).
4. A user's ONNX file (``--onnx``): the module is exported once more, tagged,
   at the file's opset, and a value is kept where the file has a node of the
   same name wired the same way (``transfer``).

Anything unexpected (an op the evaluator cannot run, a random op, a torch whose
exporter internals moved) turns function-level values off with a note; the
module-level mapping then works exactly as before.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import onnx
import torch

from nodebisect.frames import source_frame
from nodebisect.frontends.capture import Activations
from nodebisect.frontends.torchscript.evaluate import Uid, Unsupported, evaluate

TAG_CALL = "nodebisect_call"  # on every ONNX node a symbolic call created: "<call index>"
TAG_OUT = "nodebisect_out"  # on the node producing a returned value: "<output pos>:<call>:<aten output>;..."
# Values the eager module and the evaluated graph both give must agree this closely
# (the graph passes may reorder float arithmetic, e.g. mm + add -> addmm).
AGREE_RTOL = 1e-4
AGREE_ATOL = 1e-5
_USER_FRAME = re.compile(r"^(.*?)\((\d+)\): (\S+)$")


@dataclass
class TracedCall:
    """One node of the graph the exporter translated, as its symbolic function saw it."""

    index: int
    kind: str  # "aten::avg_pool2d"
    name: str  # FX-style name of the call: "avg_pool2d", "avg_pool2d_1"
    scope: str  # the TorchScript scope name
    source_range: str  # the traced Python stack, innermost frame first
    outputs: list[int]  # unique ids of the aten outputs
    reads: set[tuple[int, int]] = field(default_factory=set)  # (call, aten output) its lowering reads


@dataclass
class FunctionRefs:
    """The outcome of one tagged export: calls, their values, and which ONNX value carries which.

    Attributes:
        carriers: ONNX value name -> (call index, aten output index), only trusted ones.
        members: ONNX node name -> index of the aten call whose lowering created it.
        values: unique id of an aten output -> its value; dtypes alike (torch dtype names).
        dropped: ONNX value name -> why it carries no function-level value.
        error: why function-level values are off ("" when on).
        arguments: unique id of a call's first aten output -> the call's schema and
            arguments as it ran (``evaluate.Call``), to run it again alone (``calls``).
        inputs: unique id -> the traced graph's inputs (the model's tensors, its
            parameters), held by reference, for calls that read them.
    """

    calls: list[TracedCall] = field(default_factory=list)
    carriers: dict[str, tuple[int, int]] = field(default_factory=dict)
    members: dict[str, int] = field(default_factory=dict)
    values: dict[int, np.ndarray] = field(default_factory=dict)
    dtypes: dict[int, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    error: str = ""
    arguments: dict[int, Any] = field(default_factory=dict)
    inputs: dict[int, Any] = field(default_factory=dict)

    def value_of(self, onnx_value: str) -> tuple[np.ndarray, str] | None:
        """The reference array and torch dtype name an ONNX value carries, or None."""
        call, out = self.carriers.get(onnx_value, (-1, -1))
        if call < 0:
            return None
        uid = self.calls[call].outputs[out]
        return (self.values[uid], self.dtypes[uid]) if uid in self.values else None


# -- recording during the export -----------------------------------------------------------


class Recorder:
    """Patches the TorchScript exporter for one export; ``read(model)`` then strips the tags."""

    def __init__(self, budget: int | None = None) -> None:
        """``budget``: bytes of evaluated values to hold during the export (None: no bound)."""
        self.refs = FunctionRefs()
        self.budget = budget
        self._inputs: list[tuple[int, Any]] = []  # graph input unique id -> tensor
        self._tokens: dict[int, tuple[int, int]] = {}  # unique id of a new (ONNX) value -> (call, aten output)
        self._evaluated = False
        self._returns: list[int] = []  # unique ids of the values the translated graph returns
        self._names: dict[str, int] = {}
        self.skipped: list[str] = []  # kinds of the nodes the evaluator left without a value

    def fail(self, why: str) -> None:
        if not self.refs.error:
            self.refs.error = why

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        """The exporter's three Python entry points wrapped; restored on exit, whatever happens."""
        try:
            from torch.onnx._internal.torchscript_exporter import utils as ts_utils
        except ImportError:
            self.fail("this torch has no TorchScript exporter internals to listen to")
            yield
            return
        names = ("_create_jit_graph", "_run_symbolic_function")
        if not all(hasattr(ts_utils, n) for n in names) or not hasattr(torch._C, "_jit_pass_erase_number_types"):
            self.fail("this torch's TorchScript exporter has moved its internals")
            yield
            return
        saved = {n: getattr(ts_utils, n) for n in names}
        erase = torch._C._jit_pass_erase_number_types
        ts_utils._create_jit_graph = self._wrap_create(saved["_create_jit_graph"])
        ts_utils._run_symbolic_function = self._wrap_symbolic(saved["_run_symbolic_function"])
        torch._C._jit_pass_erase_number_types = self._wrap_erase(erase)
        try:
            yield
        finally:
            for n, f in saved.items():
                setattr(ts_utils, n, f)
            torch._C._jit_pass_erase_number_types = erase

    def _wrap_create(self, original: Any) -> Any:
        def create_jit_graph(model: Any, args: Any) -> Any:
            result = original(model, args)
            try:
                graph, params = result[0], list(result[1])
                flat = list(torch.jit._flatten(tuple(args) if isinstance(args, (list, tuple)) else (args,))[0])
                inputs = list(graph.inputs())
                if len(inputs) != len(flat) + len(params):
                    self.fail(f"the traced graph takes {len(inputs)} inputs, the export passed {len(flat) + len(params)}")
                else:
                    self._inputs = [(v.unique(), t) for v, t in zip(inputs, flat + params)]
            except Exception as exc:  # noqa: BLE001 - listening must never break the export
                self.fail(f"reading the traced graph's inputs failed: {exc}")
            return result

        return create_jit_graph

    def _wrap_erase(self, original: Any) -> Any:
        def erase_number_types(graph: Any) -> Any:
            if not self._evaluated and not self.refs.error:
                self._evaluated = True
                self._returns = [v.unique() for v in graph.outputs()]
                try:
                    evaluate(graph, self._inputs, self.refs.values, self.refs.dtypes, self.skipped, self.budget, self.refs.arguments)
                except Unsupported as exc:
                    self.fail(str(exc))
                except Exception as exc:  # noqa: BLE001 - the export goes on without function-level values
                    self.fail(f"evaluating the traced graph failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            return original(graph)

        return erase_number_types

    def _wrap_symbolic(self, original: Any) -> Any:
        def run_symbolic_function(graph: Any, block: Any, node: Any, inputs: Any, env: Any, values_in_env: Any, new_nodes: Any, *rest: Any, **kw: Any) -> Any:
            before = len(new_nodes)
            out = original(graph, block, node, inputs, env, values_in_env, new_nodes, *rest, **kw)
            if not self.refs.error:
                try:
                    self._on_symbolic(node, inputs, out, list(new_nodes[before:]))
                except Exception as exc:  # noqa: BLE001
                    self.fail(f"tagging the translation failed: {type(exc).__name__}: {exc}")
            return out

        return run_symbolic_function

    def _on_symbolic(self, node: Any, inputs: Any, out: Any, created: list[Any]) -> None:
        """Tag the ONNX nodes one symbolic call created, and the values it returned."""
        kind = node.kind()
        base = kind.split("::", 1)[-1].rstrip("_") or "op"
        k = self._names.get(base, 0)
        self._names[base] = k + 1
        call = TracedCall(
            index=len(self.refs.calls),
            kind=kind,
            name=base if k == 0 else f"{base}_{k}",
            scope=node.scopeName(),
            source_range=node.sourceRange(),
            outputs=[o.unique() for o in node.outputs()],
        )
        call.reads = {self._tokens[v.unique()] for v in _values(inputs) if v.unique() in self._tokens}
        self.refs.calls.append(call)
        created = [n for n in created if n.kind().startswith("onnx::")]  # a prim::Constant None must stay bare
        made = {o.unique() for n in created for o in n.outputs()}
        for n in created:
            if not n.hasAttribute(TAG_CALL):
                n.s_(TAG_CALL, str(call.index))
        returned = [out] if isinstance(out, torch._C.Value) else list(out) if isinstance(out, (list, tuple)) else []
        for j, new in enumerate(returned[: len(call.outputs)]):
            if not isinstance(new, torch._C.Value) or new.unique() in self._tokens or new.unique() not in made:
                continue  # nothing returned, an alias of a value another call made, or an input passed through
            self._tokens[new.unique()] = (call.index, j)
            producer = new.node()
            pos = [o.unique() for o in producer.outputs()].index(new.unique())
            tag = f"{pos}:{call.index}:{j}"
            producer.s_(TAG_OUT, f"{producer.s(TAG_OUT)};{tag}" if producer.hasAttribute(TAG_OUT) else tag)

    # -- after the export ----------------------------------------------------------------------

    def read(self, model: onnx.ModelProto) -> FunctionRefs:
        """Strip the tags from ``model`` (in place) and decide which tagged values to trust."""
        refs = self.refs
        outs: dict[str, tuple[int, int]] = {}
        for name, node in _top_nodes(model):
            call = _attr(node, TAG_CALL)
            if call is not None and call.isdigit() and int(call) < len(refs.calls):
                refs.members[name] = int(call)
            for tag in (_attr(node, TAG_OUT) or "").split(";"):
                parts = tag.split(":")
                if len(parts) == 3 and all(p.isdigit() for p in parts) and int(parts[0]) < len(node.output):
                    outs[node.output[int(parts[0])]] = (int(parts[1]), int(parts[2]))
        strip_tags(model.graph)
        if refs.error or not self._evaluated:
            refs.error = refs.error or "the exporter never reached the graph evaluation"
            refs.carriers, refs.members = {}, {}
            return refs
        for i, out in enumerate(model.graph.output):
            token = outs.get(out.name)
            if token is not None and (i >= len(self._returns) or refs.calls[token[0]].outputs[token[1]] != self._returns[i]):
                refs.dropped[out.name] = "a graph output that the graph returned another value for (a later exporter pass rewired it)"
        refs.carriers = _trusted(model, outs, refs)
        # A node whose value was rewritten (a Conv with a BatchNorm folded in) is no longer that call's lowering.
        rewritten = {name for name, node in _top_nodes(model) if any(o in refs.dropped for o in node.output)}
        refs.members = {n: c for n, c in refs.members.items() if n not in rewritten}
        _keep_used(refs, self._inputs)
        return refs


def _keep_used(refs: FunctionRefs, graph_inputs: list[tuple[int, Any]]) -> None:
    """Keep the values something uses (in place): the carriers' (compared), and the tensors read by calls lowered
    to several ONNX nodes (to run such a call again alone, ``calls``); the graph's inputs are held by reference."""
    kept = {refs.calls[c].outputs[o] for c, o in refs.carriers.values()}
    size = Counter(refs.members.values())
    for call in refs.calls:
        recorded = refs.arguments.get(call.outputs[0]) if size[call.index] > 1 and call.outputs else None
        for arg in recorded[1] if recorded is not None else []:
            kept.update(a for a in (arg if isinstance(arg, (list, tuple)) else [arg]) if isinstance(a, Uid))
    refs.values = {u: v for u, v in refs.values.items() if u in kept}  # the rest is never used
    refs.inputs = dict(graph_inputs)


def _values(inputs: Any) -> list[Any]:
    return [v for v in (inputs or []) if isinstance(v, torch._C.Value)]


def _top_nodes(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.NodeProto]]:
    from nodebisect.onnxgraph import node_keys

    return node_keys(model)


def _attr(node: onnx.NodeProto, name: str) -> str | None:
    for a in node.attribute:
        if a.name == name:
            return a.s.decode("utf-8", "replace")
    return None


def strip_tags(graph: onnx.GraphProto) -> None:
    """Remove the recorder's attributes from every node, subgraphs included."""
    for node in graph.node:
        kept = [a for a in node.attribute if a.name not in (TAG_CALL, TAG_OUT)]
        if len(kept) != len(node.attribute):
            del node.attribute[:]
            node.attribute.extend(kept)
        for a in node.attribute:
            for g in list(a.graphs) + ([a.g] if a.HasField("g") else []):
                strip_tags(g)


def _trusted(model: onnx.ModelProto, outs: dict[str, tuple[int, int]], refs: FunctionRefs) -> dict[str, tuple[int, int]]:
    """Tagged values whose every tagged reader is a lowering that reads that aten output."""
    readers_ok: dict[str, bool] = {}
    for name, node in _top_nodes(model):
        call = refs.members.get(name)
        if call is None:
            continue  # a node a later pass made: it says nothing about what it reads
        for x in node.input:
            token = outs.get(x)
            if token is None or token[0] == call:
                continue
            if token not in refs.calls[call].reads:
                readers_ok[x] = False
                refs.dropped[x] = f"read by {name}, whose aten call did not read it (a later exporter pass rewired it)"
    graph_inputs = {i.name for i in model.graph.input}
    trusted: dict[str, tuple[int, int]] = {}
    for value, (call, out) in outs.items():
        if value not in refs.dropped and readers_ok.get(value, True) and value not in graph_inputs and call < len(refs.calls) and out < len(refs.calls[call].outputs):
            if refs.calls[call].outputs[out] in refs.values:
                trusted[value] = (call, out)
    return trusted


# -- using the values ------------------------------------------------------------------------


def transfer(refs: FunctionRefs, ours: onnx.ModelProto, theirs: onnx.ModelProto) -> FunctionRefs:
    """The same refs for a user's ONNX file, by node name, where the file's node is wired as ours.

    A node keeps its function-level value when the file has a node of the same
    name with the same outputs and the same inputs (an initializer may be
    renamed, an op type or attribute may differ: that is the fault being looked
    for). Anything else in the file (another opset, another torch) is left to
    the module-level mapping.
    """
    inits_ours = {t.name for t in ours.graph.initializer}
    inits_theirs = {t.name for t in theirs.graph.initializer}
    ours_by_name = dict(_top_nodes(ours))
    same: set[str] = set()
    for name, node in _top_nodes(theirs):
        mine = ours_by_name.get(name)
        if mine is None or list(mine.output) != list(node.output) or len(mine.input) != len(node.input):
            continue
        if all(a == b or (a in inits_ours and b in inits_theirs) for a, b in zip(mine.input, node.input)):
            same.add(name)
    producer = {o: name for name, node in _top_nodes(theirs) for o in node.output}
    kept = FunctionRefs(
        calls=refs.calls, values=refs.values, dtypes=refs.dtypes, error=refs.error, dropped=dict(refs.dropped), arguments=refs.arguments, inputs=refs.inputs
    )
    kept.members = {n: c for n, c in refs.members.items() if n in same}
    for value, token in refs.carriers.items():
        if producer.get(value) in same:
            kept.carriers[value] = token
        else:
            kept.dropped[value] = "the given ONNX file's node is wired differently from the export"
    return kept


def agree(expected: np.ndarray, got: np.ndarray) -> bool:
    """The eager value and the evaluated graph's value are the same computation (NaN where NaN)."""
    if expected.shape != got.shape:
        return False
    if expected.dtype.kind not in "fc" or got.dtype.kind not in "fc":
        return bool(np.array_equal(expected, got))
    a, b = expected.astype(np.float64), got.astype(np.float64)
    scale = float(np.nanmax(np.abs(a[np.isfinite(a)]))) if np.isfinite(a).any() else 1.0
    return bool(np.allclose(b, a, rtol=AGREE_RTOL, atol=AGREE_ATOL * max(1.0, scale), equal_nan=True))


def add_function_values(
    acts: Activations, refs: FunctionRefs, fits: Any, notes: list[str]
) -> int:
    """Add the trusted function-level values to ``acts`` where no module-level value is; return how many.

    ``fits(value, array)`` says whether the ONNX value's inferred dtype and shape
    fit (True / False / None when unknown; only True is used). If a value the
    eager hooks give disagrees with the evaluated graph's, nothing is added.
    """
    if refs.error:
        notes.append(f"function-level reference values are off ({refs.error}): only module outputs are compared")
        return 0
    for value in refs.carriers:
        if value in acts.values:
            got = refs.value_of(value)
            if got is not None and not agree(np.asarray(acts.values[value]), got[0]):
                notes.append(
                    f"the graph the TorchScript exporter translates already differs from the eager module at {value}: "
                    "function-level reference values are off, only module outputs are compared"
                )
                return 0
    added = 0
    for value in refs.carriers:
        got = refs.value_of(value)
        if value in acts.values or got is None or fits(value, got[0]) is not True:
            continue
        acts.values[value] = got[0]
        acts.dtypes[value] = got[1]
        acts.order.append(value)
        added += 1
    return added


def _model_frames(source_range: str) -> str:
    """The traced source range without the tracer's and the exporter's own frames below the model."""
    lines = source_range.splitlines()
    cut = next((i for i, line in enumerate(lines) if "/torch/jit/_trace.py(" in line), len(lines))
    return "\n".join(lines[:cut])


def source_range_frame(source_range: str) -> tuple[str, str]:
    """("file.py:line", code) of the source frame of a traced source range (``frames.source_frame``,
    the rule of the dynamo path: the user's innermost line, else the model library's, never nodebisect's)."""
    innermost_first = [m.groups() for m in (_USER_FRAME.match(line.strip()) for line in source_range.splitlines()) if m]
    pick = source_frame(innermost_first[::-1], lambda frame: frame[0])
    if pick is None:
        return "", ""
    file, line, _func = pick
    try:
        import linecache

        code = linecache.getline(file, int(line)).strip()
    except (OSError, ValueError):
        code = ""
    return f"{file}:{line}", code


def name_calls(refs: dict[str, Any], functions: FunctionRefs) -> None:
    """Name the traced aten call in the FrameworkRef of every ONNX node its lowering made (in place).

    ``fx_node`` becomes the call's FX-style name (``avg_pool2d_1``), so the nodes
    of one call form one segment, as on the dynamo path; ``target`` its aten op,
    ``source``/``code`` the user's line that made the call, ``stack_trace`` the
    traced frames. Nodes no call made (constants, nodes of later passes) keep
    the module-level ref, whose ``fx_node`` is the module path. (Which kind of
    reference judged a value, a module output or a call's own value, has no
    field in the node record; ``stats.mapping.function_values`` counts the
    latter.)
    """
    for name, index in functions.members.items():
        call = functions.calls[index]
        if name not in refs or not call.kind.startswith("aten::"):
            continue
        ref = refs[name]
        ref.target = "aten." + call.kind.split("::", 1)[1]
        ref.fx_node = call.name
        ref.stack_trace = _model_frames(call.source_range)
        source, code = source_range_frame(call.source_range)
        if source:
            ref.source, ref.code = source, code
