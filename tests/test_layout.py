"""The package's layout: imports flow one way through the stage folders (DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO, TESTS

SIM = REPO / "sim"
# cli -> experiments -> run -> engine -> analysis -> model; report beside experiments;
# io and errors at the bottom. A module may import its own level or a lower one.
LEVELS = {
    "errors": 0,
    "io": 0,
    "model": 1,
    "analysis": 2,
    "engine": 3,
    "run": 4,
    "report": 5,
    "experiments": 6,
    "cli": 7,
    "web": 7,
}


def _stage(module: str) -> str:
    """'sim.model.units' -> 'model'; 'sim' -> '' (the package: only __version__ is taken)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function?) for every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            inner = any(
                isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef)
                and node in ast.walk(parent)
                for parent in ast.walk(tree)
            )
            names = (
                [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            )
            found += [(name or "", inner) for name in names]
    return found


def _modules():
    for path in sorted(SIM.rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        yield path, module


def test_imports_flow_down_the_stages() -> None:
    """No module imports a stage above its own (report may not import experiments, ...)."""
    upward = []
    for path, module in _modules():
        own = _stage(module)
        if own not in LEVELS:
            continue
        for name, _inner in _imports(path):
            if name.startswith("sim.") and _stage(name) in LEVELS:
                if LEVELS[_stage(name)] > LEVELS[own]:
                    upward.append(f"{module} imports {name}")
    assert upward == []


def test_no_function_level_import_of_the_package_outside_the_cli() -> None:
    """Only cli.py defers imports (for a quick --help); elsewhere none hides a cycle."""
    hidden = [
        f"{module}: {name}"
        for path, module in _modules()
        if module != "sim.cli"
        for name, inner in _imports(path)
        if inner and (name == "sim" or name.startswith("sim."))
    ]
    assert hidden == []


def test_heavy_libraries_stay_in_their_rooms() -> None:
    """simpy only in engine/, numba only in the kernel's jit module, matplotlib only in the
    report's chart modules."""
    rooms = {
        "simpy": lambda m: m.startswith("sim.engine."),
        "numba": lambda m: m == "sim.engine.kernel_jit",
        "matplotlib": lambda m: m in ("sim.report.charts", "sim.report.sweep_charts"),
    }
    strays = [
        f"{module} imports {name}"
        for path, module in _modules()
        for name, _inner in _imports(path)
        for library, allowed in rooms.items()
        if (name == library or name.startswith(library + ".")) and not allowed(module)
    ]
    assert strays == []


def test_tests_mirror_the_stage_folders_with_unique_basenames() -> None:
    """Every folder of tests/ is a stage folder of sim/, and no two test modules share a basename
    (the folders are not packages: pytest imports each module by its basename)."""
    stray = [
        folder.name
        for folder in TESTS.iterdir()
        if folder.is_dir() and not folder.name.startswith((".", "__"))
        if not (SIM / folder.name / "__init__.py").is_file()
    ]
    names = [path.name for path in TESTS.rglob("test_*.py")]
    doubled = sorted({name for name in names if names.count(name) > 1})
    assert (stray, doubled) == ([], [])
