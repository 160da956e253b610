"""``locate --model-explorer DIR`` and ``--polygraphy DIR``: files for other tools, from the live run.

Both need what only a live run has (the ONNX model as compared, PyTorch's values, the
feeds): ``Keeper`` is handed to ``locate(on_prepared=...)`` and keeps the run's
``Prepared``; ``write`` then writes the folders once the result is known.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nodebisect.records import LocateResult


class Keeper:
    """Keeps the ``Prepared`` of the given inputs (the first one a run hands over)."""

    def __init__(self) -> None:
        self.prep: Any = None

    def __call__(self, prep: Any) -> None:
        if self.prep is None:
            self.prep = prep


def keeper(args: argparse.Namespace) -> Keeper | None:
    """A keeper when a flag asks for a live writer, else None (the run keeps nothing)."""
    return Keeper() if getattr(args, "model_explorer", None) or getattr(args, "polygraphy", None) else None


def write(args: argparse.Namespace, result: LocateResult, kept: Keeper | None) -> list[str]:
    """Write the asked folders; the lines to print (``wrote ...``)."""
    lines: list[str] = []
    if kept is None:
        return lines
    if kept.prep is None:
        from nodebisect.report.interop_wording import nothing_written

        flags = [f for f, v in (("--model-explorer", args.model_explorer), ("--polygraphy", args.polygraphy)) if v]
        return [nothing_written(flags)]
    if args.model_explorer:
        lines.append(f"wrote Model Explorer overlays to {write_explorer(result, kept.prep, args.model_explorer)} "
                     f"(open them: nodebisect explore {args.model_explorer})")
    if args.polygraphy:
        from nodebisect.interop.polygraphy import README, write_polygraphy

        out = write_polygraphy(result, kept.prep, args.polygraphy)
        lines.append(f"wrote Polygraphy golden values to {out} (the command: {out / README})")
    return lines


def write_explorer(result: LocateResult, prep: Any, out_dir: str) -> Path:
    """model.onnx, report.json and the overlays: all ``nodebisect explore DIR`` needs."""
    from nodebisect.interop.fx_names import source_names
    from nodebisect.interop.polygraphy import MODEL, write_model
    from nodebisect.report.atomic import write_text
    from nodebisect.report.model_explorer import write_overlays

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_model(prep.onnx_model, out / MODEL)
    pt2 = source_names(prep.program, prep.original) if result.model.endswith(".pt2") else None
    write_overlays(result, out, pt2)
    write_text(out / "report.json", result.to_json())
    return out
