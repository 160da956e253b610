"""The diagnosis at the culprit as data: what each check found (``FirstDivergent.checks``).

Its own module because every side reads it (the diagnosis writes it, ``report.wording``
composes sentences from it, the JSON carries it) and ``records`` re-exports it, so
``from nodebisect.records import Checks`` keeps working. Stdlib only, like records.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class Checks:
    """What each check of the diagnosis found at the culprit, as data.

    Every sentence about the culprit (``FirstDivergent.explanation``, the terminal,
    report.md, the TUI) is composed from these fields in ``report.wording``; nothing
    writes or parses prose in between. Outcomes are ``RIGHT``/``WRONG``/``FAILED``,
    "" where the check did not run.

    Attributes:
        alone: the culprit's local subgraph fed the reference's own input values.
        alone_error: why it could not run alone (``alone == FAILED``).
        with_producers: the same, one mapped level wider (the ops producing its inputs),
            run when the node is right alone: WRONG means an effect spanning nodes.
        opt_level: the onnxruntime optimization level those runs used.
        optimizations_off: the wrong window again with onnxruntime's optimizations disabled.
        reference_evaluator: the wrong window in ONNX's reference evaluator (``onnx.reference``).
        unoptimized_export: the same program exported with ``optimize=False`` (stage check).
        amplified_at: the later node the search stopped at first, ``"node (op)"``: right on
            the reference's inputs, it pushes this node's error past the tolerance.
        runtime_failure: how onnxruntime failed on the node (raised | crashed | hung).
    """

    alone: str = ""
    alone_error: str = ""
    with_producers: str = ""
    opt_level: str = ""
    optimizations_off: str = ""
    reference_evaluator: str = ""
    unoptimized_export: str = ""
    amplified_at: str = ""
    runtime_failure: str = ""
    # diff: what the candidate is compared with ("reference model"), the tool that made it, a constant it changed.
    compared_with: str = ""
    transformed_by: str = ""
    constant: str = ""
    quantization: str = ""  # diff: how far a quantized node's error stands above the others'
    closer_to_exact: str = ""  # diff, one model on two backends: "candidate" | "reference", nearer the float64 answer
    replaced: str = ""  # diff: the reference nodes a fused culprit replaced, "a, b, c"

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Checks:
        names = {f.name for f in dataclasses.fields(cls)}  # a newer result's added checks are dropped
        return cls(**{k: str(v) for k, v in (data or {}).items() if k in names})
