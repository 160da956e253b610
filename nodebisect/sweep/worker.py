"""Run one model: ``nodebisect locate`` in a child process, turned into one row.

The child starts through ``WORKER_BOOTSTRAP``, not ``python -m nodebisect``: ``-m``
puts the working directory first on ``sys.path``, where a folder named
``nodebisect`` (the checkout itself, when the sweep runs from the folder that
holds it) would shadow the installed package and fail every model.

The child gets its own process group, so a timeout or a memory blow-up kills
everything it started (onnxruntime's own isolation children included) and
nothing else. Peak memory is the larger of the group's resident set, polled
from ``/proc``, and the child's ``ru_maxrss`` from ``wait4``.

Everything a remote worker needs travels in the task (a generated factory's
source text included) and everything it learns comes back in the row, so the
same function serves the local pool and a Ray cluster whose machines share no
disk with the driver.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodebisect.records import SCHEMA
from nodebisect.sweep.tasks import (
    ROW_SCHEMA,
    STATUS_BAD_INPUT,
    STATUS_CRASHED,
    STATUS_ERROR,
    STATUS_OUT_OF_MEMORY,
    STATUS_SKIPPED,
    STATUS_TIMEOUT,
    ModelTask,
    SweepOptions,
)

# Exit codes of `nodebisect locate` that come with a result JSON.
_VERDICT_CODES = (0, 1, 3, 4)
# What a generated factory prints (through locate's one-line error) to say "not a failure".
SKIP_MARKER = "skipped ("
_POLL_S = 0.2
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# Process groups of the children now running in this process: an interrupted sweep kills them.
_RUNNING: set[int] = set()
_RUNNING_LOCK = threading.Lock()
_PR_SET_PDEATHSIG = 1
# The child's program: import nodebisect with the working directory off sys.path, then put the
# directory back at the end, so the user's own modules (``mymodels:build``) still import from it.
WORKER_BOOTSTRAP = (
    "import os, sys\n"
    "if sys.path and sys.path[0] == '': del sys.path[0]\n"
    "from nodebisect.cli.main import run\n"
    "sys.path.append(os.getcwd())\n"
    "sys.argv[0] = 'nodebisect'\n"
    "run()\n"
)
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def kill_running() -> None:
    """Kill every child this process started and is still waiting for (Ctrl-C on the sweep)."""
    with _RUNNING_LOCK:
        groups = list(_RUNNING)
    for pgid in groups:
        _kill_group(pgid)


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when the thread that started it dies.

    The child lives in its own session (so a timeout can kill its whole group), which
    also hides it from the terminal's Ctrl-C; without this, a Ray worker killed by
    ``ray.cancel(force=True)`` would leave its model running as an orphan.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class ChildOutcome:
    """How the child process ended."""

    returncode: int  # negative: killed by that signal
    wall_s: float
    peak_rss_mib: float
    timed_out: bool = False
    over_memory: bool = False
    pid: int = 0  # the process that ran the model (a warm worker runs several)
    model_number: int = 1  # the how-many-th model of that process


def run_task(task: ModelTask, options: SweepOptions, report_root: str = "", threads: int = 1,
             worker: Any = None) -> dict[str, Any]:
    """Run ``locate`` on one task in a child process and return its sweep row.

    Args:
        task: the model.
        options: the sweep's options; the task's own ``options`` override them.
        report_root: where ``--reports`` bundles of divergent models go (``report_root/NAME``).
        threads: intra-op threads for the child's torch and onnxruntime, so that
            ``jobs`` children do not each grab every core.
        worker: a warm worker (``warm.WarmWorker``) to run it in; None: a fresh Python.

    Returns:
        The row: the ``locate --json`` document (``nodebisect.report/1``) with the
        sweep's keys added (see ``make_row``).
    """
    opts = options.merged(task.options)
    work = Path(tempfile.mkdtemp(prefix="nodebisect-sweep-"))
    try:
        spec = _materialize(task, work)
        json_path = work / "result.json"
        report_dir = work / "report" if opts.reports else None
        args = locate_args(spec, task.inputs, opts, json_path, report_dir)
        if worker is not None:
            outcome = worker.run(args, work, timeout=opts.timeout, memory_mib=opts.memory_mib)
        else:
            outcome = run_child(child_command(args), work, timeout=opts.timeout, memory_mib=opts.memory_mib, threads=threads)
        stderr = _read_text(work / "stderr.txt")
        result = _read_json(json_path) if outcome.returncode in _VERDICT_CODES else None
        build = _read_json(work / "zoo" / f"{_safe(task.name)}.build.json") or {}
        row = make_row(task, opts, outcome, result, stderr, build)
        if worker is not None:  # which process ran it, the how-many-th model of that process
            row["worker"] = {"pid": outcome.pid, "model": outcome.model_number}
        if report_dir is not None and row["status"] == "diverged" and report_dir.is_dir() and report_root:
            dest = Path(report_root) / _safe(task.name)
            shutil.rmtree(dest, ignore_errors=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(report_dir), dest)
            row["report_dir"] = str(dest)
        return row
    finally:
        shutil.rmtree(work, ignore_errors=True)


def locate_command(spec: str, inputs: tuple[str, ...], opts: SweepOptions, json_path: Path, report_dir: Path | None) -> list[str]:
    """The ``locate`` command line for one model (the same options a user would type)."""
    return child_command(locate_args(spec, inputs, opts, json_path, report_dir))


def child_command(args: list[str]) -> list[str]:
    """``nodebisect ARGS`` in a fresh Python, started so the working directory cannot shadow the package."""
    return [sys.executable, "-c", WORKER_BOOTSTRAP, *args]


def locate_args(spec: str, inputs: tuple[str, ...], opts: SweepOptions, json_path: Path, report_dir: Path | None) -> list[str]:
    """``locate``'s arguments for one model, after the program name."""
    cmd = ["locate", spec, "--json", str(json_path), "-q",
           "--strategy", opts.strategy, "--exporter", opts.exporter, "--trials", str(opts.trials),
           # locate's --timeout bounds one onnxruntime session; the model's whole budget bounds it too.
           "--timeout", str(max(1.0, opts.timeout))]
    if opts.rtol is not None:
        cmd += ["--rtol", repr(opts.rtol)]
    if opts.atol is not None:
        cmd += ["--atol", repr(opts.atol)]
    for path in inputs:
        cmd += ["--inputs", path]
    for setting in opts.model_settings:
        cmd += ["--model-setting", setting]
    if report_dir is not None:
        cmd += ["--report", str(report_dir)]
    if opts.transform:
        cmd += ["--transform", opts.transform]
    return cmd


