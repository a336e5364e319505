"""Grids x replications -> one flat row per run, aggregated with confidence intervals.

`sweep` runs every point of a parameter grid `reps` times and returns one flat dict per run
(parameters, replication, seed, the summary's headline figures, an error if the run failed).
Replication r uses the same seed at every point (common random numbers), so the differences
between points are the parameters' doing, not noise. One code path serves one worker, many
local processes or a Dask cluster (`Runner`); a run's numbers depend on its scenario and seed
alone, never on where it ran. `replicate` runs one scenario `reps` times and attaches per-bin
bands (median and 5-95%) of queue and latency to the first replication's Result.

Longer than most modules because sweep, plan, sensitivity and `run --reps` share its whole
pipeline: seeds, jobs, executors, results.csv written run by run and read back by `--resume`,
the t interval, the tables. The statistics are the first part to move out
should another module need them.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import t as student_t

from sim.errors import OutageSimError, ScenarioError, UsageError
from sim.io import AppendLog, atomic_write, whole_lines
from sim.model.scenario import Scenario, load_scenario, parse_override, validate_scenario
from sim.report.sweep_charts import write_sweep_chart
from sim.run import Result, check_size, simulate

# The headline figures of a run, in results.csv order (booleans average to shares).
FIGURES = (
    "outage_total_s",
    "outages",
    "first_outage_start_s",
    "success_ratio",
    "amplification",
    "latency_p99_s",
    "wait_mean_s",
    "utilization",
    "queue_max",
    "metastable",
    "recovered",
)

BAND_COLUMNS = ("queue", "latency_p50", "latency_p99")
BAND_QUANTILES = {"q05": 0.05, "median": 0.5, "q95": 0.95}
CONFIDENCE = 0.95


# ---------------------------------------------------------------------------------------------
# Grid and seeds


def replication_seed(base_seed: int, replication: int) -> int:
    """Seed of replication r: the scenario's own seed for r = 0, a derived stream otherwise."""
    if replication == 0:
        return int(base_seed)
    state = np.random.SeedSequence(int(base_seed), spawn_key=(int(replication),))
    high, low = (int(word) for word in state.generate_state(2, np.uint32))
    return ((high << 32) | low) & (2**63 - 1)


def parse_grid(assignment: str) -> tuple[str, list]:
    """'service.servers=8,10,12' or 'service.servers=8..16:2' -> (key, values as TOML)."""
    key, sep, text = assignment.partition("=")
    if not sep or not text.strip():
        raise UsageError(f"--grid wants KEY=V1,V2,... or KEY=LO..HI[:STEP], got {assignment!r}")
    key = parse_override(f"{key}=0")[0]
    ranged = _integer_range(text.strip())
    if ranged is not None:
        return key, ranged
    values = [parse_override(f"{key}={piece}")[1] for piece in text.split(",")]
    if any(value == "" for value in values):
        raise UsageError(f"--grid has an empty value: {assignment!r}")
    return key, values


def _integer_range(text: str) -> list[int] | None:
    head, _, step = text.partition(":")
    lo, dots, hi = head.partition("..")
    if not dots:
        return None
    try:
        lo_i, hi_i, step_i = int(lo), int(hi), int(step or 1)
    except ValueError:
        raise UsageError(f"a grid range is LO..HI[:STEP] with integers, got {text!r}") from None
    if step_i < 1 or hi_i < lo_i:
        raise UsageError(f"a grid range needs LO <= HI and STEP >= 1, got {text!r}")
    return list(range(lo_i, hi_i + 1, step_i))


