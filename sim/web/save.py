"""The tuned scenario as a file to download, and the `outage-sim run` line that runs it.

The original text is edited in place with tomlkit (a TOML editor that keeps comments and
layout), so the saved file is the user's file with only the tuned values changed. A relative
downloads CSV is written as an absolute path, so the file runs wherever it is saved. Nothing
is written on the server: the text goes back to the page.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import AoT, InlineTable

from sim.model.scenario import load_scenario
from sim.report.provenance import toml_text
from sim.web.job import check_overrides


def tuned_text(file: str | Path, overrides: dict[str, Any]) -> str:
    """The scenario file's text with `overrides` applied (checked as a run checks them)."""
    overrides = check_overrides(overrides)
    scenario = load_scenario(file, overrides=overrides)  # refuses what a run would refuse
    text = Path(file).read_text(encoding="utf-8-sig")
    document = tomlkit.parse(text)
    for key, value in overrides.items():
        _set(document, key.split("."), value)
    population = scenario.population
    if population is not None and population.downloads_csv:
        relative = population.downloads_csv
        if not Path(relative).is_absolute():
            table = document["population"]
            table["downloads_csv"] = str(scenario.resolve_path(relative).resolve())
            table["downloads_csv"].comment(f"{relative}, beside the original scenario")
    return tomlkit.dumps(document)


def _set(node: Any, parts: list[str], value: Any) -> None:
    """Set a dotted key, making the tables it needs (inline tables stay inline)."""
    for part in parts[:-1]:
        if isinstance(node, AoT | list):
            node = node[int(part)]
            continue
        if part not in node:
            node[part] = tomlkit.table() if not isinstance(node, InlineTable) else {}
        node = node[part]
    key = parts[-1]
    old = node.get(key) if hasattr(node, "get") else None
    node[key] = value
    # A comment beside the old value may describe it ("at most +50% a day"): say it was tuned.
    trivia = getattr(old, "trivia", None)
    if trivia is not None and trivia.comment and not isinstance(node, InlineTable):
        note = trivia.comment.lstrip("#").strip()
        node[key].comment(f"tuned; was {old.as_string().strip()}: {note}")
        node[key].trivia.comment_ws = trivia.comment_ws


def command_line(file: str | Path, overrides: dict[str, Any], engine: str | None = None) -> str:
    """`outage-sim run FILE --set KEY=VALUE ...` for these overrides (values as TOML)."""
    words = ["outage-sim", "run", str(file)]
    for key, value in check_overrides(overrides).items():
        words += ["--set", f"{key}={_toml_value(value)}"]
    if engine:
        words += ["--engine", engine]
    return shlex.join(words)


def _toml_value(value: Any) -> str:
    """A value as --set reads it: TOML (a string quoted, a table inline)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return toml_text({"value": value}).split("=", 1)[1].strip()
