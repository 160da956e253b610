"""Every sentence about a ``--transform`` run, composed from the result's ``transform`` record (a dict).

Kept beside ``report/wording.py`` (which composes the verdict's sentences) so the
transformation's words live in one place; the CLI and report.md print these lines.
"""

from __future__ import annotations

import re
from typing import Any

_DIVERGED = 1e29  # judge.DIVERGED_SCORE and above: NaN, Inf, another shape or another integer


def transform_lines(t: dict[str, Any]) -> list[str]:
    """The headline, then the fix (or why there is none), the first departing node, the headroom."""
    if not t:
        return []
    if t.get("failed"):  # locate --transform: the tool refused the export or wrote an invalid model
        return [f"{_named(t)} could not be judged: {t['failed']}"] + ([f"  {t['failed_tip']}"] if t.get("failed_tip") else [])
    lines = [headline(t)]
    culprit = t.get("culprit") or {}
    if culprit.get("node") and t.get("matched"):  # diff's divergence, only where a mask input excludes positions
        lines.append(f"it differs only at positions the mask excludes (padded tokens, fully masked rows), from {culprit['node']} "
                     f"({culprit.get('op_type', '')}), value {culprit.get('value', '')}, on: judged a match unless --strict-masked")
    elif culprit.get("node"):
        lines.append(f"first departing node: {culprit['node']} ({culprit.get('op_type', '')}), value {culprit.get('value', '')}")
    lines += _fix_lines(t)
    if t.get("report"):
        lines.append(f"the candidate against the export, node by node (diff's report): {t['report']}")
    lines += headroom_lines(t.get("headroom") or [])
    if t.get("named_nodes"):
        lines.append(f"note: {t['named_nodes']} unnamed reference node(s) were named <op_type>_<index> so that {t['knob']} can name them")
    return lines


def headline(t: dict[str, Any]) -> str:
    tool = _named(t)
    score = t.get("score", 0.0)
    off = (_off(score) if score >= _DIVERGED else f"{_pct(score)} of its scale") + (" where the mask keeps positions" if t.get("masked_outputs") else "")
    precision = t.get("precision", "float32")
    explains = f"{precision} explains {_pct(t.get('limit', 0.0))}"
    if t.get("matched") and t.get("judged_by") == "diff":
        return (f"{tool}: the transformed candidate matches the reference: node by node, every value stays within what {precision}"
                f" explains (worst output off by {off})")
    if t.get("matched"):
        return f"{tool}: the transformed candidate matches the reference (worst output off by {off}; {explains})"
    if t.get("score", 0.0) >= _DIVERGED:
        return f"{tool} changes the result: an output gets NaN/Inf, another shape or other integers"
    if t.get("target"):
        return (f"{tool} changes the result: node by node, a value departs beyond what {precision} explains, though the worst output"
                f" is off by only {off} ({explains}); the fix must at least halve that, to {_pct(t['target'])}")
    return f"{tool} changes the result: the worst output is off by {off} ({explains})"


def _fix_lines(t: dict[str, Any]) -> list[str]:
    if t.get("matched"):
        return []
    checked = (
        f"the fixed candidate was made again, run and matches (re-checked){': ' + t['fixed_candidate'] if t.get('fixed_candidate') else ''}"
        if t.get("rechecked")
        else "the fixed candidate did NOT match when made again: treat this answer as a lead only"
    )
    if t.get("keep_nodes") and t.get("minimized") is False:
        nodes = _names(t["keep_nodes"])
        lines = [f"keep out of {t['name']} ({t['knob']}, {len(t['keep_nodes'])} node(s)): {nodes}", f"  call: {_call(t)}", checked,
                 f"a fix, not the smallest: the search's {t.get('budget_s', 0):g} s for minimizing ran out after {t.get('applications', 0)} "
                 f"applications of {t['tool']}; --transform-budget SECONDS gives it more"]
        if t.get("candidates") and len(t["keep_nodes"]) >= t["candidates"] / 2:
            lines.append(f"it keeps {len(t['keep_nodes'])} of the {t['candidates']} nodes {t['name']} would convert: as configured, "
                         f"{t['name']} does not suit this model from {t['keep_nodes'][0]} on")
        return lines
    if t.get("keep_nodes"):
        nodes = _names(t["keep_nodes"])
        return [f"keep out of {t['name']} ({t['knob']}, most helpful first): {nodes}", f"  call: {_call(t)}", checked]
    if t.get("folded"):
        nodes = ", ".join(f"{f['node']} ({f['op_type']}, value {f['value']})" for f in t["folded"])
        rest = [r for r in t.get("rules", []) if not r.startswith("fold:")]
        also = f"; also switch off {', '.join(rest)}" if rest else ""
        return [f"{t['tool']}'s constant folding of {nodes} changes the result: fold everything else, not that{also}",
                f"  call: {_call(t)}", checked]
    if t.get("rules"):
        which = "pass" if t["knob"] == "passes" else "fusion" if t["knob"] == "FusionOptions" else "rewrite rule"
        return [f"switch off {t['tool']}'s {which}{'s' if len(t['rules']) > 1 else ''}: {', '.join(t['rules'])}", f"  call: {_call(t)}", checked]
    if not t.get("fixable", True):
        return _unfixable_lines(t)
    return []