def grid_points(grid: dict[str, Sequence]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    if not grid or any(len(values) == 0 for values in grid.values()):
        raise UsageError("a sweep needs at least one --grid KEY=V1,... with at least one value")
    if "scenario.seed" in grid:
        raise UsageError("scenario.seed cannot be swept: replications choose the seeds (--reps)")
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


# ---------------------------------------------------------------------------------------------
# One run, anywhere


@dataclass(frozen=True)
class Job:
    """One (point, replication): the point's scenario table and the replication's seed."""

    raw: dict
    file: str | None
    point: dict
    replication: int
    seed: int
    keep_result: bool = False
    scenario_sha256: str = ""  # of the point's scenario: what `--resume` matches rows by


def run_job(job: Job) -> dict | Result:
    """Simulate one job (a top-level function, so spawned processes and Dask can import it).

    Returns the run's flat row, or its whole Result when `job.keep_result`; a failed run
    comes back as a row whose `error` names the failure, so it never loses the others.
    """
    try:
        raw = {**job.raw, "scenario": {**job.raw["scenario"], "seed": job.seed}}
        scenario = validate_scenario(raw, file=job.file or "<scenario>")
        result = simulate(scenario, force=True)
    except Exception as error:  # noqa: BLE001 - reported in the row, with its parameters
        if job.keep_result:
            raise
        return _row(job, None, f"{type(error).__name__}: {error}")
    return result if job.keep_result else _row(job, result.summary, "")


def headline(summary: dict) -> dict[str, Any]:
    """The headline figures (FIGURES) of one run's summary."""
    return {
        "outage_total_s": summary["outage_total_s"],
        "outages": len(summary["outages"]),
        "first_outage_start_s": summary["first_outage_start_s"],
        "success_ratio": summary["success_ratio"],
        "amplification": summary["amplification"],
        "latency_p99_s": summary["latency_s"]["p99"],
        "wait_mean_s": summary["wait_s"]["mean"],
        "utilization": summary["utilization"],
        "queue_max": summary["queue"]["max"],
        "metastable": summary["metastable"],
        "recovered": summary["recovered"],
    }


def _row(job: Job, summary: dict | None, error: str) -> dict[str, Any]:
    figures = headline(summary) if summary is not None else dict.fromkeys(FIGURES)
    return {
        **job.point,
        "replication": job.replication,
        "seed": job.seed,
        **figures,
        "error": error,
        "scenario_sha256": job.scenario_sha256,
    }


def finished_rows(results_csv: Path, jobs: Sequence[Job]) -> dict[int, dict[str, Any]]:
    """Rows of an earlier results.csv that finished without error, by the index of the job
    they answer (same point scenario, replication and seed); others are run again."""
    wanted = {(j.scenario_sha256, j.replication, j.seed): i for i, j in enumerate(jobs)}
    kept = {}
    for key, row in earlier_runs(results_csv).items():
        if key in wanted:
            kept[wanted[key]] = resumed_row(jobs[wanted[key]], row)
    return kept


def earlier_runs(results_csv: Path) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Every whole, error-free row of a results.csv (a row cut short by a crash is left out),
    FIGURES parsed, by (scenario_sha256, replication, seed)."""
    runs = {}
    for row in csv.DictReader(io.StringIO(whole_lines(results_csv))):
        if None in row or None in row.values():  # more or fewer cells than the header
            continue
        try:
            key = (row.get("scenario_sha256"), int(row["replication"]), int(row["seed"]))
            figures = {name: _parse_cell(row[name]) for name in FIGURES}
        except (KeyError, TypeError, ValueError):
            continue
        if not row.get("error"):
            runs[key] = {**row, **figures}
    return runs


def resumed_row(job: Job, earlier: dict[str, Any]) -> dict[str, Any]:
    """The row of `job` from an earlier run's row (see `earlier_runs`)."""
    return {**_row(job, None, ""), **{name: earlier[name] for name in FIGURES}}


class ResultsLog:
    """results.csv while runs go on: the header and the rows kept by `--resume` at once, then
    each run as it finishes, on disk before the next (`sim.io.AppendLog`), so kill -9 loses
    only the runs under way and `--resume` picks up the rest. No-op without a path."""

    def __init__(self, path: Path | None, columns: Sequence[str], kept: Sequence[dict]) -> None:
        self.columns = list(columns)
        head = self._line(self.columns) + "".join(self._line(self._cells(r)) for r in kept)
        self._log = AppendLog(path, head) if path is not None else None

    def record(self, row: dict) -> None:
        """Append one finished run (a row of `run_job`)."""
        if self._log is not None:
            self._log.append(self._line(self._cells(row)))

    def _cells(self, row: dict) -> list[str]:
        # One record, one line: an error message's own line breaks become spaces.
        return [" ".join(_cell(row.get(c)).splitlines()) for c in self.columns]

    @staticmethod
    def _line(cells: Sequence[str]) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(cells)
        return out.getvalue()

    def close(self) -> None:
        """Close the file: the final results.csv replaces it next."""
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def row_columns(job: Job) -> list[str]:
    """The columns of a job's row: its point's keys, replication, seed, FIGURES, error, sha."""
    return list(_row(job, None, ""))


def _parse_cell(text: str):
    if text in ("", None):
        return None
    if text in ("true", "false"):
        return text == "true"
    return int(text) if text.lstrip("-").isdigit() else float(text)


# ---------------------------------------------------------------------------------------------
# Executors: local processes or a Dask cluster, one interface


class Runner:
    """Runs jobs on local processes (spawned, `workers` of them) or on a Dask cluster.

    Use as a context manager; `run(jobs)` returns the outcomes in job order. A process pool
    serves one worker too, so one worker and many take the same path.
    """

    def __init__(self, workers: int | None = None, dask_address=None) -> None:
        if workers is not None and dask_address is not None:
            raise UsageError("choose local processes (--workers) or a Dask cluster (--dask)")
        if workers is not None and workers < 1:
            raise UsageError(f"--workers must be at least 1, got {workers}")
        self.workers = workers or os.cpu_count() or 1
        self.dask_address = dask_address
        self._pool = None
        self._client = None
        self._own_client = False
        self.interrupted = False

    def __enter__(self) -> Runner:
        if self.dask_address is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        else:
            try:
                from distributed import Client
            except ImportError:
                raise UsageError(
                    "--dask needs dask.distributed: pip install 'outage-sim[dask]'"
                ) from None
            if isinstance(self.dask_address, Client):
                self._client = self.dask_address
            else:
                for handler in logging.getLogger("distributed").handlers:
                    handler.addFilter(_without_traceback)
                self._client = Client(self.dask_address)
                self._own_client = True
        return self

    def __exit__(self, kind, error, tb) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=error is None and not self.interrupted, cancel_futures=True)
        if self._own_client:
            self._client.close()

    def run(
        self,
        jobs: Sequence[Job],
        progress: bool | None = None,
        desc: str = "runs",
        on_done=None,
    ) -> list:
        """Run `jobs`; a job whose worker died comes back as a failed row. `on_done`, if
        given, is called with each outcome as it finishes (to put it on disk at once)."""
        outcomes: list = [None] * len(jobs)
        bar = _bar(len(jobs), progress, desc)
        try:
            if self._client is not None:
                from distributed import as_completed

                futures = self._client.map(run_job, list(jobs), pure=False)
                index = {future.key: i for i, future in enumerate(futures)}
                finished = ((index[f.key], f) for f in as_completed(futures))
            else:
                from concurrent.futures import as_completed

                submitted = {self._pool.submit(run_job, job): i for i, job in enumerate(jobs)}
                finished = ((submitted[f], f) for f in as_completed(submitted))
            for i, future in finished:
                outcomes[i] = self._outcome(jobs[i], future, outcomes)
                if on_done is not None:
                    on_done(outcomes[i])
                bar.update(1)
        except KeyboardInterrupt:
            # Keep what finished: the caller writes it, then stops (exit status 130).
            if any(job.keep_result for job in jobs):
                raise
            self.interrupted = True
            for i, job in enumerate(jobs):
                if outcomes[i] is None:
                    outcomes[i] = _row(job, None, "interrupted")
        finally:
            bar.close()
        return outcomes

    def _outcome(self, job: Job, future, outcomes: list):
        try:
            return future.result()
        except Exception as error:  # noqa: BLE001 - a lost worker fails its run, not the sweep
            if getattr(error, "reason", None) == "scheduler-connection-lost":
                # Dask moves the runs of a lost worker to the others; without a scheduler
                # nothing more can run, and each run left is the same pure function later.
                done = sum(outcome is not None for outcome in outcomes)
                raise OutageSimError(
                    f"lost the Dask scheduler at {self.dask_address} after {done} of "
                    f"{len(outcomes)} runs; the finished runs are in results.csv: start the "
                    f"scheduler again and rerun with --resume to run only the rest"
                ) from None
            if job.keep_result:
                raise
            return _row(job, None, f"{type(error).__name__}: {error}")


