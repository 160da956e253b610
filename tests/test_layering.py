"""The layering rules of ARCHITECTURE.md, checked by parsing every module's imports.

Rules (imports point down only):
- records, errors, run, values/compare, search/bisection import no heavy library;
- nothing in search/ imports torch (the search works on numpy arrays and ONNX graphs);
- onnx_reference/ (diff's reference: an ONNX model) imports neither torch, frontends/ nor diagnose/;
- report/* and cli/report never import torch or onnxruntime (they work from a saved result);
- only pipeline.py imports the diagnose/ wing and wires frontends, search and diagnose together;
- only cli/* prints or exits; the library never imports the TUI;
- tui/ never imports torch, onnx or onnxruntime at module level (a saved result opens without them);
- no import cycle anywhere: the package and tui/ (``nodebisect_tui``) together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "nodebisect"
TUI = ROOT / "tui"  # installed as nodebisect_tui
HEAVY = {"torch", "onnx", "onnxruntime", "onnx_graphsurgeon", "onnxscript", "transformers"}
LIGHT_MODULES = ["records", "vocab", "result_file", "frames", "jsonfloat", "errors", "run", "values/compare", "search/bisection", "report/atomic", "report/summary"]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 150
WIRING_MAX_LINES = 300


def modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def tui_modules() -> list[Path]:
    return sorted(TUI.glob("*.py"))


def dotted(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, module_level: bool = False) -> set[str]:
    """Absolute module names imported in the file: anywhere (function-level and TYPE_CHECKING
    imports too), or with ``module_level`` only those that run when the module is imported.

    Relative imports are resolved; ``nodebisect_tui`` is named ``tui``, as the folder is.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = dotted(path).split(".") if path.name == "__init__.py" else dotted(path).split(".")[:-1]
    found: set[str] = set()
    for node in _module_level_nodes(tree) if module_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) if node.level else node.module
            if not base:
                continue
            found.add(base)
            # `from nodebisect.report import bundle` imports the submodule
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {"tui" + n.removeprefix("nodebisect_tui") if n.split(".")[0] == "nodebisect_tui" else n for n in found}


def _module_level_nodes(tree: ast.Module) -> list[ast.AST]:
    """The statements run at import: the module body and its if/try/with blocks, not function bodies."""
    found: list[ast.AST] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        found.append(node)
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            todo += [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]
            todo += [stmt for handler in getattr(node, "handlers", []) for stmt in handler.body]
    return found


def top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def internal_imports(path: Path) -> set[str]:
    known = {dotted(p) for p in modules() + tui_modules()}
    return {n for n in imports_of(path) if n in known and n != dotted(path)}


def rel(path: Path) -> str:
    return str(path.relative_to(PKG))


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_modules_import_no_heavy_library(module: str) -> None:
    heavy = top(imports_of(PKG / f"{module}.py")) & HEAVY
    assert not heavy, f"nodebisect/{module}.py imports {heavy}"


def test_search_never_imports_torch() -> None:
    offenders = [rel(p) for wing in ("search", "values") for p in (PKG / wing).rglob("*.py") if "torch" in top(imports_of(p))]
    assert not offenders, f"the search must not import torch: {offenders}"


def test_the_onnx_reference_never_imports_torch_or_the_frontends() -> None:
    """``diff``'s reference is an ONNX model: it sits beside frontends/, below the pipeline, and needs no PyTorch."""
    offenders = [rel(p) for p in (PKG / "onnx_reference").rglob("*.py")
                 if "torch" in top(imports_of(p)) or any(n.startswith(("nodebisect.frontends", "nodebisect.diagnose")) for n in internal_imports(p))]
    assert not offenders, offenders


def test_report_writers_never_import_torch_or_onnxruntime() -> None:
    paths = list((PKG / "report").rglob("*.py")) + [PKG / "cli" / "report.py"]
    offenders = [f"{rel(p)}: {sorted(top(imports_of(p)) & {'torch', 'onnxruntime'})}" for p in paths if top(imports_of(p)) & {"torch", "onnxruntime"}]
    assert not offenders, f"report writers work from a saved result: {offenders}"


