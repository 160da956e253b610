"""The terminal UI: behaviour through Pilot, a few snapshots, one live locate run.

Saved results are built from the records dataclasses (no torch), so these tests
say nothing about locate's correctness; the live test runs the real pipeline on
``tests/models.py:Block`` with one broken LayerNormalization (conftest's ``broken_block``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("textual")

from nodebisect.cli.main import main  # noqa: E402
from nodebisect.records import (  # noqa: E402
    FirstDivergent,
    FrameworkRef,
    LocateResult,
    Metrics,
    NodeRecord,
    Suspect,
)
from nodebisect_tui import create_app  # noqa: E402
from nodebisect_tui.screens import HelpScreen, MainScreen, NodeScreen, PathScreen, RerunScreen  # noqa: E402
from nodebisect_tui.verdict import VerdictScreen  # noqa: E402
from nodebisect_tui.widgets import NodeDetail, NodeTable, VerdictBanner  # noqa: E402
from textual.widgets import Static  # noqa: E402

pytestmark = pytest.mark.anyio  # async Pilot tests run on anyio's pytest plugin

SIZE = (120, 40)
HERE = Path(__file__).resolve().parent
CULPRIT = "node_layer_norm_1"
# (op, node, module, status, max_abs) in topological order; each node reads the previous one.
CHAIN = [
    ("Gemm", "node_linear", "encoder.0.fc", "ok", 1e-7),
    ("LayerNormalization", "node_layer_norm", "encoder.0.norm", "ok", 2e-7),
    ("Softmax", "node_softmax", "encoder.0", "ok", 3e-8),
    ("Gemm", "node_linear_1", "encoder.1.fc", "ok", 9e-5),
    ("LayerNormalization", CULPRIT, "encoder.1.norm", "diverged", 1.18),
    ("Softmax", "node_softmax_1", "encoder.1", "diverged", 0.12),
    ("Shape", "node_shape", "", "unmapped", None),
    ("Gemm", "node_linear_2", "head", "diverged", 0.05),
]


def synthetic_result() -> LocateResult:
    nodes = []
    previous = "x"
    for i, (op, name, module, status, err) in enumerate(CHAIN):
        value = name.removeprefix("node_")
        metrics = None if err is None else Metrics(
            max_abs=err, max_rel=err * 2, mean_abs=err / 3, cosine=1.0 - err / 10,
            mismatch_fraction=1.0 if status == "diverged" else 0.0,
            shape=[4, 8], expected_shape=[4, 8], dtype="float32", expected_dtype="float32",
        )
        nodes.append(NodeRecord(
            index=i, onnx_node=name, op_type=op, onnx_value=value, status=status,
            inputs=[previous, f"{module or 'top'}.weight"], outputs=[value],
            framework=FrameworkRef(target=f"aten.{op.lower()}.default", fx_node=value, module=module,
                                   source="model.py:21", code="return self.head(self.encoder(x))",
                                   stack_trace='File "model.py", line 21, in forward\n    return self.head(self.encoder(x))'),
            metrics=metrics, attributes={"epsilon": 0.5, "axis": -1} if op == "LayerNormalization" else {},
            mapped_to=value if status != "unmapped" else "",
        ))
        previous = value
    culprit = nodes[4]
    assert culprit.metrics is not None
    return LocateResult(
        verdict="diverged",
        first_divergent=FirstDivergent(
            onnx_node=CULPRIT, op_type="LayerNormalization", onnx_value=culprit.onnx_value,
            stage="conversion", cause="conversion", segment=[CULPRIT], segment_op_types=["LayerNormalization"],
            framework=culprit.framework, metrics=culprit.metrics,
            explanation="wrong even when fed the framework's own input values (a conversion defect)",
            input_values=["linear_1"],
        ),
        nodes=nodes,
        tolerance={"float32": {"rtol": 1e-3, "atol": 1e-4}},
        model="model.py:Model",
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def result_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A saved result as ``result.json`` in the cwd (a relative path keeps snapshots stable)."""
    monkeypatch.chdir(tmp_path)
    Path("result.json").write_text(json.dumps(synthetic_result().to_dict()), encoding="utf-8")
    return "result.json"


