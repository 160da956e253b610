"""Run onnxruntime in a child process, so that its crashes and hangs are ours to report.

ONNX Runtime can abort or segfault on a bad graph (onnxruntime#17616,
pytorch#109806). A debugger of broken models must outlive that: sessions are
created and run in one long-lived child (spawned, importing only numpy and
onnxruntime); if it dies or overruns its time limit, the parent raises
``OrtCrashed`` / ``OrtHung`` and starts a fresh child for the next request.

A large answer (every value of BERT-base's int8 candidate: 186 MB) does not travel
through the pipe: the child writes its arrays into one file in shared memory
(``/dev/shm``) and sends where each one lies; the parent maps the file copy-on-write
and unlinks it at once. Pickling the arrays through the pipe copied them twice in
64 KB turns: 0.3 s of a 2.7 s diff (issue #21's 1.2x floor).
"""

from __future__ import annotations

import mmap
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Any

import numpy as np

from nodebisect.errors import RuntimeFailedError
from nodebisect.run import ORT_OPT_LEVELS


class OrtCrashed(RuntimeFailedError):
    """The child process running onnxruntime died (abort, segfault, OOM kill)."""


class OrtHung(RuntimeFailedError):
    """onnxruntime did not answer within the time limit."""


class OrtRaised(RuntimeFailedError):
    """onnxruntime raised an exception (load or run)."""


def import_root() -> str:
    """The folder holding the ``nodebisect`` package, put on the child's PYTHONPATH.

    Read from the package itself, not from this file's depth, so that it holds
    whether nodebisect is installed or run from a checkout, wherever this module sits.
    """
    import nodebisect

    return os.path.dirname(os.path.dirname(os.path.abspath(nodebisect.__file__)))


def create_session(
    source: bytes | str, providers: list[str], opt_level: str, optimized_path: str | None = None, disabled_optimizers: tuple[str, ...] = ()
) -> Any:
    """The one way nodebisect opens an onnxruntime session (in the child, or here when crashes are not isolated)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_OPT_LEVELS[opt_level])
    options.log_severity_level = 3
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    kwargs = {"disabled_optimizers": list(disabled_optimizers)} if disabled_optimizers else {}
    return ort.InferenceSession(source, options, providers=providers, **kwargs)


def run_session(session: Any, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``outputs``, feeding only the inputs this (sub-)model has."""
    names = {i.name for i in session.get_inputs()}
    return [np.asarray(g) for g in session.run(outputs, {k: v for k, v in feeds.items() if k in names})]


# Answers at least this large go through a shared-memory file instead of the pipe.
SHARED_ANSWER_BYTES = 8 * 1024 * 1024
_ALIGN = 64


def _shared_dir() -> str | None:
    """Where answers are shared: /dev/shm (memory, never the disk) when this system has it writable."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _share(arrays: list[np.ndarray]) -> tuple[str, Any]:
    """``("ok", arrays)``, or ``("file", (path, layout))`` with the arrays written to a shared-memory file."""
    folder = _shared_dir()
    if folder is None or sum(a.nbytes for a in arrays) < SHARED_ANSWER_BYTES or any(a.dtype.hasobject for a in arrays):
        return "ok", arrays
    layout = []
    try:
        fd, path = tempfile.mkstemp(dir=folder, prefix="nodebisect-answer-")
    except OSError:
        return "ok", arrays
    try:
        with os.fdopen(fd, "wb") as fh:
            for a in arrays:
                fh.write(b"\0" * ((-fh.tell()) % _ALIGN))
                layout.append((a.dtype.str, a.shape, fh.tell()))
                fh.write(memoryview(np.ascontiguousarray(a)).cast("B"))
    except OSError:  # shared memory full: the pipe still works
        os.unlink(path)
        return "ok", arrays
    return "file", (path, layout)


def _unshare(path: str, layout: list[tuple[str, tuple[int, ...], int]]) -> list[np.ndarray]:
    """The arrays of a shared answer: views of the file mapped copy-on-write (writable, no copy); the file is unlinked."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            # private (copy-on-write) and populated in one call: the comparisons read every page, and one
            # fault per 4 KB page of a 186 MB answer cost more than the pipe saved
            flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0)
            mapped = mmap.mmap(fh.fileno(), size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE) if size else None
    finally:
        os.unlink(path)
    out = []
    for dtype, shape, offset in layout:
        count = int(np.prod(shape, dtype=np.int64))
        if mapped is None or count == 0:
            out.append(np.zeros(shape, dtype))
        else:
            out.append(np.frombuffer(mapped, dtype=np.dtype(dtype), count=count, offset=offset).reshape(shape))
    return out


