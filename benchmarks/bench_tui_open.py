"""How long the TUI takes to show a 10,000-node result (not a timed test: it prints).

Builds a synthetic but schema-valid ``LocateResult`` (a transformer-shaped chain of
ONNX nodes with module paths and metrics, culprit near the end) from the records
dataclasses, saves it as JSON, and measures: JSON load, app construction, and the
first screen (``app.run_test`` until the node table holds every row), then a jump to
the culprit and a filter, each one key through Pilot (which includes its repaint).

    .venv/bin/python benchmarks/bench_tui_open.py [--nodes 10000] [--keep FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from nodebisect.records import FirstDivergent, FrameworkRef, LocateResult, Metrics, NodeRecord

LAYER_OPS = ["MatMul", "Add", "Reshape", "Transpose", "MatMul", "Div", "Softmax", "MatMul",
             "Transpose", "Reshape", "MatMul", "Add", "LayerNormalization", "MatMul", "Gelu", "MatMul"]


def synthetic_result(n_nodes: int) -> LocateResult:
    culprit_at = int(n_nodes * 0.9)
    while LAYER_OPS[culprit_at % len(LAYER_OPS)] != "LayerNormalization":
        culprit_at += 1
    nodes: list[NodeRecord] = []
    previous = "input_ids"
    for i in range(n_nodes):
        op = LAYER_OPS[i % len(LAYER_OPS)]
        layer = i // len(LAYER_OPS)
        value = f"val_{i}"
        unmapped = op in ("Reshape", "Transpose")
        diverged = i >= culprit_at and not unmapped
        err = 0.5 / (1 + i - culprit_at) if diverged else 1e-7 * (1 + i % 7)
        nodes.append(NodeRecord(
            index=i, onnx_node=f"node_{op}_{i}", op_type=op, onnx_value=value,
            status="unmapped" if unmapped else ("diverged" if diverged else "ok"),
            inputs=[previous, f"encoder.layer.{layer}.w{i % len(LAYER_OPS)}"], outputs=[value],
            framework=FrameworkRef(
                target=f"aten.{op.lower()}.default", fx_node=value,
                module=f"encoder.layer.{layer}.{'attention.self' if i % 16 < 10 else 'output'}",
                module_type="transformers.models.bert.modeling_bert.BertLayer",
                source="modeling_bert.py:412", code="hidden = self.dense(hidden)",
                stack_trace='File "modeling_bert.py", line 412, in forward\n    hidden = self.dense(hidden)',
            ),
            metrics=None if unmapped else Metrics(
                max_abs=err, max_rel=err * 3, mean_abs=err / 4, cosine=1 - err / 10,
                mismatch_fraction=0.7 if diverged else 0.0, shape=[1, 128, 768], expected_shape=[1, 128, 768],
                dtype="float32", expected_dtype="float32",
            ),
            attributes={"axis": -1} if op in ("Softmax", "LayerNormalization") else {},
            mapped_to="" if unmapped else value,
        ))
        previous = value
    culprit = nodes[culprit_at]
    assert culprit.metrics is not None
    return LocateResult(
        verdict="diverged",
        first_divergent=FirstDivergent(
            onnx_node=culprit.onnx_node, op_type=culprit.op_type, onnx_value=culprit.onnx_value,
            stage="conversion", cause="conversion", segment=[culprit.onnx_node],
            segment_op_types=[culprit.op_type], framework=culprit.framework, metrics=culprit.metrics,
            explanation="synthetic culprit", input_values=list(culprit.inputs[:1]),
        ),
        nodes=nodes,
        tolerance={"float32": {"rtol": 1e-3, "atol": 1e-4}},
        model="synthetic",
    )


async def measure(path: str, n_nodes: int) -> dict[str, float]:
    from nodebisect_tui import create_app
    from nodebisect_tui.widgets import NodeTable

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    app = create_app(path)
    timings["load JSON + build app"] = time.perf_counter() - t0
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen_stack[0].query_one(NodeTable)
        while table.row_count < n_nodes:
            await pilot.pause(0.01)
        await pilot.pause()
        timings["first screen (table filled)"] = time.perf_counter() - t0
        await pilot.press("g")
        t = time.perf_counter()
        await pilot.press("j")
        await pilot.pause()
        timings["jump to culprit"] = time.perf_counter() - t
        await pilot.press("slash")
        app.screen.query_one("#filter").value = "op:Softmax"
        t = time.perf_counter()
        await pilot.press("enter")
        await pilot.pause()
        timings[f"filter op:Softmax ({table.row_count} rows)"] = time.perf_counter() - t
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--keep", metavar="FILE", help="also write the synthetic result JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or str(Path(tmp) / "result.json")
        Path(path).write_text(json.dumps(synthetic_result(args.nodes).to_dict()), encoding="utf-8")
        size_mb = Path(path).stat().st_size / 1e6
        timings = asyncio.run(measure(path, args.nodes))
    print(f"{args.nodes} nodes, {size_mb:.1f} MB JSON, python {sys.version.split()[0]}")
    for name, seconds in timings.items():
        print(f"  {name:<40} {seconds:7.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