def table(app) -> NodeTable:
    return app.screen_stack[0].query_one(NodeTable)


def notices(app) -> str:
    return "\n".join(n.message for n in app._notifications)


async def test_open_saved_result_lands_on_culprit(result_json: str) -> None:
    app = create_app(result_json)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert table(app).row_count == len(CHAIN)
        assert table(app).current == CULPRIT
        assert f"DIVERGED at {CULPRIT}" in str(app.screen.query_one(VerdictBanner).render())


async def test_jump_to_culprit_and_walk_the_graph(result_json: str) -> None:
    app = create_app(result_json)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("home")
        assert table(app).current == "node_linear"
        await pilot.press("j")
        assert table(app).current == CULPRIT
        await pilot.press("i")  # up to the producer
        assert table(app).current == "node_linear_1"
        await pilot.press("o", "o")  # down twice
        assert table(app).current == "node_softmax_1"
        await pilot.press("b")  # back retraces the visits
        assert table(app).current == CULPRIT
        await pilot.press("b")
        assert table(app).current == "node_linear_1"


async def test_detail_and_neighbourhood_of_culprit(result_json: str) -> None:
    app = create_app(result_json)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("j", "enter")
        screen = app.screen
        assert isinstance(screen, NodeScreen) and screen.node_name == CULPRIT
        text = str(screen.query_one("#node-view").render())
        for expected in ("FIRST DIVERGENT", "epsilon = 0.5", "encoder.1.norm", "model.py:21", "node_linear_1", "histogram"):
            assert expected in text
        await pilot.press("n")
        options = screen.query_one("#graph-list")
        graph = "\n".join(str(options.get_option_at_index(i).prompt) for i in range(options.option_count))
        assert "1 hop up" in graph and "node_linear_1" in graph and "node_softmax_1" in graph
        await pilot.press("o")  # walking in the node screen moves the table too
        assert screen.node_name == "node_softmax_1"
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        assert table(app).current == "node_softmax_1"


async def test_filter_by_op_type_and_module(result_json: str) -> None:
    app = create_app(result_json)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", *"op:softmax", "enter")
        assert table(app).row_count == 2
        assert {r.op_type for r in table(app).records} == {"Softmax"}
        await pilot.press("slash", "ctrl+u", *"encoder.1", "enter")
        assert table(app).row_count == 3
        await pilot.press("escape")  # clears the filter
        assert table(app).row_count == len(CHAIN)


