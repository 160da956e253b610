"""Meeting users in their tools (issue #25): Model Explorer overlays, Polygraphy golden values,
the pytest assertion, torch.onnx.InputObserver captures.

Each file is checked by the real tool that reads it: the overlays by Model Explorer's own
node-data classes and adapters (every key is a node the viewer shows), the golden values by
the real ``polygraphy run`` (a clean model passes, the divergent sample fails first on the
culprit's tensor). Optional packages skip cleanly when absent.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

SAMPLE = "SdpaFullyMaskedRow"
QUICK = ("--oracle", "off", "--no-capture-check", "--no-isolate-crashes", "-q")

CLEAN_FACTORY = """
import torch

class Clean(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 16)
        self.b = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))

def build():
    torch.manual_seed(0)
    return Clean().eval(), (torch.randn(3, 8),)
"""


class Atan2OfZero(torch.nn.Module):
    """atan2(0 * y, x): a signed-zero first argument the ONNX lowering answers differently for x < 0."""

    def __init__(self) -> None:
        super().__init__()
        self.l = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.atan2(self.l(x) * 0, x[..., :4])


@pytest.fixture(scope="module")
def divergent(built_samples: Path, tmp_path_factory: pytest.TempPathFactory, cli: Any) -> dict[str, Any]:
    """The sample located once with every interop output."""
    out = tmp_path_factory.mktemp("interop_divergent")
    done = cli("locate", built_samples / f"{SAMPLE}.pt2", *QUICK, "--model-explorer", out / "me", "--polygraphy", out / "pg", "--report", out / "report", "--strict-masked")
    assert done.code == 1, done.err
    result = json.loads((out / "me" / "report.json").read_text())
    return {"dir": out, "result": result, "err": done.err, "pt2": built_samples / f"{SAMPLE}.pt2"}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, cli: Any) -> Path:
    out = tmp_path_factory.mktemp("interop_clean")
    (out / "clean.py").write_text(CLEAN_FACTORY)
    done = cli("locate", f"{out / 'clean.py'}:build", *QUICK, "--polygraphy", out / "pg", "--model-explorer", out / "me")
    assert done.code == 0, done.err
    return out


def _overlay(folder: Path, name: str) -> tuple[str, dict[str, Any]]:
    (graph, data), = json.loads((folder / name).read_text()).items()
    return graph, data


def _colour(value: float, thresholds: list[dict[str, Any]]) -> str:
    """The colour Model Explorer gives ``value``: the first threshold whose bound it does not exceed."""
    return next(t["bgColor"] for t in thresholds if value <= t["value"])


# -- 1. Model Explorer ---------------------------------------------------------------------------


def test_onnx_overlays_name_nodes_of_the_onnx_adapter(divergent: dict[str, Any]) -> None:
    ndb = pytest.importorskip("model_explorer.node_data_builder")
    adapter = pytest.importorskip("model_explorer_onnx.main")
    me = divergent["dir"] / "me"
    graphs = adapter.ONNXAdapter().convert(str(me / "model.onnx"), {})["graphs"]
    ids = {n.id for n in graphs[0].nodes}
    fd = divergent["result"]["first_divergent"]
    atol = divergent["result"]["tolerance"]["float32"]["atol"]
    for name in ("nodebisect_max_abs.json", "nodebisect_local_error.json", "nodebisect_status.json"):
        graph, data = _overlay(me, name)
        assert graph == graphs[0].id == "main_graph"
        assert data["results"] and set(data["results"]) <= ids, (name, set(data["results"]) - ids)
        # The viewer's own classes take every field as written.
        ndb.ModelNodeData(graphsData={graph: ndb.GraphNodeData(
            results={k: ndb.NodeDataResult(**v) for k, v in data["results"].items()},
            thresholds=[ndb.ThresholdItem(**t) for t in data.get("thresholds", [])], name=data["name"],
        )}).to_json_string()
    _, errors = _overlay(me, "nodebisect_max_abs.json")
    colours = {k: _colour(v["value"], errors["thresholds"]) for k, v in errors["results"].items()}
    assert colours[fd["onnx_node"]] == "#d32f2f"  # 0.417 is > 1000 x atol
    for key, result in errors["results"].items():  # within atol is green, and only then
        assert (colours[key] == "#388e3c") == (result["value"] <= atol), key
    _, status = _overlay(me, "nodebisect_status.json")
    assert status["results"][fd["onnx_node"]]["value"] == "culprit"
    assert {status["results"][s]["value"] for s in fd["segment"] if s != fd["onnx_node"]} <= {"suspect", "segment"}
    assert status["results"]["node_linear"]["value"] == "match" and status["results"]["node_linear_1"]["value"] == "inherited"
    _, local = _overlay(me, "nodebisect_local_error.json")
    assert local["results"][fd["onnx_node"]]["value"] == pytest.approx(fd["isolated_metrics"]["max_abs"])


def test_pt2_overlays_name_nodes_of_the_exported_program_adapter(divergent: dict[str, Any]) -> None:
    adapter = pytest.importorskip("model_explorer.builtin_pytorch_exportedprogram_adapter")
    graphs = adapter.BuiltinPytorchExportedProgramAdapter().convert(str(divergent["pt2"]), {"const_element_count_limit": 16})["graphs"]
    ids = {n.id for n in graphs[0].nodes}
    graph, status = _overlay(divergent["dir"] / "me", "nodebisect_pt2_status.json")
    assert graph == graphs[0].id == "graph"
    # The .pt2's own names (reshape_3), not the decomposed program's (view_3) that the result records.
    assert set(status["results"]) <= ids and "reshape_3" in status["results"]
    assert status["results"]["scaled_dot_product_attention"]["value"] == "culprit"


def test_every_report_bundle_carries_the_onnx_overlays(divergent: dict[str, Any]) -> None:
    bundle = divergent["dir"] / "report" / "model_explorer"
    for name in ("nodebisect_max_abs.json", "nodebisect_local_error.json", "nodebisect_status.json"):
        assert (bundle / name).read_text() == (divergent["dir"] / "me" / name).read_text()


def test_explore_prints_the_viewer_command(divergent: dict[str, Any], cli: Any) -> None:
    me = divergent["dir"] / "me"
    done = cli("explore", me, "--print-command", "--no-browser")
    assert done.code == 0, done.err
    words = shlex.split(done.out)
    assert words[:3] == ["model-explorer", str(me / "model.onnx"), "--extensions=model_explorer_onnx"]
    paths = next(w for w in words if w.startswith("--node_data_paths=")).split("=", 1)[1].split(",")
    assert sorted(Path(p).name for p in paths) == ["nodebisect_local_error.json", "nodebisect_max_abs.json", "nodebisect_status.json"]
    pt2 = cli("explore", me, "--model", divergent["pt2"], "--print-command")
    assert "nodebisect_pt2_status.json" in pt2.out and "--extensions" not in pt2.out


def test_explore_without_model_explorer_says_how_to_install(divergent: dict[str, Any], cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "model_explorer", None)  # as if not installed
    done = cli("explore", divergent["dir"] / "me")
    assert done.code == 2
    assert "Model Explorer is not installed" in done.err and "nodebisect[explorer]" in done.err and "Traceback" not in done.err


@pytest.mark.slow
def test_explore_serves_the_model_with_its_overlays(divergent: dict[str, Any]) -> None:
    """The real viewer: `nodebisect explore DIR --no-browser` serves the model and loads each overlay file."""
    pytest.importorskip("model_explorer")
    pytest.importorskip("model_explorer_onnx")
    import socket
    import time
    import urllib.parse
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    env = {**__import__("os").environ, "PYTHONPATH": f"{root}:{root / '.pp'}"}
    server = subprocess.Popen([sys.executable, "-m", "nodebisect", "explore", str(divergent["dir"] / "me"), "--no-browser", f"--port={port}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline, health = time.time() + 120, ""
        while time.time() < deadline and health != "model_explorer_ok":
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            try:
                health = urllib.request.urlopen(f"http://127.0.0.1:{port}/check_health", timeout=5).read().decode()
            except OSError:
                time.sleep(1)
        api = f"http://127.0.0.1:{port}/api/v1"
        status = divergent["dir"] / "me" / "nodebisect_status.json"
        read = json.loads(urllib.request.urlopen(f"{api}/read_text_file?path={status}", timeout=30).read())
        assert json.loads(read["content"]) == json.loads(status.read_text())
        # What the page asks the server for the model: the ONNX adapter's graph, whose node ids the overlay keys name.
        cmd = {"extensionId": "onnx_adapter", "cmdId": "convert", "modelPath": str(divergent["dir"] / "me" / "model.onnx"),
               "settings": {}, "deleteAfterConversion": False}
        graphs = json.loads(urllib.request.urlopen(f"{api}/send_command?json={urllib.parse.quote(json.dumps(cmd))}", timeout=120).read())
        main = next(g for g in _graphs(graphs) if g["id"] == "main_graph")
        assert set(json.loads(read["content"])["main_graph"]["results"]) <= {n["id"] for n in main["nodes"]}
    finally:
        server.terminate()
        server.wait(timeout=30)


def _graphs(response: Any) -> list[dict[str, Any]]:
    """The graphs of an adapter's answer, however the server wraps them (a collection or a list)."""
    if isinstance(response, dict) and "graphs" in response:
        return list(response["graphs"])
    if isinstance(response, dict) and "graphCollections" in response:
        return [g for c in response["graphCollections"] for g in c["graphs"]]
    raise AssertionError(f"unexpected adapter response: {str(response)[:300]}")


