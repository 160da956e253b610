"""Signed zeros (issue #11 item 5): the search must see the sign where a later node reads it.

onnxruntime's ``Where`` turns a selected -0.0 into +0.0 (verified below on the
installed onnxruntime with a real export); a later ``1 / x`` then gives +inf
where PyTorch gives -inf. Every tolerance calls -0.0 equal to +0.0, so without
the sign the first bad value is the Reciprocal's. ``compare(..., signed_zeros=True)``
on the values ``values.signs.sign_sensitive_values`` picks moves it to the Where.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from nodebisect.frontends.capture import capture_fx
from nodebisect.frontends.dynamo import export_onnx
from nodebisect.frontends.loading.load import build_loaded_model
from nodebisect.runtime.runner import OrtRunner
from nodebisect.values.compare import compare
from nodebisect.values.graphmap import GraphMap, build_graph_map
from nodebisect.values.signs import sign_sensitive_values

F32 = np.float32


# -- compare ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actual", "expected", "signed_ok"),
    [
        pytest.param([0.0, 1.0], [-0.0, 1.0], False, id="plus-where-minus"),
        pytest.param([-0.0, 1.0], [0.0, 1.0], False, id="minus-where-plus"),
        pytest.param([-0.0, 0.0], [-0.0, 0.0], True, id="same-signs"),
        pytest.param([1e-30, 1.0], [-0.0, 1.0], True, id="tiny-not-zero-is-tolerance-business"),
        pytest.param([np.nan, -0.0], [np.nan, -0.0], True, id="nan-and-signed-zero-agree"),
    ],
)
def test_signed_zeros_only_when_asked(actual: list[float], expected: list[float], signed_ok: bool) -> None:
    a, e = np.array(actual, F32), np.array(expected, F32)
    assert compare("v", a, e).ok  # every tolerance calls -0 equal to +0
    cmp = compare("v", a, e, signed_zeros=True)
    assert cmp.ok is signed_ok
    if not signed_ok:
        assert cmp.metrics.mismatch_fraction == pytest.approx(0.5)
        assert "position(s) where PyTorch has" in cmp.metrics.reason


def test_signed_zero_reason_counts_each_direction_and_stays_out_of_other_mismatches() -> None:
    cmp = compare("v", np.array([0.0, 0.0, -0.0, 5.0], F32), np.array([-0.0, -0.0, 0.0, 5.0], F32), signed_zeros=True)
    assert cmp.metrics.reason.startswith("onnxruntime has +0.0 at 2 position(s) where PyTorch has -0.0 and -0.0 at 1 position(s)")
    worse = compare("v", np.array([0.0, 7.0], F32), np.array([-0.0, 5.0], F32), signed_zeros=True)
    assert not worse.ok and worse.metrics.reason == "" and worse.metrics.mismatch_fraction == 1.0


def test_integers_have_no_signed_zero() -> None:
    assert compare("v", np.array([0, 1]), np.array([0, 1]), signed_zeros=True).ok


# -- a real model --------------------------------------------------------------------------


class SignedZeroWhere(nn.Module):
    """-relu(z) is -0.0 where z < 0; ``where`` keeps it; ``1 / g`` turns its sign into +-inf."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = -torch.relu(self.proj(x))
        g = torch.where(keep, h, torch.ones_like(h))
        return self.head(torch.atan(1.0 / g))


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 6, generator=g), torch.rand(4, 6, generator=g) > 0.3


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    """The export, PyTorch's values and every mapped value as onnxruntime computes it."""
    model, args = SignedZeroWhere().eval(), _inputs()
    exported = export_onnx(build_loaded_model(model, args))
    acts = capture_fx(exported.program, args, {})
    gm = build_graph_map(exported.model, acts.values, acts.outputs)
    feeds = {i.name: a.numpy() for i, a in zip(exported.model.graph.input, args)}
    got = OrtRunner(exported.model, feeds).run(list(gm.mapped))
    return {"model": exported.model, "gm": gm, "acts": acts, "got": got, "args": args}


def _node(model: onnx.ModelProto, op: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == op)


def test_onnxruntime_where_really_drops_the_sign(run: dict[str, Any]) -> None:
    """The premise, checked on the installed versions: PyTorch -0.0, onnxruntime +0.0 after Where."""
    where = _node(run["model"], "Where").output[0]
    expected, got = run["acts"].values[run["gm"].mapped[where]], run["got"][where]
    minus_zero = (expected == 0) & np.signbit(expected)
    assert minus_zero.any()
    flipped = minus_zero & ~np.signbit(got)
    assert flipped.any(), "this onnxruntime keeps the sign of a selected -0.0 through Where"
    out = run["model"].graph.output[0].name
    assert not compare(out, run["got"][out], run["acts"].values[run["gm"].mapped[out]]).ok


def test_values_a_division_reads_are_sign_sensitive(run: dict[str, Any]) -> None:
    model, gm = run["model"], run["gm"]
    sensitive = sign_sensitive_values(gm)
    where, neg = _node(model, "Where").output[0], _node(model, "Neg").output[0]
    relu = _node(model, "Relu").output[0]
    # Reciprocal reads where; Where carries neg's sign, Neg carries relu's (flipped).
    assert {where, neg, relu} <= sensitive
    linear, recip = _node(model, "Relu").input[0], _node(model, "Reciprocal").output[0]
    assert linear not in sensitive and recip not in sensitive  # Relu decides the sign itself; the division's own output


def _first_bad(gm: GraphMap, run: dict[str, Any], signed: set[str]) -> str:
    """The earliest bad mapped value whose mapped inputs are all good (what the search stops at)."""
    acts, got = run["acts"], run["got"]
    bad = {
        v
        for v in gm.mapped
        if not compare(v, got[v], acts.values[gm.mapped[v]], signed_zeros=v in signed).ok
    }
    firsts = [v for v in gm.probes() if v in bad and not (set(gm.mapped_inputs(v)) & bad)]
    return gm.producer[firsts[0]]


def test_the_search_stops_at_the_where_only_when_it_sees_the_sign(run: dict[str, Any]) -> None:
    gm, model = run["gm"], run["model"]
    assert _first_bad(gm, run, set()) == _node(model, "Reciprocal").name  # the report
    assert _first_bad(gm, run, sign_sensitive_values(gm)) == _node(model, "Where").name


def test_signed_zeros_raise_no_alarm_on_a_clean_model() -> None:
    """Where the signs agree, the stricter comparison still matches everything."""
    model, args = SignedZeroWhere().eval(), _inputs()
    args = (args[0], torch.zeros_like(args[1]))  # nothing selected from -relu: no -0.0 reaches Where's output
    exported = export_onnx(build_loaded_model(model, args))
    acts = capture_fx(exported.program, args, {})
    gm = build_graph_map(exported.model, acts.values, acts.outputs)
    feeds = {i.name: a.numpy() for i, a in zip(exported.model.graph.input, args)}
    got = OrtRunner(exported.model, feeds).run(list(gm.mapped))
    sensitive = sign_sensitive_values(gm)
    assert sensitive
    for v in gm.mapped:
        assert compare(v, got[v], acts.values[gm.mapped[v]], signed_zeros=v in sensitive).ok, v


def test_locate_names_the_where_that_dropped_the_sign() -> None:
    from nodebisect import locate

    result = locate(SignedZeroWhere().eval(), _inputs())
    fd = result.first_divergent
    assert fd is not None and fd.op_type == "Where", (fd.onnx_node, fd.cause)
    assert "where PyTorch has -0.0" in (fd.metrics.reason if fd.metrics else "")
