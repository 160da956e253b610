"""Plain dataclasses that flow between nodebisect's steps, and their JSON form.

Every other module produces or consumes these records; the CLI, the reports and
the TUI read a `LocateResult` (or its saved JSON) and nothing else. Keep this
module free of torch / onnx / onnxruntime imports so that a saved result can be
opened without them.

The JSON contract is ``nodebisect.report/1``: fields may be added, never renamed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from nodebisect.checks import Checks  # noqa: F401  (the diagnosis as data; re-exported here)
from nodebisect.jsonfloat import from_json_float, json_float
# The contract's words, read from records as always.
from nodebisect.vocab import (  # noqa: F401
    Vocabulary, Verdict, Status, Stage, Cause, MATCH, DIVERGED, EXPORT_FAILED, RUNTIME_FAILED, VERDICTS, OK,
    STATUS_DIVERGED, UNMAPPED, NOT_RUN, STAGE_CAPTURE, STAGE_DECOMPOSITION, STAGE_CONVERSION,
    STAGE_GRAPH_OPTIMIZATION, STAGE_RUNTIME, STAGE_RUNTIME_OPTIMIZER, CAUSE_CONVERSION, CAUSE_INHERITED,
    CAUSE_RUNTIME, CAUSE_OPTIMIZER, CAUSE_UNKNOWN, RIGHT, WRONG, FAILED, Scope,
)

SCHEMA = "nodebisect.report/1"


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that name a field of the dataclass ``cls``.

    Every record reads its JSON through this, so a result written by a newer
    nodebisect (fields may be added) still loads; the added fields are dropped.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class Tolerance:
    """Element-wise tolerance: ``|actual - expected| <= atol + rtol * |expected|``.

    Attributes:
        rtol: relative tolerance.
        atol: absolute tolerance.
    """

    rtol: float
    atol: float

    def to_dict(self) -> dict[str, float]:
        return {"rtol": self.rtol, "atol": self.atol}


@dataclass
class Metrics:
    """How far one actual tensor is from its reference.

    ``mismatch_fraction`` is the fraction of elements outside the tolerance
    (NaN/Inf placement differences count as mismatches); ``reason`` is set when
    the tensors cannot be compared element-wise (shape or dtype mismatch).
    """

    max_abs: float = 0.0
    max_rel: float = 0.0
    mean_abs: float = 0.0
    cosine: float = 1.0
    mismatch_fraction: float = 0.0
    nan: int = 0
    inf: int = 0
    expected_nan: int = 0
    expected_inf: int = 0
    shape: list[int] = field(default_factory=list)
    expected_shape: list[int] = field(default_factory=list)
    dtype: str = ""
    expected_dtype: str = ""
    reason: str = ""
    # Half precision only: largest |value| as a fraction of the dtype's max (1.0 = overflow).
    range_used: float = 0.0
    # Natural noise (float64 oracle): PyTorch's own largest error against the exact answer,
    # ONNX's error as a multiple of it, and which criterion decided ("fixed" or "noise").
    noise: float = 0.0
    noise_ratio: float = 0.0
    criterion: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: json_float(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        return cls(**{k: from_json_float(v) for k, v in known_fields(cls, data).items()})


@dataclass
class Comparison:
    """The verdict on one ONNX value against its framework activation."""

    onnx_value: str
    ok: bool
    metrics: Metrics
    tolerance: Tolerance


@dataclass
class FrameworkRef:
    """Where an ONNX node comes from on the framework side."""

    target: str = ""  # e.g. "aten.layer_norm.default"
    fx_node: str = ""  # FX node name, e.g. "layer_norm"
    module: str = ""  # dotted module path, e.g. "encoder.layer.0.attention"
    module_type: str = ""  # e.g. "torch.nn.modules.normalization.LayerNorm"
    source: str = ""  # "file.py:123" of the user's code
    code: str = ""  # that source line's text
    stack_trace: str = ""

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FrameworkRef:
        return cls(**known_fields(cls, data or {}))


@dataclass
class NodeRecord:
    """One ONNX node, in topological order, with what nodebisect learned of it."""

    index: int
    onnx_node: str
    op_type: str
    onnx_value: str  # first output
    status: str  # ok | diverged | unmapped | not_run
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    framework: FrameworkRef = field(default_factory=FrameworkRef)
    metrics: Metrics | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    # The framework value this node's output carries (mapped), or "".
    mapped_to: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "onnx_node": self.onnx_node,
            "op_type": self.op_type,
            "onnx_value": self.onnx_value,
            "status": self.status,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "framework": self.framework.to_dict(),
            "metrics": self.metrics.to_dict() if self.metrics else None,
            "attributes": self.attributes,
            "mapped_to": self.mapped_to,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeRecord:
        return cls(
            index=int(data.get("index", 0)),
            onnx_node=data["onnx_node"],
            op_type=data.get("op_type", ""),
            onnx_value=data.get("onnx_value", ""),
            status=Status.read(data.get("status"), NOT_RUN),
            inputs=list(data.get("inputs", [])),
            outputs=list(data.get("outputs", [])),
            framework=FrameworkRef.from_dict(data.get("framework")),
            metrics=Metrics.from_dict(data["metrics"]) if data.get("metrics") else None,
            attributes=dict(data.get("attributes") or {}),
            mapped_to=data.get("mapped_to", ""),
        )


def op_noise_ratio(op_noise: dict[str, float]) -> float:
    """onnxruntime's distance from the op's exact answer over PyTorch's (floored at one ulp): ``FirstDivergent.op_noise``."""
    whole = op_noise.get("onnxruntime", 0.0) / max(op_noise.get("torch", 0.0), op_noise.get("ulp", 0.0), 1e-300)
    return max(whole, op_noise.get("element_ratio", 0.0))  # element by element too (values.noise)


