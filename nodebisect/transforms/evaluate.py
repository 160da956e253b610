"""Run a reference or a transformed candidate with onnxruntime, outputs or every value.

The knob searches run a candidate per knob setting; each is a fresh model, so
there is nothing to keep between runs but the session set-up, which is
``runtime.sandbox.create_session`` (the one way nodebisect opens a session).
onnxruntime's own graph optimizations are off by default: only the
transformation under test differs between the two models. The knob searches run
their candidates in onnxruntime's child process (``OrtChild``), as locate does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from nodebisect.runtime.sandbox import create_session, run_session

PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def run_outputs(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], ep: str = "cpu", opt_level: str = "disabled", child: Any = None
) -> dict[str, np.ndarray]:
    """The model's graph outputs by name; in ``child`` (a ``runtime.sandbox.OrtChild``) when given, so that a
    candidate that crashes onnxruntime raises ``OrtCrashed`` instead of taking nodebisect down."""
    from nodebisect.onnx_reference.large import ModelFile, too_large

    names = [o.name for o in model.graph.output]
    fitted = _fit(model, feeds)
    file = ModelFile(model) if too_large(model) else None  # past protobuf's 2 GB: by path, weights beside it
    try:
        source = file.path if file is not None else model.SerializeToString()
        if child is not None:
            return dict(zip(names, child.run(source, fitted, names, PROVIDERS.get(ep, [ep]), opt_level)))
        session = create_session(source, PROVIDERS.get(ep, [ep]), opt_level)
        return dict(zip(names, run_session(session, names, fitted)))
    finally:
        if file is not None:
            file.close()


def run_values(model: onnx.ModelProto, feeds: dict[str, np.ndarray], ep: str = "cpu", opt_level: str = "disabled") -> dict[str, np.ndarray]:
    """Every node output of the main graph (and the graph outputs), by value name."""
    from nodebisect.onnx_reference.large import ModelFile, too_large
    from nodebisect.onnxgraph import shell

    large = too_large(model)
    probe = shell(model) if large else onnx.ModelProto()  # a model past 2 GB is not copied: its weights go to a file
    if not large:
        probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in have:
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
                have.add(name)
    if not large:
        return run_outputs(probe, feeds, ep, opt_level)
    names = [o.name for o in probe.graph.output]
    with ModelFile(model, graph_of=probe) as file:
        session = create_session(file.path, PROVIDERS.get(ep, [ep]), opt_level)
    return dict(zip(names, run_session(session, names, _fit(model, feeds))))


def _fit(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feeds cast to the dtypes the model's inputs declare (a float16 candidate without keep_io_types)."""
    fitted: dict[str, Any] = {}
    for inp in model.graph.input:
        if inp.name not in feeds:
            continue
        elem = inp.type.tensor_type.elem_type
        want = onnx.helper.tensor_dtype_to_np_dtype(elem) if elem else None
        value = np.asarray(feeds[inp.name])
        fitted[inp.name] = value.astype(want) if want is not None and value.dtype != want else value
    return fitted
