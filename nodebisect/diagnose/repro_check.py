"""A repro that reproduces: run the culprit's subgraph as repro.py will, widen it until it fails.

The culprit alone, fed with PyTorch's values, may be right: an onnxruntime
fusion across the ops producing its inputs (Fp16RoundingElided's Add/Cast/Sub)
shows only with them. So the repro is checked before it is written: the
culprit's own nodes first, then one mapped level of producers more at a time,
up to the whole prefix of the graph from its inputs, each run in onnxruntime
with the run's EP and graph optimization level (in the onnxruntime child when
crashes are isolated) and compared under the run's tolerance. The first window
that fails is the repro; if none does, ``reproduces`` is False and the bundle
writes no repro that would pass. A value a later node divides by or takes the
sign of (``values.signs``) is compared with signed zeros, as the search and the
isolation compare it: otherwise a -0.0 turned +0.0 is found by the search,
"still wrong" in isolation, and then "reproduced by no window" here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nodebisect.diagnose.isolate import LocalGraph, local_graph
from nodebisect.diagnose.torch_call import aten_call
from nodebisect.prepared import ReproData
from nodebisect.records import Metrics
from nodebisect.run import Options
from nodebisect.runtime.handle import Ort
from nodebisect.values.compare import compare
from nodebisect.values.graphmap import GraphMap
from nodebisect.values.signs import sign_sensitive_values
from nodebisect.values.worst import ELEMENTWISE, small_constants, worst_element

# Mapped levels of producers added at most before the whole prefix is tried.
MAX_DEPTH = 6
OWN_NODES = "the culprit's own node(s)"


@dataclass
class ReproCheck:
    """The window that reproduces (or why none does).

    Attributes:
        repro: the repro data of that window (``reproduces`` False when none failed).
        depth: mapped levels of producers above the culprit (0: its own nodes); -1 when none reproduced.
        metrics: the window's comparison with PyTorch.
        sessions: onnxruntime sessions the check ran.
        worst: ``values.worst`` of the window's output (the worst element, its inputs
            there, the window's small constants): ``FirstDivergent.worst``; {} when none reproduced.
    """

    repro: ReproData
    depth: int
    metrics: Metrics | None
    sessions: int = 0
    worst: dict[str, Any] = field(default_factory=dict)


def reproducing_window(
    onnx_model: Any,
    gm: GraphMap,
    culprit: str,
    prep: Any,
    opts: Options,
    ort: Ort,
    max_depth: int = MAX_DEPTH,
) -> ReproCheck:
    """The smallest subgraph ending at ``culprit`` whose run on PyTorch's values still diverges.

    Args:
        onnx_model: the model searched.
        gm: its graph map.
        culprit: the divergent ONNX value.
        prep: ``Prepared`` (``feeds``, ``acts``).
        opts: the run's options (tolerance).
        ort: the run's onnxruntime handle (EP, graph optimization level, child process).
        max_depth: levels of producers tried before the whole prefix.
    """
    fx_name = gm.mapped[culprit]
    expected = prep.acts.values[fx_name]
    dtype = prep.acts.dtypes.get(fx_name)
    signed = culprit in sign_sensitive_values(gm)
    seen: list[frozenset[str]] = []
    sessions = 0
    last: tuple[LocalGraph, Metrics | None] | None = None
    depths = list(range(max_depth + 1)) + [10**6]  # the last: every producer up to the graph inputs
    for depth in depths:
        window = local_graph(onnx_model, gm, culprit, depth=depth)
        key = frozenset(window.nodes)
        if key in seen:
            break  # the window stopped growing: it already reaches the graph inputs
        seen.append(key)
        data = _repro_data(window, culprit, prep, gm, expected, ort)
        data.signed_zeros = signed
        metrics, got = _run(window, data, culprit, expected, dtype, opts, ort, signed)
        sessions += 1
        last = (window, metrics)
        if metrics is not None and got is not None and metrics.mismatch_fraction > 0:
            data.nodes = list(window.nodes)
            data.depth = depth
            data.note = _note(window, gm, culprit, depth, depths[-1])
            # An input's element at the output's index belongs to it only through element-wise ops.
            pointwise = all(gm.nodes[n].op_type in ELEMENTWISE for n in window.nodes)
            worst = _worst(expected, got, data.inputs if pointwise else {}, signed, opts, dtype)
            if worst:
                worst["constants"] = small_constants(onnx_model, window.nodes)
            return ReproCheck(data, depth, metrics, sessions, worst)
    window, metrics = last if last is not None else (local_graph(onnx_model, gm, culprit), None)
    data = _repro_data(window, culprit, prep, gm, expected, ort)
    data.nodes = list(window.nodes)
    data.reproduces = False
    data.depth = -1
    data.note = (
        f"no subgraph ending at {culprit} reproduces the mismatch on PyTorch's values (up to {len(window.nodes)} node(s) "
        "from the graph inputs): it shows only in the whole model; reproduce it with the model and the command below"
    )
    return ReproCheck(data, -1, metrics, sessions)


def _repro_data(window: LocalGraph, culprit: str, prep: Any, gm: GraphMap, expected: np.ndarray, ort: Ort) -> ReproData:
    feeds, acts = prep.feeds, prep.acts
    return ReproData(
        model_bytes=window.model.SerializeToString(),
        inputs={name: feeds[name] if name in feeds else acts.values[gm.mapped[name]] for name in window.inputs},
        expected={culprit: expected},
        opt_level=ort.opt_level,
        ep=ort.ep,
        torch_call=aten_call(acts, gm.mapped.get(culprit)),
    )


def _run(
    window: LocalGraph,
    data: ReproData,
    culprit: str,
    expected: np.ndarray,
    dtype: str | None,
    opts: Options,
    ort: Ort,
    signed: bool = False,
) -> tuple[Metrics | None, np.ndarray | None]:
    """Run the window as repro.py does (only the culprit marked) and compare; (None, None) when it cannot run.

    ``signed``: zeros of the opposite sign count as a mismatch (a sign-sensitive value).
    """
    try:
        runner = ort.runner(window.model, data.inputs)
        got = np.asarray(runner.run([culprit])[culprit])
    except Exception:  # noqa: BLE001 - a window that cannot run alone is no repro; try a wider one
        return None, None
    return compare(culprit, got, expected, opts.rtol, opts.atol, dtype, signed_zeros=signed).metrics, got


def _worst(
    expected: np.ndarray, got: np.ndarray, inputs: dict[str, Any], signed: bool, opts: Options, dtype: str | None
) -> dict[str, Any]:
    """``worst_element``, pointed at a flipped zero when the sign of zeros is what differs.

    Every difference is 0 at a -0.0 turned +0.0, so by magnitude the worst element
    would be any element (the first); the report must show one where the sign changed.
    """
    e, a = np.asarray(expected), np.asarray(got)
    if not signed or a.shape != e.shape or e.dtype.kind != "f":
        return worst_element(e, a, inputs)
    flipped = (a == 0) & (e == 0) & (np.signbit(a) != np.signbit(e))
    if not flipped.any() or not compare("", a, e, opts.rtol, opts.atol, dtype).ok:
        return worst_element(e, a, inputs)  # a real difference somewhere outranks the signs
    marked = np.where(flipped, np.inf, a.astype(np.float64))  # ranks above every finite difference
    worst = worst_element(e, marked, inputs)
    if worst:
        worst["actual"] = float(a.reshape(-1)[int(np.flatnonzero(flipped)[0])])
    return worst


def _note(window: LocalGraph, gm: GraphMap, culprit: str, depth: int, prefix_depth: int) -> str:
    """What the repro holds and why, as a phrase ("It holds ...")."""
    carrier = gm.producer[culprit]
    if depth == 0:
        return f"{OWN_NODES} ({len(window.nodes)}: {_names(window, gm)}), fed with PyTorch's values of its inputs"
    scope = "every node from the graph inputs" if depth == prefix_depth else f"{depth} level(s) of the ops producing its inputs"
    return (
        f"{scope}, {len(window.nodes)} node(s) ({_names(window, gm)}): {carrier} alone is right on PyTorch's values "
        "of its inputs, and the mismatch shows only together with them"
    )


def _names(window: LocalGraph, gm: GraphMap, limit: int = 8) -> str:
    items = [f"{n} ({gm.nodes[n].op_type})" for n in window.nodes[:limit]]
    if len(window.nodes) > limit:
        items.append(f"… {len(window.nodes) - limit} more")
    return ", ".join(items)


__all__ = ["MAX_DEPTH", "OWN_NODES", "ReproCheck", "reproducing_window"]
