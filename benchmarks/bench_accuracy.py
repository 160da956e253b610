"""Localization accuracy on injected faults (issue #11, "Done when").

Six ``transformers`` architectures built here from configs with random weights (2
layers, hidden 64, vocabulary 1000; ViT / ConvNeXt / ResNet take pixel_values), each
wrapped to take positional tensors and return one tensor, exported ONCE with the
dynamo exporter. Each case edits ONE node of the clean export (tests/faults.py, plus
local faults: swapped operands of a Pow (these graphs have no Sub/Div with two distinct
inputs), a scaled Mul constant, an RMSNorm's eps Add turned into Sub, a residual Add
turned into Sub); the clean export is a case too (false alarms). Three locators run on
every case:

  nodebisect  nodebisect.locate(model, args, onnx_path=faulted.onnx, check_capture=False),
              once with the float64 oracle on its default ("auto") and once with oracle="off".
  naive       one onnxruntime session marking every node output named like an FX
              activation; np.allclose(rtol=1e-3, atol=1e-4); the first bad value (graph
              order) whose mapped inputs are all good.
  verify      torch.onnx.verification.verify_onnx_program(ONNXProgram(faulted, program),
              compare_intermediates=True). It builds one full-model session per value, so
              it is run as is on the clean export and the first fault of each
              architecture (--verify-real N: the first N live cases; 0: none); on the
              other cases its own interpreter (_VerificationInterpreter) is fed from
              one all-outputs run (same values, one session).

A case whose edit leaves the edited node's outputs bit-for-bit unchanged (on these inputs)
is dropped as silent. Scores, per architecture and in total:

  exact          the locator's named node is the edited node
  segment        the edited node lowers the same FX node as the named one (for nodebisect:
                 edited in first_divergent.segment)
  first-suspect  nodebisect: segment[0] or suspects[0] is the edited node; the others name
                 one node, so it equals exact
  false alarms   clean exports where the locator reports a divergence

    .venv/bin/python benchmarks/bench_accuracy.py                    # everything (~15-20 min, 2 cores)
    .venv/bin/python benchmarks/bench_accuracy.py --archs bert --json out.json
    .venv/bin/python benchmarks/bench_accuracy.py --archs llama-init0.02   # Llama with transformers' init (std 0.02)
    .venv/bin/python benchmarks/bench_accuracy.py --heldout --oracles auto --verify-real 0 --keep /tmp/heldout

Held-out architectures (--heldout; never used while developing nodebisect): Qwen2 (GQA, RMSNorm,
rotary, q/k/v biases), DistilBERT, Swin (eager window attention, shifted windows, patch
merging), MobileNetV2 (depthwise convs, ReLU6 as Clip), the Whisper encoder (Conv1d front end,
one float tensor of mel features) and the T5 encoder (eager attention with a relative position
bias, T5's RMS LayerNorm). They all get one generic fault list (HELDOUT_FAULTS, every kind the
issue names), not one picked per architecture: a kind with no matching node is skipped.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("faults", ROOT / "tests" / "faults.py")
faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(faults)  # type: ignore[union-attr]

ARCHS = ("bert", "gpt2", "vit", "llama", "convnext", "resnet")
HELDOUT = ("qwen2", "distilbert", "swin", "mobilenet_v2", "whisper", "t5")
RTOL, ATOL = 1e-3, 1e-4
HIDDEN, VOCAB, SEQ = 64, 1000, 16
# transformers initialises with std 0.02: every layer then adds almost nothing to the
# residual stream and attention is near uniform, hiding most faults at the output.
INIT_RANGE = 0.2


# ---------------------------------------------------------------------------- models
def build(arch: str):
    import torch
    import transformers as T
    from torch import nn

    class Wrap(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x, return_dict=False)[0]

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (1, SEQ), generator=gen)
    common = dict(initializer_range=INIT_RANGE)
    if arch in HELDOUT:
        return build_heldout(arch, Wrap, ids, gen)
    if arch == "bert":
        cfg = T.BertConfig(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                           vocab_size=VOCAB, max_position_embeddings=64, **common)
        return Wrap(T.BertModel(cfg, add_pooling_layer=False).eval()).eval(), (ids,)
    if arch == "gpt2":
        cfg = T.GPT2Config(n_embd=HIDDEN, n_layer=2, n_head=4, n_inner=128, vocab_size=VOCAB, n_positions=64,
                           bos_token_id=0, eos_token_id=0, use_cache=False, **common)
        return Wrap(T.GPT2Model(cfg).eval()).eval(), (ids,)
    if arch in ("llama", "llama-init0.02"):  # the second: transformers' own init (std 0.02), as in issue #11
        if arch != "llama":
            common = {}
        cfg = T.LlamaConfig(hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=4, vocab_size=VOCAB, max_position_embeddings=64, use_cache=False, **common)
        return Wrap(T.LlamaModel(cfg).eval()).eval(), (ids,)
    pixels = torch.randn(1, 3, 32, 32, generator=gen)
    if arch == "vit":
        cfg = T.ViTConfig(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                          image_size=32, patch_size=8, num_channels=3, **common)
        return Wrap(T.ViTModel(cfg, add_pooling_layer=False).eval()).eval(), (pixels,)
    if arch == "convnext":
        cfg = T.ConvNextConfig(num_channels=3, hidden_sizes=[32, HIDDEN], depths=[1, 1], num_stages=2, patch_size=4,
                               layer_scale_init_value=1.0, **common)
        return Wrap(T.ConvNextModel(cfg).eval()).eval(), (pixels,)
    if arch == "resnet":
        cfg = T.ResNetConfig(num_channels=3, embedding_size=32, hidden_sizes=[32, HIDDEN], depths=[1, 1],
                             layer_type="basic", downsample_in_first_stage=False)
        return Wrap(random_batchnorm(T.ResNetModel(cfg).eval())).eval(), (pixels,)
    raise SystemExit(f"unknown architecture {arch!r}")


def random_batchnorm(model):
    """Fresh BatchNorm stats are an identity that hides faults: give them random ones."""
    import torch
    from torch import nn

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model


def build_heldout(arch: str, Wrap, ids, gen):
    """The held-out architectures, built the same way (small configs, random weights, no download).

    Swin and T5 use eager attention: with sdpa their export fails in decomposition
    ("Cannot view a tensor ...", see ../shared/ZOO-NOTES.md). Whisper's encoder is built on
    its own (no decoder, so no vocabulary) and takes one float tensor of mel features.
    """
    import torch
    import transformers as T

    pixels = torch.randn(1, 3, 32, 32, generator=gen)
    common = dict(initializer_range=INIT_RANGE)
    if arch == "qwen2":
        cfg = T.Qwen2Config(hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64, use_cache=False, **common)
        return Wrap(T.Qwen2Model(cfg).eval()).eval(), (ids,)
    if arch == "distilbert":
        cfg = T.DistilBertConfig(dim=HIDDEN, n_layers=2, n_heads=4, hidden_dim=128, vocab_size=VOCAB,
                                 max_position_embeddings=64, **common)
        return Wrap(T.DistilBertModel(cfg).eval()).eval(), (ids,)
    if arch == "swin":  # 8x8 patches, 4x4 windows; the second block of stage 1 shifts them
        cfg = T.SwinConfig(image_size=32, patch_size=4, num_channels=3, embed_dim=32, depths=[2, 1], num_heads=[2, 4],
                           window_size=4, mlp_ratio=2.0, attn_implementation="eager", **common)
        return Wrap(T.SwinModel(cfg, add_pooling_layer=False).eval()).eval(), (pixels,)
    if arch == "mobilenet_v2":
        cfg = T.MobileNetV2Config(num_channels=3, image_size=32, depth_multiplier=0.35, **common)
        return Wrap(random_batchnorm(T.MobileNetV2Model(cfg, add_pooling_layer=False).eval())).eval(), (pixels,)
    if arch == "whisper":  # input_features (1, mel bins, 2 * max_source_positions)
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        cfg = T.WhisperConfig(d_model=HIDDEN, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                              decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=128, num_mel_bins=16,
                              max_source_positions=16, vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                              decoder_start_token_id=1, init_std=INIT_RANGE, use_cache=False)
        return Wrap(WhisperEncoder(cfg).eval()).eval(), (torch.randn(1, 16, 32, generator=gen),)
    if arch == "t5":  # T5's own init (initializer_factor 1.0 scales by d_model ** -0.5)
        cfg = T.T5Config(d_model=HIDDEN, d_kv=16, d_ff=128, num_layers=2, num_heads=4, vocab_size=VOCAB,
                         relative_attention_num_buckets=8, relative_attention_max_distance=16, use_cache=False,
                         attn_implementation="eager")
        return Wrap(T.T5EncoderModel(cfg).eval()).eval(), (ids,)
    raise SystemExit(f"unknown architecture {arch!r}")


# ---------------------------------------------------------------------------- faults
def swap_operands(op_type: str):
    """Swap the two inputs of the middle-most ``op_type`` node (x - y -> y - x)."""

    def fault(m: onnx.ModelProto):
        nodes = list(m.graph.node)
        picks = [(abs(i - len(nodes) / 2), i, n.name) for i, n in enumerate(nodes[1:-1], start=1)
                 if n.op_type == op_type and len(n.input) == 2 and n.input[0] != n.input[1]]
        if not picks:
            raise LookupError(f"no {op_type} with two distinct inputs")
        out = copy.deepcopy(m)
        node = next(n for n in out.graph.node if n.name == min(picks)[2])
        node.input[0], node.input[1] = node.input[1], node.input[0]
        return out, node.name

    return fault


def scaled_mul_constant(scale: float = 1.5):
    """Scale the constant (initializer) operand of the middle-most Mul reading one."""

    def fault(m: onnx.ModelProto):
        inits = {t.name for t in m.graph.initializer}
        nodes = list(m.graph.node)
        picks = [(abs(i - len(nodes) / 2), i, n.name, k) for i, n in enumerate(nodes[1:-1], start=1)
                 if n.op_type == "Mul" for k, x in enumerate(n.input) if x in inits]
        if not picks:
            raise LookupError("no Mul reading an initializer")
        _d, _i, name, k = min(picks)
        return faults.corrupt_initializer(m, name, scale=scale, input_index=k)

    return fault


def op_swap_plain(op_type: str, new_op: str, drop: tuple[str, ...] | None = None):
    """Swap the middle-most ``op_type`` node for ``new_op``, dropping attributes the new op lacks
    (all of them by default: Gelu's approximate; MaxPool's storage_order and dilations)."""

    def fault(m: onnx.ModelProto):
        out, name = faults.op_swap(op_type, new_op)(m)
        node = next(n for n in out.graph.node if n.name == name)
        kept = [a for a in node.attribute if drop is not None and a.name not in drop]
        del node.attribute[:]
        node.attribute.extend(kept)
        return out, name

    return fault


def op_swap_unary(op_type: str, new_op: str):
    """Swap the middle-most ``op_type`` node for the one-input ``new_op`` (Clip -> Sigmoid: ReLU6
    becomes a sigmoid), dropping the extra inputs and the attributes."""

    def fault(m: onnx.ModelProto):
        out, name = faults.op_swap(op_type, new_op)(m)
        node = next(n for n in out.graph.node if n.name == name)
        del node.input[1:]
        del node.attribute[:]
        return out, name

    return fault


def softmax_axis(axis: int = 2):
    """Normalise over the wrong axis in the middle-most Softmax, its own lowering or inside one."""
    return lambda m: faults.set_attribute(m, faults.middle("Softmax")(m), "axis", axis)


def residual_add_to_sub():
    """The middle-most Add of two activations lowering its own FX node becomes Sub."""

    def fault(m: onnx.ModelProto):
        consts = {t.name for t in m.graph.initializer} | {o for n in m.graph.node if n.op_type == "Constant" for o in n.output}
        nodes = list(m.graph.node)
        picks = [(abs(i - len(nodes) / 2), i, n.name) for i, n in enumerate(nodes[1:-1], start=1)
                 if n.op_type == "Add" and not set(n.input) & consts and faults.placement(m, n.name) == faults.ALONE]
        if not picks:
            raise LookupError("no residual Add")
        return faults.swap_op(m, min(picks)[2], "Sub")

    return fault


def eps_add_to_sub():
    """The middle-most Add feeding a Sqrt (an RMSNorm's ``variance + eps``) becomes Sub."""

    def fault(m: onnx.ModelProto):
        sqrt_inputs = {n.input[0] for n in m.graph.node if n.op_type == "Sqrt"}
        nodes = list(m.graph.node)
        picks = [(abs(i - len(nodes) / 2), i, n.name) for i, n in enumerate(nodes[1:-1], start=1)
                 if n.op_type == "Add" and n.output[0] in sqrt_inputs]
        if not picks:
            raise LookupError("no Add feeding a Sqrt")
        return faults.swap_op(m, min(picks)[2], "Sub")

    return fault


F = faults
FAULTS: dict[str, list[tuple[str, Callable]]] = {
    "bert": [
        ("layernorm_epsilon", F.layernorm_epsilon(1.0)),
        ("add_to_sub", F.add_to_sub()),
        ("matmul_weight_scale", F.weight(("MatMul",), scale=1.5)),
        ("sdpa_softmax_axis", F.softmax_axis_in_attention(2)),
        ("sdpa_scale_mul_to_div", F.mul_in_attention_to("Div")),
        ("gelu_to_relu", op_swap_plain("Gelu", "Relu")),
        ("layernorm_scale_x1.5", F.weight(("LayerNormalization",), scale=1.5)),
    ],
    "gpt2": [
        ("layernorm_epsilon", F.layernorm_epsilon(1.0)),
        ("add_to_sub", F.add_to_sub()),
        ("gemm_weight_noise", F.weight(("Gemm",), noise=0.5)),
        ("sdpa_softmax_axis", F.softmax_axis_in_attention(2)),
        ("sdpa_scale_mul_to_pow", F.mul_in_attention_to("Pow")),
        ("tanh_to_sigmoid", F.op_swap("Tanh", "Sigmoid")),
        ("mul_constant_x1.5", scaled_mul_constant(1.5)),
        ("layernorm_scale_x1.5", F.weight(("LayerNormalization",), scale=1.5)),
        ("pow_operands_swapped", swap_operands("Pow")),
    ],
    "vit": [
        ("layernorm_epsilon", F.layernorm_epsilon(1.0)),
        ("add_to_sub", F.add_to_sub()),
        ("matmul_weight_noise", F.weight(("MatMul",), noise=0.5)),
        ("sdpa_softmax_axis", F.softmax_axis_in_attention(2)),
        ("gelu_to_relu", op_swap_plain("Gelu", "Relu")),
        ("mul_constant_x1.5", scaled_mul_constant(1.5)),
        ("layernorm_scale_x1.5", F.weight(("LayerNormalization",), scale=1.5)),
    ],
    "llama": [
        ("residual_add_to_sub", residual_add_to_sub()),
        ("matmul_weight_noise", F.weight(("MatMul",), noise=0.5)),
        ("sdpa_softmax_axis", F.softmax_axis_in_attention(2)),
        ("sigmoid_to_tanh", F.op_swap("Sigmoid", "Tanh")),
        ("mul_constant_x1.5", scaled_mul_constant(1.5)),
        ("rmsnorm_eps_add_to_sub", eps_add_to_sub()),
        ("rsqrt_reciprocal_to_sqrt", F.op_swap("Reciprocal", "Sqrt")),
        ("rotary_neg_to_identity", F.op_swap("Neg", "Identity")),
        ("pow_operands_swapped", swap_operands("Pow")),
    ],
    "llama-init0.02": [],  # filled below: the same faults as "llama"
    "convnext": [
        ("conv_weight_noise", F.weight(("Conv",), noise=0.5)),
        ("layernorm_epsilon", F.layernorm_epsilon(1.0)),
        ("add_to_sub", F.add_to_sub()),
        ("gelu_to_relu", op_swap_plain("Gelu", "Relu")),
        ("matmul_weight_scale", F.weight(("MatMul", "Gemm"), scale=1.5)),
        ("mul_constant_x1.5", scaled_mul_constant(1.5)),
        ("layernorm_scale_x1.5", F.weight(("LayerNormalization",), scale=1.5)),
    ],
    "resnet": [
        ("conv_weight_noise", F.weight(("Conv",), noise=0.5)),
        ("conv_weight_scale", F.weight(("Conv",), scale=1.5)),
        ("relu_to_sigmoid", F.op_swap("Relu", "Sigmoid")),
        ("add_to_sub", F.add_to_sub()),
        ("maxpool_to_averagepool", op_swap_plain("MaxPool", "AveragePool", drop=("storage_order", "dilations"))),
    ],
}


FAULTS["llama-init0.02"] = FAULTS["llama"]

# One list for every held-out architecture: each kind the issue names, tried everywhere; a kind
# with no matching node (or one onnxruntime rejects) is skipped for that architecture.
HELDOUT_FAULTS: list[tuple[str, Callable]] = [
    ("layernorm_epsilon", F.layernorm_epsilon(1.0)),
    ("layernorm_scale_x1.5", F.weight(("LayerNormalization",), scale=1.5)),
    ("residual_add_to_sub", residual_add_to_sub()),  # not F.add_to_sub: on RMSNorm models it picks the eps Add
    ("rmsnorm_eps_add_to_sub", eps_add_to_sub()),
    ("matmul_weight_noise", F.weight(("MatMul",), noise=0.5)),
    ("gemm_weight_noise", F.weight(("Gemm",), noise=0.5)),
    ("conv_weight_noise", F.weight(("Conv",), noise=0.5)),
    ("conv_weight_scale", F.weight(("Conv",), scale=1.5)),
    ("softmax_axis", softmax_axis(2)),
    ("sdpa_scale_mul_to_div", F.mul_in_attention_to("Div")),
    ("mul_constant_x1.5", scaled_mul_constant(1.5)),
    ("gelu_to_relu", op_swap_plain("Gelu", "Relu")),
    ("sigmoid_to_tanh", F.op_swap("Sigmoid", "Tanh")),
    ("relu_to_sigmoid", F.op_swap("Relu", "Sigmoid")),
    ("tanh_to_sigmoid", F.op_swap("Tanh", "Sigmoid")),
    ("clip_to_sigmoid", op_swap_unary("Clip", "Sigmoid")),  # ReLU6 -> sigmoid (-> ReLU is silent: no value above 6)
    ("pow_operands_swapped", swap_operands("Pow")),
    ("sub_operands_swapped", swap_operands("Sub")),
    ("div_operands_swapped", swap_operands("Div")),
    ("rsqrt_reciprocal_to_sqrt", F.op_swap("Reciprocal", "Sqrt")),
    ("rotary_neg_to_identity", F.op_swap("Neg", "Identity")),
    ("maxpool_to_averagepool", op_swap_plain("MaxPool", "AveragePool", drop=("storage_order", "dilations"))),
]
for _arch in HELDOUT:
    FAULTS[_arch] = HELDOUT_FAULTS


# ---------------------------------------------------------------------------- helpers
def run_all(model: onnx.ModelProto, feeds: dict, names: list[str]) -> dict[str, np.ndarray]:
    """One onnxruntime session with ``names`` as the outputs."""
    import onnxruntime as ort

    m = copy.deepcopy(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(names, feeds)))