# A suspect scoring at least this has evidence of its own (a rule fired, not only its op type):
# the explanation and the summary name it, the carrier included.
NAMED_SUSPECT_SCORE = 0.85


@dataclass
class Suspect:
    """A node of the culprit segment and why it is suspected."""

    onnx_node: str
    op_type: str
    score: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Suspect:
        return cls(**known_fields(cls, data))


@dataclass
class FirstDivergent:
    """The culprit: the earliest divergent value whose mapped inputs all match."""

    onnx_node: str
    op_type: str
    onnx_value: str
    stage: str
    cause: str
    segment: list[str]
    segment_op_types: list[str]
    framework: FrameworkRef
    metrics: Metrics
    suspects: list[Suspect] = field(default_factory=list)
    explanation: str = ""
    # Metrics of the segment run alone on the framework's reference inputs.
    isolated_metrics: Metrics | None = None
    input_values: list[str] = field(default_factory=list)
    # cause "optimizer": {"level": first bad onnxruntime level, "optimizer": the named one, if isolated}
    optimizer: dict[str, str] = field(default_factory=dict)
    # The worst element, computed where the arrays are (values.worst): {"index": [..],
    # "expected": float, "actual": float, "inputs": {name: float}, "constants": {name: value}}.
    worst: dict[str, Any] = field(default_factory=dict)
    # Later nodes that are right on PyTorch's inputs but push this defect's drift past the
    # tolerance (the first value the search stopped at, before it followed the drift upstream).
    amplifiers: list[str] = field(default_factory=list)
    # The local check that named this node: {"rel_l2", "max_abs", "limit", "floor"} (diagnose.source).
    local_error: dict[str, float] = field(default_factory=dict)
    # The op alone against its exact answer on PyTorch's inputs: {"torch", "onnxruntime", "ulp"} (Reference.op_alone; pytorch_reference.op_noise).
    op_noise: dict[str, float] = field(default_factory=dict)
    # What each check found (the explanation is composed from these and the fields above).
    checks: Checks = field(default_factory=Checks)
    # Inherited culprits: each ONNX node of the culprit's cone recomputed alone from PyTorch's inputs,
    # node -> max_abs (diagnose.source; the Model Explorer local-error overlay reads it).
    cone_errors: dict[str, float] = field(default_factory=dict)
    # With a mask input: "masked_positions" (outputs agree where it keeps), "attended", or "" (vocab.Scope).
    scope: str = ""

    def to_dict(self) -> dict[str, Any]:
        scope = {"scope": str(self.scope)} if self.scope else {}
        return {
            "onnx_node": self.onnx_node,
            "op_type": self.op_type,
            "onnx_value": self.onnx_value,
            "stage": self.stage,
            "cause": self.cause,
            "segment": list(self.segment),
            "segment_op_types": list(self.segment_op_types),
            "framework": self.framework.to_dict(),
            "metrics": self.metrics.to_dict(),
            "suspects": [s.to_dict() for s in self.suspects],
            "explanation": self.explanation,
            "isolated_metrics": self.isolated_metrics.to_dict() if self.isolated_metrics else None,
            "input_values": list(self.input_values),
            "optimizer": dict(self.optimizer),
            "worst": json_float(self.worst),
            "amplifiers": list(self.amplifiers),
            "local_error": json_float(self.local_error),
            "op_noise": json_float(self.op_noise),
            "checks": self.checks.to_dict(),
            "cone_errors": json_float(self.cone_errors),
            **scope,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FirstDivergent | None:
        if not data:
            return None
        return cls(
            onnx_node=data["onnx_node"],
            op_type=data.get("op_type", ""),
            onnx_value=data.get("onnx_value", ""),
            stage=Stage.read(data.get("stage", "")),
            cause=Cause.read(data.get("cause"), CAUSE_UNKNOWN),
            segment=list(data.get("segment", [])),
            segment_op_types=list(data.get("segment_op_types", [])),
            framework=FrameworkRef.from_dict(data.get("framework")),
            metrics=Metrics.from_dict(data.get("metrics") or {}),
            suspects=[Suspect.from_dict(s) for s in data.get("suspects", [])],
            explanation=data.get("explanation", ""),
            isolated_metrics=(
                Metrics.from_dict(data["isolated_metrics"]) if data.get("isolated_metrics") else None
            ),
            input_values=list(data.get("input_values", [])),
            optimizer=dict(data.get("optimizer") or {}),
            worst=from_json_float(dict(data.get("worst") or {})),
            amplifiers=list(data.get("amplifiers") or []),
            local_error=dict(data.get("local_error") or {}),
            op_noise=from_json_float(dict(data.get("op_noise") or {})),
            checks=Checks.from_dict(data.get("checks")),
            cone_errors=from_json_float(dict(data.get("cone_errors") or {})),
            scope=Scope.read(data.get("scope", "")),
        )


@dataclass
class OutputComparison:
    """A final graph output of the ONNX model against the framework's output."""

    name: str
    ok: bool
    metrics: Metrics
    # A mask input applies (values.masks): the largest error where it keeps positions, and whether they agree.
    max_abs_attended: float | None = None
    ok_attended: bool | None = None
    label: str = ""  # the user's name for it (``logits``) where the reference knows one

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "ok": self.ok, "metrics": self.metrics.to_dict(), **({"label": self.label} if self.label else {})}
        attended = {"max_abs_attended": json_float(self.max_abs_attended), "ok_attended": self.ok_attended}
        return out if self.max_abs_attended is None else {**out, **attended}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutputComparison:
        attended = from_json_float(data.get("max_abs_attended"))
        return cls(data["name"], bool(data["ok"]), Metrics.from_dict(data.get("metrics") or {}), attended, data.get("ok_attended"),
                   str(data.get("label") or ""))


