"""Which assumption decides the outage: each key at its low and high value, against the baseline.

`sensitivity` reads the ranges from the scenario's `[[sensitivity]]` table and from `--vary
KEY=LOW,HIGH` (a flag replaces the table's entry for the same key), checks every value by
applying it as `--set` does (a bad key or value is a located ScenarioError), and runs the
baseline and each key at its low and at its high end (the other keys at the scenario's values)
through sweep's machinery: `reps` replications per level with common random numbers (the same
seeds at every level, so differences are paired), on local processes or Dask, results kept
when interrupted and picked up again with `resume`.

How a key is judged (the conclusion, the verdicts): see `sim.experiments.verdicts`.

Outputs (`write_sensitivity`): results.csv (one row per run, sweep's columns, what `resume`
reads), sensitivity.csv (one row per key and level: sweep's aggregate figures with their 95%
intervals, the paired differences of the chosen figures, the conclusion at that level and the
key's verdict), tornado.png, sensitivity.md and sensitivity.html.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

from sim.engine.fluid_graph import unsupported
from sim.errors import ScenarioError, UsageError
from sim.experiments.sweep import (
    Job,
    ResultsLog,
    Runner,
    finished_rows,
    replication_seed,
    row_columns,
    table_csv,
)
from sim.experiments.verdicts import (  # noqa: F401 - part of this module's API
    BASELINE,
    CHANGES,
    DEFAULT_FIGURES,
    DES_REPS,
    FIGURE_COLUMNS,
    FLUID_REPS,
    MOVES,
    NO_EFFECT,
    Analysis,
    Assumption,
    analyse,
)
from sim.io import atomic_write
from sim.model.scenario import Scenario, load_scenario, locate_key, parse_override
from sim.report.sensitivity_page import write_pages
from sim.report.sweep_charts import write_tornado_chart
from sim.run import MAX_SIMULATED_REQUESTS, check_size, estimate_requests

# ---------------------------------------------------------------------------------------------
# The ranges: the table and --vary, each checked by applying it


def parse_vary(assignment: str) -> Assumption:
    """'population.activation=0.5,0.9' -> an Assumption (TOML values; bare words are strings)."""
    key, sep, text = assignment.partition("=")
    if not sep or not text.strip():
        raise UsageError(f"--vary wants KEY=LOW,HIGH, got {assignment!r}")
    key = parse_override(f"{key}=0")[0]
    try:  # TOML values that may hold commas themselves (arrays, inline tables)
        values = tomllib.loads(f"v = [{text}]")["v"]
    except tomllib.TOMLDecodeError:
        values = [parse_override(f"{key}={piece}")[1] for piece in text.split(",")]
    if len(values) != 2 or any(v == "" for v in values):
        raise UsageError(f"--vary wants two values, LOW,HIGH, got {assignment!r}")
    if values[0] == values[1]:
        raise UsageError(f"--vary {key}: low and high are the same ({values[0]!r})")
    return Assumption(key, values[0], values[1])


def read_assumptions(
    scenario_path: str | Path, vary: Sequence[str] = (), overrides: dict | None = None
) -> tuple[Scenario, list[Assumption]]:
    """The baseline scenario and its assumptions (the table's, then --vary's), each value
    checked by applying it; a bad one is a ScenarioError naming the entry's file and line."""
    path = Path(scenario_path)
    base = load_scenario(path, overrides=overrides)
    text = path.read_text(encoding="utf-8-sig")
    table: dict[str, Assumption] = {}
    for index, entry in enumerate(base.sensitivity):
        line = locate_key(text, ("sensitivity", index))
        if entry.key in table:
            raise ScenarioError(
                f"{entry.key} has a range already ({table[entry.key].where})",
                file=path,
                key=f"sensitivity.{index}.key",
                line=line,
            )
        table[entry.key] = Assumption(
            entry.key, entry.low, entry.high, entry.why, f"{path.name}:{line}", index
        )
    for assignment in vary:
        assumption = parse_vary(assignment)
        table[assumption.key] = assumption
    if not table:
        raise UsageError(
            f"{path}: no [[sensitivity]] entries and no --vary KEY=LOW,HIGH: nothing to vary"
        )
    assumptions = list(table.values())
    for assumption in assumptions:
        for level in ("low", "high"):
            level_scenario(path, assumption, level, overrides, text=text)
    return base, assumptions


