"""Fixtures for every test; the shared helpers themselves live in tests/helpers.py.

Layout: tests/ mirrors sim/ (tests/model/, tests/engine/, tests/analysis/, tests/report/,
tests/experiments/); end-to-end and cross-cutting tests (the CLI, the reference case, fuzzing,
reliability, scale, the package layout) stay at the top.

Imports: the folders are not packages (no __init__.py) and pytest keeps its default import
mode (prepend), so each test module is imported by its basename, and basenames must be unique
across the folders (tests/test_layout.py checks). pyproject.toml puts tests/ on sys.path
(`pythonpath`, relative to the rootdir), so `from helpers import ...` works the same whether
pytest runs from the repository's top or from inside a subfolder. Test modules do not import
one another; whatever two of them share goes in helpers.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def write_scenario(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write scenario text to tmp_path/<name> and return its path."""

    def write(text: str, name: str = "scenario.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