def test_explore_a_result_without_a_model_is_a_usage_error(tmp_path: Path, divergent: dict[str, Any], cli: Any) -> None:
    result = dict(divergent["result"], model="gone.pt2")
    (tmp_path / "r.json").write_text(json.dumps(result))
    done = cli("explore", tmp_path / "r.json", "--print-command")
    assert done.code == 2 and "no model to open" in done.err


# -- 2. Polygraphy ---------------------------------------------------------------------------------


def _polygraphy(folder: Path) -> tuple[int, list[str], list[str]]:
    """Run the README's command; its exit code, the tensors that passed and those that failed."""
    pytest.importorskip("polygraphy")
    exe = Path(sys.executable).parent / "polygraphy"
    if not exe.exists():
        pytest.skip("the polygraphy command is not installed")
    line = next(l.strip() for l in (folder / "README.txt").read_text().splitlines() if l.strip().startswith("polygraphy run"))
    done = subprocess.run([str(exe), *shlex.split(line)[1:]], cwd=folder, capture_output=True, text=True, timeout=300)
    text = done.stdout + done.stderr
    return done.returncode, re.findall(r"PASSED \| Output: '([^']+)'", text), re.findall(r"FAILED \| Output: '([^']+)'", text)


@pytest.mark.slow
def test_polygraphy_fails_first_on_the_culprits_tensor(divergent: dict[str, Any]) -> None:
    code, passed, failed = _polygraphy(divergent["dir"] / "pg")
    fd = divergent["result"]["first_divergent"]
    order = [n["onnx_value"] for n in divergent["result"]["nodes"]]
    assert code != 0 and failed, failed
    assert min(failed, key=order.index) == fd["onnx_value"]
    assert all(order.index(p) < order.index(fd["onnx_value"]) for p in passed)  # everything before it agrees
    golden = json.loads((divergent["dir"] / "pg" / "golden.json").read_text())
    assert golden["polygraphy_class"] == "RunResults" and golden["lst"][0][0] == "pytorch"