def _without_traceback(record: logging.LogRecord) -> bool:
    """distributed's log lines without their tracebacks (a lost connection logs several before
    the Runner says in one line what happened); a record that was only a traceback goes."""
    had_traceback = record.exc_info is not None
    record.exc_info, record.exc_text = None, None
    return bool(record.getMessage().strip()) or not had_traceback


def _bar(total: int, progress: bool | None, desc: str):
    """A tqdm bar over runs on stderr (by default only when stderr is a terminal)."""
    from tqdm import tqdm

    enabled = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=total, unit="run", desc=desc, file=sys.stderr, disable=not enabled)


# ---------------------------------------------------------------------------------------------
# Sweeps


def point_scenarios(
    scenario_path: str | Path,
    points: list[dict],
    overrides: dict | None = None,
    force: bool = False,
) -> list[Scenario]:
    """Validate every point up front (a bad grid value fails before anything runs)."""
    base = load_scenario(scenario_path, overrides=overrides)
    scenarios = []
    for point in points:
        try:
            scenario = load_scenario(scenario_path, overrides={**(overrides or {}), **point})
        except ScenarioError as error:
            text = ", ".join(f"{k}={v}" for k, v in point.items())
            raise ScenarioError(
                f"{error.message} (grid point {text})", file="--grid", key=error.key
            ) from None
        check_size(scenario, force=force)
        scenarios.append(scenario)
    return [base, *scenarios]


