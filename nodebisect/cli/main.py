"""The ``nodebisect`` command: a thin argparse layer over the Python API.

This is the only module that prints or exits. Library errors become one line
plus a tip, with the exit codes of ``ExitCode``; ``--debug`` shows tracebacks.
Heavy imports happen inside the command that needs them, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import traceback
from typing import Any, Callable, NoReturn

from nodebisect.cli.options import add_interop_options, add_locate_options, locate_kwargs
from nodebisect.cli.transform import add_transform_options, locate_with_transform, transform_text
from nodebisect.errors import ExitCode, NodebisectError

EPILOG = """exit codes: 0 match, 1 divergence found, 2 usage or bad input, 3 export failed,
4 onnxruntime failed, 70 internal error, 130 interrupted (--exporter both: the worse
of the two exporters' codes, the higher one; a divergence only at positions a mask input
excludes exits 0 unless --strict-masked)"""


class Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for unknown options, in the subcommand's own usage."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(int(ExitCode.USAGE), f"{self.prog}: error: {message}\n")

    def knows(self, flag: str) -> bool:
        """``flag`` is one of this parser's options, or an abbreviation argparse accepts."""
        known = [o for action in self._actions for o in action.option_strings]
        return flag in known or len([o for o in known if o.startswith(flag)]) == 1

    def unknown_options(self, extras: list[str]) -> NoReturn:
        """Refuse ``extras`` naming the closest known option of each."""
        known = [o for action in self._actions for o in action.option_strings if o.startswith("--")]
        parts = []
        for word in extras:
            flag = word.split("=", 1)[0]
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6) if flag.startswith("-") else []
            parts.append(f"{word} (did you mean {close[0]}?)" if close else word)
        self.error(f"unrecognized argument{'s' if len(extras) > 1 else ''}: {' '.join(parts)}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the help test)."""
    parser = Parser(
        prog="nodebisect",
        description="Find the first ONNX node whose output departs from the PyTorch model it was exported from.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    loc = sub.add_parser("locate", help="export, compare and name the first divergent ONNX node", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_locate_options(loc)
    add_transform_options(loc)
    out = loc.add_argument_group("output")
    out.add_argument("--json", metavar="FILE", help="write the LocateResult as JSON ('-' for stdout)")
    out.add_argument("--report", metavar="DIR", help="write report.md, report.json, graph.svg and repro/ into DIR")
    out.add_argument("--redact", action="store_true", help="strip paths, user and host names from the report")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    out.add_argument("--strict-masked", action="store_true", help="exit 1 also for a divergence only at positions a mask input excludes (default: exit 0, said in the verdict)")
    out.add_argument("--verbose", "-v", action="store_true", help="also print every onnxruntime session and notes on nodebisect's own mechanics")
    add_interop_options(out)
    loc.add_argument("--debug", action="store_true", help="show full tracebacks")
    loc.set_defaults(func=cmd_locate)
    for name, func, helptext in _extra_commands():
        extra = sub.add_parser(name, help=helptext)
        func(extra)
    return parser


def _extra_commands() -> list[tuple[str, Callable[[argparse.ArgumentParser], None], str]]:
    """The other subcommands; each module imports its heavy libraries only when it runs."""
    from nodebisect.cli import report as cli_report
    from nodebisect.cli import explore as cli_explore
    from nodebisect.cli import tui as cli_tui
    from nodebisect.sweep import cli as sweep_cli

    return [
        ("report", cli_report.configure, "rebuild report.md / graph / repro from a saved result JSON"),
        ("tui", cli_tui.configure, "interactive terminal UI over a model, a saved result or a sweep directory"),
        ("explore", cli_explore.configure, "open a result in Model Explorer with nodebisect's per-node overlays (the explorer extra)"),
        ("sweep", sweep_cli.configure, "check a whole model fleet (local pool or Ray) and mine the operator sequences that diverge"),
        ("diff", __import__("nodebisect.cli.diff", fromlist=["configure"]).configure, "compare an ONNX model with the ONNX model it was made from (optimized, float16, quantized, another EP)"),
    ]


def cmd_locate(args: argparse.Namespace) -> int:
    from nodebisect import locate
    from nodebisect.cli import interop
    from nodebisect.report.atomic import write_text
    from nodebisect.report.scope_wording import exit_code
    from nodebisect.report.summary import summary

    json_to_stdout = args.json == "-"
    human = sys.stderr if json_to_stdout else sys.stdout

    progress = ProgressPrinter(quiet=args.quiet, verbose=args.verbose)
    if args.exporter == "both":  # each exporter's verdict, then the two side by side
        from nodebisect.cli.both import cmd_locate_both

        return cmd_locate_both(args, locate_kwargs(args), progress)
    kept = interop.keeper(args)  # --model-explorer / --polygraphy: the live run's model and values
    if args.transform:
        result = locate_with_transform(args, progress)
    else:
        result = locate(args.model, progress=progress, **locate_kwargs(args), **({"on_prepared": kept} if kept else {}))
    text = result.to_json()
    if args.json:
        if json_to_stdout:
            print(text, end="")
        else:
            write_text(args.json, text)
            print(f"wrote {args.json}", file=sys.stderr)
    written = None
    if args.report:
        from nodebisect.report.bundle import write_report

        written = write_report(result, args.report, redact=args.redact)
        print(f"wrote report to {written}", file=sys.stderr)
    for line in interop.write(args, result, kept):
        print(line, file=sys.stderr)
    # After the report: `next:` points at the files as they are on disk.
    repro = written is not None and (written / "repro" / "repro.py").exists()
    print(summary(result, report_dir=args.report if written else None, verbose=args.verbose, repro=repro), file=human, flush=True)
    if result.transform:
        print(transform_text(result), file=human, flush=True)
    failed = (result.transform or {}).get("failed_exit")  # --transform's tool refused the export or wrote an invalid model
    return int(failed) if failed else exit_code(result, strict_masked=args.strict_masked)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code instead of exiting (tests call this)."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    # Unknown options first: argparse would otherwise complain of a missing required one instead.
    command = next((w for w in words if not w.startswith("-")), None)
    sub = _subparser(parser, command) or parser
    unknown = [w for w in words if w.startswith("--") and w != "--" and not sub.knows(w.split("=", 1)[0])]
    if unknown:
        sub.unknown_options(unknown)
    args, extras = parser.parse_known_args(words)
    if extras:
        (_subparser(parser, getattr(args, "command", None)) or parser).unknown_options(extras)
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


class ProgressPrinter:
    """Progress lines on stderr: what a user acts on by default, every session with --verbose.

    A step count is shown only when the total was known before the step (a
    bisection); the sessions of strategy ``all`` are counted as they come. A
    stage whose work turns out to need no onnxruntime session (the bisection
    after ``all`` measured everything) is not announced.
    """

    DEFERRED = ("bisect",)

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        self.quiet = quiet
        self.verbose = verbose
        self.pending = ""
        self.known_total = False

    def __call__(self, event: Any) -> None:
        if self.quiet:
            return
        if event.kind == "stage":
            self.pending = ""
            if event.message in self.DEFERRED and not self.verbose:
                self.pending = event.message
                return
            self.known_total = False
            _err(f"[nodebisect] {event.message}...")
        elif event.kind == "probe":
            if self.pending:
                _err(f"[nodebisect] {self.pending}...")
                self.pending = ""
            self.known_total = self.known_total or event.total > event.step
            measured = f"{len(event.values)} value(s) measured, {len(event.bad)} diverged"
            if self.known_total:
                width = 24
                done = int(width * min(event.step, event.total) / event.total)
                _err(f"[nodebisect]   [{'#' * done}{'.' * (width - done)}] step {event.step}/{event.total}: {measured}")
            else:
                _err(f"[nodebisect]   step {event.step}: {measured}")


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _subparser(parser: argparse.ArgumentParser, name: str | None) -> Any:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    return None


def _version() -> str:
    from nodebisect import __version__

    return __version__


def run() -> None:
    """Console-script entry: exit with ``main``'s code."""
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    sys.exit(main())


if __name__ == "__main__":
    run()
