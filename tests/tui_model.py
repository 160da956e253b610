"""A tiny model for the TUI's live-run test: Linear -> LayerNorm -> softmax -> Linear.

The test breaks the exported LayerNormalization's epsilon, so nodebisect must name
that node; ``write_bad_onnx`` does the breaking.
"""

from __future__ import annotations

import torch


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(8, 8)
        self.ln = torch.nn.LayerNorm(8)
        self.lin2 = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.ln(self.lin(x)).softmax(-1))

    @classmethod
    def example_inputs(cls) -> tuple[torch.Tensor]:
        torch.manual_seed(1)
        return (torch.randn(4, 8),)


def write_bad_onnx(path: str) -> str:
    """Export ``Model`` and set LayerNormalization's epsilon to 0.5; returns the node name."""
    import onnx

    from nodebisect.frontends.dynamo import export_onnx
    from nodebisect.frontends.loading.load import build_loaded_model

    model = Model().eval()
    proto = export_onnx(build_loaded_model(model, Model.example_inputs())).model
    broken = ""
    for node in proto.graph.node:
        if node.op_type == "LayerNormalization":
            for attr in node.attribute:
                if attr.name == "epsilon":
                    attr.f = 0.5
                    broken = node.name
    onnx.save(proto, path)
    return broken
