"""The sentences about where a divergence lives when the model has a mask input (issue #22.2).

``FirstDivergent.scope`` and each output's ``max_abs_attended`` are data
(``values.masks``, ``search.outcome``); the terminal, report.md, the TUI and sweep.md
read these words, composed here beside ``report.wording``.
"""

from __future__ import annotations

from nodebisect.records import DIVERGED, LocateResult, Scope
from nodebisect.report.markup import num

MASKED_ONLY = "only at masked positions"  # the headline's words; sweep.md groups by the scope itself
STRICT_FLAG = "--strict-masked"


def masked_only(result: LocateResult) -> bool:
    """A divergence only at positions a mask input excludes (``FirstDivergent.scope``)."""
    return result.verdict == DIVERGED and getattr(result.first_divergent, "scope", "") == Scope.MASKED_POSITIONS


def masked_meanwhile(result: LocateResult, meanwhile: str) -> str:
    """What to do meanwhile when only masked positions differ: usually nothing, else the op's own remedy."""
    if not masked_only(result) or not meanwhile:
        return meanwhile
    return ("meanwhile, nothing if what reads the outputs keeps to the positions the mask keeps (the outputs of padded "
            "tokens and fully masked rows are usually discarded); if it reads them, " + meanwhile.removeprefix("meanwhile, "))


def exit_code(result: LocateResult, strict_masked: bool = False) -> int:
    """The CLI's exit code: 0 (match) for a divergence only at masked positions, unless ``strict_masked``."""
    return 0 if masked_only(result) and not strict_masked else int(result.exit_code)


def headline_suffix(result: LocateResult) -> str:
    """``, only at masked positions`` after "DIVERGED at NODE (Op)" when no kept position differs."""
    return f", {MASKED_ONLY}" if masked_only(result) else ""


def scope_text(result: LocateResult) -> str:
    """The scope fact: where the outputs differ, at kept and at excluded positions ("" without a mask)."""
    fd = result.first_divergent
    split = [o for o in result.outputs if o.max_abs_attended is not None and not o.ok]
    if fd is None or not fd.scope or not split:
        return ""
    attended = max(o.max_abs_attended or 0.0 for o in split)
    overall = max(o.metrics.max_abs for o in split)
    if fd.scope == Scope.MASKED_POSITIONS:
        return (
            f"diverges {MASKED_ONLY}: the outputs agree at every position the mask keeps (max_abs {num(attended)} there, "
            f"{num(overall)} where it excludes: padded tokens, fully masked query rows); exit code 0 unless {STRICT_FLAG} (then 1)"
        )
    return f"reaches attended positions: max_abs {num(attended)} where the mask keeps positions ({num(overall)} overall)"


def output_scope_cell(max_abs_attended: float | None) -> str:
    """report.md's outputs table: the error at kept positions, or "-" when no mask applies."""
    return "-" if max_abs_attended is None else num(max_abs_attended)


def downstream_sentence(count: int) -> str:
    """Under report.md's values table: the diverging values it leaves out, and why."""
    return (
        f"{count} more value(s) downstream of the first divergent one also diverge: its consequences, amplified on the "
        "way to the outputs, not separate departures (the full node table and growth.svg show them)."
    )


def torch_repro_sentence(folder: str) -> str:
    """report.md's How to reproduce: the torch-level repro beside the ONNX one (report.torch_repro)."""
    return (
        f"`{folder}/torch_repro.py` calls the culprit's aten op alone in PyTorch on the same values (`torch_args.npz`) "
        f"and prints PyTorch's and onnxruntime's answers side by side (needs torch too): `python {folder}/torch_repro.py`."
    )


__all__ = ["torch_repro_sentence", "downstream_sentence", "exit_code", "masked_only", "MASKED_ONLY", "STRICT_FLAG", "headline_suffix", "output_scope_cell", "scope_text"]
