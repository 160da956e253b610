"""``nodebisect diff`` against its floor (issue #21): BERT-base in float16 and int8.

BERT-base (transformers ``BertModel`` from ``BertConfig()``, random weights, seed 0)
exported once with the TorchScript exporter (plain ONNX ops, opset 17), then
transformed by the real tools: onnxconverter-common's ``convert_float_to_float16``
(``keep_io_types=True``) and onnxruntime's ``quantize_dynamic`` (int8 weights).

  floor  one all-outputs onnxruntime run of each model (reference + candidate),
         ``onnx_reference.evaluate.all_values`` of the tree measured
  diff   ``nodebisect.diff(reference, candidate)`` end to end (the reference's run, the
         mapping, the search, the diagnosis), in-process and with onnxruntime in a child
         process (the CLI's default)

Each measurement runs in a fresh process of its own (``--worker``), floor and diff in
the same process, so the ratio is measured on the same machine state; ``--tree`` names
more nodebisect source trees (an older commit checked out with ``git worktree``) whose
runs are interleaved with this tree's, rep by rep, and whose results (the JSON, timings
left out) must be the same. Medians of ``--repeat`` runs.

Usage: python benchmarks/bench_diff.py [--seq 64] [--repeat 3] [--folder DIR] [--tree OLD_TREE ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent.parent
CASES = {"float16": "bert_fp16.onnx", "int8": "bert_int8.onnx"}


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


def transforms(ref: Path) -> None:
    from onnxconverter_common import float16
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp16 = float16.convert_float_to_float16(onnx.load(str(ref)), keep_io_types=True)
    onnx.save(fp16, str(ref.with_name(CASES["float16"])))
    quantize_dynamic(str(ref), str(ref.with_name(CASES["int8"])), weight_type=QuantType.QInt8)




def worker(folder: Path, case: str, isolate: bool) -> dict[str, object]:
    """One floor and one diff in this process (the tree on sys.path first)."""
    import nodebisect
    from nodebisect.onnx_reference.evaluate import all_values
    from nodebisect.onnx_reference.inputs import both_feeds

    ref_model = onnx.load(str(folder / "bert.onnx"))
    cand_model = onnx.load(str(folder / CASES[case]))
    ref_feeds, cand_feeds = both_feeds(ref_model, cand_model, None, None, 0)
    t0 = time.perf_counter()
    all_values(ref_model, ref_feeds, "cpu")
    all_values(cand_model, cand_feeds, "cpu")
    floor = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = nodebisect.diff(ref_model, cand_model, ref_feeds, isolate_crashes=isolate)
    seconds = time.perf_counter() - t0
    fd = result.first_divergent
    return {
        "floor": floor, "diff": seconds, "verdict": result.verdict + (f" at {fd.onnx_node} ({fd.cause})" if fd else ""),
        "coverage": result.stats["mapping"].get("coverage"), "timings": result.stats.get("timings", {}),
        "result": json.loads(result.to_json()), "nodebisect": nodebisect.__file__,
    }


def measure(tree: Path, folder: Path, case: str, isolate: bool) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / ".pp")])}
    args = [sys.executable, str(Path(__file__).resolve()), "--worker", "--folder", str(folder), "--case", case] + (["--isolate"] if isolate else [])
    run = subprocess.run(args, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{tree} {case}: the worker failed:\n{run.stderr[-3000:]}")
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    # digested here, by this tree's code: an older tree measured with --tree need not have it
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from nodebisect.result_file import without_timings

    stable = json.dumps(without_timings(measured.pop("result")), sort_keys=True)
    measured["json_digest"] = hashlib.sha256(stable.encode()).hexdigest()[:16]
    return measured


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--folder", help="reuse bert.onnx, bert_fp16.onnx and bert_int8.onnx from this folder")
    parser.add_argument("--tree", action="append", default=[], help="another nodebisect source tree to measure alongside")
    parser.add_argument("--no-child", action="store_true", help="skip the runs with onnxruntime in a child process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", default="float16", help=argparse.SUPPRESS)
    parser.add_argument("--isolate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(Path(args.folder), args.case, args.isolate)))
        return
    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="bench-diff-"))
    if not (folder / "bert.onnx").exists():
        t = time.perf_counter()
        transforms(export_bert(folder, args.seq))
        print(f"export + transforms: {time.perf_counter() - t:.1f}s ({folder})")
    trees = [HERE] + [Path(t).resolve() for t in args.tree]
    modes = [False] if args.no_child else [False, True]
    runs: dict[tuple[str, str, bool], list[dict[str, object]]] = {}
    for _ in range(args.repeat):
        for case in CASES:
            for isolate in modes:
                for tree in trees:
                    runs.setdefault((str(tree), case, isolate), []).append(measure(tree, folder, case, isolate))
    for (tree, case, isolate), got in runs.items():
        ratio = statistics.median(float(r["diff"]) / float(r["floor"]) for r in got)  # type: ignore[arg-type]
        floor = statistics.median(float(r["floor"]) for r in got)  # type: ignore[arg-type]
        diff = statistics.median(float(r["diff"]) for r in got)  # type: ignore[arg-type]
        digests = sorted({str(r["json_digest"]) for r in got})
        print(f"{tree} {case} {'child' if isolate else 'in-process'}: floor {floor:.2f}s diff {diff:.2f}s x floor {ratio:.2f} "
              f"(runs {[round(float(r['diff']) / float(r['floor']), 2) for r in got]})  verdict {got[0]['verdict']}  "  # type: ignore[arg-type]
              f"coverage {got[0]['coverage']}  json {digests}  timings {got[0]['timings']}")


if __name__ == "__main__":
    main()
