"""A minimal repro of an export failure: the smallest piece of the program that fails the same way.

Where capture by ``torch.export`` succeeded and a later stage failed
(decomposition, translation to ONNX, the optimizer), the failing op is a node
of the captured program. Its ancestors within k hops (k = 0, 1, 2, ...) are cut
out as a graph of their own, the values flowing in becoming inputs of the
shapes, dtypes and strides the op saw, and exported again: the first cut that
fails the same way (same stage, cause class and op) is written as a runnable
script. Where capture itself failed, the script rebuilds the model from the
user's factory and exports it (not smaller, but runnable alone).
"""

from __future__ import annotations

import re
import time
from typing import Any

import torch
import torch.fx

from nodebisect.errors import ExportFailedError
from nodebisect.frontends.loading.load import LoadedModel

MAX_HOPS = 64
BUDGET_S = 60.0
_NODE_RE = re.compile(r"(?:translating node|While executing) %(\w+)")


def repro_script(error: ExportFailedError, loaded: LoadedModel, original: Any, decomposed: Any = None) -> str:
    """The text of a runnable script that fails like ``error``, or "" where none was found.

    ``original`` is the captured program, ``decomposed`` the exporter's decomposition
    of it (where the failing node of a later stage lives).
    """
    if original is not None and error.target:
        found = _smallest_failing_cut(error, original, decomposed)
        if found:
            return found
    if loaded.kind == "factory" and ":" in loaded.source:
        return _factory_script(loaded.source, error, loaded.applied_settings)
    return ""


# -- cutting the program ---------------------------------------------------------------


def _smallest_failing_cut(error: ExportFailedError, original: Any, decomposed: Any) -> str:
    from nodebisect.frontends.export_failure import classify_export_error

    node = _failing_node(decomposed.graph if decomposed is not None else original.graph, error)
    if node is not None and decomposed is not None:
        # Cut the captured program, not the decomposed one: the decomposition that fails
        # must run again on the cut (a decomposed view of a transposed tensor is no
        # valid eager code; the reshape it came from is).
        node = _origin(node, original.graph) or node
    if node is None:
        return ""
    want = (error.details.get("stage"), error.details.get("cause"), error.target)
    started = time.monotonic()

    def fails(hops: int) -> bool:
        cut = _cut(node, hops)
        if cut is None or time.monotonic() - started > BUDGET_S:
            return False
        try:
            _export(cut[0], cut[1])
        except Exception as exc:  # noqa: BLE001 - the failure we are looking for
            got = classify_export_error(exc, exporter="dynamo")
            return (got.details["stage"], got.details["cause"], got.target) == want
        return False

    # The fewest hops that still fail: doubling from 0 (small cuts are cheap to export),
    # then bisection, as a failure needs all of some chain of ops and more hops only add ops.
    deepest = _depth(node)
    low, hops = -1, 0
    while not fails(hops):
        if hops >= deepest or time.monotonic() - started > BUDGET_S:
            return ""
        low, hops = hops, min(deepest, max(1, hops * 2))
    high = hops
    while high - low > 1:
        mid = (low + high) // 2
        if fails(mid):
            high = mid
        else:
            low = mid
    gm, inputs, size = _cut(node, high)  # type: ignore[misc]
    return _script(gm, inputs, error, size)


def _depth(node: torch.fx.Node) -> int:
    """Hops from ``node`` to its farthest call_function ancestor (capped at MAX_HOPS)."""
    depth, frontier, seen = 0, [node], {node}
    while frontier and depth < MAX_HOPS:
        frontier = [a for n in frontier for a in n.all_input_nodes if a.op == "call_function" and a not in seen]
        seen.update(frontier)
        if frontier:
            depth += 1
    return depth


def _failing_node(graph: torch.fx.Graph, error: ExportFailedError) -> torch.fx.Node | None:
    nodes = [n for n in graph.nodes if n.op == "call_function"]
    m = _NODE_RE.search(str(error.__cause__ or "") + "\n" + _chain_text(error))
    if m:
        named = next((n for n in nodes if n.name == m.group(1)), None)
        if named is not None:
            return named
    return next((n for n in nodes if _op_name(n.target) == error.target), None)


def _origin(node: torch.fx.Node, graph: torch.fx.Graph) -> torch.fx.Node | None:
    """The captured program's node a decomposed node came from (its ``from_node`` provenance)."""
    sources = node.meta.get("from_node") or []
    names = {getattr(s, "name", None) for s in sources}
    return next((n for n in graph.nodes if n.op == "call_function" and n.name in names), None)


def _chain_text(error: BaseException) -> str:
    parts = []
    cur: BaseException | None = error.__cause__
    while cur is not None and len(parts) < 20:
        parts.append(str(cur))
        cur = cur.__cause__ or cur.__context__
    return "\n".join(parts)


def _op_name(target: Any) -> str:
    return str(target).replace("torch.ops.", "")


def _cut(node: torch.fx.Node, hops: int) -> tuple[torch.fx.GraphModule, list[torch.Tensor], int] | None:
    """``node`` and its call_function ancestors within ``hops``, the rest as inputs; None if an input is not a tensor."""
    keep = {node}
    frontier = [node]
    for _ in range(hops):
        nxt = []
        for n in frontier:
            for a in n.all_input_nodes:
                if a.op == "call_function" and a not in keep:
                    keep.add(a)
                    nxt.append(a)
        frontier = nxt
    ordered = [n for n in node.graph.nodes if n in keep]
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    inputs: list[torch.Tensor] = []
    for n in ordered:
        for a in n.all_input_nodes:
            if a in keep or a in env:
                continue
            val = a.meta.get("val")
            if not isinstance(val, torch.Tensor):
                return None
            env[a] = graph.placeholder(f"x{len(inputs)}")
            inputs.append(_like(val))
    for n in ordered:
        env[n] = graph.node_copy(n, lambda a: env[a])
    graph.output(env[node])
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    return gm, inputs, len(ordered)


