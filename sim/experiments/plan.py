"""Capacity search: the least value of a parameter that meets the SLO with confidence.

A value *meets* the SLO when its runs show, at confidence `confidence`, that a run is free of
outages with probability at least `confidence`: the one-sided Clopper-Pearson lower bound on
that probability, from k clean runs of n (a failed run counts as a miss), is at least
`confidence`. A raw share would not do: 9 clean runs of 10 have a share of 0.9, yet a service
that passes only 75% of the time shows them in 24% of plans. The bound makes such a false pass
at most 1 - confidence likely for any pass probability under the target, and it sets a floor
on `reps`: even n clean runs bound the probability only by (1 - confidence)^(1/n), so 0.9
needs 22 runs (`reps_needed`); with fewer, no value can meet and the plan says so in its
`warnings`.

The search assumes that more of the parameter never hurts (more servers, a longer timeout
budget...) and bisects the integers between `lo` and `hi`: about log2(hi - lo) probes of
`reps` runs each. Every probe uses the same seeds (common random
numbers), so neighbouring values are compared on the same traffic, and its evidence (each
run's outage time and success ratio) goes into plan.json. Each run is also on disk in
results.csv the moment it finishes (sweep's columns), so a plan killed half-way loses only
the runs under way; `resume` takes the runs found there instead of running them again, and
since the search is a function of the runs, it walks the same probes to the same answer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scipy.stats import beta

from sim.errors import UsageError
from sim.experiments.sweep import (
    Job,
    ResultsLog,
    Runner,
    earlier_runs,
    point_scenarios,
    replication_seed,
    resumed_row,
    row_columns,
)
from sim.io import atomic_write, summary_json

RULE = (
    "a value meets the SLO when the one-sided Clopper-Pearson lower bound, at `confidence`, "
    "on the probability that a run has no outage is at least `confidence`"
)


def lower_bound(clean: int, runs: int, confidence: float) -> float:
    """One-sided Clopper-Pearson lower bound, at `confidence`, on the pass probability that
    `clean` passing runs of `runs` show (0 when none passed)."""
    if not 0 <= clean <= runs or runs < 1:
        raise ValueError(f"lower_bound needs 0 <= clean <= runs and runs >= 1, got {clean}, {runs}")
    if clean == 0:
        return 0.0
    return float(beta.ppf(1 - confidence, clean, runs - clean + 1))


def _reaches(bound: float, confidence: float) -> bool:
    return bound >= confidence


def reps_needed(confidence: float) -> int | None:
    """Least number of runs whose all-clean outcome meets `confidence` (None for 1 or more)."""
    if confidence >= 1:
        return None
    # (1 - c)^(1/n) >= c  <=>  n >= ln(1 - c) / ln(c); the loop settles the last rounding.
    runs = max(1, math.ceil(math.log(1 - confidence) / math.log(confidence)) - 1)
    while not _reaches(lower_bound(runs, runs, confidence), confidence):
        runs += 1
    return runs


def reach_warning(reps: int, confidence: float) -> str | None:
    """The warning for `reps` too few to reach `confidence` at all, or None when enough."""
    needed = reps_needed(confidence)
    if needed is None or reps >= needed:
        return None
    best = lower_bound(reps, reps, confidence)
    return (
        f"--reps {reps} cannot reach --confidence {confidence:g}: even {reps} clean runs of "
        f"{reps} bound the pass probability only by {best:.3f}; use --reps {needed} or more"
    )


@dataclass
class Probe:
    """The runs at one value and the verdict."""

    value: int
    meets: bool
    clean: int  # replications without an outage (a failed run is not clean)
    share: float  # clean / replications
    lower_bound: float  # Clopper-Pearson, at the plan's confidence, on the pass probability
    runs: list[dict[str, Any]]


@dataclass
class Plan:
    """The answer (`value`, None when even `hi` misses the SLO) and the evidence."""

    scenario: str
    param: str
    lo: int
    hi: int
    reps: int
    confidence: float
    seeds: list[int]
    reps_needed: int | None = None  # least reps that can reach `confidence`
    rule: str = RULE
    warnings: list[str] = field(default_factory=list)
    value: int | None = None
    probes: list[Probe] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The plan.json content, probes in the order they were run."""
        return asdict(self)


