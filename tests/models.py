"""Tiny model builders for the end-to-end tests: a small block, one CNN and three transformers.

Every builder seeds torch, builds random weights from a config (no downloads)
and returns ``(module, args)`` in eval mode, small enough (hidden 32, 2 layers,
sequence 8) that export + capture + ORT take about a second each.

Notes on what the dynamo exporter makes of them (torch 2.13, transformers 5.x,
onnxscript 0.7, default optimize=True):

* Attention: both ``attn_implementation="sdpa"`` (the default, used here) and
  ``"eager"`` export. With ``sdpa`` each layer's attention is ONE FX node,
  ``scaled_dot_product_attention``, lowered to an 11-node ONNX segment
  (Reshape/Transpose/Reshape of K, two Mul by sqrt(scale), MatMul, Add of the
  mask, Softmax, IsNaN, Where, MatMul) in which only the last MatMul carries the
  FX value: the natural place for "fault inside a decomposed op". With
  ``eager`` the same maths is separate FX nodes (matmul, div, add, softmax,
  matmul), each carrying its own value.
* GPT-2's causal mask is constant-folded into an initializer holding 0 /
  -3.4e38 (finfo.min), added inside the SDPA segment.
* Linear: BERT and ViT lower ``aten.linear`` to MatMul + Add (a 2-node segment,
  the bias Add carries the value); GPT-2's Conv1D is ``addmm`` -> one Gemm.
* LayerNorm -> one LayerNormalization; BERT/ViT GELU -> Gelu; GPT-2's tanh GELU
  stays as its Mul/Pow/Tanh FX nodes.
* CNN: the optimizer folds each eval-mode BatchNorm into the Conv before it, so
  the Conv node carries the BatchNorm's FX value (``getitem``): 8 ONNX nodes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

SEQ = 8
VOCAB = 100
HIDDEN = 32
# transformers initialises weights with std 0.02: every layer then adds almost
# nothing to the residual stream and attention is near uniform, so a fault in a
# LayerNorm epsilon or a Softmax axis is invisible at the output. Trained models
# are not like that; a wider init makes each layer matter.
INIT_RANGE = 0.2


class Block(nn.Module):
    """Linear -> LayerNorm -> activation -> Linear: the small model most tests break.

    Exported by dynamo it has one LayerNormalization (``node_layer_norm``) to corrupt.
    Also a factory ``locate`` loads (``tests/models.py:Block``). The arguments give the
    variants the tests use; submodules are created in the same order whatever they are,
    so a given configuration always has the same weights.

    Args:
        d_in: input features (the LayerNorm's width is ``hidden``).
        hidden: the first Linear's output features.
        out: the last Linear's output features.
        act: "softmax" (over the last axis), "relu" or "gelu".
        scale: multiplies the LayerNorm's output before the activation (1.0: no Mul).
    """

    def __init__(self, d_in: int = 8, hidden: int = 8, out: int = 8, act: str = "softmax", scale: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(d_in, hidden)
        self.ln = nn.LayerNorm(hidden)
        self.lin2 = nn.Linear(hidden, out)
        self.act, self.scale = act, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(self.lin(x))
        if self.scale != 1.0:
            h = h * self.scale
        if self.act == "softmax":
            h = torch.softmax(h, dim=-1)
        elif self.act == "relu":
            h = torch.relu(h)
        else:
            h = nn.functional.gelu(h)
        return self.lin2(h)

    @classmethod
    def example_inputs(cls) -> tuple[torch.Tensor]:
        return (torch.randn(4, 8, generator=torch.Generator().manual_seed(1)),)


def block() -> tuple[nn.Module, tuple[Any, ...]]:
    return Block().eval(), Block.example_inputs()


def set_layernorm_epsilon(proto: Any, eps: float) -> str:
    """Set every LayerNormalization's epsilon in ``proto`` (in place); returns the last one's name."""
    name = ""
    for node in proto.graph.node:
        if node.op_type == "LayerNormalization":
            for attr in node.attribute:
                if attr.name == "epsilon":
                    attr.f = eps
                    name = node.name
    return name


class TinyCNN(nn.Module):
    """Conv + BatchNorm + ReLU, twice, then a pool and a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = nn.functional.max_pool2d(x, 2)
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _randomize_batchnorm(module: nn.Module) -> None:
    # Fresh BatchNorm stats are mean 0 / var 1: an identity that would hide faults.
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)


def cnn() -> tuple[nn.Module, tuple[Any, ...]]:
    torch.manual_seed(0)
    model = TinyCNN()
    _randomize_batchnorm(model)
    model.eval()
    return model, (torch.randn(1, 3, 16, 16),)


class LastHidden(nn.Module):
    """Return one plain tensor from a transformers model instead of a ModelOutput."""

    def __init__(self, inner: nn.Module, field: str = "last_hidden_state") -> None:
        super().__init__()
        self.inner = inner
        self.field = field

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return getattr(self.inner(*args), self.field)


def _token_ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(1))


def bert_raw(attn: str = "sdpa") -> tuple[nn.Module, tuple[Any, ...]]:
    """``BertModel`` as users pass it: its forward returns a ModelOutput."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=32,
        initializer_range=INIT_RANGE,
        attn_implementation=attn,
    )
    model = BertModel(config, add_pooling_layer=False).eval()
    return model, (_token_ids(),)


def bert(attn: str = "sdpa") -> tuple[nn.Module, tuple[Any, ...]]:
    model, args = bert_raw(attn)
    return LastHidden(model).eval(), args


def gpt2(attn: str = "sdpa") -> tuple[nn.Module, tuple[Any, ...]]:
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=HIDDEN,
        n_layer=2,
        n_head=2,
        n_inner=64,
        vocab_size=VOCAB,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
        initializer_range=INIT_RANGE,
        attn_implementation=attn,
    )
    return LastHidden(GPT2Model(config).eval()).eval(), (_token_ids(),)


def vit(attn: str = "sdpa") -> tuple[nn.Module, tuple[Any, ...]]:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=16,
        patch_size=8,
        num_channels=3,
        initializer_range=INIT_RANGE,
        attn_implementation=attn,
    )
    model = ViTModel(config, add_pooling_layer=False).eval()
    pixels = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return LastHidden(model).eval(), (pixels,)


BUILDERS = {"block": block, "cnn": cnn, "bert": bert, "gpt2": gpt2, "vit": vit, "bert_raw": bert_raw}