def sweep(
    scenario_path: str | Path,
    grid: dict[str, Sequence],
    reps: int,
    workers: int | None = None,
    dask_address=None,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    *,
    overrides: dict | None = None,
    force: bool = False,
    resume: bool = False,
    engine: str | None = None,
) -> list[dict[str, Any]]:
    """Run every grid point `reps` times with common random numbers; one flat row per run.

    Row order is point by point (the grid's first key slowest), replications in order. With
    `out_dir`, writes results.csv, aggregate.csv and sweep.png there (on Ctrl-C, with the runs
    that finished, before KeyboardInterrupt propagates). With `resume`, runs that finished in
    an earlier results.csv of `out_dir` for the same point scenario and seed are kept, and
    only the others run. `engine` ("des" or "fluid") overrides `scenario.engine`.
    """
    if reps < 1:
        raise UsageError(f"--reps must be at least 1, got {reps}")
    if engine is not None:
        overrides = {**(overrides or {}), "scenario.engine": engine}
    points = grid_points(grid)
    base, *scenarios = point_scenarios(scenario_path, points, overrides, force)
    seeds = [replication_seed(base.scenario.seed, r) for r in range(reps)]
    file = str(Path(scenario_path).resolve())
    jobs = [
        Job(scenario.raw, file, point, r, seed, scenario_sha256=scenario.sha256)
        for point, scenario in zip(points, scenarios, strict=True)
        for r, seed in enumerate(seeds)
    ]
    if resume and out_dir is None:
        raise UsageError("--resume needs the folder of the earlier sweep (--out)")
    done = finished_rows(Path(out_dir) / "results.csv", jobs) if resume else {}
    todo = [i for i in range(len(jobs)) if i not in done]
    log_path = Path(out_dir) / "results.csv" if out_dir is not None else None
    kept = [done[i] for i in sorted(done)]
    with (
        ResultsLog(log_path, row_columns(jobs[0]), kept) as log,
        Runner(workers, dask_address) as runner,
    ):
        fresh = runner.run([jobs[i] for i in todo], progress, desc="sweep", on_done=log.record)
    rows = [done.get(i) for i in range(len(jobs))]
    for i, row in zip(todo, fresh, strict=True):
        rows[i] = row
    if out_dir is not None:
        write_sweep(rows, list(grid), out_dir, title=base.scenario.title or base.scenario.name)
    if runner.interrupted:
        raise KeyboardInterrupt  # after writing the runs that finished
    return rows


