"""The exporter's optimizer: what ``torch.onnx.export(optimize=True)`` runs, rule by rule.

``onnxscript.optimizer.optimize_ir`` (0.7.2) is constant folding + the default
rewrite rules, twice, then the clean-up passes (lift constants, deduplicate,
common-subexpression elimination, name fixes). It takes no rule list, so this
module runs the same pass list with the same onnxscript classes, unmodified,
leaving out the rules (and the folding or CSE pass) the search switches off.

When constant folding is at fault, a second search names the node whose folding changes
the result (``fold:NODE``: folding on, but ``should_fold`` says no for that node): the
folded constant, evaluated by ONNX's reference implementation at fold time, where
onnxruntime computes it otherwise (LogSoftmax: log(softmax) underflows to -inf).

Naming: a rule's own ``name`` when it has one (``FuseBatchNormIntoConv``); the
anonymous ones are named by their module and the ops they match
(``_no_op:Mul#0``), as their source defines them.
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Any

import numpy as np
import onnx

FOLDING = "FoldConstantsPass"
CSE = "CommonSubexpressionEliminationPass"
FOLD = "fold:"  # fold:NODE in a knob: constant folding on, but not for NODE (optimize_ir's should_fold)


@functools.lru_cache(maxsize=1)
def rule_names() -> tuple[tuple[str, Any], ...]:
    """(name, rule) for every default rewrite rule, in onnxscript's order."""
    from onnxscript import rewriter

    named, seen = [], {}
    for rule in rewriter._DEFAULT_REWRITE_RULES:
        name = rule.name
        if not name:
            module = type(rule).__module__ if type(rule).__name__ != "RewriteRule" else ""
            module = _defining_module(rule) or module
            ops = "+".join(getattr(n, "op_type", "?") for n in rule._target_pattern._nodes)
            base = f"{module}:{ops}"
            seen[base] = seen.get(base, -1) + 1
            name = f"{base}#{seen[base]}"
        named.append((name, rule))
    return tuple(named)


def _defining_module(rule: Any) -> str:
    """The rewriter module whose ``rules`` hold this rule (``_no_op``, ``_broadcast_to_matmul``...)."""
    import importlib
    import pkgutil

    from onnxscript.rewriter.rules import common

    for info in pkgutil.iter_modules(common.__path__):
        module = importlib.import_module(f"{common.__name__}.{info.name}")
        rules = getattr(module, "rules", None)
        try:
            if rules is not None and any(r is rule for r in rules):
                return info.name
        except TypeError:
            continue
    return ""


def items(reference: onnx.ModelProto) -> list[str]:
    return [FOLDING, *(name for name, _ in rule_names()), CSE]


def fold_items(reference: onnx.ModelProto) -> list[str]:
    """``fold:NODE`` for every named node: the nodes constant folding may evaluate (the second-level search)."""
    return [FOLD + n.name for n in reference.graph.node if n.name]


def apply(reference: onnx.ModelProto, disabled: frozenset[str], feeds: dict[str, Any], spec: Any) -> onnx.ModelProto:
    """``optimize_ir``'s pass list with the ``disabled`` rules and passes left out."""
    import onnx_ir as ir
    import onnx_ir.passes.common as common_passes
    from onnxscript import rewriter
    from onnxscript.optimizer import _constant_folding

    model = ir.serde.deserialize_model(reference)
    rules = [rule for name, rule in rule_names() if name not in disabled]
    loop = []
    unfolded = {d.removeprefix(FOLD) for d in disabled if d.startswith(FOLD)}
    if FOLDING not in disabled:
        loop.append(_constant_folding.FoldConstantsPass(
            shape_inference=True,
            input_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
            output_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT,
            should_fold=lambda node: False if node.name in unfolded else None,
        ))
    if rules:
        loop.append(rewriter.RewritePass(rules))
    loop += [common_passes.RemoveUnusedNodesPass(), common_passes.RemoveUnusedFunctionsPass(), common_passes.RemoveUnusedOpsetsPass()]
    passes = [
        common_passes.InlinePass(),
        ir.passes.PassManager(loop, steps=2, early_stop=True),
        common_passes.RemoveUnusedNodesPass(),
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common_passes.LiftSubgraphInitializersToMainGraphPass(),
        common_passes.DeduplicateInitializersPass(),
        *([common_passes.CommonSubexpressionEliminationPass()] if CSE not in disabled else []),
        common_passes.OutputFixPass(),
        common_passes.NameFixPass(),
    ]
    quiet = logging.getLogger("onnxscript")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "Evaluation failed" for every node folding skips: not the user's concern
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # numpy's "divide by zero" from the reference ops folding evaluates
            ir.passes.Sequential(*passes)(model)
    finally:
        quiet.setLevel(level)
    return ir.serde.serialize_model(model)


def knob_kwargs(disabled: list[str], reference: onnx.ModelProto, spec: Any) -> dict[str, Any]:
    unfolded = sorted(d.removeprefix(FOLD) for d in disabled if d.startswith(FOLD))
    kwargs: dict[str, Any] = {"disabled": [d for d in disabled if not d.startswith(FOLD)]}
    if unfolded:
        kwargs["should_fold"] = f"lambda node: False if node.name in {set(unfolded)!r} else None"
    return kwargs
