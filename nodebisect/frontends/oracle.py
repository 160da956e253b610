"""The exported program run once more in float64: each value's exact answer, for its natural noise.

PyTorch's own float32 (or half) error against this oracle is how far a correct
implementation may legitimately be from exact; an ONNX value far beyond that is
a divergence whatever its magnitude (``values.noise``). The program's floating
parameters, inputs and every explicit floating dtype argument (``_to_copy``,
``full``, dtype asserts) are promoted to float64; integers stay as they are.

The run is started in a thread right after the capture (``OracleRun``): it
overlaps the stage checks, the mapping and onnxruntime's first session, and the
search waits for it only when it judges its first value.

Python float arguments of a floating op are not promoted but rounded to float32,
the precision PyTorch computes them in (a float32 or half tensor's scalars live
in float32 "opmath"), and the precision of the constants the exporter writes. The
oracle is the exact answer of the function both sides compute, constants and all:
``torch.remainder(h, 0.1)`` at ``|h| ~ 1e6`` moves by 1e7 x the divisor's rounding,
so an oracle dividing by the exact 0.1 disagreed with PyTorch by as much as the
conversion defect did, and the defect was cleared as PyTorch's own noise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import MutableMapping
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils import _pytree as pytree

from nodebisect.frontends.capture import flat_user_inputs
from nodebisect.frontends.pytorch_reference.float64 import FLOATS, float64_arguments



def capture_oracle(program: Any, args: tuple[Any, ...], kwargs: dict[str, Any], names: set[str]) -> dict[str, np.ndarray]:
    """float64 values of the program's FX nodes in ``names`` (floating ones only)."""
    gm = program.module()  # a new module and graph, but holding the program's own parameter tensors
    for node in gm.graph.nodes:
        node.args, node.kwargs = float64_arguments(node)
    gm.recompile()
    mutates = any(getattr(getattr(n.target, "_schema", None), "is_mutable", False) for n in gm.graph.nodes if n.op == "call_function")
    lazy = as_float64(gm, keep_parameters=not mutates)
    flat = [a.double() if isinstance(a, torch.Tensor) and a.dtype in FLOATS else a for a in flat_user_inputs(program, args, kwargs)]
    out: dict[str, np.ndarray] = {}

    def widen(x: Any) -> Any:
        # requires_grad as a widened Parameter has it: matmul folds (or not) by it, which moves the last bit.
        return x.detach().double().requires_grad_(x.requires_grad) if isinstance(x, torch.Tensor) and id(x) in lazy else x

    class _Recorder(torch.fx.Interpreter):
        def call_function(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if lazy and target is torch.ops.aten.embedding.default and id(args[0]) in lazy:
                # Gathering rows is exact: widening the rows gathered is widening the table, for 32 rows of 50k.
                return super().call_function(target, args, kwargs).double()
            if lazy:
                args, kwargs = pytree.tree_map(widen, (args, kwargs))
            return super().call_function(target, args, kwargs)

        def run_node(self, n: torch.fx.Node) -> Any:
            result = super().run_node(n)
            if n.name in names and isinstance(result, torch.Tensor) and result.dtype == torch.float64:
                out[n.name] = result.detach().cpu().numpy().copy()
            return result

    with torch.no_grad():
        _Recorder(gm).run(*flat)
    return out


def as_float64(module: torch.nn.Module, keep_parameters: bool = False) -> set[int]:
    """``module.double()`` without touching the tensors it holds: new float64 tensors take their places.

    ``.double()`` converts in place, and an unlifted module shares its parameters with
    the program and the user's model; a deep copy first cost a float32 copy of every
    weight. Tied weights stay tied (one float64 tensor per original).

    ``keep_parameters``: leave the floating parameters as they are and return their
    ids; the caller widens each where it is used (same values: widening is exact).
    Converting every weight up front was most of the oracle's time on BERT-base
    (0.9 GB of float64 allocated and faulted in at once, for a 0.1 s float64
    forward); converted where used, each temporary is freed after its last use.
    Buffers are always replaced: a graph may write into them.
    """
    done: dict[int, torch.Tensor] = {}
    kept: set[int] = set()

    def widened(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in done:
            wide = t.detach().double()
            done[id(t)] = torch.nn.Parameter(wide, requires_grad=t.requires_grad) if isinstance(t, torch.nn.Parameter) else wide
        return done[id(t)]

    for mod in module.modules():
        for table in (mod._parameters, mod._buffers):
            for key, t in table.items():
                if t is None or not t.is_floating_point():
                    continue
                if keep_parameters and table is mod._parameters:
                    kept.add(id(t))
                else:
                    table[key] = widened(t)
    return kept


class OracleRun(MutableMapping):
    """The oracle's values, computed in a thread; reading them waits for it.

    ``done(seconds, error)`` is called once, in the thread that first waits (the
    pipeline's), never in the worker: the run log is not thread-safe.
    """

    def __init__(self, compute: Callable[[], tuple[dict[str, np.ndarray], str]], done: Callable[[float, str], None]) -> None:
        self._compute, self._done = compute, done
        self._values: dict[str, np.ndarray] = {}
        self._error, self._seconds = "", 0.0
        self._thread: threading.Thread | None = threading.Thread(target=self._run, name="nodebisect-oracle", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.perf_counter()
        try:
            self._values, self._error = self._compute()
        except BaseException as exc:  # noqa: BLE001 - reported by the waiting thread
            self._error = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        self._seconds = time.perf_counter() - start

    def wait(self) -> dict[str, np.ndarray]:
        """The values, once the run is over (reports it the first time)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self._done(self._seconds, self._error)
        return self._values

    def __getitem__(self, key: str) -> np.ndarray:
        return self.wait()[key]

    def __setitem__(self, key: str, value: np.ndarray) -> None:
        self.wait()[key] = value

    def __delitem__(self, key: str) -> None:
        del self.wait()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.wait())

    def __len__(self) -> int:
        return len(self.wait())
