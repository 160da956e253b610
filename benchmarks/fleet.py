"""The fleet: every ``--zoo`` family swept, one compact table committed in ``benchmarks/fleet/``.

    .venv/bin/python benchmarks/fleet.py                                 # the full fleet (hours on 2 cores)
    .venv/bin/python benchmarks/fleet.py --limit 5 --families diffusers,monai   # a partial run
    make fleet                                                           # the full fleet, FLEET_ARGS for knobs

One ``nodebisect sweep --zoo FAMILY`` per family (in ``--work DIR/FAMILY``, so an
interrupted fleet continues with ``--resume``), then, over all rows together, writes
into ``--out`` (default ``benchmarks/fleet/``):

- ``fleet.csv``: one row per model run: family, architecture, variant, verdict, stage,
  cause, culprit op (ONNX node and op type), aten op, masked-only (``yes`` when the
  first divergence lies only in masked positions, ``no`` when not, empty when the row
  says nothing), seconds, and the one-line reason for rows that are not a match;
- ``sweep.md`` and ``sequences.md``: the sweep's own summary and mining of those rows;
- ``README.md``: counts by family, verdict, stage and cause, the time each family took,
  the versions it ran on, and the command; ``versions.json`` the same versions as data.

``--spot-check N`` re-runs N random rows one by one (each in a sweep of its own) and says
in ``README.md`` whether each gave the same verdict. Re-running with the same ``--work``
resumes the sweeps (the models already answered are not run again) and rewrites the table.

No per-model JSON goes into ``--out``: the rows stay in ``--work``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("transformers", "diffusers", "monai", "keras")
# A sweep is a family, or ``family@variants`` for another sweep of it in other variants (its own
# ``--work`` folder). The default fleet adds transformers' eager attention (what users get with
# ``attn_implementation="eager"``) for its 60 most popular architectures: the four families' default
# variants hold 965 runs, and the eager lowering is the one most often reported against.
SWEEPS = (*FAMILIES, "transformers@eager")
DEFAULT_LIMITS = {"transformers@eager": 60}
PACKAGES = ("torch", "onnx", "onnxruntime", "onnxscript", "transformers", "diffusers", "monai", "tensorflow-cpu", "keras", "tf2onnx")
COLUMNS = ("family", "architecture", "variant", "verdict", "stage", "cause", "culprit_node", "culprit_op", "aten_op",
           "masked_only", "seconds", "reason")


def sweep_dir(work: Path, spec: str) -> Path:
    return work / spec.replace("@", "-").replace(",", "+")


def sweep_family(spec: str, work: Path, args: argparse.Namespace) -> float:
    """``nodebisect sweep --zoo FAMILY`` into ``work/FAMILY`` (resumed when rows exist); returns its elapsed seconds.

    ``spec`` is a family or ``family@variant,variant`` (``--zoo-variants``, into a folder of its own).
    """
    family, _, variants = spec.partition("@")
    out = sweep_dir(work, spec)
    cmd = [sys.executable, "-m", "nodebisect.sweep.cli", "--zoo", family, "--out", str(out), "--jobs", str(args.jobs),
           "--timeout", str(args.timeout), "--memory-mib", str(args.keras_memory_mib if family == "keras" else args.memory_mib), "-q"]
    if variants:
        cmd += ["--zoo-variants", variants]
    limit = {**DEFAULT_LIMITS, **dict(item.split("=", 1) for item in args.family_limit)}.get(spec, args.limit)
    if int(limit):
        cmd += ["--limit", str(limit)]
    if args.filter:
        cmd += ["--filter", args.filter]
    if (out / "sweep.jsonl").exists():
        cmd.append("--resume")
    print(f"fleet: {spec}: {' '.join(cmd[3:])}", file=sys.stderr, flush=True)
    start = time.monotonic()
    subprocess.run(cmd, check=False, cwd=ROOT)
    # A resumed family's time is the sum of its runs (kept beside its rows).
    ledger = out / "fleet-elapsed.txt"
    total = time.monotonic() - start + (float(ledger.read_text()) if ledger.exists() else 0.0)
    ledger.write_text(f"{total:.1f}\n")
    return total


def spot_check(rows: list[dict], work: Path, count: int, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """Re-run ``count`` random rows one by one, each in its own sweep; ``(name, fleet verdict, re-run verdict)``."""
    import random

    from nodebisect.sweep.results import load_rows

    picked = random.Random(0).sample(rows, min(count, len(rows)))
    out = []
    for n, row in enumerate(picked):
        family = (row.get("meta") or {}).get("family") or "transformers"
        variant = (row.get("meta") or {}).get("variant") or ""
        target = work / "spot" / f"{n}"
        shutil.rmtree(target, ignore_errors=True)
        memory = args.keras_memory_mib if family == "keras" else args.memory_mib
        subprocess.run([sys.executable, "-m", "nodebisect.sweep.cli", "--zoo", family, "--filter", f"^{re.escape(row['name'])}$",
                        *(["--zoo-variants", variant] if variant else []),
                        "--out", str(target), "--jobs", "1", "--timeout", str(args.timeout), "--memory-mib", str(memory), "-q"],
                       check=False, cwd=ROOT, capture_output=True)
        again = load_rows(target)[0]["status"] if (target / "sweep.jsonl").exists() else "(no row)"
        out.append((row["name"], row["status"], again))
        print(f"fleet: spot check {row['name']}: {row['status']} -> {again}", file=sys.stderr, flush=True)
    return out


def table_row(row: dict) -> dict:
    """One ``fleet.csv`` line from a sweep row."""
    meta = row.get("meta") or {}
    fd = row.get("first_divergent") or {}
    scope = fd.get("scope")
    masked = "" if scope is None else ("yes" if scope == "masked_positions" else "no")
    reason = "" if row["status"] == "match" else str(row.get("reason") or "")[:160]
    return {
        "family": meta.get("family") or "transformers", "architecture": meta.get("class") or row["name"],
        "variant": meta.get("variant", ""), "verdict": row["status"], "stage": fd.get("stage") or "",
        "cause": fd.get("cause") or "", "culprit_node": fd.get("onnx_node") or "", "culprit_op": fd.get("op_type") or "",
        "aten_op": (fd.get("framework") or {}).get("target") or "", "masked_only": masked,
        "seconds": f"{float(row.get('wall_s') or 0):.1f}", "reason": reason.replace("\n", " "),
    }


def zoo_sizes(families: list[str]) -> dict[str, int]:
    """How many runs each family's zoo holds in its default variants (``--list``, nothing built)."""
    from nodebisect.sweep.zoos import tasks_for

    return {f: len(tasks_for([f], Path(tempfile.gettempdir()), None, write=False)) for f in families}


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"python": platform.python_version(), "machine": f"{platform.machine()}, {_cores()} cores", "nodebisect_commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **found}