def plan(
    scenario_path: str | Path,
    param: str,
    lo: int,
    hi: int,
    reps: int | None = None,
    confidence: float = 0.9,
    workers: int | None = None,
    dask_address=None,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    *,
    overrides: dict | None = None,
    force: bool = False,
    engine: str | None = None,
    resume: bool = False,
) -> Plan:
    """Find the least integer `param` in [lo, hi] meeting the SLO with `confidence` (see the
    module docstring); `reps` defaults to the least number that can reach it; `engine` ("des"
    or "fluid") overrides `scenario.engine`. With `out_dir`, each run goes to results.csv
    as it finishes; with `resume`, the runs already there are taken, not run again."""
    if engine is not None:
        overrides = {**(overrides or {}), "scenario.engine": engine}
    if not lo <= hi:
        raise UsageError(f"--lo must not exceed --hi, got {lo} > {hi}")
    if not 0 < confidence < 1:
        raise UsageError(
            f"--confidence is a probability strictly between 0 and 1 (no finite number of runs "
            f"proves a pass probability of 1, so it must be below 1), got {confidence}"
        )
    needed = reps_needed(confidence)
    if reps is None:
        reps = needed
    if reps < 1:
        raise UsageError(f"--reps must be at least 1, got {reps}")
    if param == "scenario.seed":
        raise UsageError("scenario.seed cannot be planned: replications choose the seeds")
    if resume and out_dir is None:
        raise UsageError("--resume needs the folder of the earlier plan (--out)")
    base, *_ = point_scenarios(scenario_path, [{param: lo}, {param: hi}], overrides, force)
    seeds = [replication_seed(base.scenario.seed, r) for r in range(reps)]
    result = Plan(str(scenario_path), param, lo, hi, reps, confidence, seeds, needed)
    warning = reach_warning(reps, confidence)
    if warning is not None:
        result.warnings.append(warning)  # still probes hi: its evidence shows how far off
    file = str(Path(scenario_path).resolve())
    log_path = Path(out_dir) / "results.csv" if out_dir is not None else None
    earlier = earlier_runs(log_path) if resume else {}
    columns = row_columns(Job({}, file, {param: lo}, 0, seeds[0]))
    with (
        ResultsLog(log_path, columns, list(earlier.values())) as log,
        Runner(workers, dask_address) as runner,
    ):

        def meets(value: int) -> bool:
            (scenario,) = point_scenarios(scenario_path, [{param: value}], overrides, force)[1:]
            jobs = [
                Job(scenario.raw, file, {param: value}, r, s, scenario_sha256=scenario.sha256)
                for r, s in enumerate(seeds)
            ]
            found = [earlier.get((job.scenario_sha256, job.replication, job.seed)) for job in jobs]
            todo = [job for job, row in zip(jobs, found, strict=True) if row is None]
            fresh = iter(runner.run(todo, progress, desc=f"{param}={value}", on_done=log.record))
            rows = [
                resumed_row(job, row) if row is not None else next(fresh)
                for job, row in zip(jobs, found, strict=True)
            ]
            if runner.interrupted:
                raise KeyboardInterrupt  # an interrupted probe is no evidence
            probe = _probe(value, rows, confidence)
            result.probes.append(probe)
            return probe.meets

        if meets(hi):
            result.value = _least(lo, hi, meets)
    if out_dir is not None:
        write_plan(result, out_dir)
    return result


def _least(lo: int, hi: int, meets) -> int:
    """Least value in [lo, hi] for which `meets` holds, given that it holds at hi."""
    if lo == hi or meets(lo):
        return lo
    failing, passing = lo, hi
    while passing - failing > 1:
        middle = (failing + passing) // 2
        if meets(middle):
            passing = middle
        else:
            failing = middle
    return passing


def _probe(value: int, rows: list[dict], confidence: float) -> Probe:
    runs = [
        {
            "replication": row["replication"],
            "seed": row["seed"],
            "outage_total_s": row["outage_total_s"],
            "success_ratio": row["success_ratio"],
            "latency_p99_s": row["latency_p99_s"],
            "error": row["error"],
        }
        for row in rows
    ]
    clean = sum(1 for row in rows if not row["error"] and row["outage_total_s"] == 0)
    bound = lower_bound(clean, len(rows), confidence)
    return Probe(
        value=value,
        meets=_reaches(bound, confidence),
        clean=clean,
        share=clean / len(rows),
        lower_bound=bound,
        runs=runs,
    )


def write_plan(result: Plan, out_dir: str | Path) -> Path:
    """Write plan.json (param, value, and every probe's evidence) into `out_dir`."""

    path = Path(out_dir) / "plan.json"
    atomic_write(path, summary_json(result.to_dict()))
    return path


def describe(result: Plan) -> str:
    """The warnings, then one line per probe in the order run: value, runs without an outage,
    the lower bound on the pass probability, verdict."""
    lines = [f"  warning: {warning}" for warning in result.warnings]
    for probe in result.probes:
        verdict = "meets" if probe.meets else "misses"
        lines.append(
            f"  {result.param} = {probe.value}: {probe.clean} of {len(probe.runs)} runs without "
            f"an outage; pass probability >= {probe.lower_bound:.3f} at {result.confidence:.0%} "
            f"confidence ({verdict} {result.confidence:g})"
        )
    if result.value is None and result.reps < (result.reps_needed or 0):
        lines.append(f"  too few runs to tell: no value can meet with --reps {result.reps}")
    elif result.value is None:
        lines.append(f"  even {result.param} = {result.hi} misses the SLO")
    return "\n".join(lines)