@dataclass
class Step:
    """One ONNX Runtime session of the search: which values it measured."""

    index: int
    probes: list[str]
    bad: list[str]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        return cls(**known_fields(cls, data))


@dataclass
class ExportFailure:
    """What the exporter said when it failed."""

    step: str
    message: str
    target: str = ""  # aten op that failed, where the exporter names it
    source: str = ""  # file:line in the user's code (else the model library's), where known
    tip: str = ""  # what to do next
    # Optional, newer: the classified failure (frontends.export_failure).
    stage: str = ""  # capture | decomposition | translation | optimizer | serialization | torchscript
    cause: str = ""  # cause class: "unsupported output type", "data-dependent control flow", ...
    code: str = ""  # the code line at ``source``
    library_source: str = ""  # file:line inside a model library (transformers, ...) where it failed
    library_code: str = ""
    remedy: str = ""  # what fixes this cause class
    settings: list[str] = field(default_factory=list)  # model settings that avoid it ("use_cache=False")
    exporter: str = ""  # dynamo | torchscript
    repro_script: str = ""  # a runnable script reproducing the failure on the smallest piece found

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_error(cls, exc: Any) -> ExportFailure:
        """From an ``ExportFailedError``; a classified one carries ``details`` for the newer fields."""
        details = dict(getattr(exc, "details", None) or {})
        base = {"step": exc.step, "message": exc.message, "target": exc.target, "source": exc.source, "tip": exc.tip}
        return cls(**{**known_fields(cls, details), **base})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportFailure:
        return cls(**known_fields(cls, data))