async def test_write_report(result_json: str, tmp_path: Path) -> None:
    app = create_app(result_json)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w")
        if find_spec("nodebisect.report.bundle") is None:
            assert "not installed" in notices(app)
            pytest.skip("nodebisect.report.bundle is not in this checkout yet")
        assert isinstance(app.screen, PathScreen)
        await pilot.press("ctrl+u", *"out", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert (tmp_path / "out").is_dir(), notices(app)


async def test_write_report_hands_the_result_to_report_bundle(
    result_json: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key wiring, with a stand-in for the report module (its own tests cover its output)."""
    import importlib.machinery
    import types

    calls: list[tuple[LocateResult, str]] = []

    def write_report(result: LocateResult, out_dir: str, redact: bool = False) -> str:
        calls.append((result, out_dir))
        Path(out_dir).mkdir()
        return out_dir

    fake = types.ModuleType("nodebisect.report.bundle")
    fake.__spec__ = importlib.machinery.ModuleSpec("nodebisect.report.bundle", None)
    fake.write_report = write_report
    monkeypatch.setitem(sys.modules, "nodebisect.report.bundle", fake)
    app = create_app(result_json)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w", "ctrl+u", *"bundle", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert [(r.first_divergent.onnx_node, d) for r, d in calls] == [(CULPRIT, "bundle")]
        assert "wrote the report to bundle" in notices(app)


async def test_save_json_round_trips(result_json: str, tmp_path: Path) -> None:
    app = create_app(result_json)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        assert isinstance(app.screen, PathScreen)
        await pilot.press("ctrl+u", *"copy.json", "enter")
        saved = json.loads((tmp_path / "copy.json").read_text(encoding="utf-8"))
        assert LocateResult.from_dict(saved).first_divergent.onnx_node == CULPRIT


async def test_rerun_needs_a_model_and_help_and_quit(result_json: str) -> None:
    app = create_app(result_json)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")  # the recorded model.py:Model is not on disk
        assert "re-run needs the model: 'model.py:Model', recorded in result.json, is not found" in notices(app)
        assert not isinstance(app.screen, RerunScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("q")
    assert app.return_code == 0


@pytest.mark.subprocess
def test_json_open_never_imports_torch(result_json: str) -> None:
    code = (
        "import asyncio, sys\n"
        "from nodebisect_tui import create_app\n"
        "app = create_app('result.json')\n"
        "async def go():\n"
        "    async with app.run_test(size=(80, 24)) as pilot:\n"
        "        await pilot.press('j', 'enter', 'n')\n"
        "asyncio.run(go())\n"
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(
    "argv, message",
    [
        pytest.param(["tui", "missing.json"], "result file not found", id="missing-json"),
        pytest.param(["tui", "notes.json"], "notes.json", id="not-a-result"),
        pytest.param(["tui", "missing.pt2"], "model file not found", id="missing-model"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("notes.json").write_text('{"hello": 1}', encoding="utf-8")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "tip:" in err


def test_cli_help_lists_the_json_form(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["tui", "--help"])
    assert exit_info.value.code == 0
    assert "RESULT.json" in capsys.readouterr().out


async def test_live_run_shows_progress_then_culprit_and_reruns(broken_block: Any) -> None:
    broken = broken_block.node
    app = create_app(f"{HERE / 'models.py'}:Block", onnx_path=str(broken_block.path))
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        log = "\n".join(line.text for line in app.screen.query_one("#runlog").lines)
        assert "▸ export" in log and "diverged" in log
        assert app.result is not None and table(app).current == broken
        assert f"DIVERGED at {broken}" in str(app.screen.query_one(VerdictBanner).render())

        await pilot.press("r")  # a loose tolerance makes the same graph match
        assert isinstance(app.screen, RerunScreen)
        app.screen.query_one("#rtol").value = "10"
        app.screen.query_one("#atol").value = "10"
        await pilot.click("#run")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.result.verdict == "match"
        assert "MATCH" in str(app.screen.query_one(VerdictBanner).render())
        # A new tolerance searches the kept preparation again: no second export, the same onnxruntime child.
        assert app.result.stats.get("reused_preparation") is True
        assert "export" not in app.result.stats["timings"] and "torch_export" not in app.result.stats["timings"]
    assert app.kept.prepared is None  # the app closed the kept child and its weights file on its way out


# -- snapshots: how the main screen looks, at fixed sizes ------------------------------
def test_snapshot_main_80x24(result_json: str, snap_compare) -> None:
    assert snap_compare(create_app(result_json), terminal_size=(80, 24))


def test_snapshot_main_120x40(result_json: str, snap_compare) -> None:
    assert snap_compare(create_app(result_json), terminal_size=(120, 40))


def test_snapshot_culprit_detail_80x24(result_json: str, snap_compare) -> None:
    assert snap_compare(create_app(result_json), press=["j", "enter"], terminal_size=(80, 24))


# -- issue 12, item 7 ------------------------------------------------------------------
def write_result(result: LocateResult, path: str = "result.json") -> str:
    Path(path).write_text(json.dumps(result.to_dict()), encoding="utf-8")
    return path


def capture_result(carried: bool = True) -> LocateResult:
    """Eager PyTorch and torch.export differ at FX node ``layer_norm_1``; the ONNX graph matches the export."""
    result = synthetic_result()
    for record in result.nodes:  # every ONNX value matches the exported program
        record.status = "ok" if record.metrics is not None else record.status
    carrier = result.nodes[4]
    if not carried:
        carrier.mapped_to = ""
    result.first_divergent = FirstDivergent(
        onnx_node="layer_norm_1", op_type="aten.layer_norm.default", onnx_value="layer_norm_1",
        stage="capture", cause="capture", segment=["layer_norm_1"], segment_op_types=["aten.layer_norm.default"],
        framework=FrameworkRef(target="aten.layer_norm.default", fx_node="layer_norm_1", module="encoder.1"),
        metrics=Metrics(max_abs=1.9, max_rel=2.0, cosine=0.89, mismatch_fraction=0.2),
        explanation="torch.export changed the model's behaviour: eager PyTorch and the exported program already differ.",
    )
    result.capture = {"checked": True, "eager_matches_export": False, "first_module": "encoder.1", "fx_node": "layer_norm_1"}
    return result


def node_view_text(screen) -> str:
    return str(screen.query_one("#node-view").render())


async def test_capture_verdict_jumps_to_the_onnx_node_carrying_the_fx_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = create_app(write_result(capture_result()))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        # the side panel starts on the carrier, not on row 0
        assert table(app).current == CULPRIT
        side = str(app.screen.query_one(NodeDetail).render())
        assert "CARRIES THE CAPTURE CULPRIT" in side and "eager PyTorch vs torch.export" in side
        assert "torch.export differ at FX node layer_norm_1" in str(app.screen.query_one(VerdictBanner).render())
        await pilot.press("home", "j")
        assert table(app).current == CULPRIT
        assert "no divergent node" not in notices(app)
        assert "differ at FX node layer_norm_1; node_layer_norm_1 carries its value" in notices(app)


async def test_capture_verdict_without_carrier_opens_eager_vs_export_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = create_app(write_result(capture_result(carried=False)))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        side = str(app.screen.query_one(NodeDetail).render())  # starts on eager vs export, not on row 0
        assert "eager PyTorch vs torch.export" in side and "node_linear" not in side
        await pilot.press("down")
        assert "node_layer_norm" in str(app.screen.query_one(NodeDetail).render())
        await pilot.press("j")
        assert isinstance(app.screen, VerdictScreen)
        text = str(app.screen.query_one("#verdict-view").render())
        assert "eager PyTorch vs torch.export" in text and "eager vs export: max abs 1.90e+00" in text
        assert "no ONNX node carries this FX value" in text
        assert "no divergent node" not in notices(app)


async def test_banner_cuts_with_an_ellipsis_and_v_shows_the_whole_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = synthetic_result()
    tail = "so the defect is in the op's conversion itself (THE END)"
    result.first_divergent.explanation = "wrong even when fed the framework's own input values; " * 4 + tail
    app = create_app(write_result(result))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        banner = app.screen.query_one(VerdictBanner)
        lines = [strip.text.rstrip() for strip in banner.render_lines(banner.region.reset_offset)]
        why = next(line for line in lines if "wrong even when fed" in line)
        assert why.endswith("…"), lines
        assert "THE END" not in "\n".join(lines)
        await pilot.press("v")
        assert isinstance(app.screen, VerdictScreen)
        assert tail in str(app.screen.query_one("#verdict-view").render())
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_table_marks_the_segment_and_the_suspects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = synthetic_result()
    fd = result.first_divergent
    fd.segment = ["node_linear_1", CULPRIT]
    fd.suspects = [Suspect("node_linear_1", "Gemm", 0.8, "numerically sensitive"),
                   Suspect("node_softmax", "Softmax", 0.3, "part of the same decomposition")]
    app = create_app(write_result(result))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        nodes = table(app)
        nodes.scroll_to(y=0, animate=False, immediate=True)
        await pilot.pause()
        rows = {line.split()[2]: line for line in (nodes.render_line(y).text for y in range(1, len(CHAIN) + 1))}
        assert rows[CULPRIT].startswith("▶")
        assert rows["node_linear_1"].startswith("┃")
        assert rows["node_softmax"].startswith("?")
        assert rows["node_linear"].startswith(" ")
        await pilot.press("slash", *"is:segment", "enter")
        assert [r.onnx_node for r in nodes.records] == ["node_linear_1", CULPRIT]
        await pilot.press("slash", "ctrl+u", *"is:suspect", "enter")
        assert [r.onnx_node for r in nodes.records] == ["node_softmax", "node_linear_1"]


async def test_command_palette_offers_the_apps_commands(result_json: str) -> None:
    app = create_app(result_json)
    async with app.run_test(size=SIZE) as pilot:
        names = [command.title for command in app.get_system_commands(app.screen)]
        for wanted in ("Jump to culprit", "Filter nodes", "Write report", "Save result JSON", "Re-run locate", "Theme"):
            assert wanted in names
        await pilot.press("home")
        assert table(app).current == "node_linear"
        await pilot.press("ctrl+p", *"jump to culprit")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert table(app).current == CULPRIT
        await pilot.press("ctrl+p", *"save result json")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, PathScreen)


async def test_neighbourhood_is_selectable_deeper_on_demand_and_lists_constants(result_json: str) -> None:
    from textual.widgets import OptionList

    app = create_app(result_json)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("j", "n")
        screen = app.screen
        assert isinstance(screen, NodeScreen) and screen.mode == "graph"
        graph = screen.query_one("#graph-list", OptionList)

        def lines() -> list[str]:
            return [str(graph.get_option_at_index(i).prompt) for i in range(graph.option_count)]

        assert screen.graph_nodes[graph.highlighted] == CULPRIT  # the cursor starts on the centre
        assert any("2 hops up" in line for line in lines()) and not any("3 hops up" in line for line in lines())
        constants = lines()[lines().index(next(x for x in lines() if "constants / graph inputs read by" in x)):]
        assert any("encoder.1.norm.weight" in line for line in constants)
        await pilot.press("plus")
        assert screen.hops == 3 and any("3 hops up" in line for line in lines())
        await pilot.press("minus", "minus")
        assert screen.hops == 1 and not any("2 hops up" in line for line in lines())
        graph.highlighted = screen.graph_nodes.index("node_linear_1")
        await pilot.press("enter")  # select: back to the table, on that node
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert table(app).current == "node_linear_1"


async def test_footer_at_80_columns_keeps_every_key(result_json: str) -> None:
    from textual.widgets import Footer

    app = create_app(result_json)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        footer = app.screen.query_one(Footer)
        keys = {key.key: key for key in footer.query("FooterKey")}
        assert {"q", "question_mark", "j", "v", "n", "slash", "r", "w", "s"} <= set(keys), sorted(keys)
        for name in keys:
            key = keys[name]
            assert key.region.width > 0 and key.region.right <= 80, (name, key.region)
            assert footer.region.contains_region(key.region)
            for palette in footer.query(".-command-palette"):  # docked on the right, over what overflows
                assert not key.region.overlaps(palette.region), (name, key.region, palette.region)


async def test_rerun_from_json_offers_the_recorded_model_and_runs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = synthetic_result()
    result.model = f"{HERE / 'models.py'}:Block"
    app = create_app(write_result(result))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        assert isinstance(app.screen, RerunScreen)
        assert result.model in str(app.screen.query_one("#rerun-model").render())
        app.screen.query_one("#rtol").value = "10"
        app.screen.query_one("#atol").value = "10"
        await pilot.click("#run")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.result is not None and app.result.verdict == "match"
        assert app.result.model == result.model
        assert "MATCH" in str(app.screen.query_one(VerdictBanner).render())


def test_verdict_view_shows_the_values_behind_the_bug() -> None:
    """The worst element, the constants and the noise ratio are in the verdict view, as in the summary."""
    from nodebisect.records import FirstDivergent, FrameworkRef, LocateResult, Metrics

    from nodebisect_tui.verdict import verdict_text
    from nodebisect_tui.view import ResultIndex

    fd = FirstDivergent(
        onnx_node="node_atan2", op_type="Where", onnx_value="atan2", stage="conversion", cause="conversion",
        segment=["node_atan2"], segment_op_types=["Where"], framework=FrameworkRef(target="aten.atan2.default"),
        metrics=Metrics(max_abs=6.28, noise=1e-7, noise_ratio=3e6, criterion="fixed"),
        worst={"index": [0, 1], "expected": 3.14159, "actual": -3.14159, "inputs": {"y": 0.0, "x": -0.52}, "constants": {"val_3": 0.0}},
        amplifiers=["node_mul_9"], local_error={"rel_l2": 0.5},
    )
    text = verdict_text(ResultIndex(LocateResult(verdict="diverged", first_divergent=fd))).plain
    assert "worst" in text and "3.1416" in text and "-3.1416" in text
    assert "constants" in text and "val_3" in text
    assert "3e+06x" in text
    assert "amplified" in text and "node_mul_9" in text


def test_the_verdict_says_the_transformation_and_its_fix() -> None:
    """diff --transform / locate --transform results: the banner's headline and the verdict screen's fix, the CLI's words."""
    pytest.importorskip("onnxruntime.quantization")
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).parent))
    import transform_models as tm

    from nodebisect.transforms.api import transform

    from nodebisect_tui.verdict import banner_text, verdict_text
    from nodebisect_tui.view import ResultIndex

    model, feeds = tm.two_matmuls(weight_outlier=True)
    index = ResultIndex(transform(model, "quantize-dynamic", feeds, isolate_crashes=False))
    assert "quantize-dynamic (onnxruntime" in banner_text(index).plain
    text = verdict_text(index).plain
    assert "the transformation (--transform quantize-dynamic)" in text
    assert "keep out of quantize-dynamic (nodes_to_exclude, most helpful first): mm_in" in text and "re-checked" in text


