"""Evaluate the graph the TorchScript exporter is about to translate, node by node (``refs``).

Each aten output is copied to numpy the moment it is made, so a later in-place
op cannot change it, and is keyed by the ``unique()`` id of its ``Value``: the
id the exporter's symbolic functions see when they translate that node.

The graph at that point has been through the exporter's own TorchScript passes
(constant propagation, canonicalization, in-place removal, preprocessing), so
not every node is something eager PyTorch can call. Only what is safe runs (see
``run_node``); any other node leaves its outputs, and all computed from them,
without a value. A node that would write into its inputs stops the whole
evaluation instead: skipping it would leave stale values behind, and stale
values are false alarms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nodebisect.frontends.capture import to_numpy

_SKIP_KINDS = ("prim::Constant", "prim::ListConstruct", "prim::TupleConstruct")  # no value of their own to keep
_PLUMBING = _SKIP_KINDS + ("prim::ListUnpack", "prim::TupleUnpack", "prim::NumToTensor", "prim::ConstantChunk")
# Constant tensors up to this many elements are kept as a call's arguments (a scalar, a shape);
# a call reading a larger one (a weight the exporter's passes folded in) is not run again alone.
SMALL_CONSTANT = 4096


class Uid(int):
    """A tensor argument of a call, by the ``unique()`` id of its value (its array is kept beside, if at all)."""


class Call(tuple):
    """(schema, arguments) of one aten node as it ran: ``Uid`` for tensors, lists of them, plain data as it was."""


class Unsupported(Exception):
    """The traced graph holds something the evaluator will not run (function-level values stay off)."""


def evaluate(
    graph: Any,
    inputs: list[tuple[int, Any]],
    values: dict[int, np.ndarray],
    dtypes: dict[int, str],
    skipped: list[str],
    budget: int | None = None,
    arguments: dict[int, Call] | None = None,
) -> None:
    """Run the graph about to be translated, node by node, copying each aten output as it is made.

    A node the evaluator cannot run (an op whose traced arguments the
    exporter's passes left in a form eager cannot call, control flow, a
    random draw) leaves its outputs, and everything computed from them,
    without a value. Only a node that would write into its inputs stops the
    evaluation: skipping it would leave stale values behind. Past ``budget``
    bytes of kept values, later values are not kept (those calls then have no
    function-level value; the module outputs still do). ``arguments`` receives
    each aten node's schema and arguments, keyed by its first output's id, so
    one call can be run again alone (``calls``); the exporter's next pass
    replaces number constants by new values, so they are read here.
    """
    held = 0
    env: dict[int, Any] = dict(inputs)
    if len(env) != len(list(graph.inputs())) or any(v.unique() not in env for v in graph.inputs()):
        raise Unsupported("the graph the exporter translates takes other inputs than the traced graph")
    with torch.no_grad():
        for node in graph.nodes():
            outs = list(node.outputs())
            try:
                if any(v.unique() not in env for v in node.inputs()):
                    raise Unsupported("an input has no value")
                if _random(node, env):
                    raise Unsupported(f"{node.kind()} draws random numbers")
                results = run_node(node, env)
            except Exception as exc:  # noqa: BLE001 - the node's outputs stay without a value
                if _writes(node):
                    raise Unsupported(f"{node.kind()} writes into its inputs and cannot be run here ({exc})") from exc
                skipped.append(f"{node.kind()}: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}")
                continue
            if arguments is not None and outs and node.kind().startswith("aten::"):
                call = _arguments(node, env)
                if call is not None:
                    arguments[outs[0].unique()] = call
            for o, r in zip(outs, results):
                env[o.unique()] = r
                keep = isinstance(r, torch.Tensor) and node.kind() not in _SKIP_KINDS and not r.is_nested and r.layout == torch.strided
                if keep and (budget is None or held + r.numel() * r.element_size() <= budget):
                    values[o.unique()] = to_numpy(r)
                    held += values[o.unique()].nbytes
                    dtypes[o.unique()] = str(r.dtype).replace("torch.", "")


def _arguments(node: Any, env: dict[int, Any]) -> Call | None:
    """The node's schema and arguments as data (None when one cannot be kept: a large constant, an object)."""
    args: list[Any] = []
    for v in node.inputs():
        value = env[v.unique()]
        producer = v.node()
        if isinstance(value, torch.Tensor):
            if producer.kind() != "prim::Constant":
                args.append(Uid(v.unique()))
            elif value.layout == torch.strided and value.numel() <= SMALL_CONSTANT:
                args.append(value.detach().clone())
            else:
                return None
        elif isinstance(value, (list, tuple)) and any(isinstance(x, torch.Tensor) for x in value):
            if producer.kind() not in ("prim::ListConstruct", "prim::TupleConstruct"):
                return None
            items = [Uid(x.unique()) if isinstance(env[x.unique()], torch.Tensor) else env[x.unique()] for x in producer.inputs()]
            args.append(items if isinstance(value, list) else tuple(items))
        elif _plain(value):
            args.append(value)
        else:
            return None
    return Call((node.schema(), args))


