"""``nodebisect sweep`` on the transformers zoo: local pool vs a local Ray instance, same list.

Runs ``python -m nodebisect.sweep.cli --zoo transformers --limit N --jobs J`` once per
executor (each into its own directory), then prints, per executor: elapsed wall
time, models per minute, the verdict counts and whether both executors agreed model
by model (they should: the same child command runs either way).

    .venv/bin/python benchmarks/bench_sweep.py                      # --limit 40 --jobs 2
    .venv/bin/python benchmarks/bench_sweep.py --limit 6 --executors local
    .venv/bin/python benchmarks/bench_sweep.py --executors local-cold,local   # cold vs warm workers
    .venv/bin/python benchmarks/bench_sweep.py --reuse OUT          # re-read earlier runs
    .venv/bin/python benchmarks/bench_sweep.py --zoo monai --limit 20 --executors local,ray-cluster   # two Ray nodes

Elapsed time includes starting the Ray instance. Other work on the machine shares the
cores: run it on a quiet machine for figures worth comparing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path


def run_sweep(out: Path, executor: str, limit: int, jobs: int, timeout: float, extra: list[str], zoo: str = "transformers") -> float:
    """One sweep in a child process; returns its elapsed seconds.

    ``ray-cluster`` starts a two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a
    head and a worker node of ``jobs // 2`` CPUs each, the nodes' own processes) and sweeps through
    ``--address``; its start is part of the elapsed time, as a local Ray instance's is.
    """
    kind, _, workers = executor.partition("-")  # local-cold: the pool with a fresh Python per model
    cluster = None
    start = time.monotonic()
    if executor == "ray-cluster":
        from ray.cluster_utils import Cluster

        per_node = max(1, jobs // 2)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": per_node, "memory": 8 * 1024**3, "include_dashboard": False})
        cluster.add_node(num_cpus=per_node, memory=8 * 1024**3)
        cluster.wait_for_nodes()
        kind, workers, extra = "ray", "", ["--address", cluster.address, *extra]
    cmd = [sys.executable, "-m", "nodebisect.sweep.cli", "--zoo", zoo, "--limit", str(limit), "--jobs", str(jobs),
           "--timeout", str(timeout), "--executor", kind, "--out", str(out), "--json", str(out / "summary.json"),
           *(["--workers", workers] if workers else []), *extra]
    try:
        subprocess.run(cmd, check=False)
    finally:
        if cluster is not None:
            cluster.shutdown()
    elapsed = time.monotonic() - start
    (out / "bench.json").write_text(json.dumps({"executor": executor, "elapsed_s": elapsed, "cmd": cmd}))
    return elapsed


def rows_of(out: Path) -> dict[str, dict]:
    rows = {}
    for line in (out / "sweep.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        rows[row["name"]] = row
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--executors", default="local,ray",
                        help="comma-separated: local (warm workers), local-cold, ray (a local instance), ray-cluster (two nodes)")
    parser.add_argument("--zoo", default="transformers", help="the zoo family swept")
    parser.add_argument("--out", default="bench-sweep-out")
    parser.add_argument("--reuse", action="store_true", help="do not run: read the runs already in --out")
    args, extra = parser.parse_known_args()
    base = Path(args.out)
    results = {}
    for executor in args.executors.split(","):
        out = base / executor
        if args.reuse:
            elapsed = json.loads((out / "bench.json").read_text())["elapsed_s"]
        else:
            if (out / "sweep.jsonl").exists():
                (out / "sweep.jsonl").unlink()
            out.mkdir(parents=True, exist_ok=True)
            elapsed = run_sweep(out, executor, args.limit, args.jobs, args.timeout, extra, args.zoo)
        results[executor] = (elapsed, rows_of(out))
    print(f"| executor | models | elapsed | models/min | {' | '.join(['match', 'diverged', 'export_failed', 'runtime_failed', 'other'])} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for executor, (elapsed, rows) in results.items():
        counts = Counter(r["status"] for r in rows.values())
        other = sum(v for k, v in counts.items() if k not in ("match", "diverged", "export_failed", "runtime_failed"))
        print(f"| {executor} | {len(rows)} | {elapsed / 60:.1f} min | {len(rows) / (elapsed / 60):.1f} | {counts['match']} | "
              f"{counts['diverged']} | {counts['export_failed']} | {counts['runtime_failed']} | {other} |")
    if len(results) >= 2:
        (_, a), (_, b) = list(results.values())[:2]
        differ = sorted(n for n in set(a) & set(b) if a[n]["status"] != b[n]["status"])
        print(f"\nsame verdict on {len(set(a) & set(b)) - len(differ)} of {len(set(a) & set(b))} models"
              + (f"; differ: {', '.join(differ)}" if differ else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
