"""The known transformations, each applied by the real tool, imported only when asked for.

A ``Transform`` says which tool applies it (its distribution, for the version and
for the "install the extra" line), which knob the search turns (``keep``: nodes
kept out, the tool's own ``node_block_list`` / ``nodes_to_exclude``; ``rules``: the
rules, passes or fusions switched off) and the precision its candidate computes in.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from nodebisect.errors import BadInputError

EXTRA = "transforms"
INSTALL_TIP = f"pip install 'nodebisect[{EXTRA}]'"


class MissingToolError(BadInputError):
    """The transformation's tool is not installed (exit 2, naming the extra)."""


@dataclass(frozen=True)
class Transform:
    """One known transformation (``fp16``, ``ort-transformers:bert``...)."""

    name: str
    tool: str  # the distribution: its version is recorded, and named when missing
    imports: str  # the module the tool is imported as
    impl: str  # nodebisect.transforms.<impl>: the adapter that calls it
    knob: str  # "keep" or "rules"
    knob_name: str  # the tool's own name for the knob
    precision: str  # what the candidate computes in: float16 | int8 | float32
    model_type: str = ""  # ort-transformers only

    @property
    def label(self) -> str:
        return f"{self.name}:{self.model_type}" if self.model_type else self.name

    def adapter(self) -> Any:
        """The adapter module, once the tool is known to import (else ``MissingToolError``)."""
        try:
            importlib.import_module(self.imports)
        except ImportError as exc:
            raise MissingToolError(f"--transform {self.label} needs {self.tool} ({exc.name or exc} is not installed): {INSTALL_TIP}") from None
        return importlib.import_module(f"nodebisect.transforms.{self.impl}")

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(self.tool)
        except PackageNotFoundError:
            return ""

    def candidates(self, reference: Any) -> list[str]:
        """The knob's items: nodes that can be kept out, or rules/passes/fusions that can be switched off."""
        adapter = self.adapter()
        if self.impl == "quantize":
            return adapter.candidates(reference, static=self.name == "quantize-static")
        if self.impl == "ort_fusions":
            return adapter.items(reference, self.model_type)
        if self.knob == "keep":
            return adapter.candidates(reference)
        return adapter.items(reference)

    def apply(self, reference: Any, knob: frozenset[str], feeds: dict[str, Any]) -> Any:
        """The candidate: the reference transformed with ``knob`` kept out or switched off."""
        return self.adapter().apply(reference, knob, feeds, self)


TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("fp16", "onnxconverter-common", "onnxconverter_common", "fp16", "keep", "node_block_list", "float16"),
        Transform("fp16-ort", "onnxruntime", "onnxruntime.transformers.float16", "fp16", "keep", "node_block_list", "float16"),
        Transform("quantize-dynamic", "onnxruntime", "onnxruntime.quantization", "quantize", "keep", "nodes_to_exclude", "int8"),
        Transform("quantize-static", "onnxruntime", "onnxruntime.quantization", "quantize", "keep", "nodes_to_exclude", "int8"),
        Transform("onnxscript", "onnxscript", "onnxscript.optimizer", "onnxscript_rules", "rules", "rewrite rules", "float32"),
        Transform("onnxoptimizer", "onnxoptimizer", "onnxoptimizer", "onnxoptimizer_passes", "rules", "passes", "float32"),
        Transform("ort-transformers", "onnxruntime", "onnxruntime.transformers.optimizer", "ort_fusions", "rules", "FusionOptions", "float32"),
    )
}


def lookup(name: str) -> Transform:
    """The transformation called ``name`` (``ort-transformers:MODEL_TYPE`` takes its model type)."""
    base, _, model_type = name.partition(":")
    spec = TRANSFORMS.get(base)
    if spec is None:
        raise BadInputError(f"unknown --transform {name!r}; known: {', '.join(sorted(TRANSFORMS))} (ort-transformers:MODEL_TYPE)")
    if base == "ort-transformers":
        from dataclasses import replace

        return replace(spec, model_type=model_type or "bert")
    if model_type:
        raise BadInputError(f"--transform {base} takes no ':{model_type}' (only ort-transformers:MODEL_TYPE does)")
    return spec


def named_copy(model: Any) -> tuple[Any, list[str]]:
    """A copy of ``model`` whose unnamed nodes are named ``<op_type>_<index>`` (the tools' keep-lists match names).

    Returns the copy and the names given; the user's model is not modified.
    """
    import onnx

    from nodebisect.onnx_reference.large import too_large

    if too_large(model) and all(n.name for n in model.graph.node):
        return model, []  # nothing to name: a model past 2 GB is not copied (read only from here on)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    taken = {n.name for n in copy.graph.node if n.name}
    given = []
    for i, node in enumerate(copy.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            given.append(name)
    return copy, given