def _serve(reader: Any, writer: Any) -> None:
    """Child loop: receive (model bytes, feeds, outputs, options), answer arrays or an error.

    The options are the providers, the graph optimization level, where to save the
    optimized graph, and the named optimizers to switch off (the fusion search).
    """
    while True:
        try:
            request = pickle.load(reader)
        except EOFError:
            return
        if request is None:
            return
        model_bytes, feeds, outputs, providers, opt_level, optimized_path, disabled_optimizers = request
        stage = "load"
        session = None
        try:
            session = create_session(model_bytes, providers, opt_level, optimized_path, disabled_optimizers)
            stage = "run"
            answer: tuple[str, Any] = _share(run_session(session, outputs, feeds))
        except Exception as exc:  # noqa: BLE001 - reported to the parent as data
            answer = ("error", f"{stage}: {exc}")
        del session  # its weights and arena go now, not while the next request's session is built
        pickle.dump(answer, writer, protocol=pickle.HIGHEST_PROTOCOL)
        writer.flush()


def main() -> None:
    """Entry of the child (``python -m nodebisect.runtime.sandbox``): the protocol owns stdout."""
    # Ctrl-C in a terminal reaches the whole process group; the parent handles it
    # and closes our stdin (EOF ends the loop), so the child must not die with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes to stderr, never into the protocol
    _serve(sys.stdin.buffer, protocol_out)


class OrtChild:
    """A child process that creates and runs ONNX Runtime sessions on request.

    The child is a plain ``python -c`` calling ``main`` here (not multiprocessing),
    so the user's ``__main__`` script is never imported again. ``start()`` may be
    called early (the pipeline does so before the export): the child imports numpy
    and onnxruntime while PyTorch works, and the first request finds it ready.
    """

    def __init__(self, timeout_s: float = 600.0) -> None:
        self.timeout_s = timeout_s  # per request; a re-run may change it
        self.requests = 0  # sessions asked of the child, over its life
        self._proc: subprocess.Popen[bytes] | None = None
        self._asked = False  # the running process got a request (else closing it may just kill it)

    def start(self) -> None:
        """Start the child now if none is running (requests start one anyway)."""
        if self._proc is None or self._proc.poll() is not None:
            self._start()

    def _start(self) -> None:
        # Not ``-m``: it puts the working directory first on sys.path, where a folder named
        # nodebisect (the checkout, run from the folder holding it) would shadow the package.
        bootstrap = "import sys\nif sys.path[:1] == ['']: del sys.path[0]\nfrom nodebisect.runtime.sandbox import main\nmain()\n"
        env = dict(os.environ)
        root = import_root()
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", bootstrap],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._asked = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def run(
        self,
        model_bytes: bytes | str,
        feeds: dict[str, np.ndarray],
        outputs: list[str],
        providers: list[str],
        opt_level: str,
        optimized_path: str | None = None,
        disabled_optimizers: tuple[str, ...] = (),
    ) -> list[np.ndarray]:
        """One session in the child; raises OrtCrashed / OrtHung / OrtRaised.

        ``model_bytes`` may also be a path (a model whose weights are external).
        """
        self.start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        request = (model_bytes, feeds, outputs, providers, opt_level, optimized_path, tuple(disabled_optimizers))
        self.requests += 1
        self._asked = True
        try:
            pickle.dump(request, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], self.timeout_s)
            if not ready:
                self._kill()
                raise OrtHung(f"onnxruntime did not finish within {self.timeout_s:g}s", tip="raise --timeout, or look at the node named")
            status, payload = pickle.load(proc.stdout)
        except (EOFError, BrokenPipeError, ConnectionResetError, pickle.UnpicklingError, OSError) as exc:
            code = self._reap()
            raise OrtCrashed(f"onnxruntime crashed ({_describe_exit(code)})", tip="the node named is where it fails; report it to onnxruntime") from exc
        if status == "error":
            raise OrtRaised(f"onnxruntime failed at {payload.splitlines()[0][:300]}")
        if status == "file":
            return _unshare(*payload)
        return payload

    def _reap(self) -> int | None:
        if self._proc is None:
            return None
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        self._proc = None
        return code

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._reap()

    def close(self) -> None:
        """Stop the child (idempotent).

        A child never asked anything (started early, then the export failed) may
        still be importing onnxruntime: it holds nothing, so it is killed at once
        rather than waited for.
        """
        proc = self._proc
        if proc is not None and proc.poll() is None and not self._asked:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        elif proc is not None and proc.poll() is None:
            try:
                assert proc.stdin is not None
                pickle.dump(None, proc.stdin)
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                proc.kill()
                proc.wait()
            else:  # it exits on its own (onnxruntime's teardown: 60-100 ms); nobody waits for that
                threading.Thread(target=_reap_later, args=(proc,), name="nodebisect-ort-reap", daemon=True).start()
        self._proc = None


def _reap_later(proc: subprocess.Popen[bytes]) -> None:
    """Wait for a child told to stop (no zombie left behind); kill it if it does not stop."""
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


if __name__ == "__main__":
    main()
