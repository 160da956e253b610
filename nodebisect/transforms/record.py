"""The ``transform`` record of a result (``LocateResult.transform``), as data. [stdlib]

What ``--transform NAME`` did: which tool (and version) applied it, whether its
candidate matched, the knob setting that makes it match (``rules`` switched off,
or ``keep_nodes`` kept out, most helpful first), the fixed candidate written and
re-checked, and for float16 the headroom and the constants no keep-list can save.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TransformRecord:
    name: str
    tool: str
    version: str
    knob: str  # the tool's own name for it: node_block_list, nodes_to_exclude, rewrite rules, passes, FusionOptions
    precision: str
    matched: bool = False  # the transformed candidate, as the tool makes it, matches the reference
    score: float = 0.0  # its worst output's error relative to the output's scale
    limit: float = 0.0  # what the candidate's precision explains
    judged_by: str = "outputs"  # "diff": nodebisect.diff's verdict, node by node; "outputs": the final outputs against ``limit``
    target: float = 0.0  # the knob search's limit when below ``limit`` (diff departs where the outputs stay within it)
    masked_outputs: list[str] = field(default_factory=list)  # outputs judged where a mask input keeps positions
    culprit: dict[str, str] = field(default_factory=dict)  # first departing node: node, op_type, value
    rule: str = ""  # the rule, pass or fusion at fault (the first of ``rules``)
    rules: list[str] = field(default_factory=list)  # rules/passes/fusions to switch off
    keep_nodes: list[str] = field(default_factory=list)  # reference nodes to keep out, most helpful first
    minimized: bool = True  # False: the search's budget ran out first: keep_nodes is a fix, not the smallest
    budget_s: float = 0.0  # the seconds the keep-list search could spend minimizing
    candidates: int = 0  # the knob's items: nodes the tool would convert (keep-lists), or its rules
    folded: list[dict[str, str]] = field(default_factory=list)  # onnxscript: the node(s) whose constant folding is at fault
    fixable: bool = True  # False: no knob setting makes it match
    unfixable_constants: list[dict[str, Any]] = field(default_factory=list)
    headroom: list[dict[str, Any]] = field(default_factory=list)
    tool_kwargs: dict[str, Any] = field(default_factory=dict)  # the tool's call with the fix
    candidate: str = ""  # the transformed candidate as written
    fixed_candidate: str = ""  # the candidate with the fix applied, as written
    report: str = ""  # locate --transform: diff's report on the departing candidate, node by node (report.md)
    rechecked: bool = False  # the fixed candidate was made again, run, and matches
    recheck_score: float = 0.0
    applications: int = 0  # times the tool was applied and the candidate run
    candidate_runs: int = 0  # onnxruntime runs of a candidate in the search and the re-check (diff's own are in its stats)
    seconds: float = 0.0
    named_nodes: int = 0  # unnamed reference nodes nodebisect named so that the tool's list can name them
    failed: str = ""  # locate --transform: the tool refused the model or wrote one onnxruntime cannot run (one line)
    failed_tip: str = ""  # what to do about it
    failed_exit: int = 0  # the exit code that failure gives (2 the tool refused the model, 4 an invalid candidate)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