def readme(table: list[dict], elapsed: dict[str, float], info: dict, args: argparse.Namespace, partial: bool,
           spots: list[tuple[str, str, str]]) -> str:
    """The fleet's front page: what ran, counts, and how to reproduce it."""
    by = lambda key, rows: Counter(r[key] for r in rows if r[key])  # noqa: E731
    lines = ["# The fleet: every model zoo through `nodebisect sweep`", ""]
    if partial:
        sizes = zoo_sizes(sorted({s.partition("@")[0] for s in elapsed}))
        parts = [f"{f} {n} of {sizes[f]}" + (" (all)" if n == sizes[f] else "") for f, n in by("family", table).items()]
        lines += [f"**A partial run**: {len(table)} model runs ({', '.join(parts)}: the first models of each zoo in its "
                  f"popularity order{f', --filter {args.filter}' if args.filter else ''}), not the whole fleet. "
                  "The full fleet is `make fleet` (`benchmarks/fleet.py` without `--limit`): hours on a 2-core machine.", ""]
    seen = [s for s in STATUS_ORDER if any(r["verdict"] == s for r in table)]
    lines += [f"Command: `{' '.join(['benchmarks/fleet.py', *sys.argv[1:]])}`", "",
              "| family | models | " + " | ".join(seen) + " | elapsed |", "|---|---:|" + "---:|" * len(seen) + "---:|"]
    for family in [f for f in FAMILIES if any(s.partition("@")[0] == f for s in elapsed)]:
        rows = [r for r in table if r["family"] == family]
        counts = Counter(r["verdict"] for r in rows)
        took = sum(t for s, t in elapsed.items() if s.partition("@")[0] == family)
        lines.append(f"| {family} | {len(rows)} | " + " | ".join(str(counts[s]) for s in seen) + f" | {took:.0f} s |")
    divergent = [r for r in table if r["verdict"] == "diverged"]
    for title, key in (("stage", "stage"), ("cause", "cause"), ("culprit op", "culprit_op"), ("aten op", "aten_op")):
        counts = by(key, divergent)
        if counts:
            lines += ["", f"Divergences by {title}: " + ", ".join(f"{k} {v}" for k, v in counts.most_common())]
    masked = by("masked_only", divergent)
    lines += ["", "Masked positions only: " + (", ".join(f"{k} {v}" for k, v in masked.items()) if masked else
                                               "not reported by this nodebisect (no `first_divergent.scope` in the rows)")]
    if spots:
        same = sum(a == b for _, a, b in spots)
        lines += ["", f"Spot check: {len(spots)} random rows re-run one by one, each in its own sweep: {same} gave the same verdict"
                  + "".join(f"; `{n}` {a} then {b}" for n, a, b in spots if a != b) + "."]
    lines += ["", "Files: `fleet.csv` (one row per model run), `sweep.md` (the sweep's summary of all rows), "
              "`sequences.md` (operator sequences that separate divergent models from matching ones), `versions.json`.", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in info.items() if v), ""]
    return "\n".join(lines)