def test_rerun_from_json_repeats_the_recorded_inputs_and_onnx(tmp_path: Path) -> None:
    from nodebisect_tui.app import recorded_options

    inputs = tmp_path / "x.pt"
    inputs.write_bytes(b"")
    recorded = {"inputs_file": str(inputs), "onnx_path": str(tmp_path / "gone.onnx"), "input_specs": ["x=1x4"], "seed": 3}
    options, missing = recorded_options(recorded)
    assert options == {"inputs_file": str(inputs), "input_specs": ["x=1x4"], "seed": 3}
    assert missing == [str(tmp_path / "gone.onnx")]


async def test_command_palette_goes_to_a_node_by_name(result_json: str) -> None:
    """The "go to node" provider reads the main screen's index (it no longer imports the app)."""
    app = create_app(result_json)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("home")
        assert table(app).current == "node_linear"
        await pilot.press("ctrl+p", *"softmax_1")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert table(app).current == "node_softmax_1"


# -- at 100×30 and 120–130 columns (#22 point 7) --------------------------------------
def long_names_result() -> LocateResult:
    """The synthetic chain with the node and module names of a real transformers export."""
    result = synthetic_result()
    renamed = {}
    for record in result.nodes:
        renamed[record.onnx_node] = record.onnx_node.replace("node_", "node_model_layers_11_self_attn_")
        record.onnx_node = renamed[record.onnx_node]
        record.framework.module = "model.layers.11.self_attn." + (record.framework.module or "out")
    fd = result.first_divergent
    fd.onnx_node = renamed[fd.onnx_node]
    fd.segment = [renamed[n] for n in fd.segment]
    for record in result.nodes:
        record.metrics = record.metrics and Metrics(**{**record.metrics.to_dict(), "max_abs": 1.85e-07 if record.status == "ok" else 1.85})
    return result


