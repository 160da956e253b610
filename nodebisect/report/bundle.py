"""Write the report folder: report.md, report.json, growth.svg, graph.svg, repro/.

The one place the report pieces touch the disk; each piece is rendered by its
own pure module and every file is written atomically. Works from a live result
(with a repro bundle) and from a saved JSON (without one) alike, and never
imports torch.
"""

from __future__ import annotations

import ast
import os
import re
import zipfile
from pathlib import Path

from nodebisect.report.capture_repro import CAPTURE_REPRO, capture_script
from nodebisect.report.atomic import write_bytes, write_text
from nodebisect.report.neighbourhood import render_graph
from nodebisect.report.tf2onnx_wording import reference_name
from nodebisect.report.growth import growth_svg
from nodebisect.records import DIVERGED, RUNTIME_FAILED, STAGE_CAPTURE, LocateResult
from nodebisect.report.redact import Redactor, redact_result
from nodebisect.report.markdown import BundleInfo, render_markdown

REPRO_DIR = "repro"
EXPORT_REPRO = "export_repro.py"
NO_REPRO_NOTE = (
    "No repro bundle: a saved result JSON holds no tensors. Re-run "
    "`nodebisect locate ... --report DIR` on the model to write `repro/`."
)

NO_WINDOW_NOTE = (
    "No repro bundle: no subgraph around the culprit reproduces the mismatch on PyTorch's values alone; "
    "reproduce it with the model and the command above."
)

CAPTURE_NOTE = (
    "No ONNX repro bundle: the divergence happens in torch.export's capture, before ONNX; "
    "reproduce it by comparing eager PyTorch with `torch.export.export(model, args).module()`."
)


def write_report(result: LocateResult, out_dir: str | Path, redact: bool = False) -> Path:
    """Write the report files into ``out_dir`` and return it.

    Args:
        result: a live ``locate`` result (its ``repro`` data gives repro/) or one
            loaded from JSON.
        out_dir: the folder to fill (created if needed).
        redact: strip absolute paths, the user, home and host names first.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    redactor = Redactor.current() if redact else None
    if redactor is not None:
        result = redact_result(result, redactor)
    bundle = BundleInfo(redacted=redact)

    svg = growth_svg(result)
    if svg:
        write_text(out / "growth.svg", svg)
        bundle.growth_file = "growth.svg"

    picture = render_graph(result)
    if picture is not None:
        if picture.svg is not None:
            write_bytes(out / "graph.svg", picture.svg)
            bundle.graph_file = "graph.svg"
            _remove_stale(out / "graph.dot")
        else:
            write_text(out / "graph.dot", picture.dot)
            bundle.graph_file = "graph.dot"
            bundle.graph_message = picture.message
            _remove_stale(out / "graph.svg")

    if result.repro is not None and not result.repro.reproduces:
        # Never a repro that passes: no window reproduced the mismatch (diagnose.repro_check).
        _remove_stale_repro(out / REPRO_DIR)
        bundle.repro_note = f"No repro bundle: {result.repro.note}." if result.repro.note else NO_WINDOW_NOTE
    elif result.repro is not None:
        from nodebisect.report.repro import build_repro  # onnx: only a live run has repro data

        files = build_repro(result.repro, result.tolerance, scrub=redactor.scrub if redactor else None,
                            reference=reference_name(result.environment))
        files.update(_torch_repro(result))
        for rel, data in files.items():
            write_bytes(out / REPRO_DIR / rel, data)
        bundle.repro_dir = REPRO_DIR
        bundle.repro_bytes = sum(len(d) for d in files.values())
        bundle.repro_files = sorted(rel for rel in files if "/" not in rel) + ["test_data_set_0/"]
        if any(rel.startswith("unoptimized/") for rel in files):
            bundle.repro_files.append("unoptimized/")
        bundle.repro_window = result.repro.note
    elif _existing_repro(out, result, bundle):
        pass  # `nodebisect report DIR/report.json --out DIR`: the repro written by locate stays
    elif result.first_divergent is not None and result.first_divergent.stage == STAGE_CAPTURE:
        script = capture_script(result)
        if script:  # eager vs torch.export, the way locate compared them
            write_text(out / REPRO_DIR / CAPTURE_REPRO, redactor.scrub(script) if redactor else script)
            bundle.repro_dir = REPRO_DIR
            bundle.repro_files = [CAPTURE_REPRO]
            bundle.repro_note = (
                f"`repro/{CAPTURE_REPRO}` loads the model as nodebisect did and compares eager PyTorch with "
                f"`torch.export.export(model, args).module()`: `python repro/{CAPTURE_REPRO}` exits 1 while they differ "
                "(pass the `--inputs` file as its argument if the run used one)."
            )
        else:
            bundle.repro_note = CAPTURE_NOTE
    elif result.verdict in (DIVERGED, RUNTIME_FAILED) and result.first_divergent is not None:
        bundle.repro_note = NO_REPRO_NOTE
    if result.export_failure is not None and result.export_failure.repro_script:
        # A runnable script that fails the way the export did (frontends.export_repro).
        script = relocated(result.export_failure.repro_script, out / REPRO_DIR)
        write_text(out / REPRO_DIR / EXPORT_REPRO, redactor.scrub(script) if redactor else script)
        bundle.repro_dir = REPRO_DIR
        bundle.repro_files = [EXPORT_REPRO]

    if result.nodes:  # Model Explorer overlays: `nodebisect explore DIR` opens them (report.model_explorer)
        from nodebisect.report.model_explorer import FOLDER, write_overlays

        write_overlays(result, out / FOLDER)
    write_text(out / "report.json", result.to_json())
    write_text(out / "report.md", render_markdown(result, bundle))
    return out


# frontends.export_repro.RAN_IN_LINE, as written into a factory repro.
_RAN_IN = re.compile(r"^RAN_IN = ('[^'\n]*'|\"[^\"\n]*\")  # the folder nodebisect ran in$", re.M)


def relocated(script: str, folder: Path) -> str:
    """An export repro whose ``RAN_IN`` is relative to the script's own folder: it runs from any directory,
    and keeps running when the report folder moves together with the model's folder."""
    found = _RAN_IN.search(script)
    if found is None:
        return script
    try:
        ran_in = ast.literal_eval(found.group(1))
        rel = os.path.relpath(ran_in, folder.resolve()) if os.path.isabs(ran_in) else None
    except (ValueError, SyntaxError):  # redacted, or another drive
        return script
    if rel is None:
        return script
    line = f"RAN_IN = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), {rel!r}))  # the folder nodebisect ran in"
    return script[: found.start()] + line + script[found.end():]