STATUS_ORDER = ("match", "diverged", "export_failed", "runtime_failed", "skipped", "timeout", "out_of_memory", "crashed", "error",
                "bad_input", "lost")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=";".join(SWEEPS),
                        help="semicolon-separated sweeps: a zoo family, or FAMILY@VARIANT,VARIANT for another sweep of it "
                             f"in those variants (default: {';'.join(SWEEPS)}, the last limited to {DEFAULT_LIMITS['transformers@eager']})")
    parser.add_argument("--limit", type=int, default=0, help="models per family (0: all)")
    parser.add_argument("--family-limit", action="append", default=[], metavar="FAMILY=N", help="another --limit for one family")
    parser.add_argument("--filter", default="", help="passed to each sweep's --filter")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per model")
    parser.add_argument("--memory-mib", type=float, default=4096.0)
    parser.add_argument("--keras-memory-mib", type=float, default=12000.0, help="tf2onnx peaks at several GiB on ResNet/VGG")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "nodebisect-fleet"), help="the sweeps' directories")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "fleet"))
    parser.add_argument("--spot-check", type=int, default=0, metavar="N", help="re-run N random rows one by one and compare verdicts")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from nodebisect.sweep.cli import write_summary
    from nodebisect.sweep.results import load_rows

    work, out = Path(args.work), Path(args.out)
    # "diffusers,monai" still works; a FAMILY@VARIANT,VARIANT list needs ";" between sweeps.
    families = [f.strip() for f in re.split(";" if "@" in args.families or ";" in args.families else ",", args.families) if f.strip()]
    elapsed = {family: sweep_family(family, work, args) for family in families}
    rows = [r for f in families if (sweep_dir(work, f) / "sweep.jsonl").exists() for r in load_rows(sweep_dir(work, f))]
    out.mkdir(parents=True, exist_ok=True)
    table = [table_row(r) for r in rows]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    (out / "fleet.csv").write_text(text.getvalue())
    with tempfile.TemporaryDirectory() as tmp:
        write_summary(Path(tmp), rows, sum(elapsed.values()), len(rows))
        for name in ("sweep.md", "sequences.md"):
            (out / name).write_text(Path(tmp, name).read_text().replace(tmp, "benchmarks/fleet"))
    info = versions()
    partial = bool(args.limit or args.family_limit or args.filter or set(families) != set(SWEEPS))
    (out / "versions.json").write_text(json.dumps({**info, "elapsed_s": {f: round(s, 1) for f, s in elapsed.items()},
                                                   "partial": partial, "argv": sys.argv[1:]}, indent=1) + "\n")
    spots = spot_check(rows, work, args.spot_check, args) if args.spot_check else []
    (out / "README.md").write_text(readme(table, elapsed, info, args, partial, spots))
    print(f"fleet: {len(rows)} model runs in {sum(elapsed.values()):.0f} s -> {out}", file=sys.stderr)
    return 0


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


if __name__ == "__main__":
    sys.exit(main())
