"""Evidence from a lowering's pass-through tail: the node where the wrong numbers were born.

Only the last node of a multi-node lowering carries the framework value, and it is
often a node that merely passes numbers on: ``torch.floor_divide`` on ints lowered by
the TorchScript exporter is Div, Cast, Cast, and the two Casts (int64 to int64) hand
on what the truncating Div made; on floats it is Div, Cast (to int64: truncation),
Cast (back to float). Blaming the carrying Cast names a neighbour of the defect.

Walking back from the carrier through nodes that only pass values on (a Cast,
Identity, Reshape, ... whose output holds exactly the numbers of its input, as
onnxruntime computed them on the reference's inputs) reaches the node whose own
output already holds the wrong numbers: the wrong value was born there. This says
where the value was made, not why; evidence of a defect further upstream
(a departure from the reference's decomposition, a repair, a contradicting
attribute) outranks it.

A wrong node in the middle of a lowering (gelu's Tanh turned Sigmoid), whose
output the nodes after it do not merely pass on, is no tail: it is named by the
departure from the reference's own decomposition (``decomposition``), which the
TorchScript path answers too, per traced call (``frontends.torchscript.calls``).
There the floor_divide cases still end here: PyTorch's decomposition of
floor_divide computes the truncated quotient on its way to the floored one, so
the carrier's wrong value matches an intermediate and no departure is found.
"""

from __future__ import annotations

import numpy as np

from nodebisect.values.graphmap import GraphMap

# Below every specific finding (contradicting attribute 0.85, decomposition departure 0.88,
# repair 0.9, lossy Cast 0.92, NaN birth 0.95), above the priors (carrier 0.3, sensitive op 0.2).
BORN_SCORE = 0.8

# Ops that can hand on their data input's numbers unchanged (whether they did is checked on the values).
PASS_THROUGH = {"Cast", "CastLike", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}


def born_evidence(gm: GraphMap, segment: list[str], carrier: str, culprit: str, values: dict[str, np.ndarray]) -> list[tuple[str, float, str]]:
    """(node, score, reason) for the segment's node whose output the carrier only passes on, or [].

    Args:
        gm: the graph map.
        segment: the carrier's lowering (ONNX node names).
        carrier: the node producing the divergent value ``culprit``.
        values: ONNX value name -> array of the isolated run on the reference's inputs.
    """
    wrong = values.get(culprit)
    if wrong is None:
        return []
    members = set(segment)
    node, passed = carrier, []
    while gm.nodes[node].op_type in PASS_THROUGH and gm.nodes[node].input:
        source = gm.nodes[node].input[0]
        producer = gm.producer.get(source)
        if producer is None or producer not in members or not same_numbers(values.get(source), wrong):
            break
        passed.append(node)
        node = producer
    if not passed:
        return []
    through = ", ".join(f"{n} ({gm.nodes[n].op_type})" for n in reversed(passed))
    return [(node, BORN_SCORE, f"its output already holds the wrong values, which {through} only pass on unchanged")]


def same_numbers(a: np.ndarray | None, b: np.ndarray) -> bool:
    """The same numbers in the same order (dtype and shape aside); NaN equals NaN."""
    if a is None or a.size != b.size or a.size == 0:
        return False
    if a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
        return False
    return bool(np.array_equal(a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64), equal_nan=True))
