"""Provenance beside a run's outputs: the scenario as run, and how and where it was run.

`scenario.toml` is the scenario's TOML table with every override applied, written back as TOML:
`outage-sim run DIR/scenario.toml` runs the same scenario again (the same `scenario_sha256`).
A downloads CSV named by a relative path is copied beside it under that path, so the folder
reproduces the run on its own. `provenance.json` holds the version, seed, hash, engine, scale,
the command line and the versions of Python, numpy and SimPy.

The TOML writer is small because a scenario's table is small: tables, arrays of tables,
strings, numbers, booleans, dates and times, arrays and inline tables, as `tomllib` reads them.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import sys
from datetime import UTC, date, datetime, time, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from sim import __version__
from sim.io import atomic_write

SCENARIO_NAME = "scenario.toml"
PROVENANCE_NAME = "provenance.json"

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\f": "\\f", "\r": "\\r"}


# -- TOML text ---------------------------------------------------------------------------------
def toml_text(table: dict[str, Any], header: str = "") -> str:
    """TOML text that `tomllib.loads` reads back as `table` (keys whose value is None are left
    out, as TOML has no null); `header` becomes leading comment lines."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    _table(table, (), lines, array_item=False)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(table: dict, path: tuple[str, ...], lines: list[str], array_item: bool) -> None:
    plain, tables, arrays = [], [], []
    for key, value in table.items():
        if value is None:
            continue
        if isinstance(value, dict) and not (path and _fits_inline(value)):
            tables.append((key, value))
        elif _is_table_array(value):
            arrays.append((key, value))
        else:
            plain.append((key, value))
    # A table holding only tables needs no header of its own: theirs define it.
    if path and (plain or array_item or not (tables or arrays)):
        name = ".".join(_key(part) for part in path)
        lines += ["", f"[[{name}]]" if array_item else f"[{name}]"]
    lines += [f"{_key(key)} = {_value(value)}" for key, value in plain]
    for key, value in tables:
        _table(value, (*path, key), lines, array_item=False)
    for key, items in arrays:
        for item in items:
            _table(item, (*path, key), lines, array_item=True)


def _fits_inline(table: dict) -> bool:
    """A small table of plain values reads best inline: time = { dist = "gamma", cv = 2 }."""
    if any(isinstance(v, dict | list | tuple) for v in table.values()):
        return False
    try:
        return len(_value(table)) <= 60
    except TypeError:
        return False


def _is_table_array(value: Any) -> bool:

    return (
        isinstance(value, list | tuple) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _string(text: str, multiline: bool = False) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char == "\n":
            out.append("\n" if multiline else "\\n")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    body = "".join(out)
    # A newline right after the opening quotes is dropped by TOML: ours, not the text's.
    return f'"""\n{body}"""' if multiline else f'"{body}"'


def _value(value: Any) -> str:
    if hasattr(value, "item") and not isinstance(value, list | tuple | dict):
        value = value.item()  # a numpy scalar from a Python-API override
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value, multiline="\n" in value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Path):
        return _string(str(value))
    if isinstance(value, list | tuple):
        if any(v is None for v in value):
            raise TypeError("TOML has no null: a list holds None")
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


# -- the files ---------------------------------------------------------------------------------
def relative(path: str | Path) -> str:
    """A path as the working folder sees it: relative when it lies inside it, so a committed
    report carries no folder of the machine that made it; else as given."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _command() -> list[str]:
    """The command as typed, with the program by its name and paths inside the working
    folder relative to it (a committed report must not carry one machine's folders)."""
    if not sys.argv:
        return []
    args = [relative(a) if a.startswith("/") else a for a in sys.argv[1:]]
    return [Path(sys.argv[0]).name, *args]


def provenance(scenario, summary: dict | None = None, started_at: datetime | None = None) -> dict:
    """The provenance.json dict of a run of `scenario` (with its summary, when there is one)."""
    meta = scenario.scenario
    summary = summary or {}
    return {
        "tool": "outage-sim",
        "version": __version__,
        "scenario": meta.name,
        "scenario_file": relative(scenario.path) if scenario.path else None,
        "scenario_sha256": scenario.sha256,
        "seed": meta.seed,
        "engine": meta.engine,
        "scale": meta.scale,
        "interrupted": bool(summary.get("interrupted", False)),
        "command": _command(),
        "command_line": shlex.join(_command()),
        "started_at": started_at.astimezone(UTC).isoformat() if started_at else None,
        "python": platform.python_version(),
        "numpy": metadata.version("numpy"),
        "simpy": metadata.version("simpy"),
        "platform": platform.platform(),
    }


def write_provenance(
    scenario, out_dir: str | Path, summary: dict | None = None, started_at: datetime | None = None
) -> list[Path]:
    """Write scenario.toml (and a relative downloads CSV beside it) and provenance.json into
    `out_dir`; return the paths written. The scenario file a run was read from is never
    overwritten, even when it is `out_dir`/scenario.toml."""

    out = Path(out_dir)
    written = []
    raw = scenario.raw or scenario.model_dump(mode="python", exclude_none=True)
    target = out / SCENARIO_NAME
    if not (scenario.path and _same_file(target, scenario.path)):
        raw = _with_csv_beside(scenario, raw, out, written)
        header = (
            f"The scenario as run by outage-sim {__version__} (overrides applied).\n"
            f"scenario_sha256 = {scenario.sha256}\n"
            f"Run it again: outage-sim run {relative(target)}"
        )
        atomic_write(target, toml_text(raw, header))
        written.append(target)
    record = provenance(scenario, summary, started_at)
    atomic_write(out / PROVENANCE_NAME, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    written.append(out / PROVENANCE_NAME)
    return written


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _with_csv_beside(scenario, raw: dict, out: Path, written: list[Path]) -> dict:
    """Copy a downloads CSV into `out` under its relative path, so scenario.toml finds it there.

    A path that is absolute or climbs out of the folder (`..`) cannot be copied inside it; it
    is written absolute instead (the hash then differs, as the path is part of the scenario).
    An unrelated file already at the copy's place is never overwritten."""

    population = scenario.population
    if population is None or population.downloads_csv is None:
        return raw
    relative = Path(population.downloads_csv)
    source = scenario.resolve_path(population.downloads_csv)
    copy = out / relative
    inside = not relative.is_absolute() and ".." not in relative.parts
    if inside and _same_file(copy, source):
        return raw
    data = source.read_bytes()
    if inside and (not copy.exists() or copy.read_bytes() == data):
        if not copy.exists():
            atomic_write(copy, data)
            written.append(copy)
        return raw
    raw = {**raw, "population": {**raw["population"], "downloads_csv": str(source)}}
    return raw


def started_from_wall_time(summary: dict) -> datetime:
    """When a run started, from now and its wall time (for results that did not record it)."""
    wall = summary.get("wall_time_s") or 0.0
    return datetime.now(UTC) - timedelta(seconds=float(wall))
