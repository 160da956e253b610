"""A real two-node Ray cluster on one machine (``ray.cluster_utils.Cluster``): the sweep survives losing a node.

A head and a worker node, each declaring one CPU and 2 GiB, so one model runs on each
at a time. Once a row has come back from the worker node and a model is in flight on
each node, the worker node is removed (its raylet and workers killed, not drained).
Ray's own ``max_retries`` re-runs the killed task on the head: no row is lost,
``--resume`` has nothing left, and every verdict equals the local pool's on the same list.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import pytest

from nodebisect.sweep.cli import configure
from nodebisect.sweep.results import load_rows

ROOT = Path(__file__).resolve().parents[1]
# model -> (what it is, the verdict both executors must give)
MODELS = {"m0": ("clean", "match"), "m1": ("avgpool", "diverged"), "m2": ("clean", "match"),
          "m3": ("export_fails", "export_failed"), "m4": ("avgpool", "diverged"), "m5": ("clean", "match")}


def _models_file(tmp: Path, starts: Path) -> Path:
    """Factories that append their name to ``starts`` when a worker begins them, then build a tiny model."""
    lines = ["import importlib.util, time", "",
             "def _load(path, name):",
             "    spec = importlib.util.spec_from_file_location(name, path)",
             "    mod = importlib.util.module_from_spec(spec)",
             "    spec.loader.exec_module(mod)",
             "    return mod", "",
             "def _start(name):",
             f"    with open({str(starts)!r}, 'a') as fh:",
             "        fh.write(name + '\\n')",
             "    time.sleep(2)  # long enough to be caught in flight", "",
             "def _build(kind):",
             f"    if kind == 'avgpool':",
             f"        cls = _load({str(ROOT / 'samples' / 'divergent.py')!r}, 'divergent').AvgPoolDivisorOverride",
             "        return cls(), cls.example_inputs()",
             f"    return getattr(_load({str(ROOT / 'tests' / 'sweep_models.py')!r}, 'sweep_models'), kind)()", ""]
    for name, (kind, _) in MODELS.items():
        lines += [f"def {name}():", f"    _start({name!r})", f"    return _build({kind!r})", ""]
    path = tmp / "marked_models.py"
    path.write_text("\n".join(lines))
    fleet = tmp / "fleet.txt"
    fleet.write_text("".join(f"{path}:{name} name={name}\n" for name in MODELS))
    return fleet


def _sweep(*argv: object) -> int:
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return rows


@pytest.mark.slow
@pytest.mark.ray
def test_two_node_cluster_loses_no_row_when_the_worker_node_dies(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    starts = tmp_path / "starts.txt"
    fleet = _models_file(tmp_path, starts)
    out = tmp_path / "ray"
    gib = 1024**3
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "memory": 2 * gib, "object_store_memory": 80 * 1024**2, "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 2}})
    worker_node = cluster.add_node(num_cpus=1, memory=2 * gib, object_store_memory=80 * 1024**2)
    cluster.wait_for_nodes()
    head_id, worker_id = cluster.head_node.node_id, worker_node.node_id
    killed: dict[str, float] = {}
    stop = threading.Event()

    def kill_worker_node_mid_sweep() -> None:
        """Once the worker node has returned a row and both nodes run a model, remove the worker node."""
        while not stop.is_set():
            rows = _rows(out / "sweep.jsonl")
            begun = starts.read_text().split() if starts.exists() else []
            if any(r.get("node") == worker_id for r in rows) and len(begun) - len(rows) >= 2:
                killed["rows_before"] = len(rows)
                cluster.remove_node(worker_node, allow_graceful=False)
                killed["at"] = time.monotonic()
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_worker_node_mid_sweep, daemon=True)
    killer.start()
    try:
        code = _sweep(fleet, "--out", out, "--executor", "ray", "--address", cluster.address, "--memory-mib", "1500",
                      "--timeout", "120", "-q")
        stop.set()
        killer.join(timeout=30)
        assert killed, "the worker node was never caught running a model"
        assert code == 1  # some models diverged
        rows = {r["name"]: r for r in load_rows(out)}
        assert {n: r["status"] for n, r in rows.items()} == {n: v for n, (_, v) in MODELS.items()}  # no row lost
        assert {r["node"] for r in rows.values()} == {head_id, worker_id}  # tasks landed on both nodes
        begun = starts.read_text().split()
        rerun = [n for n in MODELS if begun.count(n) > 1]
        assert rerun and all(rows[n]["node"] == head_id for n in rerun)  # Ray re-ran the killed model on the head
        assert killed["rows_before"] < len(MODELS)
        # Warm workers inside Ray: a Ray worker process ran several models in one Python.
        assert max(r["worker"]["model"] for r in rows.values()) >= 2
        # --resume finds every model answered.
        assert _sweep(fleet, "--out", out, "--executor", "ray", "--address", cluster.address, "--memory-mib", "1500",
                      "--resume", "-q") == 1
        assert len(_rows(out / "sweep.jsonl")) == len(MODELS)
    finally:
        stop.set()
        cluster.shutdown()
    # The local pool on the same list gives the same verdicts and culprits.
    pool = tmp_path / "pool"
    assert _sweep(fleet, "--out", pool, "--jobs", "2", "--timeout", "120", "-q") == 1
    pool_rows = {r["name"]: r for r in load_rows(pool)}
    assert {n: r["status"] for n, r in pool_rows.items()} == {n: r["status"] for n, r in rows.items()}
    assert {n: (r.get("first_divergent") or {}).get("onnx_node") for n, r in pool_rows.items()} == \
        {n: (r.get("first_divergent") or {}).get("onnx_node") for n, r in rows.items()}


def test_resume_runs_again_a_model_ray_lost(tmp_path: Path) -> None:
    """A ``lost`` row (Ray gave up after its retries) is no answer: ``--resume`` runs that model again."""
    from nodebisect.sweep.results import RowWriter, done_names

    writer = RowWriter(tmp_path / "sweep.jsonl")
    writer.append({"name": "a", "status": "match"})
    writer.append({"name": "b", "status": "lost", "reason": "Ray lost the task after 3 retries"})
    writer.append({"name": "c", "status": "crashed"})
    assert done_names(tmp_path / "sweep.jsonl") == {"a", "c"}


@pytest.mark.ray
def test_a_task_that_raised_is_an_error_row_and_a_lost_one_is_lost() -> None:
    """Only what Ray lost is re-run by --resume; an exception in the task body is an answer (status error)."""
    ray_exceptions = pytest.importorskip("ray.exceptions")
    from nodebisect.sweep.executors import _ray_failure_row
    from nodebisect.sweep.tasks import ModelTask, SweepOptions

    task, options = ModelTask(name="m", spec="m.py:build"), SweepOptions()
    lost = _ray_failure_row(task, options, ray_exceptions.WorkerCrashedError())
    assert lost["status"] == "lost" and "re-run with --resume" in lost["reason"]
    raised = _ray_failure_row(task, options, ray_exceptions.RayTaskError("_ray_run", "Traceback ...", ValueError("boom")))
    assert raised["status"] == "error" and raised["reason"].startswith("the Ray task raised")
