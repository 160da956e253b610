"""Spread the tasks: a local pool (default) or a Ray cluster. No scheduler of our own.

Every model already runs in a child process (``worker.run_task``), so the local
pool is a ``ThreadPoolExecutor`` of ``jobs`` threads, each waiting on one child:
``jobs`` model processes at a time. With warm workers (the default) each thread
owns a ``warm.WarmWorker`` that runs model after model in one Python (torch imported
once) and is replaced when a model crashes, hangs or blows its memory; ``--workers
cold`` starts a fresh Python per model.
With Ray, each task is a Ray task declaring ``num_cpus=1`` and the per-model
memory, so Ray packs models onto machines by what they need; Ray is optional
(``pip install nodebisect[ray]``) and imported only here, only when asked for.
A task whose node or Ray worker dies is retried by Ray itself (``max_retries``,
system failures only: a model's own crash is already its row); one that Ray still
loses gets a ``lost`` row, which ``--resume`` runs again. Each row records the Ray
node that ran it. With warm workers, each Ray worker process keeps one warm worker
(Ray reuses its worker processes between tasks), so torch is imported once per
Ray worker, not once per model.

Both yield rows in the driver's thread as they finish, which is where the
caller appends them to ``sweep.jsonl`` and moves the progress bar.
"""

from __future__ import annotations

import os
import queue
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Iterator

from nodebisect.errors import BadInputError
from nodebisect.sweep.tasks import ModelTask, SweepOptions
from nodebisect.sweep.warm import WarmWorker
from nodebisect.sweep.worker import kill_running, run_task

# What one small model takes while locate runs (torch + onnxruntime + activations), for
# sizing --jobs to the machine; the per-model kill limit is SweepOptions.memory_mib.
TYPICAL_MODEL_MIB = 1500


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the models run.

    Attributes:
        kind: ``local`` (a pool on this machine) or ``ray``.
        jobs: models at a time for ``local`` (0: sized to the machine), and the CPUs
            of a Ray instance started here.
        address: Ray's ``address`` (``auto``, ``ray://HOST:PORT``); empty: start a local instance.
        report_root: where divergent models' report bundles go.
        warm: run models in warm workers (``warm.WarmWorker``): one per pool thread, or one per Ray worker process.
    """

    kind: str = "local"
    jobs: int = 0
    address: str = ""
    report_root: str = ""
    warm: bool = True  # warm workers (one Python for many models; under Ray one per Ray worker), else a fresh Python per model


def default_jobs(memory_mib_per_model: float = TYPICAL_MODEL_MIB) -> int:
    """Models at a time this machine can hold: its cores, capped by available memory."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    available = available_memory_mib()
    by_memory = int(available // memory_mib_per_model) if available else cores
    return max(1, min(cores, by_memory))


def available_memory_mib() -> float:
    """``MemAvailable`` from ``/proc/meminfo`` (0 where unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def execute(tasks: list[ModelTask], options: SweepOptions, config: ExecutorConfig) -> Iterator[dict[str, Any]]:
    """Run every task; yield each row as its model finishes (in completion order)."""
    if config.kind == "ray":
        yield from _execute_ray(tasks, options, config)
    elif config.kind == "local":
        yield from _execute_local(tasks, options, config)
    else:
        raise BadInputError(f"unknown executor {config.kind!r}", tip="use local or ray")


def _execute_local(tasks: list[ModelTask], options: SweepOptions, config: ExecutorConfig) -> Iterator[dict[str, Any]]:
    jobs = config.jobs or default_jobs()
    cores = os.cpu_count() or 1
    threads = max(1, cores // jobs)
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="nodebisect-sweep")
    free: queue.Queue[WarmWorker] = queue.Queue()
    workers = [WarmWorker(threads) for _ in range(jobs)] if config.warm else []
    for worker in workers:
        free.put(worker)

    def run(task: ModelTask) -> dict[str, Any]:
        if not config.warm:
            return run_task(task, options, config.report_root, threads)
        worker = free.get()  # jobs threads, jobs workers: one is always free for a running thread
        try:
            return run_task(task, options, config.report_root, threads, worker=worker)
        finally:
            free.put(worker)

    try:
        pending = {pool.submit(run, task) for task in tasks}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        # Interrupted (Ctrl-C, or the caller stopped iterating): start nothing new, kill what runs.
        pool.shutdown(wait=False, cancel_futures=True)
        kill_running()
        pool.shutdown(wait=True)
        for worker in workers:
            worker.close()


# Ray retries a task whose worker or node died this many times (system failures only).
RAY_MAX_RETRIES = 3
_RAY_WARM: WarmWorker | None = None  # this Ray worker process's warm worker


def _ray_run(task: ModelTask, options: SweepOptions, report_root: str, warm: bool = False) -> dict[str, Any]:
    """The Ray task body: one model, one thread (the task declared one CPU); the row names the node."""
    import ray

    global _RAY_WARM
    worker = None
    if warm:
        if _RAY_WARM is None:
            _RAY_WARM = WarmWorker(1)
        worker = _RAY_WARM
    row = run_task(task, options, report_root, threads=1, worker=worker)
    row["node"] = ray.get_runtime_context().get_node_id()
    return row


def _execute_ray(tasks: list[ModelTask], options: SweepOptions, config: ExecutorConfig) -> Iterator[dict[str, Any]]:
    try:
        import ray
    except ImportError as exc:
        raise BadInputError("--executor ray needs Ray", tip="pip install 'nodebisect[ray]'") from exc
    started_here = not ray.is_initialized()
    if started_here:
        init: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False, "include_dashboard": False}
        if config.address:
            init["address"] = config.address
        else:
            init["num_cpus"] = config.jobs or default_jobs()
        try:
            ray.init(**init)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise BadInputError(f"cannot reach Ray at {config.address or 'a local instance'}: {exc}",
                                tip="start one with `ray start --head`, or drop --address") from exc
    remote = ray.remote(num_cpus=1, memory=int(options.memory_mib * 1024 * 1024), max_retries=RAY_MAX_RETRIES,
                        retry_exceptions=False)(_ray_run)
    refs = {}
    try:
        for task in tasks:
            memory = float(options.merged(task.options).memory_mib)
            refs[remote.options(memory=int(memory * 1024 * 1024)).remote(task, options, config.report_root, config.warm)] = task
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    yield ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a lost Ray worker costs its model's row only
                    yield _ray_failure_row(refs[ref], options, exc)
    finally:
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished
                pass
        if started_here:
            ray.shutdown()


def _ray_failure_row(task: ModelTask, options: SweepOptions, exc: BaseException) -> dict[str, Any]:
    """The row of a task that came back without one.

    Ray lost it (its node or worker died, after Ray's own retries): status ``lost``, which
    ``--resume`` runs again. The task body itself raised (``RayTaskError``): status
    ``error``, an answer like any other row.
    """
    from nodebisect.sweep.tasks import STATUS_LOST
    from nodebisect.sweep.worker import ChildOutcome, make_row

    row = make_row(task, options.merged(task.options), ChildOutcome(returncode=70, wall_s=0.0, peak_rss_mib=0.0), None, "", {})
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    if _raised_in_task(exc):
        row["reason"] = f"the Ray task raised: {type(exc).__name__}: {text}"
        return row
    row["status"] = STATUS_LOST
    row["reason"] = f"Ray lost the task after {RAY_MAX_RETRIES} retries (re-run with --resume): {type(exc).__name__}: {text}"
    return row


def _raised_in_task(exc: BaseException) -> bool:
    try:
        from ray.exceptions import RayTaskError
    except ImportError:
        return False
    return isinstance(exc, RayTaskError)
