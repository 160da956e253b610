"""``nodebisect sweep``: arguments, the progress bar, and the files of a sweep directory.

The only module of ``nodebisect.sweep`` that prints. The main CLI registers it
with ``configure(sub.add_parser("sweep", ...))``; ``python -m nodebisect.sweep.cli``
runs it alone.

Files written into ``--out DIR``: ``sweep.jsonl`` (one row per model, appended as
each finishes), ``sweep.md`` (the summary), ``sequences.md`` (operator-sequence
mining), ``sweep.json`` (counts, export-failure groups, sequences), ``zoo/`` (the
generated factories of ``--zoo``) and ``reports/NAME/`` (``--reports``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from nodebisect.errors import BadInputError, ExitCode, NodebisectError
from nodebisect.sweep.tasks import ERROR_STATUSES, SweepOptions

DESCRIPTION = """Check a fleet of models with `locate` in worker processes (a crash costs only its row), and summarise it.

SOURCES: directories of .pt2 files (NAME.inputs.pt beside one is its --inputs),
list files (.txt: `SPEC [inputs=FILE] [name=N] [rtol=..] [timeout=..]
[model_setting=KEY=VALUE]` a line; .toml: [[model]] spec/name/inputs/options/
model_settings; .yaml: a list of those), or specs (file.py:factory).
Relative paths in a list file are relative to the list file's folder, not to
the current directory. A missing file or an unknown key in a list is exit 2.
--zoo FAMILY adds models built offline from small configs with random weights:
transformers, diffusers, monai, keras (repeatable, comma-separated, or all;
--list prints them without building anything)."""

EPILOG = """examples:
  nodebisect sweep models/ --out sweep-out --jobs 2
  nodebisect sweep --zoo transformers --limit 40 --out zoo-sweep
  nodebisect sweep --zoo diffusers,monai --list          # what the zoos hold, nothing built
  nodebisect sweep fleet.toml --out s --executor ray --address auto
  nodebisect sweep --zoo transformers --out s --model-setting use_cache=False   # a remedy for every model
  nodebisect sweep --out s --resume fleet.toml         # run what an interrupted sweep left
  nodebisect sweep --compare old-sweep new-sweep       # what newly diverges or fails

