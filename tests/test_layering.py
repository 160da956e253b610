"""The layering rule of ARCHITECTURE.md, checked by parsing every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "onnx", "onnxruntime", "onnx_graphsurgeon", "onnxscript", "transformers"}
LIGHT_MODULES = ["records", "errors", "compare", "bisection", "atomic", "summary"]
NO_TORCH_MODULES = ["report", "growth", "graph", "repro", "redact", "report_bundle", "cli_report"]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_modules_import_no_heavy_library(module: str) -> None:
    heavy = top(imports_of(ROOT / "nodebisect" / f"{module}.py")) & HEAVY
    assert not heavy, f"nodebisect/{module}.py imports {heavy}"


@pytest.mark.parametrize("module", NO_TORCH_MODULES)
def test_report_writers_never_import_torch(module: str) -> None:
    path = ROOT / "nodebisect" / f"{module}.py"
    if not path.exists():
        pytest.skip(f"{module}.py not present")
    assert "torch" not in top(imports_of(path))


def test_package_never_imports_the_tui() -> None:
    offenders = [
        p.name
        for p in (ROOT / "nodebisect").glob("*.py")
        if p.name != "cli_tui.py" and top(imports_of(p)) & {"tui", "nodebisect_tui"}
    ]
    assert not offenders, f"nodebisect modules importing the TUI: {offenders}"


def test_only_cli_modules_print() -> None:
    offenders = []
    for p in (ROOT / "nodebisect").glob("*.py"):
        if p.name.startswith("cli") or p.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("print", "exit"):
                offenders.append(f"{p.name}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr == "exit" and getattr(node.value, "id", "") == "sys":
                offenders.append(f"{p.name}:{node.lineno}")
    assert not offenders, f"only cli*.py may print or exit: {offenders}"
