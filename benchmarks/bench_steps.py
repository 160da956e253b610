"""Where nodebisect's time beyond the floor goes, step by step, and what the TUI re-run saves (issue #10).

1. Steps. For each model (BERT-base, GPT-2 small: ``bench_locate.build_model``, random
   weights, ``use_cache=False``), ``bench_locate``'s prepare worker exports it once and saves
   ``MODEL.faulted.onnx`` with one injected fault. Then, each in its own subprocess:

     floor       bench_locate's floor, timed part by part: torch.onnx.export | one eager
                 forward | onnx.load(faulted) | one ORT session with every output marked + run
     nb-all      nodebisect.locate(model, args, onnx_path=faulted, strategy="all")
     nb-bisect   the same with strategy="bisect"

   and prints nodebisect's ``stats["timings"]`` per step against the floor's part that does
   the same job (export vs export, capture vs the eager forward, the search's ORT sessions
   vs the marked session): seconds, share of nodebisect's wall time, and beyond the floor.

2. Re-run. ``prepare()`` once, ``locate(prepared)`` (the first run), then
   ``locate(prepared, rtol=, atol=)`` (the TUI's re-run), against a fresh
   ``locate(model, rtol=, atol=)`` in its own subprocess; on the two models and on
   ``samples/build/SdpaFullyMaskedRow.pt2``.

    .venv/bin/python benchmarks/bench_steps.py                 # bert, gpt2 and the sample
    .venv/bin/python benchmarks/bench_steps.py --quick --models bert --sample ""   # debugging
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_locate as BL  # noqa: E402 - the model builders, fault injection and floor helpers

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "samples/build/SdpaFullyMaskedRow.pt2"
RERUN_TOL = {"rtol": 1e-3, "atol": 1e-4}  # the re-run's tolerance (the defaults are per dtype)
# nodebisect's top-level steps in run order; "isolate" is timed inside map_and_search.
STEPS = ("load", "export", "export_and_capture", "capture", "capture_check", "decomposition_check", "map_and_search", "graph_optimization_check")


# ---------------------------------------------------------------------------- workers
def work_floor(model, args, meta: dict) -> dict:
    """bench_locate.work_floor, the same operations, with a clock between its parts."""
    import onnx
    import onnxruntime as ort
    import torch

    t0 = time.perf_counter()
    BL.torch_export(model, args)
    t1 = time.perf_counter()
    with torch.no_grad():
        model(*args)
    t2 = time.perf_counter()
    proto = onnx.load(meta["onnx_path"])
    t3 = time.perf_counter()
    marked = BL.mark_all_outputs(proto)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(marked.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    sess.run(None, BL.feeds_for(proto, args))
    t4 = time.perf_counter()
    return {"wall_s": t4 - t0, "export": t1 - t0, "forward": t2 - t1, "onnx_load": t3 - t2, "ort": t4 - t3}


def summary(res, wall: float, meta: dict | None) -> dict:
    fd = res.first_divergent
    return {
        "wall_s": wall,
        "timings": res.stats.get("timings", {}),
        "ort_sessions": res.stats.get("ort_sessions"),
        "ort_seconds": res.stats.get("ort_seconds"),
        "extra_sessions": res.stats.get("extra_sessions"),
        "strategy": res.stats.get("strategy"),
        "verdict": res.verdict,
        "named": fd.onnx_node if fd else None,
        "cause": fd.cause if fd else None,
        "right": bool(fd and meta and fd.onnx_node == meta["fault_node"]),
    }


def work_locate(model, args, opts: dict, meta: dict | None) -> dict:
    import nodebisect

    t = time.perf_counter()
    res = nodebisect.locate(model, args, **opts)
    return summary(res, time.perf_counter() - t, meta)


def work_rerun(model, args, opts: dict, meta: dict | None) -> dict:
    """The TUI's flow: prepare once, search (first run), search again under another tolerance."""
    import nodebisect

    t0 = time.perf_counter()
    prepared = nodebisect.prepare(model, args, **opts)
    t1 = time.perf_counter()
    first = nodebisect.locate(prepared)
    t2 = time.perf_counter()
    again = nodebisect.locate(prepared, **RERUN_TOL)
    t3 = time.perf_counter()
    return {"prepare_s": t1 - t0, "first_search_s": t2 - t1, "first_run_s": t2 - t0, "first": summary(first, t2 - t0, meta),
            "rerun": summary(again, t3 - t2, meta)}


