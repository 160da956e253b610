"""onnxruntime.quantization, unmodified: dynamic, and static (QDQ) calibrated on the given inputs.

Knob: ``nodes_to_exclude``. Naming quirks read in ``onnxruntime/quantization``
(``base_quantizer.should_quantize_node``, ``quantize.quantize_dynamic``):
- ``nodes_to_exclude`` is matched against the reference's ``NodeProto.name``, before
  the quantizer renames anything (a quantized MatMul becomes ``<name>_quant``, its
  tensors ``<tensor>_quantized``, Q/DQ nodes ``<tensor>_QuantizeLinear``), so the list
  names the reference's nodes; an unnamed node cannot be excluded (nodebisect names them);
- dynamic quantization quantizes a MatMul only when its B is a constant
  (``MatMulConstBOnly``, on by default), so only those are candidates;
- dynamic quantization first rewrites a Gemm (alpha = beta = 1, transA = 0) into a
  MatMul named ``<name>_MatMul`` (plus ``<name>_Add``, ``<name>_Transpose``:
  ``ONNXModel.replace_gemm_with_matmul``), and ``nodes_to_exclude`` is matched after
  that: the exclude list must say ``<name>_MatMul`` to keep the Gemm ``<name>`` out.
  ``keep_nodes`` names the reference's Gemm; ``tool_kwargs`` the name the tool honours.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import tempfile
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import onnx


def candidates(reference: onnx.ModelProto, static: bool) -> list[str]:
    """The nodes the quantizer would quantize: the op types it quantizes by default (dynamic: constant-B MatMuls).

    ``quantize_static`` with no ``op_types_to_quantize`` quantizes the union of its QLinear
    and QDQ registries, in QDQ format too: Add, Mul, Concat, Softmax and Sigmoid are only in
    the first. A keep-list drawn from the QDQ registry alone could never keep their outputs
    out of int8 ("no keep-list fixes it" on a ViT whose LayerNorm reads a quantized Add).
    """
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry, QLinearOpsRegistry

    ops = set(QDQRegistry) | set(QLinearOpsRegistry) if static else set(IntegerOpsRegistry)
    constants = {t.name for t in reference.graph.initializer}
    names = []
    for node in reference.graph.node:
        rewritten = not static and _gemm_as_matmul(node)
        if not node.name or (node.op_type not in ops and not rewritten):
            continue
        if not static and node.op_type in ("MatMul", "Gemm") and (len(node.input) < 2 or node.input[1] not in constants):
            continue
        names.append(node.name)
    return names


def _gemm_as_matmul(node: onnx.NodeProto) -> bool:
    """A Gemm dynamic quantization rewrites into ``<name>_MatMul`` first (alpha = beta = 1, transA = 0)."""
    if node.op_type != "Gemm":
        return False
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and attrs.get("transA", 0) == 0


def tool_names(reference: onnx.ModelProto, keep: list[str] | frozenset[str], static: bool) -> list[str]:
    """The names ``nodes_to_exclude`` must hold for the reference nodes ``keep`` (a rewritten Gemm: ``<name>_MatMul``)."""
    by_name = {n.name: n for n in reference.graph.node}
    return [f"{name}_MatMul" if not static and name in by_name and _gemm_as_matmul(by_name[name]) else name for name in keep]


class _Search:
    """One reference's files for the applications of a search: the model written once, and onnxruntime's
    calibration cache (``quantize_static(calibration_cache_path=)``), so the activation ranges are computed
    once, not once per application. They depend on the model, the feeds and the op types calibrated, none
    of which ``nodes_to_exclude`` changes; MinMax calibration is deterministic, so an application reading
    the cache makes the model a fresh calibration makes (the re-check's too)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="nodebisect-quant-")
        self.model = Path(self.dir) / "reference.onnx"
        self.calibration = Path(self.dir) / "calibration.json"
        weakref.finalize(self, shutil.rmtree, self.dir, True)


# The last few references quantized, with their feeds' digest (each model held, so its id stays its own).
_SEARCHES: list[tuple[onnx.ModelProto, bytes, _Search]] = []


def _search_files(reference: onnx.ModelProto, feeds: dict[str, Any]) -> _Search:
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(feeds):
        array = np.ascontiguousarray(feeds[name])
        digest.update(repr((name, array.dtype.str, array.shape)).encode())
        digest.update(array.reshape(-1).view(np.uint8) if array.dtype.kind != "O" else repr(array.tolist()).encode())
    key = digest.digest()
    for held, k, files in _SEARCHES:
        if held is reference and k == key:
            return files
    files = _Search()
    _SEARCHES[:] = [*_SEARCHES[-1:], (reference, key, files)]
    return files


def apply(reference: onnx.ModelProto, keep: frozenset[str], feeds: dict[str, Any], spec: Any) -> onnx.ModelProto:
    """``quantize_dynamic`` / ``quantize_static`` (QDQ, per-tensor, calibrated on ``feeds``) with ``nodes_to_exclude=keep``."""
    import inspect

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    from nodebisect.onnx_reference.large import ModelFile, too_large

    class _Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._left = [dict(feeds)]

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self._left.pop() if self._left else None

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "Please consider to run pre-processing" on every call
    try:
        large = too_large(reference)  # past protobuf's 2 GB: weights as external data, in and out (written once per search)
        search = _search_files(reference, feeds)
        with (warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="nodebisect-quant-") as tmp,
              (ModelFile(reference) if large else contextlib.nullcontext()) as file):
            # numpy's warnings from the quantizer's own arithmetic ("invalid value encountered in divide" where a
            # tensor's range is 0) would bury nodebisect's lines; what they cause shows in the candidate's values
            warnings.simplefilter("ignore", RuntimeWarning)
            src, dst = search.model, Path(tmp) / "candidate.onnx"
            if file is not None:
                src = Path(file.path)
            elif not src.exists():
                src.write_bytes(reference.SerializeToString())
            static = spec.name == "quantize-static"
            exclude = tool_names(reference, sorted(keep), static)
            if static:
                cache = ({"calibration_cache_path": str(search.calibration)}
                         if "calibration_cache_path" in inspect.signature(quantize_static).parameters else {})  # where this onnxruntime has it
                quantize_static(str(src), str(dst), _Feeds(), quant_format=QuantFormat.QDQ, nodes_to_exclude=exclude,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, use_external_data_format=large, **cache)
            else:
                quantize_dynamic(str(src), str(dst), nodes_to_exclude=exclude, weight_type=QuantType.QInt8, use_external_data_format=large)
            return onnx.load(str(dst))
    finally:
        root.setLevel(level)


def knob_kwargs(keep: list[str], reference: onnx.ModelProto, spec: Any) -> dict[str, Any]:
    return {"nodes_to_exclude": tool_names(reference, keep, spec.name == "quantize-static")}
