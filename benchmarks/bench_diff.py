"""``nodebisect diff`` against its floor (issue #21): BERT-base in float16 and int8.

BERT-base (transformers ``BertModel`` from ``BertConfig()``, random weights, seed 0)
exported once with the TorchScript exporter (plain ONNX ops, opset 17), then
transformed by the real tools: onnxconverter-common's ``convert_float_to_float16``
(``keep_io_types=True``) and onnxruntime's ``quantize_dynamic`` (int8 weights).

  floor  one all-outputs onnxruntime run of each model (reference + candidate)
  diff   ``nodebisect.diff(reference, candidate)`` end to end (the float64 run of the
         reference, the mapping, the search, the diagnosis), in-process and with
         onnxruntime in a child process (the CLI's default)

Medians of ``--repeat`` runs. Usage: python benchmarks/bench_diff.py [--seq 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx


def export_bert(folder: Path, seq: int) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig()).eval()

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.randint(0, 30522, (1, seq))
    mask = torch.ones(1, seq, dtype=torch.int64)
    path = folder / "bert.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapped(), (ids, mask), str(path), input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                          opset_version=17, dynamo=False)
    return path


def transforms(ref: Path) -> dict[str, Path]:
    from onnxconverter_common import float16
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp16 = float16.convert_float_to_float16(onnx.load(str(ref)), keep_io_types=True)
    out["float16"] = ref.with_name("bert_fp16.onnx")
    onnx.save(fp16, str(out["float16"]))
    out["int8"] = ref.with_name("bert_int8.onnx")
    quantize_dynamic(str(ref), str(out["int8"]), weight_type=QuantType.QInt8)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--folder", help="reuse bert.onnx, bert_fp16.onnx and bert_int8.onnx from this folder")
    args = parser.parse_args()
    import nodebisect
    from nodebisect.onnx_reference.evaluate import all_values
    from nodebisect.onnx_reference.inputs import both_feeds

    t = time.perf_counter()
    if args.folder:
        ref = Path(args.folder) / "bert.onnx"
        cands = {"float16": ref.with_name("bert_fp16.onnx"), "int8": ref.with_name("bert_int8.onnx")}
    else:
        ref = export_bert(Path(tempfile.mkdtemp(prefix="bench-diff-")), args.seq)
        cands = transforms(ref)
    print(f"export + transforms: {time.perf_counter() - t:.1f}s")
    ref_model = onnx.load(str(ref))
    for name, cand in cands.items():
        cand_model = onnx.load(str(cand))
        ref_feeds, cand_feeds = both_feeds(ref_model, cand_model, None, None, 0)

        def floor() -> float:
            t0 = time.perf_counter()
            all_values(ref_model, ref_feeds, "cpu")
            all_values(cand_model, cand_feeds, "cpu")
            return time.perf_counter() - t0

        def run(isolate: bool) -> tuple[float, object]:
            t0 = time.perf_counter()
            result = nodebisect.diff(ref_model, cand_model, ref_feeds, isolate_crashes=isolate)
            return time.perf_counter() - t0, result

        f = statistics.median(floor() for _ in range(args.repeat))
        runs = [run(False) for _ in range(args.repeat)]
        d = statistics.median(r[0] for r in runs)
        c = statistics.median(run(True)[0] for _ in range(args.repeat))
        result = runs[0][1]
        fd = result.first_divergent
        verdict = result.verdict + (f" at {fd.onnx_node} ({fd.cause})" if fd else "")
        timings = result.stats.get("timings", {})
        print(f"{name}: floor {f:.2f}s  diff {d:.2f}s ({d / f:.2f}x)  diff+child {c:.2f}s ({c / f:.2f}x)  verdict {verdict}  "
              f"mapping {result.stats['mapping'].get('coverage')}  ref {result.stats['diff']['reference_seconds']}s "
              f"float64 {result.stats['diff']['float64_seconds']}s  timings {timings}")


if __name__ == "__main__":
    main()
