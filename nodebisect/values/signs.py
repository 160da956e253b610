"""Which values must keep the sign of their zeros: those a later node divides by or takes the sign of.

-0.0 and +0.0 are equal under every tolerance, and almost everywhere that is
right. But ``1 / -0.0`` is -inf where ``1 / +0.0`` is +inf: when onnxruntime
turns PyTorch's -0.0 into +0.0 (its ``Where`` does, for a selected -0.0), the
error surfaces at the division, and a search that cannot see the sign names the
division. The values found here are compared with ``compare(..., signed_zeros=True)``
so the search stops where the sign was lost.
"""

from __future__ import annotations

from nodebisect.values.graphmap import GraphMap

# Op -> the inputs whose sign of zero decides the output (x / -0, 1 / -0, -0 ** -1, sign(-0)).
SIGN_SINKS: dict[str, tuple[int, ...]] = {"Div": (1,), "Reciprocal": (0,), "Pow": (0,), "Sign": (0,), "Atan2": (0, 1)}

# Op -> the inputs whose zero sign reaches the output unchanged (None: every input).
_CARRIES_SIGN: dict[str, tuple[int, ...] | None] = {
    "Identity": None,
    "Reshape": (0,),
    "Transpose": (0,),
    "Squeeze": (0,),
    "Unsqueeze": (0,),
    "Flatten": (0,),
    "Expand": (0,),
    "Tile": (0,),
    "Slice": (0,),
    "Split": (0,),
    "Gather": (0,),
    "GatherElements": (0,),
    "GatherND": (0,),
    "Concat": None,
    "Neg": (0,),
    "Mul": None,
    "Div": (0,),
    "Sqrt": (0,),
    "Where": (1, 2),
    "Cast": (0,),
    "Pad": (0,),
}


def sign_sensitive_values(gm: GraphMap) -> set[str]:
    """Mapped values whose zeros' sign some later node reads (through sign-carrying ops).

    Computed once per map: the prober and every isolation ask for it.
    """
    if "sign_sensitive" not in gm.derived:
        gm.derived["sign_sensitive"] = _sign_sensitive(gm)
    return gm.derived["sign_sensitive"]


def _sign_sensitive(gm: GraphMap) -> set[str]:
    stack = []
    for name in gm.order:
        node = gm.nodes[name]
        for index in SIGN_SINKS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index]:
                stack.append(node.input[index])
    seen: set[str] = set()
    found: set[str] = set()
    while stack:
        value = stack.pop()
        if value in seen:
            continue
        seen.add(value)
        if value in gm.mapped:
            found.add(value)
        producer = gm.producer.get(value)
        if producer is None:
            continue
        node = gm.nodes[producer]
        if node.op_type not in _CARRIES_SIGN:
            continue
        indices = _CARRIES_SIGN[node.op_type]
        stack.extend(x for i, x in enumerate(node.input) if x and (indices is None or i in indices))
    return found
