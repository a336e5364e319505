"""Global screening of many assumptions at once: Morris elementary effects.

One-at-a-time ranges (`sensitivity`) say what each key does with the others at the scenario's
values; when many keys are uncertain together, `morris_screening` says which matter anywhere
in the box of ranges, at a cost of `trajectories` x (keys + 1) levels x replications runs,
stated before anything runs. The method is Morris's (M. D. Morris, "Factorial sampling plans
for preliminary computational experiments", Technometrics 33(2), 1991), ranked by the mean
absolute effect mu* (F. Campolongo, J. Cariboni, A. Saltelli, "An effective screening design
for sensitivity analysis of large models", Environmental Modelling & Software 22(10), 2007).

Each range is mapped onto [0, 1] on 4 levels (0, 1/3, 2/3, 1). A trajectory starts at a
random grid point whose every coordinate is 0 or 1/3 or that plus the step 2/3, and moves
each key once by the step, in a random order; the elementary effect of the key is the change
of a figure (the mean over replications, common random numbers) divided by the signed step,
so it reads as "figure change over the whole range". Per key and figure: mu* (mean |effect|),
mu (mean effect) and sigma (their standard deviation: large against mu* means interaction or
a bend inside the range). Values in between are interpolated: numbers (integers rounded),
durations and rates (as seconds and per-second numbers), and tables or lists of them element
by element; a range of anything else (a word, a flag) is refused, located at its entry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import ScenarioError, UsageError
from sim.experiments.sensitivity import (
    DEFAULT_FIGURES,
    FIGURE_COLUMNS,
    Assumption,
    choose_engine,
    read_assumptions,
)
from sim.experiments.sweep import Job, Runner, finished_rows, replication_seed, table_csv
from sim.io import atomic_write
from sim.model.scenario import load_scenario
from sim.model.units import parse_duration, parse_rate
from sim.run import check_size

LEVELS = 4
STEP = LEVELS / (2 * (LEVELS - 1))  # 2/3: each move spans two of the three gaps


def interpolate(low: Any, high: Any, fraction: float) -> Any:
    """The value `fraction` of the way from low to high (see the module docstring)."""
    if low == high:
        return low
    if isinstance(low, dict) and isinstance(high, dict) and low.keys() == high.keys():
        return {k: interpolate(low[k], high[k], fraction) for k in low}
    if isinstance(low, list) and isinstance(high, list) and len(low) == len(high):
        return [interpolate(a, b, fraction) for a, b in zip(low, high, strict=True)]
    if _plain(low) and _plain(high):
        value = low + fraction * (high - low)
        return round(value) if isinstance(low, int) and isinstance(high, int) else value
    for parse in (parse_duration, parse_rate):
        try:
            a, b = parse(low), parse(high)
        except (ValueError, TypeError):
            continue
        return a + fraction * (b - a)
    raise ValueError(f"cannot interpolate between {low!r} and {high!r}")


def _plain(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def design(keys: int, trajectories: int, seed: int) -> list[tuple[np.ndarray, list[int]]]:
    """`trajectories` Morris trajectories: ((keys + 1) x keys points in [0, 1], moved keys)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(trajectories):
        base = rng.integers(0, LEVELS // 2, size=keys) / (LEVELS - 1)  # 0 or 1/3
        point = base + STEP * rng.integers(0, 2, size=keys)  # start low or high in each key
        order = [int(i) for i in rng.permutation(keys)]
        points = [point.copy()]
        for i in order:
            point[i] = base[i] + STEP if point[i] == base[i] else base[i]
            points.append(point.copy())
        out.append((np.array(points), order))
    return out


def morris_screening(
    scenario_path: str | Path,
    vary: Sequence[str] = (),
    trajectories: int = 10,
    reps: int | None = None,
    workers: int | None = None,
    dask_address=None,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    *,
    engine: str | None = None,
    figures: Sequence[str] = DEFAULT_FIGURES,
    overrides: dict | None = None,
    force: bool = False,
    resume: bool = False,
    announce=None,
) -> list[str]:
    """Screen every range at once; write morris.csv (mu*, mu, sigma per key and figure) and
    morris_runs.csv; return the table as lines, keys by mu* of the first figure."""
    if trajectories < 2:
        raise UsageError(f"--morris needs at least 2 trajectories, got {trajectories}")
    path = Path(scenario_path)
    base, assumptions = read_assumptions(path, vary, overrides)
    for assumption in assumptions:
        _check_interpolable(path, assumption)
    plan = design(len(assumptions), trajectories, base.scenario.seed)
    levels = trajectories * (len(assumptions) + 1)
    engine, reason = choose_engine(base, levels * (reps or 5), engine)
    reps = 1 if engine == "fluid" else (reps or 5)
    if announce is not None:
        announce(f"Morris screening: {trajectories} trajectories x ({len(assumptions)} keys + 1) "
                 f"= {levels} levels x {reps} replications = {levels * reps} runs; "
                 f"engine {reason}")  # fmt: skip
    fixed = {**(overrides or {}), "scenario.engine": engine}
    seeds = [replication_seed(base.scenario.seed, r) for r in range(reps)]
    jobs = []
    for t, (points, _) in enumerate(plan):
        for j, point in enumerate(points):
            values = {a.key: interpolate(a.low, a.high, float(f))
                      for a, f in zip(assumptions, point, strict=True)}  # fmt: skip
            scenario = load_scenario(path, overrides={**fixed, **values})
            check_size(scenario, force=force)
            label = {"key": "morris", "level": f"t{t}.p{j}", "value": ""}
            jobs += [Job(scenario.raw, str(path.resolve()), label, r, s,
                         scenario_sha256=scenario.sha256) for r, s in enumerate(seeds)]  # fmt: skip
    out = Path(out_dir) if out_dir is not None else None
    done = finished_rows(out / "morris_runs.csv", jobs) if resume and out else {}
    todo = [i for i in range(len(jobs)) if i not in done]
    with Runner(workers, dask_address) as runner:
        fresh = runner.run([jobs[i] for i in todo], progress, desc="morris")
    rows = [done.get(i) for i in range(len(jobs))]
    for i, row in zip(todo, fresh, strict=True):
        rows[i] = row
    table = effects(rows, plan, assumptions, list(figures), reps)
    if out is not None:
        atomic_write(out / "morris_runs.csv", table_csv(rows))
        atomic_write(out / "morris.csv", table_csv(table))
    if runner.interrupted:
        raise KeyboardInterrupt  # after writing the runs that finished
    return describe(table, list(figures))


def _check_interpolable(path: Path, assumption: Assumption) -> None:
    try:
        interpolate(assumption.low, assumption.high, 0.5)
    except ValueError as error:
        message = f"Morris screening interpolates ranges: {error}"
        if assumption.index is None:
            raise ScenarioError(message, file="--vary", key=assumption.key) from None
        file, _, line = assumption.where.rpartition(":")
        raise ScenarioError(message, file=path, key=f"sensitivity.{assumption.index}.low",
                            line=int(line)) from None  # fmt: skip


def effects(rows, plan, assumptions, figures, reps) -> list[dict[str, Any]]:
    """mu*, mu and sigma per key and figure from the runs, in design order."""
    means: dict[tuple[int, int], dict[str, float]] = {}
    for index in range(0, len(rows), reps):
        group = [r for r in rows[index : index + reps] if r is not None and not r["error"]]
        t, j = divmod(index // reps, len(assumptions) + 1)
        means[t, j] = {}
        for name in figures:
            column = FIGURE_COLUMNS[name]
            values = [_figure(r, column) for r in group]
            values = [v for v in values if v is not None and math.isfinite(v)]
            means[t, j][name] = float(np.mean(values)) if values else math.nan
    table = []
    for k, assumption in enumerate(assumptions):
        for name in figures:
            found = []
            for t, (points, order) in enumerate(plan):
                step = order.index(k)
                delta = points[step + 1][k] - points[step][k]
                before, after = means[t, step].get(name), means[t, step + 1].get(name)
                if before is not None and after is not None and math.isfinite(after - before):
                    found.append((after - before) / delta)
            data = np.asarray(found)
            table.append({
                "key": assumption.key, "figure": name, "effects": len(found),
                "mu_star": float(np.abs(data).mean()) if len(data) else math.nan,
                "mu": float(data.mean()) if len(data) else math.nan,
                "sigma": float(data.std(ddof=1)) if len(data) > 1 else math.nan,
            })  # fmt: skip
    return table


def _figure(row: dict, column: str) -> float | None:
    if column == "failed_share":
        return None if row.get("success_ratio") is None else 1.0 - row["success_ratio"]
    value = row.get(column)
    return None if value is None else float(value)


def describe(table: list[dict], figures: list[str]) -> list[str]:
    """One line per key: mu* (sigma) of each figure, keys by mu* of the first figure."""
    keys = list(dict.fromkeys(entry["key"] for entry in table))
    cell = {(e["key"], e["figure"]): e for e in table}
    first = figures[0]
    keys.sort(key=lambda k: -np.nan_to_num(cell[k, first]["mu_star"], nan=-1.0))
    lines = ["Morris screening (mu* = mean |change over the whole range|, sigma its spread):"]
    for key in keys:
        parts = [
            f"{name} mu* {cell[key, name]['mu_star']:.4g} (sigma {cell[key, name]['sigma']:.3g})"
            for name in figures
        ]
        lines.append(f"  {key}: " + "; ".join(parts))
    return lines
