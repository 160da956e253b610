"""The neighbourhood view's lines: producers above, consumers below, then the constants read.

Rows that name a node carry it, so the screen can make them selectable.
"""

from __future__ import annotations

from dataclasses import dataclass

from .view import ResultIndex, fmt


@dataclass(frozen=True)
class GraphRow:
    """One line of the neighbourhood view; ``node`` is set when the line names a node."""

    text: str
    node: str = ""


def neighbourhood(index: ResultIndex, name: str, hops: int = 2, fan: int = 6) -> list[GraphRow]:
    """The graph around ``name``: producers above, consumers below, ``hops`` deep, then its constants.

    Rows naming a node carry it in ``node`` (the screen makes those selectable).
    """
    if name not in index.by_name:
        return [GraphRow(f"(no node {name!r})")]
    rows: list[GraphRow] = []
    layers_up = _layers(index, name, hops, upward=True, fan=fan)
    for depth in range(len(layers_up), 0, -1):
        rows.append(GraphRow(f"── {depth} hop{'s' if depth > 1 else ''} up ".ljust(34, "─")))
        rows.extend(layers_up[depth - 1])
        rows.append(GraphRow("        │"))
    rows.append(GraphRow("▶▶ " + label(index, name, long=True), name))
    layers_down = _layers(index, name, hops, upward=False, fan=fan)
    for depth, layer in enumerate(layers_down, start=1):
        rows.append(GraphRow("        │"))
        rows.append(GraphRow(f"── {depth} hop{'s' if depth > 1 else ''} down ".ljust(34, "─")))
        rows.extend(layer)
    rows.extend(_constant_rows(index, name))
    return rows


def _constant_rows(index: ResultIndex, name: str) -> list[GraphRow]:
    """Values no computing node produces, read by ``name`` (and, for the culprit, by its segment)."""
    rows: list[GraphRow] = []
    own = index.constants_of(name)
    if own:
        rows += [GraphRow(""), GraphRow(f"── constants / graph inputs read by {name} ".ljust(34, "─"))]
        rows += [GraphRow(f"   {value}  ({origin})") for value, origin in own]
    if name != index.culprit:
        return rows
    seen = {value for value, _ in own}
    segment: list[GraphRow] = []
    for node in sorted(index.segment - {name}, key=index.position.__getitem__):
        for value, origin in index.constants_of(node):
            if value not in seen:
                seen.add(value)
                segment.append(GraphRow(f"   {value}  ({origin}) → {node}", node))
    if segment:
        rows += [GraphRow(""), GraphRow("── constants / graph inputs read by the rest of its segment ".ljust(34, "─"))]
        rows += segment
    return rows


def label(index: ResultIndex, name: str, long: bool = False) -> str:
    record = index.by_name[name]
    tag = ("CARRIES CAPTURE CULPRIT " if index.capture else "CULPRIT ") if name == index.culprit else ""
    tag = tag or (f"{index.mark(name)} " if index.mark(name) else "")
    m = record.metrics
    err = f", max abs {fmt(m.max_abs)}" if m is not None else ""
    where = f"  [{record.framework.module}]" if long and record.framework.module else ""
    return f"{tag}{record.op_type} {name} ({record.status}{err}){where}"


def _layers(index: ResultIndex, name: str, hops: int, upward: bool, fan: int) -> list[list[GraphRow]]:
    """Breadth-first rings around ``name``; each ring keeps ``fan`` nodes and says how many it hid."""
    layers: list[list[GraphRow]] = []
    seen = {name}
    frontier = [name]
    for _ in range(hops):
        ring: list[str] = []
        for node in frontier:
            for other in index.producers_of(node) if upward else index.consumers_of(node):
                if other not in seen:
                    seen.add(other)
                    ring.append(other)
        if not ring:
            break
        frontier = ring[:fan]
        hidden = len(ring) - fan
        layers.append([GraphRow("   " + label(index, n), n) for n in frontier]
                      + ([GraphRow(f"   … {hidden} more (not followed)")] if hidden > 0 else []))
    return layers