def _unfixable_lines(t: dict[str, Any]) -> list[str]:
    if t.get("knob") not in ("node_block_list", "nodes_to_exclude"):
        return [f"no set of {t['knob']} switched off makes it match: the change comes from {t['tool']}'s fixed passes, not from a rule"]
    lines = [f"no keep-list fixes it: even with every candidate node in {t['knob']} the candidate departs"]
    over = [r for r in t.get("headroom") or [] if r.get("kind") == "over_range"]
    if t.get("name") == "fp16-ort" and over:
        lines.append(f"  onnxruntime's converter types every float value float16 first, so a kept node's output still passes through a"
                     f" Cast to float16: '{over[0]['value']}' overflows between kept nodes; scale it down in the model, or try"
                     " --transform fp16 (onnxconverter-common places its Casts around the kept nodes only)")
    constants = t.get("unfixable_constants") or []
    for c in constants:
        where = f"Constant node '{c['constant_node']}'" if c.get("constant_node") else "initializer"
        readers = ", ".join(c.get("readers") or []) or "no node"
        lines.append(
            f"  the conversion changes constant '{c['constant']}' ({where}, read by {readers}) from {c['before']:.6g} to {c['after']:.6g}"
            " even when its readers are kept"
        )
    if any(c.get("constant_node") for c in constants):
        lines.append("  a Constant node's value is converted unless the Constant is kept, and reaches a kept reader through float16 anyway:"
                     " make it an initializer without a value_info entry")
    if any(c.get("listed_in_value_info") for c in constants):
        lines.append("  an initializer the model lists in value_info is marked float16 before the converter keeps anything, so a kept reader"
                     " reads it through a Cast from float16: drop the initializers' value_info entries before converting")
    return lines


def headroom_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Reference values over float16's range (65504) or under its smallest normal (6.1e-05)."""
    lines = []
    for r in (r for r in rows if r["kind"] == "over_range"):  # each one: the usual cause of a float16 defect
        where = f"'{r['value']}'" + (f" ({r['node']})" if r.get("node") else "")
        lines.append(f"float16 headroom: {where} reaches {r['max_abs']:.4g}, over float16's 65504 ({_elements(r['elements'])})")
    small = [r for r in rows if r["kind"] == "under_normal"]
    if small:  # one line: float16 keeps them as subnormals or zeros, rarely what breaks a model
        each = ", ".join(f"'{r['value']}' ({_elements(r['elements'])}, down to {r['min_abs']:.3g})" for r in small[:3])
        more = f" and {len(small) - 3} more value(s)" if len(small) > 3 else ""
        lines.append(f"float16 headroom: under float16's smallest normal 6.1e-05 (subnormal or zero in float16): {each}{more}")
    fills = [r for r in rows if r["kind"] == "mask_fill"]
    if fills:
        names = ", ".join(f"'{r['value']}'" for r in fills[:3]) + (f" and {len(fills) - 3} more" if len(fills) > 3 else "")
        lines.append(f"float16 headroom: {names} hold a mask's fill ({fills[0]['max_abs']:.3g}, float32's extreme), which float16"
                     " cannot hold: it becomes float16's extreme or the converter's clamp, harmless where what it masks is discarded")
    return lines


# Names a line lists at most; the record's keep_nodes and tool_kwargs hold them all.
SHOWN_NAMES = 12


def _first(names: list[str], quote: str = "", where: str = "") -> str:
    """The first ``SHOWN_NAMES`` of ``names`` joined (each in ``quote``), then the count of the rest and ``where``."""
    shown = ", ".join(f"{quote}{n}{quote}" for n in names[:SHOWN_NAMES])
    return shown + (f" and {len(names) - SHOWN_NAMES} more{where}" if len(names) > SHOWN_NAMES else "")


def _names(names: list[str]) -> str:
    return _first(names, where=" (all in the JSON's transform.keep_nodes)")


def _kwarg(key: str, value: Any) -> str:
    if isinstance(value, list) and len(value) > SHOWN_NAMES:
        return f"{key}=[{len(value)} names: the JSON's transform.tool_kwargs]"
    return f"{key}={value!r}"