exit codes: 0 every model matched (or was skipped), 1 some model diverged or failed,
2 bad input, 130 interrupted (re-run with --resume)."""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sweep's arguments to ``parser`` (the ``sweep`` subparser) and its handler."""
    parser.description = parser.description or DESCRIPTION
    parser.epilog = parser.epilog or EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("sources", nargs="*", metavar="SOURCE", help="directory of .pt2 files, model list (.txt/.toml/.yaml), or file.py:factory")
    parser.add_argument("--out", metavar="DIR", help="sweep directory: sweep.jsonl, sweep.md, sequences.md, sweep.json")
    sel = parser.add_argument_group("which models")
    from nodebisect.sweep.zoos import names as zoo_names

    sel.add_argument("--zoo", action="append", default=[], metavar="FAMILY",
                     help=f"add a model zoo built offline (small configs, random weights): {', '.join(zoo_names())}, "
                          "or all; repeatable or comma-separated")
    sel.add_argument("--zoo-variants", default="", metavar="LIST",
                     help="zoo variants, comma-separated; each zoo keeps the ones it knows, else its defaults. "
                          "transformers: default (config defaults, cache on), export-friendly (no cache, flat tuple "
                          "outputs), eager (export-friendly with eager attention); default: default,export-friendly. "
                          "monai: 3d, 2d (both by default). diffusers, keras: default")
    sel.add_argument("--filter", default="", metavar="PATTERN", help="keep models whose name, spec or class matches (glob, or regex)")
    sel.add_argument("--limit", type=int, default=0, metavar="N", help="keep the first N models (after --filter)")
    sel.add_argument("--shard", default="", metavar="I/N", help="run every N-th model starting at the I-th (after --limit)")
    sel.add_argument("--list", action="store_true", help="print the models the sweep would run, and exit")
    run = parser.add_argument_group("where and how")
    run.add_argument("--jobs", "-j", type=int, default=0, metavar="N", help="models at a time (default: cores, capped by memory)")
    run.add_argument("--executor", choices=["local", "ray"], default="local", help="local process pool (default) or Ray")
    run.add_argument("--workers", choices=["warm", "cold"], default="warm",
                     help="warm (default) runs many models per Python process, importing torch once, and "
                          "replaces a process a model crashed, hung or blew up (under Ray: one per Ray worker); "
                          "cold starts a fresh Python per model")
    run.add_argument("--address", default="", metavar="ADDR", help="Ray cluster: auto | ray://HOST:PORT (default: start a local Ray instance)")
    run.add_argument("--timeout", type=float, default=900.0, metavar="S", help="wall-clock seconds per model before it is killed (default 900)")
    run.add_argument("--memory-mib", type=float, default=4096.0, metavar="MIB",
                     help="resident memory per model before it is killed; also Ray's per-task memory (default 4096)")
    run.add_argument("--resume", action="store_true", help="keep DIR/sweep.jsonl and run only the models without a row")
    loc = parser.add_argument_group("locate options (every model; a list entry may override them)")
    loc.add_argument("--strategy", choices=["auto", "all", "bisect"], default="auto")
    loc.add_argument("--rtol", type=float)
    loc.add_argument("--atol", type=float)
    loc.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo")
    loc.add_argument("--trials", type=int, default=1, metavar="N")
    loc.add_argument("--model-setting", action="append", dest="model_settings", default=[], metavar="KEY=VALUE",
                     help="set a config value or attribute of every model before export (repeatable), e.g. use_cache=False: "
                          "the remedies locate names for an export failure; a list entry's model_setting adds to it")
    loc.add_argument("--transform", default="", metavar="NAME", help="after each export, apply NAME (fp16, quantize-dynamic, ...) and search its fix: a table per transformation in sweep.md")
    out = parser.add_argument_group("output")
    out.add_argument("--reports", action="store_true", help="write a report bundle for each divergent model into DIR/reports/NAME")
    out.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="compare two sweep directories (or sweep.jsonl files) and exit")
    out.add_argument("--json", metavar="FILE", help="also write the summary (or the --compare diff) as JSON ('-' for stdout)")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run the sweep the arguments describe; return the exit code."""
    if args.compare:
        return _cmd_compare(args)
    from nodebisect.sweep.sources import select, tasks_from_sources, unique_names

    if not args.out and not args.list:
        raise BadInputError("sweep needs --out DIR", tip="e.g. --out sweep-out")
    if not args.sources and not args.zoo:
        raise BadInputError("no models to sweep", tip="pass a directory, a model list, or --zoo transformers (or diffusers, monai, keras)")
    from nodebisect.sweep.tasks import merge_settings

    try:
        settings = merge_settings((), list(args.model_settings or []))
    except ValueError as exc:
        raise BadInputError(f"--model-setting: {exc}") from exc
    out_dir = Path(args.out or ".").expanduser().absolute()
    tasks = tasks_from_sources(list(args.sources))
    if args.zoo:
        from nodebisect.sweep.zoos import parse_families, tasks_for

        variants = [v.strip() for v in args.zoo_variants.split(",") if v.strip()]
        tasks = unique_names(tasks + tasks_for(parse_families(args.zoo), out_dir / "zoo", variants or None, write=not args.list))
    tasks = select(tasks, args.filter, args.limit, args.shard)
    if args.list:
        for task in tasks:
            print(f"{task.name}\t{task.spec}" + (f"\t--inputs {' '.join(task.inputs)}" if task.inputs else "")
                  + "".join(f"\t{k}={v}" for k, v in task.options.items() if k != "model_settings")
                  + "".join(f"\t--model-setting {s}" for s in task.options.get("model_settings") or []))
        return ExitCode.MATCH
    if not tasks:
        raise BadInputError("no model left after --filter/--limit/--shard")
    options = SweepOptions(strategy=args.strategy, rtol=args.rtol, atol=args.atol, exporter=args.exporter,
                           trials=args.trials, timeout=args.timeout, memory_mib=args.memory_mib, reports=args.reports,
                           model_settings=settings, transform=args.transform)
    for task in tasks:  # a bad per-model option is bad input now, not an error in a worker later
        try:
            options.merged(task.options)
        except ValueError as exc:
            raise BadInputError(f"{task.name}: {exc}") from exc
    from nodebisect.sweep.results import ROWS_FILE, RowWriter, done_names, load_rows

    rows_path = out_dir / ROWS_FILE
    if args.resume:
        done = done_names(rows_path)
        todo = [t for t in tasks if t.name not in done]
        _say(args, f"resume: {len(tasks) - len(todo)} of {len(tasks)} models already have a row")
    else:
        if rows_path.exists() and rows_path.stat().st_size:
            raise BadInputError(f"{rows_path} already holds a sweep", tip="pass --resume to continue it, or another --out")
        todo = tasks
    writer = RowWriter(rows_path)
    from nodebisect.sweep.executors import ExecutorConfig, default_jobs, execute

    jobs = args.jobs or default_jobs(min(args.memory_mib, 1500.0))
    config = ExecutorConfig(kind=args.executor, jobs=jobs, address=args.address, report_root=str(out_dir / "reports"),
                            warm=args.workers == "warm")
    where = f"Ray {args.address or '(local instance)'}" if args.executor == "ray" else f"{jobs} local {args.workers} worker(s)"
    _say(args, f"sweep: {len(todo)} model(s) on {where}, timeout {args.timeout:g}s each -> {out_dir}")
    progress = Progress(len(todo), enabled=not args.quiet)
    start = time.monotonic()
    interrupted = False
    try:
        for row in execute(todo, options, config):
            writer.append(row)
            progress.update(row)
    except KeyboardInterrupt:
        interrupted = True
    progress.close()
    elapsed = time.monotonic() - start
    names = {t.name for t in tasks}
    rows = [r for r in load_rows(rows_path) if r["name"] in names] if rows_path.exists() else []
    summary = write_summary(out_dir, rows, elapsed, ran=progress.done)
    print(summary["terminal"], file=sys.stderr)  # the table goes with the progress, off stdout
    rate = len(todo) / (elapsed / 60) if elapsed > 0 and todo else 0.0
    print(f"{len(rows)} row(s) in {rows_path}; this run: {progress.done} model(s) in {elapsed:.0f}s "
          f"({rate:.1f} models/min); summary: {out_dir / 'sweep.md'}, sequences: {out_dir / 'sequences.md'}", file=sys.stderr)
    if args.json:
        _emit_json(args.json, summary["json"])
    if interrupted:
        print(f"interrupted: re-run with --resume --out {out_dir} to finish", file=sys.stderr)
        return ExitCode.INTERRUPTED
    return ExitCode.MATCH if all(r["status"] in ("match", "skipped") for r in rows) else ExitCode.DIVERGED


def write_summary(out_dir: Path, rows: list[dict[str, Any]], elapsed_s: float | None = None, ran: int | None = None) -> dict[str, Any]:
    """Write sweep.md, sequences.md and sweep.json atomically; return the terminal text and the JSON."""
    from nodebisect.sweep import sequences, summary
    from nodebisect.sweep.results import write_atomic

    mined = sequences.mine(rows)
    t = summary.totals(rows)
    data = {
        "schema": "nodebisect.sweep-summary/1",
        "models": t.models,
        "by_status": dict(t.by_status),
        "by_stage": dict(t.by_stage),
        "by_cause": dict(t.by_cause),
        "elapsed_s": round(elapsed_s, 1) if elapsed_s else None,
        "ran": ran,
        "divergent": [{"name": r["name"], "onnx_node": (r.get("first_divergent") or {}).get("onnx_node"),
                       "op_type": (r.get("first_divergent") or {}).get("op_type"),
                       "target": ((r.get("first_divergent") or {}).get("framework") or {}).get("target"),
                       "source": summary.model_source((r.get("first_divergent") or {}).get("framework") or {}),
                       "report_dir": r.get("report_dir", "")} for r in rows if r["status"] == "diverged"],
        "export_failures": [{"target": g[0], "message": g[1], "models": g[2],
                             **dict(zip(("remedy", "settings"), summary.group_remedy(rows, g[2])))}
                            for g in summary.export_failure_groups(rows)],
        "others": [{"name": r["name"], "status": r["status"], "reason": r.get("reason", "")}
                   for r in rows if r["status"] not in ("match", "diverged", "export_failed")],
        "sequences": mined.to_dict(),
    }
    write_atomic(out_dir / "sweep.md", summary.to_markdown(rows, out_dir, elapsed_s, ran))
    write_atomic(out_dir / "sequences.md", sequences.to_markdown(mined))
    write_atomic(out_dir / "sweep.json", json.dumps(data, indent=1, default=str) + "\n")
    width = shutil.get_terminal_size((120, 24)).columns
    return {"terminal": summary.terminal_table(rows, width=width), "json": data}


class Progress:
    """The live progress line: done/total, counts per outcome, ETA (one line per model off a terminal)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total = total
        self.done = 0
        self.counts: Counter = Counter()
        self.start = time.monotonic()
        self.enabled = enabled
        self.tty = sys.stderr.isatty()

    def update(self, row: dict[str, Any]) -> None:
        self.done += 1
        status = row["status"]
        self.counts["errors" if status in ERROR_STATUSES else status] += 1
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        counts = (f"match {self.counts['match']} diverged {self.counts['diverged']} export_failed {self.counts['export_failed']} "
                  f"runtime_failed {self.counts['runtime_failed']} errors {self.counts['errors']}"
                  + (f" skipped {self.counts['skipped']}" if self.counts["skipped"] else ""))
        if self.tty:
            width = 24
            filled = int(width * self.done / max(1, self.total))
            bar = "#" * filled + "." * (width - filled)
            sys.stderr.write(f"\r[{bar}] {self.done}/{self.total}  {counts}  ETA {_clock(eta)} ")
            sys.stderr.flush()
        else:
            print(f"[{self.done}/{self.total}] {row['name']}: {status} ({float(row.get('wall_s') or 0):.0f}s) "
                  f"{row.get('reason', '')[:120]} | {counts} | ETA {_clock(eta)}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty and self.done:
            sys.stderr.write("\n")


def _cmd_compare(args: argparse.Namespace) -> int:
    from nodebisect.sweep.results import compare, load_rows
    from nodebisect.sweep.summary import diff_text

    old, new = (load_rows(Path(p)) for p in args.compare)
    diff = compare(old, new)
    print(diff_text(diff))
    if args.json:
        _emit_json(args.json, {"schema": "nodebisect.sweep-diff/1", "old": args.compare[0], "new": args.compare[1], **diff.to_dict()})
    return ExitCode.DIVERGED if diff.regressions else ExitCode.MATCH


def _emit_json(target: str, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=1, default=str) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        from nodebisect.sweep.results import write_atomic

        write_atomic(Path(target), text)


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr)


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def main(argv: list[str] | None = None) -> int:
    """``python -m nodebisect.sweep.cli``: the sweep command alone; errors as one line."""
    parser = argparse.ArgumentParser(prog="nodebisect sweep")
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except NodebisectError as exc:
        print(f"nodebisect sweep: error: {exc.message}", file=sys.stderr)
        if exc.tip:
            print(f"tip: {exc.tip}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