def run_child(cmd: list[str], work: Path, timeout: float, memory_mib: float, threads: int = 1) -> ChildOutcome:
    """Run ``cmd`` in a new process group; kill the group past ``timeout`` or ``memory_mib``."""
    env = thread_env(threads)
    start = time.monotonic()
    with open(work / "stdout.txt", "wb") as out, open(work / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=os.getcwd(),
                                env=env, start_new_session=True, preexec_fn=_die_with_parent)
    with _RUNNING_LOCK:
        _RUNNING.add(proc.pid)
    peak = 0.0
    timed_out = over_memory = False
    status, rusage = 0, None
    try:
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = group_rss_mib(proc.pid)
            peak = max(peak, rss)
            if time.monotonic() - start > timeout:
                timed_out = True
            elif memory_mib and rss > memory_mib:
                over_memory = True
            if timed_out or over_memory:
                _kill_group(proc.pid)
                _, status, rusage = os.wait4(proc.pid, 0)
                break
            time.sleep(_POLL_S)
    except BaseException:
        _kill_group(proc.pid)  # the sweep itself is stopping: take the child with it
        raise
    finally:
        proc.returncode = 0  # reaped by wait4 above; keep Popen from waiting again
        with _RUNNING_LOCK:
            _RUNNING.discard(proc.pid)
    _kill_group(proc.pid)  # stragglers (a hung onnxruntime child) die with their model
    wall = time.monotonic() - start
    if rusage is not None:
        peak = max(peak, rusage.ru_maxrss / 1024.0)  # KiB on Linux
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return ChildOutcome(code, wall, round(peak, 1), timed_out, over_memory)


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a child: ``threads`` intra-op threads, so ``jobs`` children do not each take every core."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(max(1, threads))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def group_rss_mib(pgid: int) -> float:
    """Resident memory of every process in group ``pgid``, from ``/proc`` (0 where unreadable)."""
    total = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0.0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().rsplit(b")", 1)[1].split()
            if int(stat[2]) != pgid:  # fields after "comm)": state ppid pgrp ...
                continue
            total += int(stat[21]) * _PAGE  # rss in pages
        except (OSError, IndexError, ValueError):
            continue
    return total / (1024 * 1024)