def _like(val: torch.Tensor) -> torch.Tensor:
    """A real tensor of the fake value's shape, dtype and strides (the op may depend on them)."""
    shape, stride = [int(s) for s in val.shape], [int(s) for s in val.stride()]
    out = torch.empty_strided(shape, stride, dtype=val.dtype)
    if val.dtype.is_floating_point:
        out.copy_(torch.randn(shape).to(val.dtype))
    else:
        out.zero_()
    # Grad-requiring inputs take other kernel paths (SDPA's output strides): keep the flag.
    return out.requires_grad_(bool(val.requires_grad) and val.dtype.is_floating_point)


def _export(gm: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> None:
    from nodebisect.frontends.quiet import quiet_torch

    with quiet_torch():
        torch.onnx.export(gm, tuple(inputs), dynamo=True, verbose=False)


# -- the scripts -----------------------------------------------------------------------


def _script(gm: torch.fx.GraphModule, inputs: list[torch.Tensor], error: ExportFailedError, size: int) -> str:
    body = gm.code.strip().splitlines()
    forward = "\n".join("    " + ln for ln in body)
    tensors = ",\n".join(f"    {_tensor_expr(t)}" for t in inputs)
    details = error.details
    return (
        '"""Minimal repro of an ONNX export failure, written by nodebisect.\n\n'
        f"{_oneline(error.message)}\n\n"
        f"The smallest piece of the captured program that fails the same way: {size} op(s) ending in {error.target}"
        + (f" (from {details.get('source') or error.source})" if (details.get('source') or error.source) else "")
        + ".\nRun it: `python export_repro.py` raises the same error.\n"
        '"""\n\n'
        "import torch\n"
        "from torch import device, inf, nan  # noqa: F401 - names the generated code may use\n\n\n"
        "class Repro(torch.nn.Module):\n"
        f"{forward}\n\n\n"
        f"inputs = (\n{tensors},\n)\n"
        "torch.onnx.export(Repro(), inputs, dynamo=True)\n"
        'print("exported without error: the failure did not reproduce here")\n'
    )


def _tensor_expr(t: torch.Tensor) -> str:
    dtype = str(t.dtype)
    shape, stride = tuple(t.shape), tuple(t.stride())
    fill = f"torch.randn({shape}).to({dtype})" if t.dtype.is_floating_point else f"torch.zeros({shape}, dtype={dtype})"
    grad = ".requires_grad_()" if t.requires_grad else ""
    if t.is_contiguous():
        return fill + grad
    return f"torch.empty_strided({shape}, {stride}, dtype={dtype}).copy_({fill}){grad}"


# The script's one line naming the folder nodebisect ran in; report.bundle rewrites it relative to
# the script's own location when it writes repro/export_repro.py (the script then runs from anywhere).
RAN_IN_LINE = "RAN_IN = {!r}  # the folder nodebisect ran in\n"


def _factory_script(spec: str, error: ExportFailedError, settings: list[str] | None = None) -> str:
    import os

    target, _, attr = spec.rpartition(":")
    ran_in = os.getcwd()
    if target.endswith(".py"):
        model_file = os.path.relpath(os.path.abspath(target), ran_in)  # the model file, from RAN_IN
        load = (
            "import importlib.util, os, sys\n"
            + RAN_IN_LINE.format(ran_in)
            + f"model_file = os.path.join(RAN_IN, {model_file!r})\n"
            "spec = importlib.util.spec_from_file_location('user_model', model_file)\n"
            "mod = importlib.util.module_from_spec(spec)\n"
            "sys.path.insert(0, os.path.dirname(model_file))\n"
            "spec.loader.exec_module(mod)\n"
            f"factory = mod.{attr}\n"
        )
    else:  # a module spec: importable from the folder nodebisect ran in
        load = (
            "import importlib, os, sys\n"
            + RAN_IN_LINE.format(ran_in)
            + "sys.path.insert(0, RAN_IN)\n"
            f"factory = getattr(importlib.import_module({target!r}), {attr!r})\n"
        )
    return (
        '"""Repro of an ONNX export failure, written by nodebisect.\n\n'
        f"{_oneline(error.message)}\n\n"
        "It failed while capturing the graph, so no smaller piece exists to cut out: this rebuilds the model\n"
        "from its factory and exports it. Run it: `python export_repro.py` raises the same error.\n"
        '"""\n\n'
        "import torch\n\n"
        f"{load}"
        "built = factory()\n"
        "if isinstance(built, tuple):\n"
        "    model, args = built\n"
        "else:\n"
        "    model = built\n"
        "    args = (getattr(model, 'example_inputs', None) or getattr(factory, 'example_inputs'))()\n"
        "args = args if isinstance(args, tuple) else (args,)\n"
        + (
            "from nodebisect.frontends.loading.settings import apply_model_settings  # the run's --model-setting\n"
            f"apply_model_settings(model, {list(settings)!r})\n"
            if settings
            else ""
        )
        + "torch.onnx.export(model.eval(), args, dynamo=True)\n"
        'print("exported without error: the failure did not reproduce here")\n'
    )


def _oneline(text: str) -> str:
    return text.strip().splitlines()[0][:300].replace('"""', "'''") if text.strip() else ""
