"""Capacity search: the least value of a parameter that meets the SLO with confidence.

A value *meets* the SLO when at least `confidence` of its replications ran without an outage
(a failed run counts as a miss). The search assumes that more of the parameter never hurts
(more servers, a longer timeout budget...) and bisects the integers between `lo` and `hi`:
about log2(hi - lo) probes of `reps` runs each. Every probe uses the same seeds (common random
numbers), so neighbouring values are compared on the same traffic, and its evidence (each
run's outage time and success ratio) goes into plan.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sim.errors import UsageError
from sim.sweep import Job, Runner, point_scenarios, replication_seed


@dataclass
class Probe:
    """The runs at one value and the verdict."""

    value: int
    meets: bool
    share: float  # share of replications without an outage (failed runs count as outages)
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
    reps: int = 10,
    confidence: float = 0.9,
    workers: int | None = None,
    dask_address=None,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    *,
    overrides: dict | None = None,
    force: bool = False,
) -> Plan:
    """Find the least integer `param` in [lo, hi] meeting the SLO in `confidence` of `reps`."""
    if not lo <= hi:
        raise UsageError(f"--lo must not exceed --hi, got {lo} > {hi}")
    if reps < 1:
        raise UsageError(f"--reps must be at least 1, got {reps}")
    if not 0 < confidence <= 1:
        raise UsageError(f"--confidence is a share in (0, 1], got {confidence}")
    if param == "scenario.seed":
        raise UsageError("scenario.seed cannot be planned: replications choose the seeds")
    base, *_ = point_scenarios(scenario_path, [{param: lo}, {param: hi}], overrides, force)
    seeds = [replication_seed(base.scenario.seed, r) for r in range(reps)]
    result = Plan(str(scenario_path), param, lo, hi, reps, confidence, seeds)
    file = str(Path(scenario_path).resolve())
    with Runner(workers, dask_address) as runner:

        def meets(value: int) -> bool:
            (scenario,) = point_scenarios(scenario_path, [{param: value}], overrides, force)[1:]
            jobs = [
                Job(raw=scenario.raw, file=file, point={param: value}, replication=r, seed=s)
                for r, s in enumerate(seeds)
            ]
            rows = runner.run(jobs, progress, desc=f"{param}={value}")
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
    share = clean / len(rows)
    # A small tolerance so that, e.g., 9 of 10 meets a confidence of 0.9 despite rounding.
    return Probe(value=value, meets=share >= confidence - 1e-9, share=share, runs=runs)


def write_plan(result: Plan, out_dir: str | Path) -> Path:
    """Write plan.json (param, value, and every probe's evidence) into `out_dir`."""
    from sim.report import atomic_write, summary_json

    path = Path(out_dir) / "plan.json"
    atomic_write(path, summary_json(result.to_dict()))
    return path


def describe(result: Plan) -> str:
    """One line per probe, in the order run: value, runs without an outage, verdict."""
    lines = []
    for probe in result.probes:
        clean = round(probe.share * len(probe.runs))
        verdict = "meets" if probe.meets else "misses"
        lines.append(
            f"  {result.param} = {probe.value}: {clean} of {len(probe.runs)} runs without an "
            f"outage ({verdict} {result.confidence:.0%})"
        )
    if result.value is None:
        lines.append(f"  even {result.param} = {result.hi} misses the SLO")
    return "\n".join(lines)
