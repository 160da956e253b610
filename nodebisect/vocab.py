"""The closed word sets of the JSON contract: verdicts, statuses, stages, causes, check outcomes.

String enums, so the JSON and every comparison with a plain string stay as they
were, while a stage and a cause are different types (they share words).
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class Vocabulary(str, Enum):
    """A closed set of words the JSON uses: compares and serialises as its plain string.

    Stages and causes are separate vocabularies, so a stage can no longer be assigned
    to a cause by accident (they share words: "conversion", "runtime").
    """

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def read(cls, value: Any, default: str = "") -> Any:
        """The member for ``value``; an unknown word (a newer result file) stays a plain string."""
        try:
            return cls(value if value is not None else default)
        except ValueError:
            return value


class Verdict(Vocabulary):
    """The verdict of a whole run."""

    MATCH = "match"
    DIVERGED = "diverged"
    EXPORT_FAILED = "export_failed"
    RUNTIME_FAILED = "runtime_failed"


class Status(Vocabulary):
    """What the search learned of one value."""

    OK = "ok"
    DIVERGED = "diverged"
    UNMAPPED = "unmapped"
    NOT_RUN = "not_run"


class Stage(Vocabulary):
    """Where behaviour first changes on the way from the framework to onnxruntime."""

    CAPTURE = "capture"  # eager PyTorch vs the exported program
    DECOMPOSITION = "decomposition"  # exported program vs its decomposition
    CONVERSION = "conversion"  # node conversion: the ONNX nodes compute something else
    GRAPH_OPTIMIZATION = "graph_optimization"  # the exporter's ONNX optimizer changed it
    RUNTIME = "runtime"  # onnxruntime differs from the ONNX semantics
    RUNTIME_OPTIMIZER = "runtime_optimizer"  # only with onnxruntime graph optimizations on
    TF_OPTIMIZATION = "tf_optimization"  # Keras/tf2onnx: the frozen graph before vs after grappler
    FRAMEWORK = "framework"  # the framework's own kernel approximates; onnxruntime computes the ONNX op exactly
    TRANSFORMATION = "transformation"  # diff: the tool that made the candidate from the reference ONNX model


class Cause(Vocabulary):
    """What the culprit is: a wrong node (and whose), drift it only amplifies, or unknown."""

    CONVERSION = "conversion"
    INHERITED = "inherited"
    RUNTIME = "runtime"
    OPTIMIZER = "optimizer"
    UNKNOWN = "unknown"
    RUNTIME_FAILED = "runtime_failed"  # onnxruntime cannot run the node at all
    CAPTURE = "capture"  # a culprit before ONNX exists: its cause is its stage
    DECOMPOSITION = "decomposition"
    TF_OPTIMIZATION = "tf_optimization"  # a culprit before ONNX exists (grappler): its cause is its stage
    FRAMEWORK = "framework"  # the framework's kernel is the inexact side
    # diff: what the transformation (float16, quantization, a rewrite) did at the culprit.
    PRECISION_OVERFLOW = "precision_overflow"  # the reference's value is past the candidate dtype's range: inf
    NAN_BORN = "nan_born"  # NaN from finite inputs in the candidate, none in the reference
    CONSTANT_CHANGED = "constant_changed"  # a constant the node reads is not the reference's (clamped, rounded to 0)
    QUANTIZATION_ERROR = "quantization_error"  # a quantized node's error far beyond its precision's


class Scope(Vocabulary):
    """Where a divergence lives when the model has a mask input (``values.masks``)."""

    ATTENDED = "attended"  # at positions the mask keeps: what a user reads
    MASKED_POSITIONS = "masked_positions"  # only at positions the mask excludes (padded query rows)


# The words as module constants (the names the code has always used).
MATCH, DIVERGED, EXPORT_FAILED, RUNTIME_FAILED = Verdict.MATCH, Verdict.DIVERGED, Verdict.EXPORT_FAILED, Verdict.RUNTIME_FAILED
VERDICTS = tuple(Verdict)
OK, STATUS_DIVERGED, UNMAPPED, NOT_RUN = Status.OK, Status.DIVERGED, Status.UNMAPPED, Status.NOT_RUN
STAGE_CAPTURE = Stage.CAPTURE
STAGE_DECOMPOSITION = Stage.DECOMPOSITION
STAGE_CONVERSION = Stage.CONVERSION
STAGE_GRAPH_OPTIMIZATION = Stage.GRAPH_OPTIMIZATION
STAGE_RUNTIME = Stage.RUNTIME
STAGE_RUNTIME_OPTIMIZER = Stage.RUNTIME_OPTIMIZER
CAUSE_CONVERSION = Cause.CONVERSION
CAUSE_INHERITED = Cause.INHERITED
CAUSE_RUNTIME = Cause.RUNTIME
CAUSE_OPTIMIZER = Cause.OPTIMIZER
CAUSE_UNKNOWN = Cause.UNKNOWN

# Outcomes of one check of the diagnosis (``Checks``).
RIGHT = "right"  # within tolerance of the reference
WRONG = "wrong"
FAILED = "failed"  # could not run


class Role(Vocabulary):
    """What a node is to the verdict, as the Model Explorer overlay colours it (report.model_explorer)."""

    CULPRIT = "culprit"  # the first divergent node
    SUSPECT = "suspect"  # a node of the culprit's segment with evidence of its own
    SEGMENT = "segment"  # another node of the culprit's segment (the nodes its value lowers to)
    INHERITED = "inherited"  # diverged, but only because its inputs did (downstream drift)
    MATCH = "match"  # compared and within tolerance
