"""Tolerance that knows each value's natural noise (issue #11.2): the float64 oracle and the judge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nodebisect
from nodebisect.search.compare import compare
from nodebisect.search.noise import HIDDEN_FACTOR, NOISE_FACTOR, WITHIN_NOISE, judge


def _arrays(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((64, 64))


def test_drift_within_pytorchs_own_noise_is_said_but_never_hidden() -> None:
    exact = _arrays()
    # PyTorch itself is 1e-3 relative from exact (a long half-precision-like chain) ...
    torch_value = (exact * (1 + 1e-3)).astype(np.float32)
    # ... and ONNX is as far on the other side: outside rtol=1e-4, but legitimate drift.
    onnx_value = (exact * (1 - 1e-3)).astype(np.float32)
    fixed = compare("v", onnx_value, torch_value, rtol=1e-4, atol=1e-6)
    assert not fixed.ok
    judged = judge(fixed, onnx_value, torch_value, exact, "float32")
    # Legitimate drift, or rounding the model relies on (Fp16RoundingElided): only the user can tell.
    assert not judged.ok
    assert judged.metrics.criterion == WITHIN_NOISE
    assert judged.metrics.noise_ratio <= NOISE_FACTOR
    assert judged.metrics.noise > 0


def test_a_defect_hidden_by_atol_in_a_small_value_is_caught() -> None:
    exact = np.abs(_arrays(1)) * 4e-4 + 1e-4  # RMSNorm variance-sized values
    torch_value = exact.astype(np.float32)
    onnx_value = (exact - 2e-6).astype(np.float32)  # `variance - eps` instead of `+ eps`
    fixed = compare("v", onnx_value, torch_value)  # fp32 defaults: atol=1e-4 hides it
    assert fixed.ok
    judged = judge(fixed, onnx_value, torch_value, exact, "float32")
    assert not judged.ok
    assert judged.metrics.criterion == "noise"
    assert judged.metrics.noise_ratio > HIDDEN_FACTOR


def test_float32_rounding_alone_stays_a_match() -> None:
    exact = _arrays(2) @ _arrays(3)
    a = _arrays(2).astype(np.float32)
    b = _arrays(3).astype(np.float32)
    torch_value = a @ b
    onnx_value = (b.T @ a.T).T  # another summation order: float32 rounding only
    judged = judge(compare("v", onnx_value, torch_value), onnx_value, torch_value, exact, "float32")
    assert judged.ok and judged.metrics.noise_ratio < NOISE_FACTOR


def test_no_oracle_keeps_the_fixed_verdict() -> None:
    value = _arrays().astype(np.float32)
    fixed = compare("v", value + 1.0, value)
    judged = judge(fixed, value + 1.0, value, None, "float32")
    assert judged is fixed and not judged.ok and judged.metrics.criterion == "fixed"


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(32, 64)
        self.norm = torch.nn.LayerNorm(64)
        self.fc2 = torch.nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.nn.functional.gelu(self.norm(self.fc1(x))))


def test_a_clean_export_is_judged_against_the_oracle_and_matches() -> None:
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    result = nodebisect.locate(_Block().eval(), (x,), check_capture=False)
    assert result.verdict == "match"
    judged = [n.metrics for n in result.nodes if n.metrics is not None and n.metrics.expected_dtype == "float32"]
    assert judged and all(m.noise_ratio < NOISE_FACTOR for m in judged)
    assert "oracle" in result.stats["timings"]
    off = nodebisect.locate(_Block().eval(), (x,), check_capture=False, oracle="off")
    assert off.verdict == "match" and "oracle" not in off.stats["timings"]
    with pytest.raises(nodebisect.BadInputError):
        nodebisect.locate(_Block().eval(), (x,), oracle="sometimes")


def test_the_oracle_leaves_the_users_model_in_its_dtype() -> None:
    model = _Block().eval()
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    nodebisect.locate(model, (x,), check_capture=False, oracle="on")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model(x).dtype == torch.float32
