"""Formatting shared by every text view: numbers, element values, Markdown cells and fences (pure text).

Numbers read the same in the terminal, report.md and the TUI because they are
formatted here once.
"""

from __future__ import annotations

import math
from typing import Any


def num(x: Any) -> str:
    """A number in 3 significant digits; NaN/Inf spelled out."""
    if isinstance(x, str):
        return x
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    return f"{x:.3g}"


def pair_text(expected: Any, actual: Any) -> tuple[str, str]:
    """Both values with as many digits as it takes to see them differ (-707106.78 vs -707106.84)."""
    for digits in (5, 7, 9, 12, 17):
        e, a = value_text(expected, digits), value_text(actual, digits)
        if e != a:
            return e, a
    return e, a


def value_text(v: Any, digits: int = 5) -> str:
    """One element's value, signed (``+0`` and ``-0`` differ; so do ``+3.1416`` and ``-3.1416``)."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "+inf" if v > 0 else "-inf"
        if v == 0.0:
            return "-0.0" if math.copysign(1.0, v) < 0 else "+0.0"
        return f"{v:+.{digits}g}"
    return str(v)


def constant_text(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    if isinstance(v, dict):
        if "fill" in v:
            return f"filled with {constant_text(v['fill'])}"
        shape = "x".join(str(s) for s in v.get("shape", []))
        rng = f" in [{value_text(v['min'])}, {value_text(v['max'])}]" if "min" in v else ""
        return f"<{v.get('dtype', '')} {shape}{rng}>"
    return value_text(v)


def short_name(name: str) -> str:
    return name if len(name) <= 40 else "…" + name[-39:]



def one_line(text: str, limit: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def cell(text: object) -> str:
    """A table cell: one line, pipes escaped."""
    return one_line(str(text), 200).replace("|", "\\|")


def code(text: object) -> str:
    return str(text).replace("`", "'")


def code_cell(text: object) -> str:
    return f"`{cell(code(text))}`" if str(text) else ""


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fence(text: str, lang: str = "") -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}{lang}\n{text}\n{ticks}"


def details(summary: str, body: str) -> str:
    return f"<details>\n<summary>{summary}</summary>\n\n{body}\n\n</details>"
