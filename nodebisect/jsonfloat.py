"""JSON-safe floats for the records' JSON form (``nodebisect.report/1``).

JSON has no NaN or Infinity literal, yet a divergence is often exactly a NaN or an
inf; writing Python's ``NaN`` would make the file unreadable to strict parsers (jq,
browsers). Non-finite floats travel as the strings ``"nan"``, ``"inf"``, ``"-inf"``
and come back as floats, losslessly, through nested dicts and lists.
"""

from __future__ import annotations

import math
from typing import Any


def json_float(value: Any) -> Any:
    """Make floats JSON-safe (no NaN/Infinity literals), through dicts and lists, losslessly."""
    if isinstance(value, dict):
        return {k: json_float(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_float(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def from_json_float(value: Any) -> Any:
    """Inverse of ``json_float``: the strings "nan", "inf", "-inf" become floats again."""
    if isinstance(value, dict):
        return {k: from_json_float(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json_float(v) for v in value]
    return float(value) if isinstance(value, str) and value in ("nan", "inf", "-inf") else value