def _existing_repro(out: Path, result: LocateResult, bundle: BundleInfo) -> bool:
    """Describe a repro/ already in ``out`` when it is this culprit's (its expected.npz holds the value)."""
    folder = out / REPRO_DIR
    fd = result.first_divergent
    if fd is None or not (folder / "repro.py").is_file():
        return False
    try:
        with zipfile.ZipFile(folder / "expected.npz") as z:
            if f"{fd.onnx_value}.npy" not in z.namelist():
                return False
    except (OSError, zipfile.BadZipFile):
        return False
    files = [p for p in folder.rglob("*") if p.is_file()]
    bundle.repro_dir = REPRO_DIR
    bundle.repro_bytes = sum(p.stat().st_size for p in files)
    bundle.repro_files = sorted(p.name for p in files if p.parent == folder) + (
        ["test_data_set_0/"] if (folder / "test_data_set_0").is_dir() else []
    )
    bundle.repro_window = _holds(folder / "repro.py")
    return True


def _holds(script: Path) -> str:
    """What repro.py says its model holds (the "It holds ..." paragraph of its docstring), or ""."""
    try:
        text = script.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    start = text.find("\nIt holds ")
    if start < 0:
        return ""
    paragraph = text[start + len("\nIt holds ") :].split("\n\n", 1)[0]
    return " ".join(paragraph.split()).rstrip(".")


def _torch_repro(result: LocateResult) -> dict[str, bytes]:
    """repro/torch_repro.py: the culprit's aten call alone, beside onnxruntime's answer (report.torch_repro)."""
    call, fd = result.repro.torch_call, result.first_divergent
    if not call or fd is None:
        return {}
    from nodebisect.report.torch_repro import torch_files
    from nodebisect.report.wording import mechanism_text
    from nodebisect.values.compare import DEFAULT_TOLERANCES

    tol = result.tolerance.get(fd.metrics.expected_dtype) or DEFAULT_TOLERANCES["float32"].to_dict()
    return torch_files(call, float(tol["rtol"]), float(tol["atol"]), mechanism_text(fd))


def _remove_stale_repro(folder: Path) -> None:
    """Drop a repro/ of an earlier run: it would stand for this result and may pass."""
    if (folder / "repro.py").is_file():
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def _remove_stale(path: Path) -> None:
    """Drop a picture of the other format left by an earlier run, so the two never disagree."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


__all__ = ["CAPTURE_NOTE", "NO_REPRO_NOTE", "NO_WINDOW_NOTE", "write_report"]