# ---------------------------------------------------------------------------------------------
# Statistics


@functools.lru_cache(maxsize=256)
def t_quantile(probability: float, dof: int) -> float:
    """Quantile of Student's t with `dof` degrees of freedom (0 < probability < 1), by scipy."""
    if not 0 < probability < 1 or dof < 1:
        raise ValueError(f"t_quantile needs 0 < p < 1 and dof >= 1, got {probability}, {dof}")
    return float(student_t.ppf(probability, dof))


def mean_ci(values: Iterable, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean and two-sided t confidence interval of the finite values (NaN where undefined)."""
    data = np.array([float(v) for v in values if v is not None], dtype=float)
    data = data[np.isfinite(data)]
    if len(data) == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if len(data) == 1:
        return mean, math.nan, math.nan
    half = t_quantile((1 + confidence) / 2, len(data) - 1) * data.std(ddof=1) / len(data) ** 0.5
    return mean, mean - half, mean + half


def aggregate(rows: list[dict], params: list[str]) -> list[dict[str, Any]]:
    """Per point: runs, failures, share of runs with an outage, mean and 95% CI per figure.

    A figure's mean is over the runs where it is defined (first_outage_start_s: runs with an
    outage; metastable: runs where a trigger ended).
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(repr(row[p]) for p in params), []).append(row)
    table = []
    for group in groups.values():
        ok = [row for row in group if not row["error"]]
        outage = [row["outage_total_s"] > 0 for row in ok]
        entry = {p: group[0][p] for p in params}
        entry |= {
            "runs": len(ok),
            "failed": len(group) - len(ok),
            "outage_share": sum(outage) / len(ok) if ok else math.nan,
        }
        for figure in FIGURES:
            mean, low, high = mean_ci(row[figure] for row in ok)
            entry |= {f"{figure}_mean": mean, f"{figure}_ci_low": low, f"{figure}_ci_high": high}
        table.append(entry)
    return table


# ---------------------------------------------------------------------------------------------
# Outputs


