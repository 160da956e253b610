"""``nodebisect locate MODEL --exporter both``: the two exporters' verdicts side by side.

Each exporter's own summary first, then the comparison (``report.both``); ``--json``
writes one record per exporter (``both.BothResult``), ``--report DIR`` each
exporter's full report in ``DIR/dynamo`` and ``DIR/torchscript`` and the comparison
in ``DIR/report.md``. The exit code is the worse of the two.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def cmd_locate_both(args: argparse.Namespace, kwargs: dict[str, Any], progress: Any) -> int:
    from nodebisect.both import locate_both
    from nodebisect.report.atomic import write_text
    from nodebisect.report.both import both_markdown, side_by_side
    from nodebisect.report.summary import summary

    json_to_stdout = args.json == "-"
    human = sys.stderr if json_to_stdout else sys.stdout
    both = locate_both(args.model, progress=progress, **kwargs)
    if args.json:
        if json_to_stdout:
            print(both.to_json(), end="")
        else:
            write_text(args.json, both.to_json())
            print(f"wrote {args.json}", file=sys.stderr)
    folders: dict[str, Path] = {}
    if args.report:
        from nodebisect.report.bundle import write_report

        for name, result in both.results.items():
            folders[name] = write_report(result, Path(args.report) / name, redact=args.redact)
        write_text(Path(args.report) / "report.md", both_markdown(both.results, {name: name for name in folders}))
        print(f"wrote report to {args.report}", file=sys.stderr)
    for name, result in both.results.items():
        folder = folders.get(name)
        repro = folder is not None and (folder / "repro" / "repro.py").exists()
        print(f"== {name} exporter ==", file=human)
        print(summary(result, report_dir=str(folder) if folder else None, verbose=args.verbose, repro=repro), file=human)
    print(side_by_side(both.results), file=human, flush=True)
    return int(both.exit_code)
