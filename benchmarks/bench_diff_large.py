"""``nodebisect diff`` on a model over 2 GB with external data (issue #21 point 5).

Builds a float32 model past protobuf's 2 GB limit with onnx.helper (``--layers`` x
MatMul ``--width`` x ``--width`` + bias + Relu; 8 x 8192 x 8192 is 2.0 GiB of
weights), saved with external data and checked with ``onnx.checker`` by path; its
float16 candidate made by onnxconverter-common's ``convert_float_to_float16_model_path``
(``keep_io_types=True``), saved with external data too. Then, each in a fresh process
whose peak RSS (its own, and its onnxruntime child's) and wall time are recorded:

  floor          one all-outputs onnxruntime run of each model (``all_values``)
  diff           ``nodebisect diff big.onnx big_fp16.onnx``
  fp16           ``nodebisect diff big.onnx --transform fp16 --report DIR``
  quantize       ``nodebisect diff big.onnx --transform quantize-dynamic --report DIR``

The multi-GB files live in a temporary folder under /tmp, removed at the end
(``--keep`` keeps them). Usage: python benchmarks/bench_diff_large.py [--layers 8] [--width 8192] [--only diff,fp16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent.parent

# Runs one command in this process and prints its peak RSS (self and children, MiB), exit code and wall time.
_MEASURED = r"""
import json, resource, sys, time
t = time.perf_counter()
if sys.argv[1] == "floor":
    import onnx
    from nodebisect.onnx_reference.evaluate import all_values
    from nodebisect.onnx_reference.inputs import both_feeds
    ref, cand = onnx.load(sys.argv[2]), onnx.load(sys.argv[3])
    rf, cf = both_feeds(ref, cand, None, None, 0)
    all_values(ref, rf, "cpu")
    del ref
    all_values(cand, cf, "cpu")
    rc = 0
else:
    from nodebisect.cli.main import main
    rc = main(sys.argv[1:])
wall = time.perf_counter() - t
rss = lambda who: resource.getrusage(who).ru_maxrss / 1024
print("MEASURED " + json.dumps({"rc": rc, "wall_s": round(wall, 1), "peak_rss_mib": round(rss(resource.RUSAGE_SELF)),
                                "child_peak_rss_mib": round(rss(resource.RUSAGE_CHILDREN))}))
"""


def build(path: Path, layers: int, width: int, batch: int) -> None:
    """The float32 model, one weight in memory at a time beside the model, saved with external data."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "x"
    for i in range(layers):
        w = rng.standard_normal((width, width), dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / width))  # He scale: the activations keep their magnitude through the Relus
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        del w
        inits.append(numpy_helper.from_array((rng.standard_normal(width) * 0.1).astype(np.float32), f"b{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"matmul{i}"))
        last = i == layers - 1
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], ["y" if last else f"a{i}"], name=f"bias{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"h{i}"], name=f"relu{i}"))
            x = f"h{i}"
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, width])], inits)
    del inits
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    del graph
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data")


def to_fp16(path: Path, out: Path) -> None:
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = float16.convert_float_to_float16_model_path(str(path), keep_io_types=True)
    onnx.save_model(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True, location=out.name + ".data")


def measured(args: list[str]) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE / ".pp"), os.environ.get("PYTHONPATH", "")])}
    t = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", _MEASURED, *args], env=env, capture_output=True, text=True)
    lines = [line for line in run.stdout.splitlines() if line.startswith("MEASURED ")]
    if not lines:
        return {"rc": run.returncode, "wall_s": round(time.perf_counter() - t, 1), "error": (run.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(lines[-1].removeprefix("MEASURED "))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--only", default="floor,diff,fp16,quantize")
    parser.add_argument("--keep", action="store_true", help="keep the models (their folder is printed)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="nodebisect-large-", dir="/tmp"))
    try:
        ref, cand = folder / "big.onnx", folder / "big_fp16.onnx"
        t = time.perf_counter()
        build(ref, args.layers, args.width, args.batch)
        onnx.checker.check_model(str(ref))  # by path: a proto past 2 GB cannot be checked in memory
        print(f"built {ref} + data: {(ref.stat().st_size + (folder / 'big.onnx.data').stat().st_size) / 2**30:.2f} GiB in {time.perf_counter() - t:.0f}s")
        t = time.perf_counter()
        to_fp16(ref, cand)
        onnx.checker.check_model(str(cand))
        print(f"float16 candidate: {(folder / 'big_fp16.onnx.data').stat().st_size / 2**30:.2f} GiB in {time.perf_counter() - t:.0f}s")
        runs = {
            "floor": ["floor", str(ref), str(cand)],
            "diff": ["diff", str(ref), str(cand), "--json", str(folder / "diff.json"), "-q"],
            "fp16": ["diff", str(ref), "--transform", "fp16", "--json", str(folder / "fp16.json"), "--report", str(folder / "fp16"), "-q"],
            "quantize": ["diff", str(ref), "--transform", "quantize-dynamic", "--json", str(folder / "quantize.json"),
                         "--report", str(folder / "quantize"), "-q"],
        }
        for name in args.only.split(","):
            got = measured(runs[name])
            answer = folder / f"{name}.json"
            if answer.is_file():
                data = json.loads(answer.read_text())
                fd = data.get("first_divergent") or {}
                got["verdict"] = data.get("verdict", "") + (f" at {fd.get('onnx_node')}" if fd else "")
                record = data.get("transform") or {}
                if record:
                    got["transform"] = {k: record.get(k) for k in ("matched", "keep_nodes", "rechecked", "applications", "candidate")}
                    written = Path(str(record.get("candidate") or ""))
                    got["candidate_files"] = sorted(p.name for p in written.parent.glob(written.name + "*")) if record.get("candidate") else []
            print(f"{name}: {json.dumps(got)}", flush=True)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
