"""Cost of `nodebisect diff REFERENCE --transform NAME` on a small BERT (issue #21 item 2).

Exports a randomly initialised BertModel (hidden 256, 4 layers, sequence 64) with the dynamo
exporter, then for each case times: the floor (the reference's and the plain candidate's final
outputs, one onnxruntime run each, plus one application of the tool), and the whole
`transforms.api.transform` (diff of the candidate + knob search + re-check). Two cases carry
an injected defect so that the search has work: an outlier in one FFN weight (int8) and an
FFN output scaled past float16's range (fp16).

    PYTHONPATH=. python benchmarks/bench_transform.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def export(folder: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                        vocab_size=1000, max_position_embeddings=128, attn_implementation="eager")
    model = BertModel(config, add_pooling_layer=False).eval()
    ids = torch.randint(0, 1000, (1, 64), generator=torch.Generator().manual_seed(1))

    class Last(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids).last_hidden_state

    paths = []
    for optimize in (True, False):
        path = folder / f"bert_{'opt' if optimize else 'plain'}.onnx"
        torch.onnx.export(Last().eval(), (ids,), dynamo=True, optimize=optimize, verbose=False, external_data=False).save(str(path))
        paths.append(path)
    feeds = {onnx.load(str(paths[0])).graph.input[0].name: ids.numpy()}
    return paths[0], paths[1], feeds


def inject(path: Path, out: Path, kind: str) -> Path:
    """One FFN weight of layer 1 with an outlier (int8), or layer 1's FFN weight x2e5 (the LayerNormalization after
    it, which onnxruntime's CPU runs in float16, overflows)."""
    model = onnx.load(str(path))
    weights = sorted((t for t in model.graph.initializer if len(t.dims) == 2 and tuple(t.dims) == (1024, 256)), key=lambda t: t.name)
    target = weights[1]
    array = numpy_helper.to_array(target).copy()
    if kind == "outlier":
        array[5, 7] = 300.0
    else:
        array *= 2e5
    target.CopyFrom(numpy_helper.from_array(array, target.name))
    onnx.save(model, str(out))
    return out


def floor(path: Path, name: str, feeds: dict[str, np.ndarray]) -> float:
    from nodebisect.transforms.evaluate import run_outputs
    from nodebisect.transforms.registry import lookup, named_copy

    model, _ = named_copy(onnx.load(str(path)))
    t = time.perf_counter()
    run_outputs(model, feeds)
    candidate = lookup(name).apply(model, frozenset(), feeds)
    run_outputs(candidate, feeds)
    return time.perf_counter() - t


def main() -> int:
    from nodebisect.transforms.api import transform

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    folder = Path(args.out or tempfile.mkdtemp(prefix="bench-transform-"))
    folder.mkdir(parents=True, exist_ok=True)
    opt, plain, feeds = export(folder)
    cases = [
        ("clean", opt, "fp16"), ("clean", opt, "quantize-dynamic"), ("clean", opt, "quantize-static"),
        ("clean", plain, "onnxscript"), ("clean", opt, "onnxoptimizer"), ("clean", opt, "ort-transformers:bert"),
        ("weight outlier", inject(opt, folder / "outlier.onnx", "outlier"), "quantize-dynamic"),
        ("FFN weight x2e5", inject(opt, folder / "overflow.onnx", "overflow"), "fp16"),
    ]
    print("| case | --transform | nodes | floor s | whole run s | x floor | of which diff s | knob search s | applications | answer |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, path, name in cases:
        f = floor(path, name, feeds)
        t = time.perf_counter()
        result = transform(str(path), name, feeds, report=folder / f"{label.replace(' ', '_')}_{name.replace(':', '_')}", log=None, isolate_crashes=False)
        total = time.perf_counter() - t
        rec = result.transform
        answer = ("match" if rec["matched"] else ", ".join(rec["keep_nodes"] or rec["rules"])) + (" (rechecked)" if rec["rechecked"] else "")
        if not rec["fixable"]:
            answer = "no keep-list: " + ", ".join(f"{c['constant']} {c['before']:.4g} -> {c['after']:.4g}" for c in rec["unfixable_constants"][:1])
        nodes = len(onnx.load(str(path)).graph.node)
        diff_s = float(result.stats.get("seconds", 0.0))
        print(f"| {label} | {name} | {nodes} | {f:.2f} | {total:.2f} | {total / f:.1f} | {diff_s:.2f} | {rec['seconds'] - diff_s:.2f} | "
              f"{rec['applications']} | {answer} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
