"""One onnxruntime session per call: run chosen ONNX values, compare them, keep the record.

The ``Prober`` is the search's only oracle: every strategy and the bisection
call ``measure``; it remembers each comparison and each step, and reports
progress through the run log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from nodebisect.records import Comparison, Step
from nodebisect.run import Event, Options, RunLog
from nodebisect.values.compare import compare
from nodebisect.values.graphmap import GraphMap
from nodebisect.values.noise import judge
from nodebisect.values.signs import sign_sensitive_values


@dataclass
class Prober:
    """Measures ONNX values against the reference activations they map to."""

    runner: Any  # runtime.runner.OrtRunner
    gm: GraphMap
    acts: Any
    opts: Options
    log: RunLog
    oracle: dict[str, Any] = field(default_factory=dict)  # float64 values by FX name (values.noise)
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    signed: set[str] = field(default_factory=set)  # values whose sign of zero a later node sees

    def __post_init__(self) -> None:
        self.signed = sign_sensitive_values(self.gm)

    def measure(self, values: list[str], optimized_path: str | None = None) -> set[str]:
        """Run ``values`` in one session; the ones outside tolerance."""
        t = time.perf_counter()
        got = self.runner.run(values, optimized_path=optimized_path)
        bad = set()
        for v in values:
            fx_name = self.gm.mapped[v]
            expected, dtype = self.acts.values[fx_name], self.acts.dtypes.get(fx_name)
            cmp = compare(v, got[v], expected, self.opts.rtol, self.opts.atol, dtype, signed_zeros=v in self.signed)
            if self.oracle:
                cmp = judge(cmp, got[v], expected, self.oracle.get(fx_name), dtype or "")
            cmp = self.acts.tolerate(fx_name, cmp)
            self.comparisons[v] = cmp
            if not cmp.ok:
                bad.add(v)
        self.steps.append(Step(index=len(self.steps), probes=list(values), bad=sorted(bad), seconds=round(time.perf_counter() - t, 4)))
        step = len(self.steps)
        self.log.emit(Event(kind="probe", values=list(values), bad=sorted(bad), step=step, total=max(self.log.expected_steps, step)))
        self.log.check_cancel()
        return bad
