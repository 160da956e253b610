"""The warm worker's side: import once, then run ``nodebisect`` for one request line after another.

Started by ``warm.WarmWorker`` (its ``WARM_BOOTSTRAP``). Requests arrive on stdin as
JSON lines (``argv``, and the files the model's stdout and stderr go to); each answer
is one JSON line (``exit``, ``rss_mib``) on the protocol pipe, the process's original
stdout. Kept apart from ``warm.py`` because it calls the CLI, which imports the sweep.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def serve() -> None:
    """The worker's loop: import once, then run one request line after another until EOF."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything printed between models goes to the worker's log, never into the protocol
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # as the console script (cli.main.run) sets it
    fresh = _preload()
    protocol.write("ready\n")
    protocol.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        _restore(fresh)
        code = run_one(request["argv"], request["stdout"], request["stderr"])
        protocol.write(json.dumps({"exit": code, "rss_mib": _rss_mib()}) + "\n")
        protocol.flush()


def run_one(argv: list[str], stdout: str, stderr: str) -> int:
    """``nodebisect ARGV`` in this process, its fds 1 and 2 on the model's files; returns the exit code."""
    import gc
    import traceback

    from nodebisect.cli.main import main

    saved = os.dup(1), os.dup(2)
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - one model's failure is its row, never the worker's end
            traceback.print_exc()
            code = 70
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
    _forget(gc)
    return int(code)


def _preload() -> dict[str, Any]:
    """What every model imports, imported once (what a cold worker pays for per model).

    Returns torch's global state as a fresh Python has it, for ``_restore``.
    """
    import torch

    import nodebisect.pipeline  # noqa: F401
    from nodebisect.cli import main  # noqa: F401

    return {"dtype": torch.get_default_dtype(), "grad": torch.is_grad_enabled(), "threads": torch.get_num_threads()}


def _restore(fresh: dict[str, Any]) -> None:
    """Give the next model torch's global settings as a fresh Python has them.

    One model's ``set_default_dtype``, ``set_grad_enabled(False)`` or thread count must
    not reach the next. (Unseeded random weights differ from run to run in a cold
    worker as well: locate's own run reseeds torch's default generator.)
    """
    import torch

    torch.set_default_dtype(fresh["dtype"])
    torch.set_grad_enabled(fresh["grad"])
    torch.set_num_threads(fresh["threads"])


def _forget(gc: Any) -> None:
    """Drop what the model left: the compiler's caches, then the garbage."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            torch._dynamo.reset()
        except Exception:  # noqa: BLE001 - an older torch without it
            pass
    gc.collect()


def _rss_mib() -> float:
    """This process's resident set now: a floor for the model's peak (the driver polls it while the model runs)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return 0.0