def feeds_of(model: onnx.ModelProto, args) -> dict:
    inits = {t.name for t in model.graph.initializer}
    ins = [i.name for i in model.graph.input if i.name not in inits]
    return {n: a.numpy() for n, a in zip(ins, args)}


def close(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype == bool or b.dtype == bool:
        return bool(np.array_equal(a, b))
    return bool(np.allclose(a.astype(np.float64), b.astype(np.float64), rtol=RTOL, atol=ATOL, equal_nan=True))


def naive_locate(model: onnx.ModelProto, feeds: dict, acts: dict[str, np.ndarray]) -> str | None:
    """The first bad FX-named value (graph order) whose mapped inputs are all good; its producer."""
    mapped = [o for n in model.graph.node for o in n.output if o in acts]
    got = run_all(model, feeds, mapped)
    good = {n: close(acts[n], got[n]) for n in mapped}
    producer = {o: n for n in model.graph.node for o in n.output}
    # the inputs of a value: the mapped values its producer's cone reads, stopping at mapped ones
    for n in model.graph.node:
        for o in n.output:
            if o not in good or good[o]:
                continue
            stack, seen, ok = list(n.input), set(), True
            while stack:
                v = stack.pop()
                if v in seen or not v:
                    continue
                seen.add(v)
                if v in good:
                    ok &= good[v]
                elif v in producer:
                    stack.extend(producer[v].input)
            if ok:
                return n.name
    return None


def outputs_changed(clean: onnx.ModelProto, faulted: onnx.ModelProto, edited: str, feeds: dict) -> bool:
    node = next(n for n in faulted.graph.node if n.name == edited)
    names = [o for o in node.output if o]
    a, b = run_all(clean, feeds, names), run_all(faulted, feeds, names)
    return any(a[n].shape != b[n].shape or not np.array_equal(a[n], b[n], equal_nan=True) for n in names)


def verify_flags(faulted: onnx.ModelProto, program, args, *, real: bool) -> tuple[list[str], float]:
    """verify_onnx_program's values over its own threshold and over allclose, in program order."""
    import onnx_ir
    import torch
    import torch.onnx.verification
    from torch.onnx._internal.exporter import _onnx_program as P
    from torch.onnx._internal.exporter import _verification as V

    onnx_program = torch.onnx.ONNXProgram(onnx_ir.from_proto(faulted), program)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if real:
            infos = torch.onnx.verification.verify_onnx_program(onnx_program, args, compare_intermediates=True)
        else:
            ep = onnx_program.exported_program
            flat, _ = ep._get_flat_args_with_check(args, {})
            values = V._create_value_mapping(onnx_program.model.graph)
            names = [nd.name for nd in ep.graph.nodes if nd.op == "call_function" and nd.name in values
                     and values[nd.name].producer() is not None]
            with P._set_graph_outputs(onnx_program.model.graph, [values[n] for n in names]):
                outs = onnx_program(*flat)
            onnx_program.release()
            cache = dict(zip(names, outs))
            for n, v in values.items():  # folded constants: the value the session would return
                if n not in cache and v.const_value is not None:
                    cache[n] = torch.from_numpy(np.array(v.const_value.numpy()))
            onnx_program.compute_values = lambda vals, a=(), k=None: [cache[v] for v in vals]
            interp = V._VerificationInterpreter(onnx_program)
            interp.run(*flat)
            infos = interp.verification_infos
    seconds = time.perf_counter() - t
    return [i.name for i in infos if i.max_abs_diff > 0.01 or i.max_rel_diff > 0.1], seconds


# ---------------------------------------------------------------------------- one case
@dataclass
class Case:
    arch: str
    fault: str
    edited: str = ""
    op_type: str = ""
    placement: str = ""
    fx: str = ""
    silent: bool = False
    nb: dict = field(default_factory=dict)  # oracle mode -> outcome
    naive: str | None = None
    verify_flagged: list[str] = field(default_factory=list)
    verify_real: bool = False
    verify_s: float = 0.0
    verify_agrees: bool | None = None
    error: str = ""


def nb_run(model, args, path: str, oracle: str) -> dict:
    import nodebisect

    t = time.perf_counter()
    r = nodebisect.locate(model, args, onnx_path=path, check_capture=False, oracle=oracle)
    out = {"seconds": time.perf_counter() - t, "verdict": r.verdict, "oracle_notes": [n for n in r.notes if "oracle" in n],
           "oracle_s": (r.stats.get("timings") or {}).get("oracle", 0.0),
           "inexact_ops": [f["node"] for f in r.stats.get("inexact_ops") or []]}
    fd = r.first_divergent
    if fd is not None:
        out.update(node=fd.onnx_node, op=fd.op_type, cause=fd.cause, segment=list(fd.segment),
                   suspects=[s.onnx_node for s in fd.suspects][:3], explanation=(fd.explanation or "")[:300])
    return out


def run_arch(arch: str, work: Path, oracles: list[str], log: Callable[[str], None], verify_real: int = 2) -> list[Case]:
    """Every case of one architecture; verify_onnx_program runs as is on the first
    ``verify_real`` live cases (the clean export first), emulated from one session on the rest."""
    from nodebisect.frontends.capture import capture_fx
    from nodebisect.frontends.dynamo import export_onnx
    from nodebisect.frontends.loading.load import build_loaded_model

    model, args = build(arch)
    exp = export_onnx(build_loaded_model(model, args))
    clean, program = exp.model, exp.program
    acts = capture_fx(program, args, {}).values
    feeds = feeds_of(clean, args)
    log(f"{arch}: {len(clean.graph.node)} ONNX nodes, {len(acts)} FX activations")
    cases = []
    real_left = verify_real
    seen: dict[bytes, str] = {}  # a faulted model -> the first fault that made it
    skipped: list[str] = []
    for name, fault in [("clean", None)] + FAULTS[arch]:
        c = Case(arch, name)
        try:
            if fault is None:
                faulted = clean
            else:
                faulted, c.edited = fault(clean)
                key = faulted.SerializeToString(deterministic=True)
                if key in seen:
                    raise LookupError(f"the same edit as {seen[key]} ({c.edited})")
                seen[key] = name
                node = next(n for n in clean.graph.node if n.name == c.edited)
                c.op_type, c.fx = node.op_type, faults.fx_node_of(node)
                c.placement = faults.placement(clean, c.edited)
                c.silent = not outputs_changed(clean, faulted, c.edited, feeds)
        except LookupError as exc:  # no such node here (or the same edit as an earlier fault)
            skipped.append(f"{name} ({str(exc)[:80]})" if "same edit" in str(exc) else name)
            continue
        except Exception as exc:  # noqa: BLE001 - onnxruntime rejects the edit
            log(f"  {arch}/{name}: not applicable ({type(exc).__name__}: {str(exc)[:160]})")
            continue
        if c.silent:
            log(f"  {arch}/{name}: {c.edited} edited but its outputs do not change: dropped")
            cases.append(c)
            continue
        path = str(work / f"{arch}-{name}.onnx")
        onnx.save(faulted, path)
        for mode in oracles:
            try:
                c.nb[mode] = nb_run(model, args, path, mode)
            except Exception as exc:  # noqa: BLE001 - a crash is a result too
                c.nb[mode] = {"verdict": "error", "error": f"{type(exc).__name__}: {exc}"[:300], "seconds": 0.0}
        try:
            c.naive = naive_locate(faulted, feeds, acts)
        except Exception as exc:  # noqa: BLE001
            c.error = f"naive: {type(exc).__name__}: {exc}"[:300]
        real, real_left = real_left > 0, real_left - 1
        try:
            c.verify_flagged, c.verify_s = verify_flags(faulted, program, args, real=real)
            c.verify_real = real
            if real:  # the one-session emulation must flag the same values as the real thing
                c.verify_agrees = verify_flags(faulted, program, args, real=False)[0] == c.verify_flagged
        except Exception as exc:  # noqa: BLE001
            c.error = f"verify: {type(exc).__name__}: {exc}"[:300]
            log(f"  {arch}/{name}: {c.error}")
        nb = c.nb.get(oracles[0], {})
        log(f"  {arch}/{name}: edited {c.edited or '-'} ({c.op_type}, {c.placement}) | nb {nb.get('verdict')} "
            f"{nb.get('node')} seg={nb.get('segment')} sus={nb.get('suspects')} ({nb.get('seconds', 0):.1f}s) | "
            f"naive {c.naive} | verify {len(c.verify_flagged)} flagged, first {c.verify_flagged[:1]}")
        cases.append(c)
    if skipped:
        log(f"  {arch}: not applicable (no matching node): {', '.join(skipped)}")
    return cases


# ---------------------------------------------------------------------------- scoring
def fx_of(onnx_model: onnx.ModelProto, node_name: str | None) -> str:
    node = next((n for n in onnx_model.graph.node if n.name == node_name), None)
    return faults.fx_node_of(node) if node is not None else ""


def score(cases: list[Case], locator: str, clean_models: dict[str, onnx.ModelProto]) -> dict[str, list[int]]:
    """arch -> [faults, exact, segment, first-suspect, cleans, false alarms, single-node faults, exact on them]."""
    rows: dict[str, list[int]] = {}
    for c in cases:
        if c.silent or (locator == "verify" and c.error.startswith("verify")):
            continue
        row = rows.setdefault(c.arch, [0] * 8)
        model = clean_models[c.arch]
        if locator.startswith("nodebisect"):
            r = c.nb.get(locator.split(":")[1], {})
            alarm = r.get("verdict") != "match"
            named, seg, first = r.get("node"), r.get("segment", []), (r.get("segment") or [None])[:1] + r.get("suspects", [])[:1]
            in_seg = c.edited in seg
        elif locator == "naive":
            alarm, named = c.naive is not None, c.naive
            in_seg = named == c.edited or (bool(named) and bool(c.fx) and fx_of(model, named) == c.fx)
            first = [named]
        else:  # verify: its first flagged value, named by its producer
            alarm = bool(c.verify_flagged)
            first_val = c.verify_flagged[0] if c.verify_flagged else None
            named = next((n.name for n in model.graph.node if first_val in n.output), None) if first_val else None
            in_seg = named == c.edited or (bool(named) and bool(c.fx) and fx_of(model, named) == c.fx)
            first = [named]
        if c.fault == "clean":
            row[4] += 1
            row[5] += int(alarm)
            continue
        row[0] += 1
        row[1] += int(named == c.edited)
        row[2] += int(in_seg)
        row[3] += int(c.edited in first)
        if c.placement == faults.ALONE:
            row[6] += 1
            row[7] += int(named == c.edited)
    return rows


def table(title: str, rows: dict[str, list[int]]) -> list[str]:
    out = [f"**{title}**", "", "| architecture | faults | exact | exact, single-node faults | segment | first-suspect | false alarms (clean) |",
           "|---|---|---|---|---|---|---|"]
    total = [0] * 8
    for arch, r in rows.items():
        total = [a + b for a, b in zip(total, r)]
        out.append(f"| {arch} | {r[0]} | {r[1]} | {r[7]} / {r[6]} | {r[2]} | {r[3]} | {r[5]} / {r[4]} |")
    t = total
    out.append(f"| **total** | **{t[0]}** | **{t[1]}** | **{t[7]} / {t[6]}** | **{t[2]}** | **{t[3]}** | **{t[5]} / {t[4]}** |")
    return out + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--oracles", default="auto,off", help="nodebisect oracle modes to run (the first is scored as 'nodebisect')")
    ap.add_argument("--heldout", action="store_true", help=f"the held-out architectures only: {','.join(HELDOUT)}")
    ap.add_argument("--verify-real", type=int, default=2, metavar="N",
                    help="per architecture, run verify_onnx_program as is on the first N live cases (clean first; "
                         "it builds one session per value) and emulate it from one session on the rest")
    ap.add_argument("--keep", metavar="DIR", help="save the clean and faulted ONNX models here (default: a temporary folder)")
    ap.add_argument("--json", help="write every case's outcome here")
    ns = ap.parse_args(argv)
    for name in ("torch.onnx", "torch.onnx._internal.exporter._verification", "torch.export", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    oracles = ns.oracles.split(",")
    archs = list(HELDOUT) if ns.heldout else ns.archs.split(",")

    def log(msg: str) -> None:
        print(msg, flush=True)

    cases: list[Case] = []
    clean_models: dict[str, onnx.ModelProto] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(ns.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for arch in archs:
            arch_cases = run_arch(arch, work, oracles, log, ns.verify_real)
            clean_models[arch] = onnx.load(str(work / f"{arch}-clean.onnx"))
            cases += arch_cases
    lines = [f"{len(cases)} cases in {time.perf_counter() - t0:.0f}s", ""]
    for mode in oracles:
        lines += table(f"nodebisect (oracle={mode})", score(cases, f"nodebisect:{mode}", clean_models))
    lines += table("naive one-session locator (allclose rtol=1e-3, atol=1e-4)", score(cases, "naive", clean_models))
    lines += table("verify_onnx_program (first flagged value: max_abs>0.01 or max_rel>0.1)", score(cases, "verify", clean_models))
    live = [c for c in cases if not c.silent and c.fault != "clean"]
    pl = [c.placement for c in live]
    lines.append(f"placement of the edited nodes: {pl.count('alone')} alone, {pl.count('carrier')} carrier, {pl.count('inside')} inside a lowering")
    flagged = [len(c.verify_flagged) for c in live]
    if flagged:
        lines.append(f"verify_onnx_program flagged values per fault case: median {statistics.median(flagged):.0f}, max {max(flagged)}")
    real = [c for c in cases if c.verify_real]
    if real:
        agree = sum(bool(c.verify_agrees) for c in real)
        lines.append(f"verify_onnx_program run as is on {len(real)} cases: median {statistics.median(c.verify_s for c in real):.1f}s each; "
                     f"the one-session emulation flagged the same values on {agree} of them")
    errors = [f"{c.arch}/{c.fault}: {c.error}" for c in cases if c.error]
    lines += [f"error: {e}" for e in errors]
    if len(oracles) >= 2:
        pairs = [(c.nb[oracles[0]]["seconds"], c.nb[oracles[1]]["seconds"]) for c in cases
                 if c.nb.get(oracles[0], {}).get("seconds") and c.nb.get(oracles[1], {}).get("seconds")]
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        if pairs:
            ratios = [x / y for x, y in zip(a, b)]
            lines.append(f"wall time per locate: oracle={oracles[0]} median {statistics.median(a):.2f}s, oracle={oracles[1]} "
                         f"median {statistics.median(b):.2f}s; ratio of medians {statistics.median(a) / statistics.median(b):.2f}, "
                         f"median of per-case ratios {statistics.median(ratios):.2f}")
        share = [r["oracle_s"] / r["seconds"] for c in cases for m, r in c.nb.items() if m == oracles[0] and r.get("seconds")]
        spent = [r["oracle_s"] for c in cases for m, r in c.nb.items() if m == oracles[0] and r.get("seconds")]
        if share:
            lines.append(f"the oracle's own step (stats timings 'oracle', oracle={oracles[0]}): median {statistics.median(spent):.3f}s, "
                         f"median {100 * statistics.median(share):.1f}% of the locate wall time, ran on {sum(x > 0 for x in spent)}/{len(spent)} cases")
    lines += ["", "misses (nodebisect, first oracle mode): edited node not in the segment, a single-node fault not named exactly, or a fault inside a lowering not first in the segment / suspects:"]
    for c in live:
        r = c.nb.get(oracles[0], {})
        seg = r.get("segment") or []
        lead = seg[:1] + r.get("suspects", [])[:1]
        missed = c.edited not in seg or (r.get("node") != c.edited if c.placement == faults.ALONE else c.edited not in lead)
        if missed:
            lines.append(f"- {c.arch} / {c.fault}: edited {c.edited} ({c.op_type}, {c.placement}); named {r.get('node')} "
                         f"({r.get('op')}, cause {r.get('cause')}, verdict {r.get('verdict')}), segment {r.get('segment')}, "
                         f"suspects {r.get('suspects')}; naive {c.naive}"
                         + (f"; exactness audit (a note on the match) names {r['inexact_ops']}" if r.get("inexact_ops") else ""))
    audited = [c for c in cases if c.nb.get(oracles[0], {}).get("inexact_ops")]
    named = sum(c.edited in c.nb[oracles[0]]["inexact_ops"] for c in audited if c.fault != "clean")
    lines.append(f"exactness audit (matches only, diagnose/exact_ops.py): names the edited node on {named} case(s); "
                 f"notes on clean exports: {sum(c.fault == 'clean' for c in audited)}")
    notes = sorted({n for c in cases for r in c.nb.values() for n in r.get("oracle_notes", [])})
    lines += [f"oracle note: {n}" for n in notes]
    for c in cases:
        if c.fault == "clean" and c.nb.get(oracles[0], {}).get("verdict") != "match":
            lines.append(f"- FALSE ALARM {c.arch}: {c.nb[oracles[0]]}")
    print("\n".join(lines))
    if ns.json:
        Path(ns.json).write_text(json.dumps([asdict(c) for c in cases], indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
