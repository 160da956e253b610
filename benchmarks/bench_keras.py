"""A Keras locate against its floor (issue #24): MobileNetV2, random weights, in fresh subprocesses.

The floor is what a user comparing by hand pays at least: import TensorFlow,
``tf2onnx.convert.from_keras``, one run of the frozen graph fetching every op output
(``tf.compat.v1.Session``), one onnxruntime session marking every node output and
one run. nodebisect is ``nodebisect locate tests/keras_models.py:FACTORY`` (TensorFlow's
import included in both). Repeats are interleaved; the median is kept.

    .venv/bin/python benchmarks/bench_keras.py --repeat 3 [--size 96] [--alpha 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FACTORY = '''
import numpy as np, keras
def mobilenet():
    m = keras.applications.MobileNetV2(input_shape=({size}, {size}, 3), alpha={alpha}, weights=None, classes=1000)
    return m, np.random.default_rng(1).standard_normal((1, {size}, {size}, 3)).astype(np.float32)
'''

FLOOR = '''
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
t0 = time.perf_counter()
sys.path.insert(0, {folder!r})
import numpy as np, onnx, onnxruntime as ort, tensorflow as tf, tf2onnx
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
from factory import mobilenet
model, x = mobilenet()
proto, _ = tf2onnx.convert.from_keras(model)
spec = [tf.TensorSpec(i.shape, i.dtype) for i in model.inputs]
frozen = convert_variables_to_constants_v2(tf.function(lambda a: model(a, training=False)).get_concrete_function(*spec))
with tf.Graph().as_default() as g:
    tf.import_graph_def(frozen.graph.as_graph_def(), name="")
    fetch = [t for op in g.get_operations() if op.type not in ("Placeholder", "Const", "NoOp") for t in op.outputs if t.dtype.is_floating]
    with tf.compat.v1.Session(graph=g) as s:
        s.run(fetch, {{g.get_operations()[0].outputs[0]: x}})
names = [v for n in proto.graph.node for v in n.output if v]
proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(v) for v in names if v not in {{o.name for o in proto.graph.output}})
sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
sess.run(None, {{proto.graph.input[0].name: x}})
print("SECONDS", time.perf_counter() - t0)
'''


def _floor(folder: str) -> float:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", FLOOR.format(folder=folder)], capture_output=True, text=True)
    assert "SECONDS" in run.stdout, run.stderr[-3000:]
    return time.perf_counter() - start


def _locate(folder: str, out: str) -> tuple[float, dict]:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "nodebisect", "locate", f"{folder}/factory.py:mobilenet", "--json", out, "-q"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    assert run.returncode in (0, 1), run.stderr[-2000:]
    return seconds, json.loads(Path(out).read_text())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--alpha", type=float, default=1.0)
    args = p.parse_args()
    folder = tempfile.mkdtemp(prefix="bench_keras_")
    Path(folder, "factory.py").write_text(FACTORY.format(size=args.size, alpha=args.alpha))
    floors, locates, result = [], [], {}
    for _ in range(args.repeat):
        floors.append(_floor(folder))
        seconds, result = _locate(folder, f"{folder}/r.json")
        locates.append(seconds)
    floor, nb = statistics.median(floors), statistics.median(locates)
    print(f"MobileNetV2 {args.size}x{args.size} alpha {args.alpha}: {result['stats'].get('onnx_nodes', '?')} ONNX nodes, verdict {result['verdict']}")
    print(f"floor {floor:.2f} s (runs {', '.join(f'{s:.2f}' for s in floors)})")
    print(f"nodebisect {nb:.2f} s (runs {', '.join(f'{s:.2f}' for s in locates)}) = {nb / floor:.2f}x the floor")
    print("step table of the last run:", json.dumps(result["stats"].get("timings", {})))
    print("compared values:", result["stats"].get("compared_values"), "mapping:", json.dumps(result["stats"].get("mapping", {})))


if __name__ == "__main__":
    main()