def level_scenario(
    path: Path, assumption: Assumption, level: str, overrides: dict | None, text: str = ""
) -> Scenario:
    """The scenario with the assumption at `level`; a value it refuses is located at its entry."""
    value = getattr(assumption, level)
    try:
        return load_scenario(path, overrides={**(overrides or {}), assumption.key: value})
    except ScenarioError as error:
        message = f"{assumption.key} = {value!r} is refused: {error.message}"
        if assumption.index is None:
            raise ScenarioError(message, file="--vary", key=assumption.key) from None
        # A key --set cannot apply blames `key`; a value the scenario refuses blames the value.
        structural = any(words in error.message for words in _STRUCTURAL)
        loc = ("sensitivity", assumption.index, "key" if structural else level)
        line = locate_key(text or path.read_text(encoding="utf-8-sig"), loc)
        raise ScenarioError(message, file=path, key=".".join(map(str, loc)), line=line) from None


# What scenario.py says when an override's key, not its value, is wrong.
_STRUCTURAL = (
    "unknown key",
    "unknown tier",
    "is a value, not a table",
    "is not an index",
    "cannot replace",
    "pools are [tiers.NAME]",
    "has no [tiers]",
)


# ---------------------------------------------------------------------------------------------
# The engine and the runs


def choose_engine(base: Scenario, runs: int, requested: str | None) -> tuple[str, str]:
    """The engine for every run and why: as asked; else the scenario's own engine when it is
    fluid; the DES for a service graph the fluid model cannot run (`fluid_graph.unsupported`);
    else the DES while all the runs together stay within what one DES run may simulate
    (MAX_SIMULATED_REQUESTS, about a minute of the kernel), the fluid engine beyond."""
    if requested:
        return requested, f"{requested}, as asked"
    if base.scenario.engine == "fluid":
        return "fluid", "fluid, the scenario's engine"
    missing = unsupported(base) if base.has_graph else []
    if missing:
        return "des", f"des: the fluid engine does not model {', '.join(missing)} on a graph"
    total = estimate_requests(base) * runs
    if total <= MAX_SIMULATED_REQUESTS:
        return "des", f"des: {runs} runs, about {total:,.0f} simulated requests in all"
    return "fluid", (
        f"fluid: the DES would simulate about {total:,.0f} requests in {runs} runs, over the "
        f"{MAX_SIMULATED_REQUESTS:,} one run may (--engine des to insist)"
    )


