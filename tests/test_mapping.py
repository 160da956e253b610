"""Mapping ONNX values to FX activations when the exporter renamed them (issue #11, held-out Swin).

``softmax(x, dim=-1, dtype=float32)`` followed by a ``clone`` (an eval-mode dropout's
trace in transformers' eager attention) reaches ONNX as a Softmax whose output is
``val_2``, not ``softmax``: the clone is dropped and the value loses its FX name. A
name-only mapping left the softmax without a reference, so an edited Softmax axis was
reported at the next MatMul (Swin's three Softmax nodes, held-out accuracy run).
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

import nodebisect
from nodebisect.values.graphmap import build_graph_map

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faults  # noqa: E402


class SoftmaxThenClone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.softmax(self.a(x), dim=-1, dtype=torch.float32).clone())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, tuple[torch.Tensor], onnx.ModelProto, Path]:
    from nodebisect.frontends.dynamo import export_onnx
    from nodebisect.frontends.loading.load import build_loaded_model

    model = SoftmaxThenClone().eval()
    args = (torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(0)),)
    return model, args, export_onnx(build_loaded_model(model, args)).model, tmp_path_factory.mktemp("mapping")


def test_the_renamed_softmax_output_is_mapped_to_its_fx_node(exported) -> None:  # type: ignore[no-untyped-def]
    model, args, clean, _ = exported
    softmax = next(n for n in clean.graph.node if n.op_type == "Softmax")
    assert softmax.output[0] != "softmax"  # the premise: the exporter renamed it
    program = torch.export.export(model, args)
    acts = {"softmax": torch.softmax(model.a(args[0]), dim=-1).detach().numpy(), "linear": model.a(args[0]).detach().numpy()}
    gm = build_graph_map(clean, acts, [n.name for n in program.graph.nodes if n.op == "output"][:0])
    assert gm.mapped.get(softmax.output[0]) == "softmax"
    # a wrong shape must not map: that would be a false alarm
    gm_bad = build_graph_map(clean, {"softmax": acts["softmax"][:1]}, [])
    assert softmax.output[0] not in gm_bad.mapped


def test_an_edited_softmax_axis_is_named_exactly(exported, quick_locate) -> None:  # type: ignore[no-untyped-def]
    model, args, clean, tmp = exported
    softmax = next(n.name for n in clean.graph.node if n.op_type == "Softmax")
    faulted, edited = faults.set_attribute(clean, softmax, "axis", 1)
    path = tmp / "axis.onnx"
    onnx.save(faulted, str(path))
    fd = quick_locate(model, args, onnx_path=str(path)).first_divergent
    assert fd is not None and fd.onnx_node == edited, fd
    assert fd.framework.fx_node == "softmax"


def test_the_clean_export_still_matches(exported) -> None:  # type: ignore[no-untyped-def]
    model, args, _, _ = exported
    result = nodebisect.locate(model, args)
    assert result.verdict == "match"
    assert result.stats["mapped_values"] >= 3  # linear, softmax, linear_1


def test_the_source_line_skips_nodebisects_own_wrappers() -> None:
    """A zoo model's trace passes through nodebisect/sweep/zoo.py: the transformers line is the answer, not the wrapper."""
    import os

    import nodebisect
    from nodebisect.values.graphmap import user_frame

    own = os.path.join(os.path.dirname(nodebisect.__file__), "sweep", "zoo.py")
    library = "/venv/lib/python3.11/site-packages/transformers/integrations/sdpa_attention.py"
    trace = (
        f'File "{own}", line 420, in forward\n    out = self.model(**kwargs)\n'
        f'File "{library}", line 96, in sdpa_attention_forward\n    attn_output = torch.nn.functional.scaled_dot_product_attention(\n'
    )
    assert user_frame(trace) == (f"{library}:96", "attn_output = torch.nn.functional.scaled_dot_product_attention(")
    user = "/home/me/project/model.py"
    mine = trace + f'File "{user}", line 12, in forward\n    return self.attn(x)\n'
    assert user_frame(mine) == (f"{user}:12", "return self.attn(x)")
