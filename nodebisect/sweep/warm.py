"""Warm workers: one Python process runs ``locate`` on model after model, importing torch once.

A cold worker (``worker.run_child``) starts a fresh Python per model and pays for
importing torch, onnx, onnxscript and the exporter every time. A warm worker is the
same child (its own process group, started through a bootstrap so a ``nodebisect/``
folder in the working directory cannot shadow the package, dying with the thread that
started it) kept alive between models: the driver sends it one request line per model
and it answers with the exit code once ``locate`` returns (the worker's side:
``serve.py``).

A model still costs only its own row: the driver watches the worker's group while the
model runs exactly as it watches a cold child (wall clock, resident memory); a crash,
a hang or a memory blow-up ends the worker, the row says which, and the next model
gets a fresh worker. A worker is also replaced after ``RECYCLE_AFTER`` models, or
when it holds more than ``RECYCLE_FRACTION`` of the memory limit between models, so
what one model leaves behind cannot grow without bound.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nodebisect.sweep.worker import (
    _POLL_S,
    _RUNNING,
    _RUNNING_LOCK,
    ChildOutcome,
    _die_with_parent,
    _kill_group,
    group_rss_mib,
    thread_env,
)

RECYCLE_AFTER = 40  # models per worker before a fresh one
RECYCLE_FRACTION = 0.6  # of the per-model memory limit, held between models
START_TIMEOUT_S = 300.0  # importing torch on a loaded machine

# The worker's program: the package imported with the working directory off sys.path (see
# worker.WORKER_BOOTSTRAP), the directory put back at the end for the user's own modules.
WARM_BOOTSTRAP = (
    "import os, sys\n"
    "if sys.path and sys.path[0] == '': del sys.path[0]\n"
    "from nodebisect.sweep.serve import serve\n"
    "sys.path.append(os.getcwd())\n"
    "sys.argv[0] = 'nodebisect'\n"
    "serve()\n"
)


class WarmWorker:
    """The driver's handle on one warm worker process; ``run`` one model at a time.

    Not thread-safe: one driver thread owns a worker (the pool hands them out).
    """

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self.proc: subprocess.Popen[bytes] | None = None
        self.models = 0  # models the current process has run
        self.started = 0  # processes started over this handle's life
        self._buffer = b""
        self._log = Path(tempfile.mkdtemp(prefix="nodebisect-warm-")) / "worker.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def run(self, argv: list[str], work: Path, timeout: float, memory_mib: float) -> ChildOutcome:
        """``nodebisect`` with ``argv`` in the worker; stdout/stderr go to ``work``, as a cold child's do."""
        start = time.monotonic()
        if self.proc is None or self.proc.poll() is not None or self._should_recycle(memory_mib):
            self.close()
            self._start()
        proc = self.proc
        if proc is None or proc.stdin is None:  # it could not start: its log is the model's stderr
            (work / "stderr.txt").write_bytes(self._log.read_bytes()[-4000:] if self._log.exists() else b"")
            return ChildOutcome(70, time.monotonic() - start, 0.0)
        start = time.monotonic()  # the model's clock starts once the worker is ready
        request = {"argv": argv, "stdout": str(work / "stdout.txt"), "stderr": str(work / "stderr.txt")}
        self.models += 1
        pid, number = proc.pid, self.models
        try:
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            outcome = self._ended(start, 0.0)
        else:
            outcome = self._wait(proc, start, timeout, memory_mib)
        outcome.pid, outcome.model_number = pid, number
        return outcome

    def _wait(self, proc: subprocess.Popen[bytes], start: float, timeout: float, memory_mib: float) -> ChildOutcome:
        """Until the worker answers, dies, or passes the model's time or memory (then it is killed)."""
        peak = 0.0
        try:
            while True:
                line = self._read_line(_POLL_S)
                if line is not None:
                    answer = json.loads(line)
                    return ChildOutcome(int(answer["exit"]), time.monotonic() - start, round(max(peak, answer.get("rss_mib", 0.0)), 1))
                if proc.poll() is not None:
                    return self._ended(start, peak)
                rss = group_rss_mib(proc.pid)
                peak = max(peak, rss)
                timed_out = time.monotonic() - start > timeout
                over_memory = bool(memory_mib) and rss > memory_mib
                if timed_out or over_memory:
                    self.kill()
                    return ChildOutcome(-9, time.monotonic() - start, round(peak, 1), timed_out, over_memory and not timed_out)
        except BaseException:
            self.kill()  # the sweep itself is stopping: take the worker with it
            raise

    def close(self) -> None:
        """End the worker: EOF on its requests, then its whole group."""
        proc = self.proc
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        _kill_group(proc.pid)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        with _RUNNING_LOCK:
            _RUNNING.discard(proc.pid)
        self.proc = None

    def _start(self) -> None:
        log = open(self._log, "ab")
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", WARM_BOOTSTRAP], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, cwd=os.getcwd(), env=thread_env(self.threads),
                                         start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            log.close()
        with _RUNNING_LOCK:
            _RUNNING.add(self.proc.pid)
        self.models = 0
        self.started += 1
        self._buffer = b""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self._read_line(_POLL_S)
            if line is not None:
                return  # "ready": the imports are done
            if self.proc.poll() is not None:
                break
        self.kill()  # the first model's run finds no worker and says so in its row

    def _should_recycle(self, memory_mib: float) -> bool:
        if self.models >= RECYCLE_AFTER:
            return True
        return bool(memory_mib) and self.proc is not None and group_rss_mib(self.proc.pid) > RECYCLE_FRACTION * memory_mib

    def _ended(self, start: float, peak: float) -> ChildOutcome:
        """The worker died while the model ran (or never started): its exit status is the row's."""
        proc = self.proc
        code = 70
        if proc is not None:
            try:
                code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return ChildOutcome(code, time.monotonic() - start, round(peak, 1))

    def _read_line(self, wait_s: float) -> str | None:
        """One line from the worker within ``wait_s``, else None (partial lines are kept)."""
        proc = self.proc
        if proc is None or proc.stdout is None:
            return None
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([proc.stdout], [], [], wait_s)
            if not ready:
                return None
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace")