def sensitivity(
    scenario_path: str | Path,
    vary: Sequence[str] = (),
    reps: int | None = None,
    workers: int | None = None,
    dask_address=None,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    *,
    engine: str | None = None,
    figures: Sequence[str] = DEFAULT_FIGURES,
    onset_within_s: float = 7200.0,
    duration_within: float = 0.5,
    overrides: dict | None = None,
    force: bool = False,
    resume: bool = False,
    announce=None,
) -> Analysis:
    """Run the baseline and every assumption at its low and high value, `reps` times each with
    common random numbers; judge each key (module docstring). With `out_dir`, write the outputs
    there (on Ctrl-C with what finished, before KeyboardInterrupt propagates). `announce`, if
    given, is called with a line stating the cost before anything runs."""
    unknown = [f for f in figures if f not in FIGURE_COLUMNS]
    if unknown or not figures:
        raise UsageError(f"--figure takes {', '.join(FIGURE_COLUMNS)}; got {unknown or 'none'}")
    if reps is not None and reps < 1:
        raise UsageError(f"--reps must be at least 1, got {reps}")
    if onset_within_s <= 0 or duration_within <= 0:
        raise UsageError("--onset-within and --duration-within must be above 0")
    path = Path(scenario_path)
    base, assumptions = read_assumptions(path, vary, overrides)
    points = [(None, BASELINE)] + [(a, lv) for a in assumptions for lv in ("low", "high")]
    engine, reason = choose_engine(base, len(points) * (reps or DES_REPS), engine)
    notes = []
    if engine == "fluid" and (reps or 1) > 1:
        notes.append(f"the fluid engine is deterministic: one run per level, not {reps}")
    reps = FLUID_REPS if engine == "fluid" else (reps or DES_REPS)
    fixed = {**(overrides or {}), "scenario.engine": engine}
    seeds = [replication_seed(base.scenario.seed, r) for r in range(reps)]
    jobs = []
    for assumption, level in points:
        if assumption is None:
            scenario = load_scenario(path, overrides=fixed)
            point = {"key": BASELINE, "level": BASELINE, "value": ""}
        else:
            scenario = level_scenario(path, assumption, level, fixed)
            point = {"key": assumption.key, "level": level, "value": getattr(assumption, level)}
        check_size(scenario, force=force)
        jobs += [
            Job(scenario.raw, str(path.resolve()), point, r, s, scenario_sha256=scenario.sha256)
            for r, s in enumerate(seeds)
        ]
    if announce is not None:
        announce(
            f"{len(assumptions)} keys x 2 levels + baseline = {len(points)} levels x "
            f"{reps} replications = {len(jobs)} runs; engine {reason}"
        )
    if resume and out_dir is None:
        raise UsageError("--resume needs the folder of the earlier analysis (--out)")
    done = finished_rows(Path(out_dir) / "results.csv", jobs) if resume else {}
    todo = [i for i in range(len(jobs)) if i not in done]
    log_path = Path(out_dir) / "results.csv" if out_dir is not None else None
    kept = [done[i] for i in sorted(done)]
    with (  # each run on disk as it finishes: kill -9 loses only the runs under way
        ResultsLog(log_path, row_columns(jobs[0]), kept) as log,
        Runner(workers, dask_address) as runner,
    ):
        fresh = runner.run([jobs[i] for i in todo], progress, "sensitivity", on_done=log.record)
    rows = [done.get(i) for i in range(len(jobs))]
    for i, row in zip(todo, fresh, strict=True):
        rows[i] = row
    analysis = analyse(
        rows, assumptions, list(figures), onset_within_s, duration_within, bin_s=base.scenario.bin
    )
    analysis.title = base.scenario.title or base.scenario.name
    analysis.engine, analysis.engine_reason, analysis.reps = engine, reason, reps
    analysis.start = base.scenario.start
    analysis.interrupted = runner.interrupted
    analysis.notes = notes + analysis.notes
    if out_dir is not None:
        write_sensitivity(analysis, rows, out_dir)
    if runner.interrupted:
        raise KeyboardInterrupt  # after writing the runs that finished
    return analysis


# ---------------------------------------------------------------------------------------------
# Outputs


def write_sensitivity(analysis: Analysis, rows: list[dict], out_dir: str | Path) -> list[Path]:
    """Write results.csv, sensitivity.csv, tornado.png, sensitivity.md and sensitivity.html."""
    out = Path(out_dir)
    finished = [r for r in rows if r is not None]
    atomic_write(out / "results.csv", table_csv(finished))
    atomic_write(
        out / "sensitivity.csv", table_csv(_uniform([analysis.baseline, *analysis.levels]))
    )
    written = [out / "results.csv", out / "sensitivity.csv"]
    chart = write_tornado_chart(analysis, out / "tornado.png")
    written += [chart] if chart else []
    return written + write_pages(analysis, out, chart.name if chart else None)


def _uniform(rows: list[dict]) -> list[dict]:
    """Rows with the union of their columns, in first-seen order (csv needs one header)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns |= dict.fromkeys(row)
    return [{c: row.get(c) for c in columns} for row in rows]
