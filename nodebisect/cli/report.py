"""``nodebisect report RESULT.json --out DIR``: rebuild the report from a saved result.

Reads only the JSON (schema ``nodebisect.report/1``), so it runs without torch
and without the model; the repro bundle needs the live tensors: one already in
the output folder (written by ``locate --report`` there) is kept and linked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nodebisect.records import STAGE_CAPTURE
from nodebisect.result_file import load_result


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``nodebisect report`` and its handler."""
    parser.add_argument("result", metavar="RESULT.json", help="a result saved with `nodebisect locate --json FILE` (or a report.json)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for report.md, report.json, growth.svg, graph.svg")
    parser.add_argument("--redact", action="store_true", help="strip paths, user and host names from the report")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from nodebisect.report.bundle import NO_REPRO_NOTE, write_report

    result = load_result(args.result)
    out = write_report(result, args.out, redact=args.redact)
    print(f"wrote report to {out}", file=sys.stderr)
    kept = (Path(out) / "repro" / "repro.py").is_file()
    if kept:
        print(f"kept the repro bundle in {Path(out) / 'repro'}", file=sys.stderr)
    elif result.first_divergent is not None and result.first_divergent.stage != STAGE_CAPTURE:
        print(f"note: {NO_REPRO_NOTE}", file=sys.stderr)
    if not (Path(out) / "graph.svg").exists() and (Path(out) / "graph.dot").exists():
        print("note: graphviz `dot` not found: wrote graph.dot (pip install graphviz-pure, or apt-get install graphviz / brew install graphviz)", file=sys.stderr)
    return 0