def make_row(task: ModelTask, opts: SweepOptions, outcome: ChildOutcome, result: dict[str, Any] | None,
             stderr: str, build: dict[str, Any]) -> dict[str, Any]:
    """One ``sweep.jsonl`` line: the locate document plus the sweep's own keys.

    Rows without a locate result keep ``schema`` and carry ``verdict: null``;
    ``status`` then says what happened (timeout, crashed, bad_input, ...) and
    ``reason`` says it in one line.
    """
    status, reason = classify(outcome, result, stderr, opts)
    row: dict[str, Any] = dict(result) if result else {"schema": SCHEMA, "verdict": None}
    row.update({
        "sweep_schema": ROW_SCHEMA,
        "name": task.name,
        "spec": task.spec,
        "group": task.group,
        "meta": dict(task.meta),
        "status": status,
        "reason": reason,
        "exit_code": outcome.returncode,
        "wall_s": round(outcome.wall_s, 2),
        "peak_rss_mib": outcome.peak_rss_mib,
        "options": opts.to_dict(),
        "host": socket.gethostname(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "flags": list(build.get("flags", [])),
        "build": build,
    })
    return row


def classify(outcome: ChildOutcome, result: dict[str, Any] | None, stderr: str, opts: SweepOptions) -> tuple[str, str]:
    """The row's status and its one-line reason."""
    if outcome.timed_out:
        return STATUS_TIMEOUT, f"no verdict within {opts.timeout:g}s: killed"
    if outcome.over_memory:
        return STATUS_OUT_OF_MEMORY, f"resident memory passed {opts.memory_mib:g} MiB: killed"
    if outcome.returncode < 0:
        name = _signal_name(-outcome.returncode)
        last = last_error_line(stderr)
        return STATUS_CRASHED, f"worker killed by {name}" + (f": {last}" if last else "")
    if result is not None and result.get("verdict"):
        return result["verdict"], result_reason(result)
    last = last_error_line(stderr)
    if SKIP_MARKER in last:
        return STATUS_SKIPPED, last[last.index(SKIP_MARKER):]
    if outcome.returncode == 2:
        return STATUS_BAD_INPUT, last or "bad input (exit 2)"
    if outcome.returncode in _VERDICT_CODES:
        return STATUS_ERROR, f"exit {outcome.returncode} without a result JSON" + (f": {last}" if last else "")
    return STATUS_ERROR, (last or "no message") + f" (exit {outcome.returncode})"


def result_reason(result: dict[str, Any]) -> str:
    """One line naming what locate found."""
    verdict = result.get("verdict")
    if verdict == "diverged" and result.get("first_divergent"):
        fd = result["first_divergent"]
        target = (fd.get("framework") or {}).get("target", "")
        return f"{fd.get('onnx_node')} ({fd.get('op_type')}) {target} stage={fd.get('stage')} cause={fd.get('cause')}".replace("  ", " ")
    if verdict == "export_failed" and result.get("export_failure"):
        ef = result["export_failure"]
        message = first_line(ef.get("message", ""), 400)
        message = re.sub(r"^ONNX export failed at step '[^']*'( on \S+)?: ", "", message)  # named just before
        where = ef.get("target") or ef.get("step", "")
        return f"{where}: {message[:200]}"
    if verdict == "runtime_failed" and result.get("runtime_failure"):
        rf = result["runtime_failure"]
        return f"{rf.get('node', '')} ({rf.get('op_type', '')}) {rf.get('kind', '')}: {first_line(str(rf.get('error', '')))}"
    return ""


def last_error_line(stderr: str) -> str:
    """The most telling stderr line: locate's ``error:`` line, else the last non-empty one."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error:" in line:
            return line.split("error:", 1)[1].strip()[:300]
    return lines[-1][:300] if lines else ""


def first_line(text: str, limit: int = 200) -> str:
    text = (text or "").strip()
    return text.splitlines()[0][:limit] if text else ""


def _materialize(task: ModelTask, work: Path) -> str:
    """Write a generated factory into ``work`` and return the spec pointing at it."""
    if not task.factory_source:
        return task.spec
    path = work / "zoo" / f"{_safe(task.name)}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(task.factory_source)
    attr = task.spec.rsplit(":", 1)[1] if ":" in task.spec else "build"
    return f"{path}:{attr}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