def _plain(value: Any) -> bool:
    """Data that rebuilds an argument as it was: numbers, strings, None, torch's enums, lists of them."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, (torch.dtype, torch.device, torch.layout, torch.memory_format))


def _random(node: Any, env: dict[int, Any]) -> bool:
    """Does the node draw random numbers on these arguments?

    Dropout, RNNs and attention count as deterministic when their own
    arguments say so: ``train`` False, or a ``dropout_p`` of 0.
    """
    if not node.isNondeterministic():
        return False
    try:
        parsed = torch._C.parse_schema(node.schema())
    except RuntimeError:
        return True
    given = {spec.name: env.get(v.unique()) for spec, v in zip(parsed.arguments, node.inputs())}
    return not (given.get("train", True) is False or given.get("dropout_p", 1.0) == 0.0)


def _writes(node: Any) -> bool:
    """Would the node mutate one of its inputs (an in-place or out= op)? Unknown schemas count as writing."""
    kind = node.kind()
    if kind in _PLUMBING:
        return False
    blocks = list(node.blocks())
    if blocks:  # control flow: skipped whole, unless a node inside writes
        return any(_writes(inner) for b in blocks for inner in b.nodes())
    try:
        return bool(torch._C.parse_schema(node.schema()).is_mutable)
    except RuntimeError:
        return True


def run_node(node: Any, env: dict[int, Any]) -> list[Any]:
    """The node's outputs, computed from ``env`` (values by unique id).

    Only what is known to be safe to call runs: aten ops through their exact
    schema (typed argument checks, no attributes beyond ``_outputs``, which the
    exporter's preprocessing adds to a split it unpacked), list and tuple
    plumbing, ``prim::NumToTensor`` and ``prim::ConstantChunk``. Anything else is ``Unsupported``.
    """
    kind = node.kind()
    if list(node.blocks()):
        raise Unsupported(f"the traced graph holds control flow ({kind})")
    args = [env[v.unique()] for v in node.inputs()]
    n_out = node.outputsSize()
    if kind == "prim::Constant":
        return [node.output().toIValue()]
    if kind in ("prim::ListConstruct", "prim::TupleConstruct"):
        return [list(args) if kind == "prim::ListConstruct" else tuple(args)]
    if kind in ("prim::ListUnpack", "prim::TupleUnpack"):
        return _split_outputs(list(args[0]), n_out, kind)
    if kind == "prim::ConstantChunk":
        return _split_outputs(list(torch.chunk(args[0], node.i("chunks"), node.i("dim"))), n_out, kind)
    if kind == "prim::NumToTensor":
        return [torch.ops.prim.NumToTensor(args[0])]
    if not kind.startswith("aten::") or [a for a in node.attributeNames() if a != "_outputs"]:
        raise Unsupported(f"the evaluator does not run {kind}")
    fn, pos, kw = aten_overload(node.schema(), args)
    result = fn(*pos, **kw)
    if n_out == 1 and not node.hasAttribute("_outputs"):
        return [result]
    return _split_outputs(list(result) if isinstance(result, (list, tuple)) else [result], n_out, kind)


def aten_overload(schema: str, args: list[Any]) -> tuple[Any, list[Any], dict[str, Any]]:
    """The aten overload a node's ``schema`` names, and ``args`` split as it takes them (positional, keyword-only).

    Raises:
        Unsupported: the schema has varargs or another number of arguments.
    """
    parsed = torch._C.parse_schema(schema)
    if "..." in schema or len(parsed.arguments) != len(args):
        raise Unsupported(f"{parsed.name} does not take its schema's arguments here")
    fn = getattr(getattr(torch.ops.aten, parsed.name.split("::", 1)[1]), parsed.overload_name or "default")
    pos = [v for spec, v in zip(parsed.arguments, args) if not spec.kwarg_only]
    kw = {spec.name: v for spec, v in zip(parsed.arguments, args) if spec.kwarg_only}
    return fn, pos, kw


def _split_outputs(results: list[Any], n_out: int, kind: str) -> list[Any]:
    if len(results) != n_out:
        raise Unsupported(f"{kind} gave {len(results)} values, the graph expects {n_out}")
    return results