@pytest.mark.parametrize("size", [(100, 30), (120, 30), (125, 30), (130, 30)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_error_column_is_whole_at_every_width(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]) -> None:
    monkeypatch.chdir(tmp_path)
    app = create_app(write_result(long_names_result()))
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        nodes = table(app)
        width = nodes.scrollable_content_region.width
        header = nodes.render_line(0).text
        assert "max abs" in header, header
        rows = [nodes.render_line(y).text for y in range(1, len(CHAIN) + 1)]
        assert all(len(row) == width for row in rows)
        numbers = [re.findall(r"\S*e[-+]\S*", row) for row in rows]
        assert all(re.fullmatch(r"\d\.\d\de[-+]\d\d", n) for found in numbers for n in found), numbers
        assert [found[0] for found in numbers if found][:2] == ["1.85e-07", "1.85e-07"]
        assert nodes.virtual_size.width <= width + 1  # no sideways scrolling needed to read the numbers


async def test_help_names_keys_as_typed(result_json: str) -> None:
    app = create_app(result_json)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one(Static).render())
        for raw in ("equals_sign", "question_mark", "slash", "plus", "escape"):
            assert raw not in text
        assert re.search(r"\n  \+ / = +Graph: one hop more", text)
        assert re.search(r"\n  \? +Show every key", text) and re.search(r"\n  / +Filter", text)
        keys = [line[2:].split("  ")[0] for line in text.splitlines() if line.startswith("  ") and "  " in line[2:]]
        assert keys and all(not k.endswith(("Graph", "Return", "Show")) for k in keys)


