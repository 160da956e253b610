"""Evidence from the weights: an ONNX initializer that is not the PyTorch tensor it came from.

A ``linear`` lowered to MatMul + Add is measured only at the Add (it carries the
FX value), so a wrong weight in the MatMul is blamed on the Add. But the weight
itself can be checked without running anything: the decomposed program holds
every parameter, buffer and constant (``graph_signature`` + ``state_dict`` /
``constants``), and each ONNX node names the FX node it lowers, whose arguments
name the parameters it reads. The exporter rewrites weights on the way (a
transpose folded into a new ``val_N`` initializer, a cast, BatchNorm folded into
the Conv before it, identical constants shared under one name), so the check
replays those folds and compares up to a transpose and a dtype cast; a weight it
cannot match to any source is skipped, never blamed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch
import torch.fx
from onnx import numpy_helper

from nodebisect.frontends.pytorch_reference.decomposition import lifted_tensor
from nodebisect.values.graphmap import GraphMap

# Above the carrier's prior, the decomposition departure (0.88) and a NaN source (0.95):
# a weight that is not PyTorch's is a defect on its own, whatever the values show.
WEIGHT_SCORE = 0.97

# Relative tolerance (of the tensor's largest magnitude) per ONNX dtype: room for a
# fold recomputed in another precision, none for a changed weight.
_RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-4, np.dtype(np.float16): 2e-3}

# ONNX op -> the inputs that hold a layer's weights (None: any input). An initializer
# named after a parameter is checked wherever it is read; one with a generated name
# (``val_N``) elsewhere is taken for the lowering's own constant (a shape, a mask, the
# ones of InstanceNormalization inside group_norm), never for a weight.
_WEIGHT_INPUTS: dict[str, tuple[int, ...] | None] = {
    "MatMul": None,
    "Gemm": None,
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Gather": (0,),
    "LayerNormalization": (1, 2),
    "BatchNormalization": (1, 2, 3, 4),
    "GroupNormalization": (1, 2),
    "RMSNormalization": (1,),
    "PRelu": (1,),
    "Add": None,
    "Sub": None,
    "Mul": None,
    "Div": None,
}

_BATCH_NORM = {"_native_batch_norm_legit_no_training", "native_batch_norm", "batch_norm", "_native_batch_norm_legit"}
_CONV = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution"}


def weight_evidence(gm: GraphMap, onnx_model: onnx.ModelProto, program: Any, nodes: list[str]) -> list[tuple[str, float, str]]:
    """(node, score, reason) for each node among ``nodes`` that reads a weight differing from PyTorch's.

    Args:
        gm: the graph map (which FX node each ONNX node lowers).
        onnx_model: the model under test; its initializers are checked.
        program: the decomposed ExportedProgram the ONNX value names come from (None: no evidence).
        nodes: the ONNX nodes to check (the culprit's segment and local subgraph).
    """
    if program is None:
        return []
    inits = {t.name: t for t in onnx_model.graph.initializer}
    fx_nodes = {n.name: n for n in program.graph.nodes}
    lowered = set(gm.segments)
    out: list[tuple[str, float, str]] = []
    for name in nodes:
        node = gm.nodes.get(name)
        fx = fx_nodes.get(gm.refs[name].fx_node) if node is not None and name in gm.refs else None
        if fx is None or fx.op != "call_function":
            continue
        try:
            sources = _sources(program, fx, lowered)
        except Exception:  # noqa: BLE001 - evidence only: a source we cannot replay is no source
            sources = None
        if not sources:
            continue
        roles = _WEIGHT_INPUTS.get(node.op_type, ())
        for index, value in enumerate(node.input):
            if value not in inits:
                continue
            named = value in program.state_dict or value in program.constants
            if not named and roles is not None and index not in roles:
                continue  # a generated constant in no weight's place: the lowering's own
            reason = _mismatch(value, inits[value], _with_named(program, value, sources))
            if reason:
                out.append((name, WEIGHT_SCORE, f"{reason}; read by {name} ({node.op_type}), which lowers {gm.refs[name].target or fx.name}"))
                break
    return out


def _sources(program: Any, fx: torch.fx.Node, lowered: set[str]) -> dict[str, np.ndarray] | None:
    """The tensors ``fx``'s weights may legitimately hold, by the name to report; None: a fold we cannot replay."""
    sources: dict[str, np.ndarray] = {}
    for arg in fx.all_input_nodes:
        if arg.op == "placeholder":
            value = lifted_tensor(program, arg.name)
            if value is not None:
                sources[_fqn(program, arg.name)] = value
        elif arg.op == "call_function" and arg.name not in lowered:
            folded = _constant_value(program, arg, 0)
            if folded is not None:
                sources[f"{arg.name} (folded from {', '.join(_lifted_names(program, arg))})"] = folded
            elif _lifted_names(program, arg):
                fused = _batch_norm_fold(program, fx, arg)
                if fused is None:
                    return None  # an op with weights of its own was fused into this one
                sources.update(fused)
    for user in fx.users:
        if user.op == "call_function" and user.name not in lowered and _lifted_names(program, user):
            return None  # this op's weights may have absorbed the next op's (an unknown fold)
    return sources


def _fqn(program: Any, placeholder: str) -> str:
    sig = program.graph_signature
    return (
        sig.inputs_to_parameters.get(placeholder)
        or sig.inputs_to_buffers.get(placeholder)
        or sig.inputs_to_lifted_tensor_constants.get(placeholder)
        or placeholder
    )


def _lifted_names(program: Any, fx: torch.fx.Node) -> list[str]:
    return [_fqn(program, a.name) for a in fx.all_input_nodes if a.op == "placeholder" and lifted_tensor(program, a.name) is not None]


def _constant_value(program: Any, fx: torch.fx.Node, depth: int) -> np.ndarray | None:
    """Evaluate an FX node whose inputs are all weights or constants (a fold the exporter makes)."""
    if depth > 8:
        return None
    env: dict[str, torch.Tensor] = {}
    for arg in fx.all_input_nodes:
        if arg.op == "placeholder":
            value = lifted_tensor(program, arg.name)
        elif arg.op == "call_function":
            value = _constant_value(program, arg, depth + 1)
        else:
            value = None
        if value is None:
            return None
        env[arg.name] = torch.from_numpy(np.array(value))
    if not env:
        return None
    args = torch.fx.node.map_arg(fx.args, lambda n: env[n.name])
    kwargs = torch.fx.node.map_arg(fx.kwargs, lambda n: env[n.name])
    with torch.no_grad():
        result = fx.target(*args, **kwargs)
    if not isinstance(result, torch.Tensor) or result.dtype == torch.bfloat16:
        return None
    return result.detach().contiguous().numpy()


def _base(fx: torch.fx.Node) -> str:
    target = str(fx.target).replace("torch.ops.", "")
    return target.split(".")[1] if target.startswith("aten.") else target


def _batch_norm_fold(program: Any, bn: torch.fx.Node, conv: torch.fx.Node) -> dict[str, np.ndarray] | None:
    """The Conv weight and bias with an inference BatchNorm folded in (the exporter's FuseBatchNormIntoConv)."""
    if _base(bn) not in _BATCH_NORM or _base(conv) not in _CONV or bn.args[0] is not conv:
        return None

    def tensor(arg: Any) -> np.ndarray | None:
        return lifted_tensor(program, arg.name) if isinstance(arg, torch.fx.Node) and arg.op == "placeholder" else None

    weight, bias = tensor(conv.args[1]), tensor(conv.args[2]) if len(conv.args) > 2 else None
    gamma, beta, mean, var = (tensor(a) for a in bn.args[1:5])
    eps = bn.args[-1] if isinstance(bn.args[-1], float) else 1e-5
    if weight is None or mean is None or var is None:
        return None
    scale = (1.0 if gamma is None else gamma.astype(np.float64)) / np.sqrt(var.astype(np.float64) + eps)
    shift = (0.0 if bias is None else bias.astype(np.float64)) - mean.astype(np.float64)
    fused_w = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    fused_b = shift * scale + (0.0 if beta is None else beta.astype(np.float64))
    where = f"{_fqn(program, conv.args[1].name)} with {bn.name} folded in"
    return {where: fused_w.astype(weight.dtype), f"bias of {where}": fused_b.astype(weight.dtype)}


def _with_named(program: Any, value: str, sources: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add the tensor the initializer is named after: identical constants share one name."""
    if value in sources:
        return sources
    tensor = program.state_dict.get(value)
    if tensor is None:
        tensor = program.constants.get(value)
    if isinstance(tensor, torch.Tensor) and tensor.dtype != torch.bfloat16:
        return {**sources, value: tensor.detach().cpu().contiguous().numpy()}
    return sources


def _layouts(ref: np.ndarray, shape: tuple[int, ...]) -> list[tuple[str, np.ndarray]]:
    """``ref`` arranged as the ONNX tensor may hold it: as is, transposed, or reshaped."""
    found = []
    if ref.shape == shape:
        found.append(("", ref))
    if ref.ndim == 2 and ref.T.shape == shape:
        found.append(("transposed", ref.T))
    if not found and ref.size == int(np.prod(shape)) and tuple(d for d in ref.shape if d != 1) == tuple(d for d in shape if d != 1):
        found.append(("reshaped", ref.reshape(shape)))
    return found


def _mismatch(value: str, init: onnx.TensorProto, sources: dict[str, np.ndarray]) -> str:
    """Why ``init`` differs from every source it could be ("" when one matches or none is comparable)."""
    try:
        arr = numpy_helper.to_array(init)
    except Exception:  # noqa: BLE001 - an exotic dtype: nothing to say
        return ""
    if arr.dtype.kind not in "fiub" or arr.size == 0:
        return ""
    closest: tuple[float, str, float] | None = None
    for fqn, ref in sources.items():
        for how, laid in _layouts(ref, arr.shape):
            if laid.dtype.kind not in "fiub" or (laid.dtype.kind == "f") != (arr.dtype.kind == "f"):
                continue  # a float weight is never an integer constant
            expected = laid.astype(arr.dtype)  # the exporter may cast: compare in the ONNX dtype
            diff, scale = _distance(arr, expected)
            rtol = _RTOL.get(arr.dtype, 0.0)
            if diff <= rtol * scale or (diff == 0.0):
                return ""
            label = f"PyTorch's {fqn}" + (f" ({how})" if how else "")
            if closest is None or diff / max(scale, 1e-30) < closest[0] / max(closest[2], 1e-30):
                closest = (diff, label, scale)
    if closest is None:
        return ""
    diff, label, scale = closest
    return (
        f"weight {value} {list(arr.shape)} is not {label}: max |diff| {diff:.3g} on values up to {scale:.3g} "
        "(a weight that differs is a conversion defect on its own)"
    )


def _distance(arr: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """Largest absolute difference and largest magnitude; NaN placement counts as infinite."""
    a, e = arr.astype(np.float64), expected.astype(np.float64)
    if arr.dtype.kind in "iub":
        return float(np.max(np.abs(a - e))), float(np.max(np.abs(e)))
    same_special = (np.isnan(a) & np.isnan(e)) | (np.isinf(a) & (a == e))
    finite = np.isfinite(a) & np.isfinite(e)
    if not np.all(same_special | finite):
        return float("inf"), 1.0
    d = np.abs(np.where(finite, a - e, 0.0))
    m = np.abs(np.where(finite, e, 0.0))
    return float(d.max()), float(m.max())