@pytest.mark.parametrize("count, names_each", [(3, True), (40, True), (41, False)])
def test_polygraphy_command_names_tensors_or_marks_all(count: int, names_each: bool) -> None:
    from nodebisect.interop.polygraphy import command
    from nodebisect.records import LocateResult

    tensors = [f"v{i}" for i in range(count)]
    words = shlex.split(command(LocateResult(verdict="match", tolerance={"float32": {"rtol": 1e-2, "atol": 1e-3}}), tensors))
    marked = words[words.index("--onnx-outputs") + 1 : words.index("--atol")]
    assert marked == (tensors if names_each else ["*"])
    assert words[-4:] == ["--atol", "0.001", "--rtol", "0.01"]


@pytest.mark.slow
def test_polygraphy_passes_a_clean_model(clean: Path) -> None:
    code, passed, failed = _polygraphy(clean / "pg")
    assert code == 0 and not failed and len(passed) >= 3, (passed, failed)


@pytest.mark.slow
def test_golden_values_load_in_polygraphy(clean: Path) -> None:
    """Polygraphy's own loaders read the files (the API the CLI uses)."""
    pytest.importorskip("polygraphy")
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    results = RunResults.load(str(clean / "pg" / "golden.json"))
    (runner, iterations), = results.items()
    assert runner == "pytorch" and len(iterations) == 1 and iterations[0].keys()
    feeds = load_json(str(clean / "pg" / "inputs.json"))
    assert [list(f) for f in feeds] == [["x"]] and feeds[0]["x"].shape == (3, 8)


# -- 3. the pytest assertion -----------------------------------------------------------------------


