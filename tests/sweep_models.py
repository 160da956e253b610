"""Tiny models for the sweep tests, each a factory ``locate`` can load (``tests/sweep_models.py:NAME``).

One of each outcome a fleet can hold: clean, fails to export, crashes its worker,
hangs. The divergent one is ``samples/divergent.py:AvgPoolDivisorOverride``.
"""

from __future__ import annotations

import os
import signal
import time

import torch
import torch.nn as nn


class _Clean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class _DataDependent(nn.Module):
    """``if x.sum() > 0`` is a data-dependent branch: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if h.sum() > 0:
            return h * 2
        return h - 1


class _Switchable(_DataDependent):
    """Exports only once ``branchy`` is off: the attribute a ``--model-setting branchy=False`` remedy sets."""

    def __init__(self) -> None:
        super().__init__()
        self.branchy = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if self.branchy and h.sum() > 0:
            return h * 2
        return h - 1


def clean():
    return _Clean(), (torch.randn(3, 6, generator=torch.Generator().manual_seed(0)),)


def export_fails():
    return _DataDependent(), (torch.randn(2, 4, generator=torch.Generator().manual_seed(0)),)


def switchable():
    return _Switchable(), (torch.randn(2, 4, generator=torch.Generator().manual_seed(0)),)


def crashes():
    """Dies on SIGSEGV while building: the sweep must record it and carry on."""
    os.kill(os.getpid(), signal.SIGSEGV)


def hangs():
    """Never returns: the per-model timeout must kill it."""
    time.sleep(3600)


def hogs_memory():
    """Holds ~1.5 GiB while building: the per-model memory limit must kill it."""
    hog = torch.ones(400_000_000)  # noqa: F841 - the point is to hold it
    time.sleep(3600)
