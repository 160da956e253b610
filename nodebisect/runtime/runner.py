"""Run an ONNX model in ONNX Runtime and return chosen intermediate values.

Each call builds the smallest prefix of the graph that computes the asked-for
values (so a probe early in the graph costs an early-graph run) and marks only
those values as outputs, so the rest of the graph keeps the fusions ONNX
Runtime would apply to the user's model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import onnx

from nodebisect.errors import BadInputError
from nodebisect.onnxgraph import initializer_bytes, sub_model, subgraph_inputs, value_infos

# Above this many bytes of weights, prefixes reference one weights file written once.
EXTERNALIZE_BYTES = 16 * 1024 * 1024
WEIGHTS_FILE = "weights.bin"


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
    """Runs prefixes of one ONNX model on fixed feeds; counts sessions created."""

    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    ep: str = "cpu"
    opt_level: str = "all"
    sessions: int = 0
    seconds: float = 0.0
    # An OrtChild: sessions run in a child process, so crashes become errors.
    sandbox: Any = None
    _producer: dict[str, int] = field(default_factory=dict, repr=False)
    _reads: list[set[str]] = field(default_factory=list, repr=False)
    _types: dict[str, onnx.ValueInfoProto] = field(default_factory=dict, repr=False)
    _light: dict[str, onnx.TensorProto] = field(default_factory=dict, repr=False)
    _dir: str = field(default="", repr=False)

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
        if initializer_bytes(self.model) > EXTERNALIZE_BYTES:
            self._externalize()

    def _externalize(self) -> None:
        """Write the weights once; every prefix model then only references them.

        Without this each session re-serializes every weight it needs (0.5 s per
        session on BERT-base), which makes a many-session search slower than
        marking everything at once.
        """
        self._dir = tempfile.mkdtemp(prefix="nodebisect-ort-")
        weakref.finalize(self, shutil.rmtree, self._dir, True)
        with open(os.path.join(self._dir, WEIGHTS_FILE), "wb") as fh:
            for t in self.model.graph.initializer:
                if t.data_location == onnx.TensorProto.EXTERNAL or len(t.raw_data) < 1024:
                    continue
                pad = (-fh.tell()) % 64  # aligned offsets let onnxruntime map weights directly
                fh.write(b"\0" * pad)
                offset = fh.tell()
                fh.write(t.raw_data)
                light = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=list(t.dims))
                light.data_location = onnx.TensorProto.EXTERNAL
                for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(len(t.raw_data)))):
                    entry = light.external_data.add()
                    entry.key, entry.value = key, value
                self._light[t.name] = light

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
        model = sub_model(
            self.model,
            [graph.node[i] for i in sorted(keep)],
            [self._light.get(t.name, t) for t in graph.initializer if t.name in used],
            [i for i in graph.input if i.name in used],
            [self._types.get(v) or onnx.ValueInfoProto(name=v) for v in wanted],
            [v for v in graph.value_info if v.name in used],
        )
        model.graph.sparse_initializer.extend(t for t in graph.sparse_initializer if t.values.name in used)
        return model

    def run(self, values: Iterable[str], optimized_path: str | None = None) -> dict[str, np.ndarray]:
        """Compute ``values`` in one new ONNX Runtime session.

        ``optimized_path``: where ORT should save the graph it actually runs
        (after its fusions), to see what marking probes changed.
        """
        wanted = list(dict.fromkeys(values))
        model = self.prefix(wanted)
        start = time.perf_counter()
        try:
            source: bytes | str = model.SerializeToString()
            if self._dir:  # external weights resolve relative to the model's own path
                source_path = os.path.join(self._dir, f"prefix_{self.sessions}.onnx")
                with open(source_path, "wb") as fh:
                    fh.write(source)
                source = source_path
            if self.sandbox is not None:
                outs = self.sandbox.run(source, self.feeds, wanted, self._providers, self.opt_level, optimized_path)
            else:
                outs = self._run_here(source, wanted, optimized_path)
        finally:
            self.sessions += 1
            self.seconds += time.perf_counter() - start
        return dict(zip(wanted, (np.asarray(o) for o in outs)))

    def _run_here(self, source: bytes | str, wanted: list[str], optimized_path: str | None) -> list[Any]:
        from nodebisect.runtime.sandbox import OrtRaised, create_session, run_session

        try:
            session = create_session(source, self._providers, self.opt_level, optimized_path)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise OrtRaised(
                f"onnxruntime could not load the model: {_first_line(exc)}",
                tip="run with --debug for the full error; the model may use an op this onnxruntime lacks",
            ) from exc
        try:
            return run_session(session, wanted, self.feeds)
        except Exception as exc:  # noqa: BLE001
            raise OrtRaised(f"onnxruntime failed while running the model: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def counted_run(opts: Any, log: Any, sandbox: Any = None) -> Any:
    """``(model, feeds, values) -> {value: array}``: one onnxruntime session per call, with the run's
    EP and optimization level, counted in ``log.extra_sessions`` (the teacher-forced cone, the exactness audit)."""

    def run(model: onnx.ModelProto, feeds: dict[str, Any], values: list[str]) -> dict[str, Any]:
        runner = OrtRunner(model, feeds, ep=opts.ep, opt_level=opts.opt_level, sandbox=sandbox)
        got = runner.run(values)
        log.extra_sessions += runner.sessions
        return got

    return run
