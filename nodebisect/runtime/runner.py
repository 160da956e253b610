"""Run an ONNX model in ONNX Runtime and return chosen intermediate values.

Each call builds the smallest prefix of the graph that computes the asked-for
values (so a probe early in the graph costs an early-graph run) and marks only
those values as outputs, so the rest of the graph keeps the fusions ONNX
Runtime would apply to the user's model.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import onnx

from nodebisect.errors import BadInputError
from nodebisect.onnxgraph import initializer_bytes, sub_model, subgraph_inputs, value_infos
from nodebisect.runtime.answers import Answers
from nodebisect.runtime.weights import Weights

# Above this many bytes of weights, prefixes reference one weights file written once.
EXTERNALIZE_BYTES = 16 * 1024 * 1024


def providers_for(ep: str) -> list[str]:
    """ONNX Runtime providers for ``--ep cpu|cuda``; CUDA must exist or we say so."""
    import onnxruntime as ort

    if ep == "cpu":
        return ["CPUExecutionProvider"]
    if ep == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BadInputError(
                "--ep cuda asked for, but this onnxruntime has no CUDAExecutionProvider",
                tip="pip install onnxruntime-gpu on a machine with a GPU, or use --ep cpu",
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise BadInputError(f"unknown execution provider {ep!r}", tip="use --ep cpu or --ep cuda")


@dataclass
class OrtRunner:
    """Runs prefixes of one ONNX model on fixed feeds; counts sessions created.

    Built by the run's handle (``runtime.handle.Ort``), which hands it the child
    process, the model's weights file when already written, and the answers
    kept from earlier runs.
    """

    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    ep: str = "cpu"
    opt_level: str = "all"
    sessions: int = 0  # asked for, an answer kept from an identical earlier request included
    seconds: float = 0.0
    # An OrtChild: sessions run in a child process, so crashes become errors.
    child: Any = None
    # runtime.weights.Weights of this model (written once, shared), or None: written here when large.
    weights: Weights | None = None
    # runtime.answers.Answers: answers of identical earlier requests, or None (always run).
    answers: Answers | None = None
    _producer: dict[str, int] = field(default_factory=dict, repr=False)
    _reads: list[set[str]] = field(default_factory=list, repr=False)
    _types: dict[str, onnx.ValueInfoProto] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        graph = self.model.graph
        self._reads = [subgraph_inputs(n) for n in graph.node]
        for i, n in enumerate(graph.node):
            for o in n.output:
                if o:
                    self._producer[o] = i
        self._types = value_infos(self.model)
        self._providers = providers_for(self.ep)
        graph_inputs = {i.name for i in graph.input} - {t.name for t in graph.initializer}
        missing = [n for n in graph_inputs if n not in self.feeds]
        if missing:
            raise BadInputError(f"the ONNX model needs input(s) {missing} that were not given")
        if self.weights is None and needs_weights_file(self.model):
            self.weights = Weights(self.model)

    def prefix(self, values: Iterable[str]) -> onnx.ModelProto:
        """The sub-model computing ``values`` from the graph inputs, with them as outputs."""
        graph = self.model.graph
        wanted = list(dict.fromkeys(values))
        keep: set[int] = set()
        stack = [self._producer[v] for v in wanted if v in self._producer]
        while stack:
            i = stack.pop()
            if i in keep:
                continue
            keep.add(i)
            stack.extend(self._producer[x] for x in self._reads[i] if x in self._producer)
        used: set[str] = set(wanted)
        for i in keep:
            used |= self._reads[i]
        light = self.weights.light() if self.weights is not None else {}
        model = sub_model(
            self.model,
            [graph.node[i] for i in sorted(keep)],
            [light.get(t.name, t) for t in graph.initializer if t.name in used],
            [i for i in graph.input if i.name in used],
            [self._types.get(v) or onnx.ValueInfoProto(name=v) for v in wanted],
            [v for v in graph.value_info if v.name in used],
        )
        model.graph.sparse_initializer.extend(t for t in graph.sparse_initializer if t.values.name in used)
        return model

    def run(self, values: Iterable[str], optimized_path: str | None = None, disabled_optimizers: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """Compute ``values`` in one new ONNX Runtime session (or from the answer to the same request).

        ``optimized_path``: where ORT should save the graph it actually runs
        (after its fusions), to see what marking probes changed.
        ``disabled_optimizers``: onnxruntime optimizers switched off by name (the fusion search).
        """
        wanted = list(dict.fromkeys(values))
        model = self.prefix(wanted)
        start = time.perf_counter()
        try:
            source: bytes | str = model.SerializeToString()
            key = None
            if self.answers is not None:
                token = self.weights.token if self.weights is not None else 0
                inputs = [i.name for i in model.graph.input]
                key = self.answers.key(source, token, self.feeds, inputs, wanted, self._providers, self.opt_level, disabled_optimizers)
                kept = self.answers.get(key, optimized_path)
                if kept is not None:
                    return dict(zip(wanted, kept))
            outs = self._session(source, wanted, optimized_path, disabled_optimizers)
            if key is not None and self.answers is not None:
                outs = self.answers.put(key, outs, optimized_path)
        finally:
            self.sessions += 1
            self.seconds += time.perf_counter() - start
        return dict(zip(wanted, (np.asarray(o) for o in outs)))

    def _session(self, source: bytes, wanted: list[str], optimized_path: str | None, disabled: tuple[str, ...]) -> list[Any]:
        """One session, in the child when there is one; a prefix with external weights goes by path."""
        path = ""
        if self.weights is not None:  # external weights resolve relative to the model's own path
            path = self.weights.prefix_path()
            with open(path, "wb") as fh:
                fh.write(source)
        try:
            if self.child is not None:
                return self.child.run(path or source, self.feeds, wanted, self._providers, self.opt_level, optimized_path, disabled)
            return self._run_here(path or source, wanted, optimized_path, disabled)
        finally:
            if path:
                os.remove(path)

    def _run_here(self, source: bytes | str, wanted: list[str], optimized_path: str | None, disabled: tuple[str, ...] = ()) -> list[Any]:
        from nodebisect.runtime.sandbox import OrtRaised, create_session, run_session

        try:
            session = create_session(source, self._providers, self.opt_level, optimized_path, disabled)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise OrtRaised(
                f"onnxruntime could not load the model: {_first_line(exc)}",
                tip="run with --debug for the full error; the model may use an op this onnxruntime lacks",
            ) from exc
        try:
            return run_session(session, wanted, self.feeds)
        except Exception as exc:  # noqa: BLE001
            raise OrtRaised(f"onnxruntime failed while running the model: {_first_line(exc)}") from exc


def needs_weights_file(model: onnx.ModelProto) -> bool:
    """Whether ``model``'s weights are worth writing once (``EXTERNALIZE_BYTES``)."""
    return initializer_bytes(model) > EXTERNALIZE_BYTES


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__