def worker(ns) -> None:
    import onnx  # noqa: F401 - imported before the clock starts, for every worker alike
    import onnxruntime  # noqa: F401
    import onnxscript  # noqa: F401
    import torch  # noqa: F401

    import nodebisect  # noqa: F401

    workdir = Path(ns.workdir)
    if ns.model.startswith("sample:"):  # a .pt2 path: nodebisect loads it and exports it itself
        path = ns.model[len("sample:"):]
        model, args, meta, opts = path, None, None, {"inputs_file": path[: -len(".pt2")] + ".inputs.pt"}
    else:
        meta = json.loads((workdir / f"{ns.model}.meta.json").read_text())
        model, args = BL.build_model(ns.model, ns.quick)
        opts = {"onnx_path": meta["onnx_path"]}
    if ns.worker == "floor":
        out = work_floor(model, args, meta)
    elif ns.worker in ("nb-all", "nb-bisect"):
        out = work_locate(model, args, {**opts, "strategy": ns.worker[3:]}, meta)
    elif ns.worker == "fresh":
        out = work_locate(model, args, {**opts, **RERUN_TOL}, meta)
    elif ns.worker == "rerun":
        out = work_rerun(model, args, opts, meta)
    else:
        raise SystemExit(f"unknown worker {ns.worker}")
    print("BENCH_RESULT " + json.dumps(out))