@pytest.mark.slow  # a full locate (or a fresh Python): the fast tier stays under 3 minutes
def test_the_readme_ci_guard_passes_a_clean_model(tmp_path: Path) -> None:
    """The README's "guard a model's export in CI" test, run as written."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)\n```", readme[readme.index("<!-- ci-guard"):], re.S).group(1)
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    namespace["test_export_matches"](tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verdict"] == "match" and (tmp_path / "report.md").is_file()


@pytest.mark.slow
def test_assert_export_matches_names_the_culprit(built_samples: Path, tmp_path: Path) -> None:
    from nodebisect.testing import assert_export_matches

    with pytest.raises(AssertionError) as info:
        assert_export_matches(str(built_samples / "Atan2ZeroY.pt2"), report_dir=tmp_path, oracle="off", isolate_crashes=False)
    message = str(info.value)
    result = json.loads((tmp_path / "report.json").read_text())
    assert message.startswith(f"DIVERGED at {result['first_divergent']['onnx_node']} (")
    assert "stage:" in message and str(tmp_path / "repro" / "repro.py") in message


# -- 4. torch.onnx.InputObserver -------------------------------------------------------------------


@pytest.fixture(scope="module")
def observed() -> tuple[Any, Any]:
    observer_cls = getattr(torch.onnx, "InputObserver", None)
    if observer_cls is None:
        pytest.skip("torch.onnx.InputObserver needs torch >= 2.11")
    torch.manual_seed(0)
    model = Atan2OfZero().eval()
    observer = observer_cls()
    with observer(model):
        for batch in (2, 3, 5):
            model(torch.randn(batch, 8))
    return model, observer


@pytest.mark.slow  # a full locate (or a fresh Python): the fast tier stays under 3 minutes
def test_locate_compares_every_observed_call(observed: tuple[Any, Any]) -> None:
    from nodebisect import locate

    model, observer = observed
    result = locate(model, observer, check_capture=False, oracle="off", isolate_crashes=False)
    assert result.verdict == "diverged" and result.first_divergent.onnx_node == "node_atan2"
    assert [t["shapes"] for t in result.trials] == [[[2, 8]], [[3, 8]], [[5, 8]]]
    assert [t["inputs"] for t in result.trials] == ["observed call 1", "observed call 2", "observed call 3"]
    assert [t["onnx_node"] for t in result.trials] == ["node_atan2"] * 3
    assert any("dynamic dimensions" in n for n in result.notes)


@pytest.mark.slow
def test_inputs_of_a_saved_capture_compare_every_call(observed: tuple[Any, Any], tmp_path: Path, cli: Any) -> None:
    from nodebisect.frontends.observed_inputs import save_capture

    model, observer = observed
    save_capture(observer, str(tmp_path / "capture.pt"))
    (tmp_path / "m.py").write_text(
        "import torch\n\nclass Atan2OfZero(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.l = torch.nn.Linear(8, 4)\n\n    def forward(self, x):\n        return torch.atan2(self.l(x) * 0, x[..., :4])\n\n"
        "def build():\n    return Atan2OfZero().eval()\n"
    )
    done = cli("locate", f"{tmp_path / 'm.py'}:build", "--inputs", tmp_path / "capture.pt", *QUICK, "--json", tmp_path / "r.json")
    assert done.code == 1, done.err
    trials = json.loads((tmp_path / "r.json").read_text())["trials"]
    assert [t["shapes"] for t in trials] == [[[2, 8]], [[3, 8]], [[5, 8]]]


@pytest.mark.slow
def test_locate_compares_every_generate_step_of_a_tiny_llama() -> None:
    """An LLM's generate() calls: one export (dynamic), each call's prefix compared node by node."""
    transformers = pytest.importorskip("transformers")
    from nodebisect import locate

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(config).eval()
    observer = torch.onnx.InputObserver()
    with observer(model):  # use_cache=False: transformers 5's DynamicCache has no clone() for the observer
        model.generate(torch.randint(0, 64, (1, 5)), max_new_tokens=2, do_sample=False, pad_token_id=0, use_cache=False)
    result = locate(model, observer, model_settings=["use_cache=False"], check_capture=False, oracle="off", isolate_crashes=False)
    assert result.verdict == "match", result.notes
    assert [t["shapes"][0] for t in result.trials] == [[1, 5], [1, 6]]
    assert all(t["verdict"] == "match" for t in result.trials)


def test_explore_a_pt2_run_without_its_fx_overlays_says_how_to_write_them(divergent: dict[str, Any], cli: Any) -> None:
    """A --report bundle has the ONNX overlays only (the .pt2's names need the live run)."""
    done = cli("explore", divergent["dir"] / "report", "--model", divergent["pt2"], "--print-command")
    assert done.code == 2 and "no Model Explorer overlays" in done.err and "--model-explorer DIR" in done.err


def test_interop_flags_on_a_run_without_an_onnx_model_say_nothing_was_written(tmp_path: Path) -> None:
    """An export that failed hands over no Prepared: one line says so, and no folder appears."""
    import argparse

    from nodebisect.cli import interop
    from nodebisect.records import LocateResult

    args = argparse.Namespace(model_explorer=str(tmp_path / "me"), polygraphy=str(tmp_path / "pg"))
    kept = interop.keeper(args)
    assert kept is not None and interop.keeper(argparse.Namespace(model_explorer=None, polygraphy=None)) is None
    lines = interop.write(args, LocateResult(verdict="export_failed"), kept)
    assert lines == ["nothing written for --model-explorer and --polygraphy: the run has no ONNX model (see the verdict below)"]
    assert not (tmp_path / "me").exists() and not (tmp_path / "pg").exists()