def table_csv(rows: list[dict]) -> str:
    """CSV text of flat dicts (columns of the first row; '' for missing, true/false)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = list(rows[0]) if rows else []
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return out.getvalue()


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        # repr: the shortest text that reads back to the same float (--resume relies on it)
        return "" if math.isnan(value) else repr(float(value))
    return str(value)


def write_sweep(
    rows: list[dict], params: list[str], out_dir: str | Path, title: str = ""
) -> list[Path]:
    """Write results.csv, aggregate.csv and (for one or two parameters) sweep.png."""

    out = Path(out_dir)
    table = aggregate(rows, params)
    atomic_write(out / "results.csv", table_csv(rows))
    atomic_write(out / "aggregate.csv", table_csv(table))
    written = [out / "results.csv", out / "aggregate.csv"]

    chart = write_sweep_chart(table, rows, params, out / "sweep.png", title=title)
    return written + ([chart] if chart else [])


# ---------------------------------------------------------------------------------------------
# Replications of one scenario (`outage-sim run --reps N`)


def replicate(
    scenario: Scenario,
    reps: int,
    workers: int | None = None,
    dask_address=None,
    progress: bool | None = None,
) -> Result:
    """Run `scenario` `reps` times; the first replication's Result, with the bands attached.

    Replication 0 uses the scenario's own seed, so its summary and time series are those of a
    plain run; `result.extra["bands"]` holds the per-bin bands across all replications and
    `result.summary["replications"]` the share of runs with an outage and its seeds.
    """
    seeds = [replication_seed(scenario.scenario.seed, r) for r in range(reps)]
    file = str(scenario.path.resolve()) if scenario.path else None
    jobs = [
        Job(raw=scenario.raw, file=file, point={}, replication=r, seed=s, keep_result=True)
        for r, s in enumerate(seeds)
    ]
    with Runner(min(workers or os.cpu_count() or 1, reps), dask_address) as runner:
        results = runner.run(jobs, progress, desc="replications")
    main = results[0]
    main.extra["bands"] = bands(results)
    rows = [_row(job, r.summary, "") for job, r in zip(jobs, results, strict=True)]
    (summary,) = aggregate(rows, [])
    main.summary["replications"] = {
        "reps": reps,
        "seeds": seeds,
        "outage_share": summary["outage_share"],
        "outage_total_s": {
            "mean": summary["outage_total_s_mean"],
            "ci95": [summary["outage_total_s_ci_low"], summary["outage_total_s_ci_high"]],
        },
        "bands": "per-bin median and 5-95% of " + ", ".join(BAND_COLUMNS) + " in bands.csv",
    }
    return main


def bands(results: Sequence[Result]) -> dict[str, np.ndarray]:
    """Per-bin median and 5-95% band across replications: t_s, <column>_q05/_median/_q95."""
    n_bins = min(len(r.timeseries) for r in results)
    out = {"t_s": np.asarray(results[0].timeseries["t_s"][:n_bins], dtype=float)}
    for column in BAND_COLUMNS:
        stack = np.vstack([r.timeseries[column][:n_bins] for r in results])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a bin empty in every run: NaN
            levels = np.nanquantile(stack, list(BAND_QUANTILES.values()), axis=0)
        for name, level in zip(BAND_QUANTILES, levels, strict=True):
            out[f"{column}_{name}"] = level
    return out


def write_bands(result: Result, out_dir: str | Path) -> Path:
    """Write the replication bands of `result` (see `replicate`) to bands.csv."""

    band = result.extra["bands"]
    rows = [dict(zip(band, values, strict=True)) for values in zip(*band.values(), strict=True)]
    path = Path(out_dir) / "bands.csv"
    atomic_write(path, table_csv(rows))
    return path


def describe_replications(summary: dict) -> str:
    """One line on the replications of `outage-sim run --reps N` (see `replicate`)."""
    info = summary["replications"]
    share, total = info["outage_share"], info["outage_total_s"]
    low, high = total["ci95"]
    spread = (
        f" (95% CI {max(low, 0) / 60:.1f}-{high / 60:.1f})"
        if math.isfinite(low or math.nan)
        else ""
    )
    return (
        f"{info['reps']} replications: an outage in {share:.0%} of them; outage "
        f"{total['mean'] / 60:.1f} min per run on average{spread}; bands in bands.csv"
    )


def sweep_table(table: list[dict], params: list[str]) -> str:
    """The aggregate table as aligned text: outage share and outage minutes with 95% CI."""
    header = [*params, "runs with outage", "outage min/run (95% CI)", "success ratio", "p99 s"]
    lines = [header]
    for entry in table:
        low, high = entry["outage_total_s_ci_low"], entry["outage_total_s_ci_high"]
        interval = f" ({max(low, 0) / 60:.1f}-{high / 60:.1f})" if math.isfinite(low) else ""
        outages = round(entry["outage_share"] * entry["runs"]) if entry["runs"] else 0
        lines.append(
            [
                *(str(entry[p]) for p in params),
                f"{outages}/{entry['runs']}"
                + (f" ({entry['failed']} failed)" * bool(entry["failed"])),
                f"{entry['outage_total_s_mean'] / 60:.1f}{interval}",
                f"{entry['success_ratio_mean']:.4f}",
                f"{entry['latency_p99_s_mean']:.3g}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)  # fmt: skip