def _call(t: dict[str, Any]) -> str:
    """The tool's own call with the fix (rule lists: every default but the ones switched off)."""
    kwargs = ", ".join(_kwarg(k, v) for k, v in (t.get("tool_kwargs") or {}).items())
    off = sorted(t.get("rules") or [])
    if t["name"] == "onnxoptimizer":
        return f"onnxoptimizer.optimize(model, [p for p in onnxoptimizer.get_fuse_and_elimination_passes() if p not in {off!r}])"
    if t["name"] == "onnxscript":
        if t.get("folded"):
            return f"onnxscript.optimizer.optimize_ir(model, should_fold={(t.get('tool_kwargs') or {}).get('should_fold', '')})"
        return f"optimize_ir's passes and default rewrite rules without {off!r} (nodebisect.transforms.onnxscript_rules.apply)"
    if t["name"].startswith("ort-transformers"):
        model_type = t["name"].partition(":")[2] or "bert"
        flags = "; ".join(f"options.{f} = False" for f in off)
        return f"options = FusionOptions({model_type!r}); {flags}; optimize_model(path, model_type={model_type!r}, optimization_options=options)"
    return {
        "fp16": f"onnxconverter_common.float16.convert_float_to_float16(model, {kwargs})",
        "fp16-ort": f"onnxruntime.transformers.float16.convert_float_to_float16(model, {kwargs})",
        "quantize-dynamic": f"onnxruntime.quantization.quantize_dynamic(model_in, model_out, {kwargs})",
        "quantize-static": f"onnxruntime.quantization.quantize_static(model_in, model_out, reader, {kwargs})",
    }.get(t["name"], f"{t['name']} with {kwargs}")


def _named(t: dict[str, Any]) -> str:
    """``fp16 (onnxconverter-common 1.16.0)``: the transformation, its tool and version (none when unknown)."""
    return f"{t['name']} ({t['tool']} {t.get('version', '')})".replace(" )", ")")


def _off(score: float) -> str:
    return "NaN/Inf or a different value" if score >= _DIVERGED else _pct(score)


def _pct(x: float) -> str:
    return f"{x * 100:.3g}%"


def _elements(n: int) -> str:
    return f"{n} element{'s' if n != 1 else ''}"


def transform_tables(rows: list[dict[str, Any]]) -> list[str]:
    """sweep.md's tables, one per transformation (``sweep --transform NAME``): which models break, at which op, the fix."""
    by_name: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for row in rows:
        t = row.get("transform") or {}
        if t.get("name"):
            by_name.setdefault(t["name"], []).append((str(row.get("name", "")), t))
    lines: list[str] = []
    for name, entries in sorted(by_name.items()):
        broken = sum(1 for _, t in entries if not t.get("matched") and not t.get("failed"))
        failed = sum(1 for _, t in entries if t.get("failed"))
        tool = f"{entries[0][1].get('tool', '')} {entries[0][1].get('version', '')}".strip()
        counts = f"{broken} of {len(entries)} model(s) depart after {name} ({tool})" + (
            f"; for {failed}, {tool} refused the export or wrote a model onnxruntime cannot run" if failed else "")
        lines += ["", f"## Transformation {name}", "", counts + ".",
                  "", "| model | verdict | at op | first departing node | fix | re-checked |", "|---|---|---|---|---|---|"]
        for model, t in sorted(entries, key=lambda e: (bool(e[1].get("matched")), not e[1].get("failed"), e[0])):
            culprit = t.get("culprit") or {}
            node = f"`{culprit['node']}`" if culprit.get("node") else ""
            lines.append(f"| {model.replace('|', '/')} | {_verdict_cell(t)} | {culprit.get('op_type', '')} | "
                         f"{node} | {_fix_cell(t)} | {'yes' if t.get('rechecked') else ''} |")
    return lines


def _verdict_cell(t: dict[str, Any]) -> str:
    if t.get("failed"):
        return "invalid candidate" if t.get("failed_exit") == 4 else "tool refused"
    if t.get("matched"):
        return "match, differs only at masked positions" if (t.get("culprit") or {}).get("node") else "match"
    return "breaks"


def _fix_cell(t: dict[str, Any]) -> str:
    if t.get("failed"):
        return _short_failure(t["failed"]).replace("|", "/")
    if t.get("matched"):
        return ""
    if t.get("keep_nodes"):
        smallest = "" if t.get("minimized", True) else " (not minimized: budget)"
        return f"keep out ({t['knob']}): {_first(t['keep_nodes'], '`')}{smallest}"
    if t.get("rules"):
        return "switch off: " + ", ".join(f"`{r}`" for r in t["rules"])
    constants = t.get("unfixable_constants") or []
    if constants:
        return "no keep-list: " + ", ".join(f"`{c['constant']}` {c['before']:.4g} -> {c['after']:.4g}" for c in constants[:2])
    return "no knob setting fixes it"


def _short_failure(message: str) -> str:
    """A table cell: onnxruntime's own words, without the sentence around them and its error-code prefix."""
    found = re.search(r"\[ONNXRuntimeError\] : \d+ : \w+ : (.*)", message)
    return ("onnxruntime rejects it: " + found.group(1) if found else message)[:200]


def transform_markdown(t: dict[str, Any]) -> str:
    """report.md's section on the transformation ("" without --transform)."""
    lines = transform_lines(t)
    if not lines:
        return ""
    body = "\n".join(f"- {line.strip()}" if not line.startswith("  call:") else f"  - `{line.strip().removeprefix('call: ')}`" for line in lines)
    return f"## The transformation: `--transform {t['name']}`\n\n{body}"
