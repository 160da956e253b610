"""The ``.pt2``'s own FX node names of the program nodebisect compared (for Model Explorer's FX overlay).

nodebisect compares the decomposed program, whose nodes get new names (``view_3`` for the
``.pt2``'s ``reshape_3``); Model Explorer's ExportedProgram adapter shows the ``.pt2`` as
saved. torch.fx records each node's provenance in ``meta["from_node"]``, nearest first:
its first entry names the node of the program that was decomposed.
"""

from __future__ import annotations

from typing import Any


def source_names(program: Any, original: Any) -> dict[str, str]:
    """Decomposed FX node name -> the original program's node it came from (only names that exist there)."""
    if program is None or original is None:
        return {}
    names = {n.name for n in original.graph.nodes}
    out: dict[str, str] = {}
    for node in program.graph.nodes:
        origin = node.meta.get("from_node")
        first = origin[-1] if isinstance(origin, list) and origin else origin
        name = getattr(first, "name", None) or node.name
        if name in names:
            out[node.name] = name
    return out