async def test_rerun_dialog_enter_submits_from_any_field_and_a_fixed_field_clears_its_error(result_json: str) -> None:
    app = create_app(result_json)
    async with app.run_test(size=(100, 30)) as pilot:
        chosen: list[Any] = []
        app.push_screen(RerunScreen({}, model="model.py:Model"), chosen.append)
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RerunScreen)
        await pilot.press(*"1e-", "enter")
        error = screen.query_one("#rerun-error")
        assert "rtol must be a number" in str(error.render()) and not chosen
        await pilot.press("2")  # the field is fixed: its error goes
        await pilot.pause()
        assert str(error.render()) == ""
        await pilot.press("tab", "tab")
        assert app.focused is screen.query_one("#strategy")
        await pilot.press("space", "down", "enter")  # the open list still takes Enter as its choice
        await pilot.pause()
        assert app.screen is screen and screen.query_one("#strategy").value == "all" and not chosen
        await pilot.press("enter")  # on the strategy, Enter runs too
        await pilot.pause()
        assert chosen == [{"rtol": 0.01, "atol": None, "strategy": "all"}]


async def test_an_unmeasured_suspect_says_why_it_is_suspect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = synthetic_result()
    reason = "its Reshape target contradicts aten.view's size (4, 8)"
    result.first_divergent.suspects = [Suspect("node_shape", "Shape", 0.85, reason),
                                       Suspect(CULPRIT, "LayerNormalization", 0.3, "carries the divergent framework value")]
    app = create_app(write_result(result))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        app.screen.select("node_shape")
        await pilot.press("enter")  # at 100 columns the detail is its own screen
        assert isinstance(app.screen, NodeScreen)
        text = node_view_text(app.screen)
        assert "not compared (unmapped)" not in text
        assert "no PyTorch value corresponds to this node's output" in text
        assert f"suspect #1 of 2 beside the culprit's segment (evidence 0.85): {reason}" in text
        assert f"suspected for what the diagnosis found about it, not for a measurement: {reason}" in text