@dataclass
class LocateResult:
    """Everything one ``locate`` run found; the CLI serialises exactly this."""

    verdict: str
    first_divergent: FirstDivergent | None = None
    nodes: list[NodeRecord] = field(default_factory=list)
    outputs: list[OutputComparison] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    tolerance: dict[str, dict[str, float]] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    export_failure: ExportFailure | None = None
    model: str = ""
    notes: list[str] = field(default_factory=list)
    capture: dict[str, Any] = field(default_factory=dict)
    # verdict runtime_failed: node, op_type, attributes, error text, kind (raised|crashed|hung)
    runtime_failure: dict[str, Any] = field(default_factory=dict)
    # --trials / several --inputs: one row per input set (trial, inputs, verdict, onnx_node, cause, max_abs)
    trials: list[dict[str, Any]] = field(default_factory=list)
    # --transform NAME: transforms.record.TransformRecord as a dict (in the JSON only when set)
    transform: dict[str, Any] = field(default_factory=dict)
    # Live-run only (never serialised, so not part of the contract): a ``prepared.ReproData``,
    # the culprit's local subgraph and its data, from which the report writer builds the repro bundle.
    repro: Any = field(default=None, repr=False, compare=False)

    def __bool__(self) -> bool:
        """Truthy when the ONNX model matches the framework."""
        return self.verdict == MATCH

    @property
    def exit_code(self) -> int:
        from nodebisect.errors import ExitCode

        return {
            MATCH: ExitCode.MATCH,
            DIVERGED: ExitCode.DIVERGED,
            EXPORT_FAILED: ExitCode.EXPORT_FAILED,
            RUNTIME_FAILED: ExitCode.RUNTIME_FAILED,
        }[self.verdict]

    def node(self, name: str) -> NodeRecord | None:
        """Look up a node record by ONNX node name."""
        for record in self.nodes:
            if record.onnx_node == name:
                return record
        return None

    def to_json(self) -> str:
        """The JSON text every writer uses (``--json``, report.json, the TUI's save)."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "verdict": self.verdict,
            "model": self.model,
            "first_divergent": self.first_divergent.to_dict() if self.first_divergent else None,
            "outputs": [o.to_dict() for o in self.outputs],
            "nodes": [n.to_dict() for n in self.nodes],
            "stats": self.stats,
            "environment": self.environment,
            "tolerance": self.tolerance,
            "steps": [s.to_dict() for s in self.steps],
            "export_failure": self.export_failure.to_dict() if self.export_failure else None,
            "notes": list(self.notes),
            "capture": self.capture,
            "runtime_failure": self.runtime_failure,
            "trials": self.trials,
            **({"transform": self.transform} if self.transform else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LocateResult:
        schema = data.get("schema", "")
        if not str(schema).startswith("nodebisect.report/"):
            raise ValueError(f"not a nodebisect result (schema {schema!r})")
        failure = data.get("export_failure")
        return cls(
            verdict=Verdict.read(data["verdict"]),
            first_divergent=FirstDivergent.from_dict(data.get("first_divergent")),
            nodes=[NodeRecord.from_dict(n) for n in data.get("nodes", [])],
            outputs=[OutputComparison.from_dict(o) for o in data.get("outputs", [])],
            stats=dict(data.get("stats") or {}),
            environment=dict(data.get("environment") or {}),
            tolerance=dict(data.get("tolerance") or {}),
            steps=[Step.from_dict(s) for s in data.get("steps", [])],
            export_failure=ExportFailure.from_dict(failure) if failure else None,
            model=data.get("model", ""),
            notes=list(data.get("notes", [])),
            capture=dict(data.get("capture") or {}),
            runtime_failure=dict(data.get("runtime_failure") or {}),
            trials=list(data.get("trials") or []),
            transform=dict(data.get("transform") or {}),
        )
