"""One workbench run: overrides from the page in, the summary and per-bin series out.

The page's input goes through the scenario checks the CLI uses (`load_scenario` with
overrides, then `check_runnable` and the run-size guard), so a bad value is refused with the
same one-line ScenarioError. Overrides may not name a file: the keys that hold paths are
refused before anything is loaded. The payload is plain JSON (no NaN: null instead).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import numpy as np

from sim.engine.fluid_graph import unsupported
from sim.errors import ScenarioError, UsageError
from sim.model.scenario import Scenario, load_scenario, parse_override
from sim.model.workload import Demand
from sim.report.text import headline
from sim.run import check_runnable, check_size, estimate_requests, simulate

ENGINES = ("auto", "fluid", "des")
# Below this many simulated requests the DES answers in about a second (the kernel runs about
# 5M attempts a second on this project's 2-core machine, README "Performance"), so "auto"
# takes the exact engine; above it, the fluid engine where it can run the scenario.
QUICK_DES_REQUESTS = 3_000_000
# Keys whose value names a file the server would read (resolved beside the scenario file).
PATH_KEYS = ("population.downloads_csv",)
SERIES = (
    "t_s", "fresh", "succeeded", "timed_out", "rejected", "dropped", "queue", "servers",
    "demand_rps", "offered_rps", "capacity_rps", "latency_p50", "latency_p95", "latency_p99",
    "server_latency_p99", "success_ratio",
)  # fmt: skip
TIER_SERIES = ("queue", "utilization")


def check_overrides(overrides: Any) -> dict[str, Any]:
    """The page's overrides as a dict of dotted keys to TOML values; refuse (ScenarioError)
    anything else, and any key or table that would name a file."""
    if not isinstance(overrides, dict):
        raise ScenarioError("overrides are a JSON object of dotted keys to values", file="--set")
    checked = {}
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise ScenarioError("an override's key is a string", file="--set")
        key, _ = parse_override(f"{key}=0")  # the --set form of a dotted key, or its error
        for path_key in PATH_KEYS:
            if path_key == key or path_key.startswith(key + ".") or key.startswith(path_key):
                raise ScenarioError(
                    "the workbench does not read files named from the page; change the "
                    f"path in the scenario file ({path_key})",
                    file="--set",
                    key=key,
                )
        _check_value(key, value)
        checked[key] = value
    return checked


def _check_value(key: str, value: Any) -> None:
    if value is None:
        raise ScenarioError("TOML has no null: give a value", file="--set", key=key)
    if isinstance(value, dict):
        for inner, item in value.items():
            if any(path.rsplit(".", 1)[-1] == inner for path in PATH_KEYS):
                raise ScenarioError(
                    "the workbench does not read files named from the page",
                    file="--set",
                    key=f"{key}.{inner}",
                )
            _check_value(f"{key}.{inner}", item)
    elif isinstance(value, list):
        for item in value:
            _check_value(key, item)
    elif not isinstance(value, str | int | float | bool):
        raise ScenarioError(f"not a TOML value: {value!r}", file="--set", key=key)


def prepare(file: str | Path, overrides: dict[str, Any], engine: str = "auto") -> Scenario:
    """The scenario a run of the page would simulate, checked as the CLI checks it (raises
    ScenarioError, RunTooLargeError or UsageError); `engine` "auto" picks one (module doc)."""
    if engine not in ENGINES:
        raise UsageError(f"engine is one of {', '.join(ENGINES)}, got {engine!r}")
    overrides = check_overrides(overrides)
    if engine != "auto":
        overrides = {**overrides, "scenario.engine": engine}
    scenario = load_scenario(file, overrides=overrides)
    if engine == "auto" and "scenario.engine" not in overrides:
        chosen = choose_engine(scenario)
        if chosen != scenario.scenario.engine:
            scenario = load_scenario(file, overrides={**overrides, "scenario.engine": chosen})
    check_runnable(scenario)
    check_size(scenario, Demand(scenario))
    return scenario


def choose_engine(scenario: Scenario) -> str:
    """The DES when it is quick or the fluid engine cannot model the scenario (a graph with
    what its fluid model leaves out: `fluid_graph.unsupported`); else fluid."""
    if unsupported(scenario) and scenario.has_graph:
        return "des"
    if estimate_requests(scenario) <= QUICK_DES_REQUESTS:
        return "des"
    return "fluid"


def run(
    file: str | Path,
    overrides: dict[str, Any],
    engine: str = "auto",
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Simulate the page's scenario and return the payload of `POST /api/run`."""
    scenario = prepare(file, overrides, engine)
    result = simulate(scenario, progress=progress, force=False)
    return payload(result)


def payload(result) -> dict[str, Any]:
    """What the page draws: the engine, the headline (the report's wording), the summary and
    the per-bin series (per tier too)."""
    summary, ts = result.summary, result.timeseries
    scenario = result.scenario
    series = {name: _floats(ts[name]) for name in SERIES if name in ts.columns}
    tiers = list(scenario.tier_specs) if scenario.has_graph else []
    for tier in tiers:
        for column in TIER_SERIES:
            name = f"{tier}.{column}"
            if name in ts.columns:
                series[name] = _floats(ts[name])
    limit = scenario.service.queue_limit
    facts = headline(summary)
    return {
        "engine": summary["engine"],
        "wall_s": summary["wall_time_s"],
        "headline": {**facts, "cards": [list(card) for card in facts["cards"]]},
        "summary": plain(summary),
        "series": series,
        "tiers": tiers,
        "queue_limit": limit if math.isfinite(limit) else None,
    }


def _floats(column) -> list[float | None]:
    values = np.asarray(column, dtype=float).tolist()
    return [v if math.isfinite(v) else None for v in values]


def plain(value: Any) -> Any:
    """`value` as strict JSON data: NaN and infinities become null, numpy scalars numbers,
    dates ISO strings, tuples lists."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value