def test_only_the_wiring_module_imports_the_diagnosis() -> None:
    offenders = []
    for p in modules():
        if p.parent.name == "diagnose" or p.name == "pipeline.py":
            continue
        if any(n.startswith("nodebisect.diagnose") for n in internal_imports(p)):
            offenders.append(rel(p))
    assert not offenders, f"only pipeline.py wires the diagnosis in: {offenders}"


def test_lower_wings_never_import_upper_ones() -> None:
    """frontends/runtime/search never reach up into diagnose, pipeline, report or cli."""
    upper = ("nodebisect.diagnose", "nodebisect.pipeline", "nodebisect.cli", "nodebisect.sweep")
    offenders = []
    for wing in ("frontends", "runtime", "search", "values", "report"):
        for p in (PKG / wing).rglob("*.py"):
            bad = sorted(n for n in internal_imports(p) if n.startswith(upper))
            if bad:
                offenders.append(f"{rel(p)} -> {bad}")
    assert not offenders, offenders


def test_package_never_imports_the_tui() -> None:
    offenders = [rel(p) for p in modules() if p != PKG / "cli" / "tui.py" and top(imports_of(p)) & {"tui", "nodebisect_tui"}]
    assert not offenders, f"nodebisect modules importing the TUI: {offenders}"


def test_only_cli_modules_print_or_exit() -> None:
    offenders = []
    for p in modules():
        if p.parent.name == "cli" or p.name == "__main__.py" or p == PKG / "sweep" / "cli.py" or p == PKG / "runtime" / "sandbox.py":
            continue  # the sandbox child's main() exits with its status code
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("print", "exit"):
                offenders.append(f"{rel(p)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr == "exit" and getattr(node.value, "id", "") == "sys":
                offenders.append(f"{rel(p)}:{node.lineno}")
    assert not offenders, f"only cli/ may print or exit: {offenders}"


def test_tui_never_imports_heavy_libraries_at_module_level() -> None:
    """``nodebisect tui RESULT.json`` opens without torch; a live run imports it inside its worker."""
    offenders = [f"tui/{p.name}: {sorted(heavy)}" for p in tui_modules()
                 if (heavy := top(imports_of(p, module_level=True)) & {"torch", "onnx", "onnxruntime"})]
    assert not offenders, offenders


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's and the TUI's modules it imports (the public face ``nodebisect``
    aside: it imports the pipeline only inside ``locate``)."""
    return {dotted(p): {n for n in internal_imports(p) if not n == "nodebisect"} for p in modules() + tui_modules()}


def test_import_graph_sees_the_tui_and_its_relative_imports() -> None:
    graph = import_graph()
    assert "tui.commands" in graph["tui.app"] and "tui.app" in graph["tui.sweep_screen"]
    assert "tui.app" in graph["tui"] and "tui.sweep_screen" in graph["nodebisect.cli.tui"]


def test_no_import_cycle() -> None:
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, f"import cycles: {cycles[:3]}"


def test_module_and_function_sizes() -> None:
    """The package and the TUI alike: no module over 500 lines, no function or class over 150."""
    files = modules() + tui_modules()
    too_long = [f"{p.relative_to(ROOT)}: {n} lines" for p in files if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    for p in files:
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    wiring = len((PKG / "pipeline.py").read_text(encoding="utf-8").splitlines())
    if wiring > WIRING_MAX_LINES:
        too_long.append(f"pipeline.py: {wiring} lines (the wiring module stays under {WIRING_MAX_LINES})")
    assert not too_long, too_long


def test_every_subpackage_is_packaged() -> None:
    """pyproject.toml lists packages by hand: a new folder missing there installs without it (a checkout hides that)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in PKG.rglob("__init__.py") if "__pycache__" not in p.parts}
    assert found - listed == set(), f"packages missing from pyproject.toml: {sorted(found - listed)}"
