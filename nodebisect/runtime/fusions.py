"""Which onnxruntime graph optimization breaks a subgraph: first a level, then a named optimizer.

Used once a culprit is known to be right with optimizations off and wrong with
them on (cause ``optimizer``). It re-runs the culprit's small window at each
level, then at the first bad level with sets of optimizers switched off
(``InferenceSession(disabled_optimizers=...)``), halving the set until one name
remains. The windows are tiny, so this costs a handful of fast sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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
    providers: list[str],
) -> FusionBlame | None:
    """Find the level, then the named optimizer, that turns ``value`` wrong."""
    from nodebisect.runtime.sandbox import create_session, run_session

    data = model.SerializeToString()
    sessions = 0

    def right(level: str, disabled: tuple[str, ...] = ()) -> bool:
        nonlocal sessions
        sessions += 1
        session = create_session(data, providers, level, disabled_optimizers=disabled)
        return is_right(run_session(session, [value], feeds)[0])

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
