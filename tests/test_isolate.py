"""Local-vs-inherited: the node downstream of a real defect is right on reference inputs."""

from __future__ import annotations

import pytest
import torch

from models import Block
from nodebisect.frontends.capture import capture_fx, flat_user_inputs, to_numpy
from nodebisect.frontends.dynamo import export_onnx
from nodebisect.diagnose.isolate import isolate, local_graph
from nodebisect.frontends.loading.load import build_loaded_model
from nodebisect.runtime.handle import Ort
from nodebisect.values.graphmap import build_graph_map


@pytest.fixture(scope="module")
def setup() -> tuple:
    model = Block(out=4, scale=3.0).eval()  # lin2(softmax(3 * ln(lin(x)))), 4 outputs
    args = (torch.randn(4, 8, generator=torch.Generator().manual_seed(0)),)
    loaded = build_loaded_model(model, args)
    exported = export_onnx(loaded)
    proto = exported.model
    edited = next(n for n in proto.graph.node if n.op_type == "LayerNormalization")
    for attr in edited.attribute:
        if attr.name == "epsilon":
            attr.f = 0.5
    acts = capture_fx(exported.program, args, {})
    gm = build_graph_map(proto, acts.values, acts.outputs)
    flat = flat_user_inputs(exported.program, args, {})
    feeds = {name: to_numpy(t) for name, t in zip(gm.graph_inputs, flat)}
    return proto, gm, acts, feeds, edited.name


def _cause(setup: tuple, node_op: str) -> str:
    proto, gm, acts, feeds, _edited = setup
    node = next(n for n in gm.order if gm.nodes[n].op_type == node_op)
    value = gm.nodes[node].output[0]
    local = local_graph(proto, gm, value)
    iso = isolate(
        local, value, reference=lambda v: acts.values[gm.mapped[v]], graph_feeds=feeds,
        expected=acts.values[gm.mapped[value]], ort=Ort(ep="cpu", opt_level="all"), rtol=None, atol=None,
    )
    return iso.cause


def test_the_edited_node_is_a_conversion_defect(setup: tuple) -> None:
    assert _cause(setup, "LayerNormalization") == "conversion"


def test_a_node_downstream_of_it_is_inherited(setup: tuple) -> None:
    # Softmax receives the LayerNorm's wrong output in the full graph, but on the
    # framework's own input values it is right: its divergence is inherited.
    assert _cause(setup, "Softmax") == "inherited"
