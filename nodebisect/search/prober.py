"""One onnxruntime session per call: run chosen ONNX values, compare them, keep the record.

The ``Prober`` is the search's only oracle: every strategy and the bisection
call ``measure``; it remembers each comparison and each step, and reports
progress through the run log.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from nodebisect.records import Comparison, Step
from nodebisect.run import Event, Options, RunLog
from nodebisect.values.compare import compare, widened
from nodebisect.values.graphmap import GraphMap
from nodebisect.values.noise import judge
from nodebisect.values.signs import sign_sensitive_values


# An all-values session's comparisons run on this many threads (at least this many values).
COMPARE_THREADS = min(4, os.cpu_count() or 1)
PARALLEL_MIN_VALUES = 64


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
    # Outputs a mask input applies to: their kept positions (values.masks), and the judgement there.
    masks: dict[str, Any] = field(default_factory=dict)
    attended: dict[str, Comparison] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.signed = sign_sensitive_values(self.gm)

    def measure(self, values: list[str], optimized_path: str | None = None) -> set[str]:
        """Run ``values`` in one session; the ones outside tolerance."""
        t = time.perf_counter()
        got = self.runner.run(values, optimized_path=optimized_path)
        bad = set()
        judged = self._judge_all(values, got)
        for v in values:
            fx_name = self.gm.mapped[v]
            expected, dtype = self.acts.values[fx_name], self.acts.dtypes.get(fx_name)
            oracle = self.oracle.get(fx_name) if self.oracle else None
            cmp = self.acts.tolerate(fx_name, judged[v])  # Reference.tolerate: diff's precision
            self.comparisons[v] = cmp
            if v in self.masks and v not in self.attended and got[v].shape == self.masks[v].shape:
                # The first measure of an output is the untouched run: what the user's runtime computes.
                keep = self.masks[v]
                oracle = oracle[keep] if oracle is not None and oracle.shape == keep.shape else None
                self.attended[v] = self._judged(v, got[v][keep], expected[keep], oracle, dtype, fx_name)
            if not cmp.ok:
                bad.add(v)
        self.steps.append(Step(index=len(self.steps), probes=list(values), bad=sorted(bad), seconds=round(time.perf_counter() - t, 4)))
        step = len(self.steps)
        self.log.emit(Event(kind="probe", values=list(values), bad=sorted(bad), step=step, total=max(self.log.expected_steps, step)))
        self.log.check_cancel()
        return bad

    def _judge_all(self, values: list[str], got: dict[str, Any]) -> dict[str, Comparison]:
        """Each value judged (``_judged``); a session of many values on ``COMPARE_THREADS`` threads.

        numpy releases the GIL inside each pass over an array, so the comparisons of an
        all-values session (hundreds of arrays) share the cores; each comparison is the
        same computation as alone, so the numbers are the same.
        """

        def one(v: str) -> Comparison:
            fx_name = self.gm.mapped[v]
            oracle = self.oracle.get(fx_name) if self.oracle else None
            return self._judged(v, got[v], self.acts.values[fx_name], oracle, self.acts.dtypes.get(fx_name), fx_name)

        if len(values) < PARALLEL_MIN_VALUES or COMPARE_THREADS < 2:
            return {v: one(v) for v in values}
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(COMPARE_THREADS, thread_name_prefix="nodebisect-compare") as pool:
            return dict(zip(values, pool.map(one, values)))

    def _judged(self, v: str, actual: Any, expected: Any, oracle: Any, dtype: str | None, fx_name: str) -> Comparison:
        """``actual`` against ``expected`` under the run's tolerance, re-judged against the oracle's noise."""
        wide = widened(actual, expected)  # made once: the comparison and the noise judgement read it
        cmp = compare(v, actual, expected, self.opts.rtol, self.opts.atol, dtype, signed_zeros=v in self.signed, wide=wide)
        if self.oracle:
            cmp = judge(cmp, actual, expected, oracle, dtype or "", elementwise=self.acts.elementwise_noise(fx_name), wide=wide)
        return cmp
