"""Check every sample in samples/divergent.py.

For each sample: export with torch.onnx.export(dynamo=True), run onnxruntime (CPU,
default session options), print the max abs error of the final outputs vs PyTorch eager
(under torch.no_grad()) and vs the torch.export'ed program, and list the ONNX nodes whose
metadata_props['pkg.torch.onnx.fx_node'] belong to the culprit FX node.

Usage: python samples/check_samples.py [NAME ...]
"""

import contextlib
import io
import logging
import os
import sys
import warnings

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from divergent import SAMPLES  # noqa: E402

warnings.filterwarnings("ignore")
logging.getLogger("torch.onnx").setLevel(logging.ERROR)

FX_KEY = "pkg.torch.onnx.fx_node"


def max_err(ref, got):
    """Max abs error over positions finite in both, plus the count of NaN/inf mismatches."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    bad_ref, bad_got = ~np.isfinite(ref), ~np.isfinite(got)
    mismatch = int(np.sum(bad_ref != bad_got) + np.sum(bad_ref & bad_got & (np.nan_to_num(ref) != np.nan_to_num(got))))
    ok = ~bad_ref & ~bad_got
    err = float(np.abs(ref[ok] - got[ok]).max()) if ok.any() else 0.0
    return err, mismatch


def fmt(e):
    err, mism = e
    return f"{err:.4g}" + (f" (+{mism} non-finite mismatches)" if mism else "")


def check(name, cls):
    model = cls().eval()
    inputs = cls.example_inputs()
    with torch.no_grad():
        eager = model(*inputs)
        ep = torch.export.export(model, inputs)
        exported = ep.module()(*inputs)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        onnx_prog = torch.onnx.export(model, inputs, dynamo=True)
    proto = onnx_prog.model_proto
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)}
    got = sess.run(None, feeds)[0]

    print(f"== {name}  [{cls.KIND}]  aten: {cls.ATEN_OP}")
    print(f"   max|ORT - eager|    = {fmt(max_err(eager.numpy(), got))}")
    print(f"   max|ORT - exported| = {fmt(max_err(exported.numpy(), got))}")
    print(f"   max|eager - exported| = {fmt(max_err(eager.numpy(), exported.numpy()))}")
    fx = cls.FX_NODE
    if fx is None:
        print("   culprit FX node: none (capture-stage divergence; ONNX matches the exported program)")
        return
    prefix = f"%{fx} :"
    nodes = [
        (n.name, n.op_type, [o for o in n.output])
        for n in proto.graph.node
        if any(p.key == FX_KEY and p.value.startswith(prefix) for p in n.metadata_props)
    ]
    print(f"   culprit FX node: {fx}  ({len(nodes)} ONNX node(s))")
    for nname, op, outs in nodes:
        print(f"     {nname:28s} {op:18s} -> {', '.join(outs)}")


def main(argv):
    names = argv or list(SAMPLES)
    for name in names:
        check(name, SAMPLES[name])


if __name__ == "__main__":
    main(sys.argv[1:])
