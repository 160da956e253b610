"""Which onnxruntime graph optimization breaks a subgraph: first a level, then a named optimizer.

Used once a culprit is known to be right with optimizations off and wrong with
them on (cause ``optimizer``). It re-runs the culprit's small window at each
level, then at the first bad level with sets of optimizers switched off
(``InferenceSession(disabled_optimizers=...)``), halving the set until one name
remains. The windows are tiny, so this costs a handful of fast sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx

LEVELS = ("basic", "extended", "all")

# Transformers and rewrite rules of onnxruntime's CPU optimizer, by the names
# `disabled_optimizers` accepts. Unknown names are ignored by onnxruntime, so a
# name missing from a given release only makes the search report the level.
KNOWN_OPTIMIZERS = (
    "ConvBNFusion", "ConvAddFusion", "ConvMulFusion", "ConvActivationFusion", "PadFusion",
    "MatMulAddFusion", "MatMulScaleFusion", "MatMulBNFusion", "MatmulTransposeFusion",
    "GemmActivationFusion", "GemmSumFusion", "GemmTransposeFusion",
    "LayerNormFusion", "SimplifiedLayerNormFusion", "SkipLayerNormFusion", "EmbedLayerNormFusion",
    "AttentionFusion", "GroupQueryAttentionFusion",
    "GeluFusion", "FastGeluFusion", "BiasGeluFusion", "QuickGeluFusion", "GeluApproximation",
    "BiasSoftmaxFusion", "BiasDropoutFusion", "DivMulFusion", "ReluClipFusion", "NotWhereFusion",
    "IsInfReduceSumFusion", "ReshapeFusion", "GatherToSliceFusion", "GatherToSplitFusion", "SplitFusion",
    "ConcatSliceElimination", "CastElimination", "EliminateIdentity", "EliminateSlice", "EliminateDropout",
    "NoopElimination", "UnsqueezeElimination", "ExpandElimination", "CommonSubexpressionElimination",
    "ConstantFolding", "ConstantSharing", "TransposeOptimizer", "NchwcTransformer", "NhwcTransformer",
    "MatMulIntegerToFloatFusion", "DynamicQuantizeMatMulFusion", "QDQSelectorActionTransformer",
    "DoubleQDQPairsRemover", "QDQS8ToU8Transformer", "FuseReluClip", "InsertCastTransformer",
)


@dataclass
class FusionBlame:
    """The first optimization level that breaks the window, and the optimizer if one was isolated."""

    level: str
    optimizer: str
    sessions: int


def blame_optimizer(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    value: str,
    is_right: Callable[[np.ndarray], bool],
    ort: Any,
) -> FusionBlame | None:
    """Find the level, then the named optimizer, that turns ``value`` wrong.

    ``ort``: the run's ``runtime.handle.Ort``; every session goes through it, so in
    the onnxruntime child when crashes are isolated (a fusion that crashes is a
    refinement that fails, not a dead nodebisect).
    """
    runners = {level: ort.runner(model, feeds, opt_level=level) for level in LEVELS}
    sessions = 0

    def right(level: str, disabled: tuple[str, ...] = ()) -> bool:
        nonlocal sessions
        sessions += 1
        return is_right(runners[level].run([value], disabled_optimizers=disabled)[value])

    bad_level = next((lvl for lvl in LEVELS if not right(lvl)), None)
    if bad_level is None:
        return None
    candidates = KNOWN_OPTIMIZERS
    if not right(bad_level, candidates):
        return FusionBlame(bad_level, "", sessions)
    while len(candidates) > 1:
        half = candidates[: len(candidates) // 2]
        candidates = half if right(bad_level, half) else candidates[len(candidates) // 2 :]
    return FusionBlame(bad_level, candidates[0], sessions)
