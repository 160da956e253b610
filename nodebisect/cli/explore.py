"""``nodebisect explore RESULT``: open a result in Model Explorer with nodebisect's overlays.

RESULT is a ``--model-explorer`` or ``--report`` folder, or a result JSON. The model opened
is the ONNX file the run compared (``model.onnx`` beside the result, or the ``--onnx`` file
it names), else the ``.pt2`` it was run on (its FX graph, with the ``.pt2`` overlays).
Model Explorer (``ai-edge-model-explorer`` + ``model-explorer-onnx``, the ``explorer``
extra) is imported only here; without it the command says how to install it (exit 2).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from nodebisect.errors import BadInputError, ExitCode, NodebisectError

ONNX_EXTENSION = "model_explorer_onnx"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("result", help="a --model-explorer or --report folder, or a result JSON")
    p.add_argument("--model", metavar="FILE", help="the .onnx or .pt2 to open (default: model.onnx beside the result, its --onnx file, its .pt2)")
    p.add_argument("--port", type=int, default=8080, help="Model Explorer's port (default 8080)")
    p.add_argument("--no-browser", action="store_true", help="serve without opening a browser")
    p.add_argument("--print-command", action="store_true", help="print the model-explorer command that opens it, and exit")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=cmd_explore)


def plan(result_arg: str, model_arg: str | None = None) -> tuple[Path, list[Path]]:
    """The model to open and its overlay files (written next to a result JSON's folder when missing)."""
    from nodebisect import load_result
    from nodebisect.report.interop_wording import EXPLORER_WRITE_TIP, explorer_no_model, explorer_no_overlays
    from nodebisect.report.model_explorer import FOLDER, write_overlays

    given = Path(result_arg)
    folder = given if given.is_dir() else given.parent
    result = load_result(str(given / "report.json") if given.is_dir() else str(given))
    model = Path(model_arg) if model_arg else _model_of(folder, result)
    if model is None or not model.is_file():
        raise BadInputError(explorer_no_model(result_arg), tip=f"pass the model with --model FILE.onnx, or {EXPLORER_WRITE_TIP}")
    pt2 = model.suffix == ".pt2"
    found = [p for d in (folder, folder / FOLDER) for p in sorted(d.glob("nodebisect_*.json"))]
    if not found:  # a result JSON alone: the overlays are pure, computed from it
        found = write_overlays(result, tempfile.mkdtemp(prefix="nodebisect-explore-"))
    overlays = [p for p in found if p.name.startswith("nodebisect_pt2_") == pt2]
    if not overlays:
        raise BadInputError(explorer_no_overlays(result_arg, model.name), tip=EXPLORER_WRITE_TIP)
    return model, overlays


def command_line(model: Path, overlays: list[Path], port: int, no_browser: bool) -> str:
    """The ``model-explorer`` command line that opens ``model`` with ``overlays``."""
    words = ["model-explorer", str(model)]
    if model.suffix != ".pt2":
        words.append(f"--extensions={ONNX_EXTENSION}")
    words.append("--node_data_paths=" + ",".join(str(p) for p in overlays))
    words.append(f"--port={port}")
    if no_browser:
        words.append("--no_open_in_browser")
    return shlex.join(words)


def cmd_explore(args: argparse.Namespace) -> int:
    model, overlays = plan(args.result, args.model)
    if args.print_command:
        print(command_line(model, overlays, args.port, args.no_browser))
        return int(ExitCode.MATCH)
    try:
        import model_explorer
    except ImportError:
        from nodebisect.report.interop_wording import EXPLORER_INSTALL, explorer_missing

        raise NodebisectError(explorer_missing(), tip=EXPLORER_INSTALL) from None
    config = model_explorer.config().add_model_from_path(str(model))
    for path in overlays:
        config.add_node_data_from_path(str(path))
    extensions = [] if model.suffix == ".pt2" else [ONNX_EXTENSION]
    print(f"opening {model} with {len(overlays)} overlay(s) in Model Explorer (Ctrl-C stops it)", file=sys.stderr)
    model_explorer.visualize_from_config(config, extensions=extensions, port=args.port, no_open_in_browser=args.no_browser)
    return int(ExitCode.MATCH)


def _model_of(folder: Path, result: object) -> Path | None:
    """model.onnx beside the result, else the --onnx file the run compared, else its .pt2."""
    if (folder / "model.onnx").is_file():
        return folder / "model.onnx"
    env = getattr(result, "environment", {}) or {}
    onnx_path = (env.get("run_inputs") or {}).get("onnx_path")
    if onnx_path and Path(onnx_path).is_file():
        return Path(onnx_path)
    source = str(getattr(result, "model", "") or "")
    if source.endswith(".pt2") and Path(source).is_file():
        return Path(source)
    return None