# ---------------------------------------------------------------------------- driver
def run_worker(kind: str, model: str, ns, workdir: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--model", model, "--workdir", str(workdir)] + (["--quick"] if ns.quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=ns.timeout, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"{kind} {model} rc={proc.returncode}: " + " | ".join(tail)[:400]}


PICK = {"mode": "fastest"}  # --pick: which of the repeats stands for a tool


def best(runs: list[dict], key=lambda r: r["wall_s"]) -> dict:
    """The fastest of the repeats (the least disturbed by the machine's other load), or the median one (``--pick median``)."""
    ok = sorted((r for r in runs if "error" not in r), key=key)
    if not ok:
        return runs[0]
    return ok[(len(ok) - 1) // 2] if PICK["mode"] == "median" else ok[0]


def rerun_wall(r: dict) -> float:
    return r["rerun"]["wall_s"]


def child_start_s(repeat: int) -> float:
    """What a fresh sandbox child costs before its first session: python + numpy + onnxruntime imports."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import nodebisect.runtime.sandbox, onnxruntime"], check=True, cwd=ROOT)
        times.append(time.perf_counter() - t)
    return min(times)


def step_rows(floor: dict, nb: dict) -> list[tuple[str, float | None, float | None]]:
    """(step, nodebisect seconds, the floor's seconds for the same job) for one run."""
    t = dict(nb["timings"])
    counterpart = {"export": floor["export"], "capture": floor["forward"]}
    rows: list[tuple[str, float | None, float | None]] = []
    keys = [k for k in STEPS if k in t] + [k for k in t if k not in STEPS and k != "isolate"]
    for key in keys:
        if key != "map_and_search":
            rows.append((key, t[key], counterpart.get(key, 0.0)))
            continue
        ort_s, iso = nb["ort_seconds"] or 0.0, t.get("isolate", 0.0)
        rows.append(("map_and_search", t[key], floor["ort"]))
        rows.append(("- search ORT sessions (child start incl.)", ort_s, floor["ort"]))
        rows.append(("- isolate", iso, 0.0))
        rows.append(("- map, compare, rest", t[key] - ort_s - iso, 0.0))
    untimed = nb["wall_s"] - sum(t[k] for k in keys)
    rows.append(("not in a step (reading --onnx, wiring)", untimed, floor["onnx_load"]))
    rows.append(("total (wall)", nb["wall_s"], floor["wall_s"]))
    return rows


def steps_table(results: dict) -> list[str]:
    lines = ["| model | step | floor s | all s | all share | all beyond floor s | bisect s | bisect share | bisect beyond floor s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, res in results.items():
        floor, runs = res["floor"], [res["nb-all"], res["nb-bisect"]]
        if any("error" in r for r in [floor] + runs):
            lines.append(f"| {name} | failed: {' '.join(r.get('error', '') for r in [floor] + runs)[:300]} |")
            continue
        per = [step_rows(floor, r) for r in runs]
        labels = list(dict.fromkeys(s for rows in per for s, _, _ in rows))
        for label in labels:
            cells, floor_s = [], None
            for rows, run in zip(per, runs):
                hit = [(s, f) for lab, s, f in rows if lab == label]
                if not hit:
                    cells += ["-", "-", "-"]
                    continue
                s, floor_s = hit[0]
                cells += [f"{s:.2f}", f"{100 * s / run['wall_s']:.0f} %", f"{s - floor_s:+.2f}"]
            bold = "**" if label.startswith("total") else ""
            lines.append(f"| {name} | {bold}{label}{bold} | {f'{floor_s:.2f}' if floor_s else '-'} | " + " | ".join(cells) + " |")
    return lines


def ratio_lines(results: dict, reruns: dict, child_s: float) -> list[str]:
    lines = []
    for name, res in results.items():
        if any("error" in res[k] for k in ("floor", "nb-all", "nb-bisect")):
            continue
        for tool in ("nb-all", "nb-bisect"):
            r = res[tool]
            lines.append(f"- {name} {tool}: {r['wall_s']:.1f} s = {r['wall_s'] / res['floor']['wall_s']:.2f}x the floor "
                         f"({res['floor']['wall_s']:.1f} s); named {r['named']} ({'right' if r['right'] else 'WRONG'}), "
                         f"{r['ort_sessions']} search + {r['extra_sessions']} extra ORT sessions")
            # With --onnx nodebisect's export step is torch.export alone ("torch_export"), no ONNX translation.
            export = r["timings"].get("export", 0.0) + r["timings"].get("torch_export", 0.0)
            after, floor_after = r["wall_s"] - export - r["timings"].get("load", 0.0), res["floor"]["wall_s"] - res["floor"]["export"]
            lines.append(f"  - after export: {after:.2f} s vs the floor's {floor_after:.2f} s: {after - floor_after:+.2f} s beyond it "
                         f"({after / floor_after:.2f}x)")
    lines.append(f"- a fresh sandbox child (python + numpy + onnxruntime imports, before its first session): {child_s:.2f} s")
    lines += ["", "| model | fresh locate(rtol, atol) s | prepare() s | first locate(prepared) s | re-run locate(prepared, rtol, atol) s "
              "| re-run / fresh | re-run / first run | same answer |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, rr in reruns.items():
        fresh, rerun = rr["fresh"], rr["rerun"]
        if "error" in fresh or "error" in rerun:
            lines.append(f"| {name} | failed: {(fresh.get('error') or rerun.get('error'))[:300]} |")
            continue
        again = rerun["rerun"]
        same = (again["verdict"], again["named"]) == (fresh["verdict"], fresh["named"])
        lines.append(f"| {name} | {fresh['wall_s']:.2f} | {rerun['prepare_s']:.2f} | {rerun['first_search_s']:.2f} | {again['wall_s']:.2f} "
                     f"| {again['wall_s'] / fresh['wall_s']:.2f} | {again['wall_s'] / rerun['first_run_s']:.2f} "
                     f"| {'yes' if same else 'NO'} ({again['verdict']}, {again['named']}) |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="bert,gpt2", help="comma list of " + ",".join(BL.MODELS))
    ap.add_argument("--sample", default=SAMPLE, help="a .pt2 for the re-run measure ('' for none)")
    ap.add_argument("--repeat", type=int, default=1, help="run each subprocess N times, keep the fastest (or the median: --pick)")
    ap.add_argument("--pick", choices=("fastest", "median"), default="fastest", help="which of the --repeat runs stands for each tool")
    ap.add_argument("--quick", action="store_true", help="small configs, for debugging the script")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per subprocess")
    ap.add_argument("--json", help="write every raw result here")
    ap.add_argument("--workdir")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    PICK["mode"] = ns.pick
    if ns.worker:
        worker(ns)
        return 0
    ns.verify_cap = 0  # read by bench_locate.run_worker
    workdir = Path(ns.workdir or tempfile.mkdtemp(prefix="bench-steps-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # a snapshot (git archive) carries its commit in COMMIT: a tree others edit meanwhile would mix versions
    commit = (ROOT / "COMMIT").read_text().strip() if (ROOT / "COMMIT").exists() else subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    load0 = os.getloadavg()
    print(f"# bench_steps: {' '.join(sys.argv)}  (nodebisect {commit}, cpus={os.cpu_count()}, load average at start "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, workdir={workdir})", flush=True)
    results, reruns = {}, {}
    for name in [m for m in ns.models.split(",") if m]:
        meta = BL.run_worker("prepare", name, ns, workdir)
        if "error" in meta:
            print(f"# {name}: export/prepare failed: {meta['error']}", flush=True)
            continue
        (workdir / f"{name}.meta.json").write_text(json.dumps(meta))
        print(f"# {name}: {meta['onnx_nodes']} ONNX nodes, fault {meta['fault_node']} ({meta['fault']})", flush=True)
        runs: dict[str, list[dict]] = {k: [] for k in ("floor", "nb-all", "nb-bisect", "fresh", "rerun")}
        for _ in range(ns.repeat):  # interleaved, so a burst of load hits every tool alike
            for kind in runs:
                runs[kind].append(run_worker(kind, name, ns, workdir))
                print(f"  [{name}] {kind}: {json.dumps(runs[kind][-1])[:400]}", file=sys.stderr, flush=True)
        results[name] = {k: best(runs[k]) for k in ("floor", "nb-all", "nb-bisect")}
        reruns[name] = {"fresh": best(runs["fresh"]), "rerun": best(runs["rerun"], key=rerun_wall)}
    if ns.sample:
        label = Path(ns.sample).stem
        runs = {k: [run_worker(k, "sample:" + ns.sample, ns, workdir) for _ in range(ns.repeat)] for k in ("fresh", "rerun")}
        reruns[label] = {"fresh": best(runs["fresh"]), "rerun": best(runs["rerun"], key=rerun_wall)}
    child_s = child_start_s(max(ns.repeat, 3))
    load1 = os.getloadavg()
    print("\n".join(["", *steps_table(results), "", *ratio_lines(results, reruns, child_s), "",
                     f"# load average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}"]), flush=True)
    if ns.json:
        Path(ns.json).write_text(json.dumps({"steps": results, "reruns": reruns, "child_start_s": child_s, "load": [load0, load1]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
