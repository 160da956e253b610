"""The ``nodebisect`` command: a thin argparse layer over the Python API.

This is the only module that prints or exits. Library errors become one line
plus a tip, with the exit codes of ``ExitCode``; ``--debug`` shows tracebacks.
Heavy imports happen inside the command that needs them, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any, Callable

from nodebisect.cli.options import add_locate_options, locate_kwargs
from nodebisect.errors import ExitCode, NodebisectError

EPILOG = """exit codes: 0 match, 1 divergence found, 2 usage or bad input, 3 export failed,
4 onnxruntime failed, 70 internal error, 130 interrupted"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the help test)."""
    parser = argparse.ArgumentParser(
        prog="nodebisect",
        description="Find the first ONNX node whose output departs from the PyTorch model it was exported from.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    loc = sub.add_parser("locate", help="export, compare and name the first divergent ONNX node", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_locate_options(loc)
    out = loc.add_argument_group("output")
    out.add_argument("--json", metavar="FILE", help="write the LocateResult as JSON ('-' for stdout)")
    out.add_argument("--report", metavar="DIR", help="write report.md, report.json, graph.svg and repro/ into DIR")
    out.add_argument("--redact", action="store_true", help="strip paths, user and host names from the report")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    loc.add_argument("--debug", action="store_true", help="show full tracebacks")
    loc.set_defaults(func=cmd_locate)
    for name, func, helptext in _extra_commands():
        extra = sub.add_parser(name, help=helptext)
        func(extra)
    return parser


def _extra_commands() -> list[tuple[str, Callable[[argparse.ArgumentParser], None], str]]:
    """Subcommands defined by optional modules (report, tui), registered if present."""
    found = []
    try:
        from nodebisect.cli import report as cli_report

        found.append(("report", cli_report.configure, "rebuild report.md / graph / repro from a saved result JSON"))
    except ImportError:
        pass
    try:
        from nodebisect.cli import tui as cli_tui

        found.append(("tui", cli_tui.configure, "interactive terminal UI over a model or a saved result"))
    except ImportError:
        pass
    return found


def cmd_locate(args: argparse.Namespace) -> int:
    from nodebisect import locate
    from nodebisect.report.atomic import write_text
    from nodebisect.records import Event
    from nodebisect.report.summary import summary

    json_to_stdout = args.json == "-"
    human = sys.stderr if json_to_stdout else sys.stdout

    def progress(event: Event) -> None:
        if args.quiet:
            return
        if event.kind == "stage":
            print(f"[nodebisect] {event.message}...", file=sys.stderr, flush=True)
        elif event.kind == "probe":
            total = f"/{event.total}" if event.total else ""
            width = 24
            done = int(width * event.step / event.total) if event.total else 0
            bar = f"[{'#' * done}{'.' * (width - done)}] " if event.total else ""
            print(
                f"[nodebisect]   {bar}step {event.step}{total}: {len(event.values)} value(s) measured, {len(event.bad)} diverged",
                file=sys.stderr,
                flush=True,
            )

    result = locate(args.model, progress=progress, **locate_kwargs(args))
    print(summary(result), file=human, flush=True)
    text = json.dumps(result.to_dict(), indent=2, sort_keys=False)
    if args.json:
        if json_to_stdout:
            print(text)
        else:
            write_text(args.json, text + "\n")
            print(f"wrote {args.json}", file=sys.stderr)
    if args.report:
        try:
            from nodebisect.report.bundle import write_report
        except ImportError:
            print("note: --report needs the report module, which this install lacks", file=sys.stderr)
        else:
            written = write_report(result, args.report, redact=args.redact)
            print(f"wrote report to {written}", file=sys.stderr)
    return int(result.exit_code)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code instead of exiting (tests call this)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return int(ExitCode.USAGE)
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("nodebisect: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except NodebisectError as exc:
        if debug:
            traceback.print_exc()
        print(f"nodebisect: error: {exc.message}", file=sys.stderr)
        if exc.tip:
            print(f"tip: {exc.tip}", file=sys.stderr)
        return int(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a raw traceback
        if debug:
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(f"nodebisect: internal error: {type(exc).__name__}: {first}", file=sys.stderr)
        print("tip: re-run with --debug and attach the traceback to a nodebisect issue", file=sys.stderr)
        return int(ExitCode.INTERNAL_ERROR)


def _version() -> str:
    from nodebisect import __version__

    return __version__


def run() -> None:
    """Console-script entry: exit with ``main``'s code."""
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    sys.exit(main())


if __name__ == "__main__":
    run()
