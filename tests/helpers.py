"""Shared helpers for the tests: paths, small scenario texts, replications and intervals.

The statistical tests judge the engine by intervals computed from the runs themselves: the
mean of independent replications (different seeds) with a Student t interval. The outage
tests build time series by hand (`timeseries_by_hand`, with `SLO_TEXT` and `fault_marks`).
Import it as `from helpers import ...` (tests/ is on sys.path: see tests/conftest.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

import sim
from sim.analysis.metrics import Timeseries
from sim.experiments.sweep import t_quantile  # exact Student t quantile (re-exported for the tests)
from sim.model.scenario import parse_scenario

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def mean_interval(values: Iterable[float], confidence: float = 0.99) -> tuple[float, float]:
    """(mean, half-width) of the two-sided Student t interval of independent replications."""
    data = np.asarray(list(values), dtype=float)
    n = len(data)
    assert n >= 5, "an interval needs at least five replications"
    half = t_quantile(0.5 + confidence / 2, n - 1) * data.std(ddof=1) / math.sqrt(n)
    return float(data.mean()), float(half)


def assert_within(values: Iterable[float], exact: float, *, confidence=0.99, max_rel=None):
    """Assert `exact` lies in the t interval of `values`; optionally that the interval is tight.

    `max_rel` bounds the half-width relative to `exact`, so a test cannot pass only because its
    interval is too wide to catch anything.
    """
    mean, half = mean_interval(values, confidence)
    assert abs(mean - exact) <= half, (
        f"exact {exact:.6g} outside {confidence:.1%} interval {mean:.6g} ± {half:.3g}"
    )
    if max_rel is not None:
        assert half <= max_rel * abs(exact), (
            f"interval ± {half:.3g} wider than {max_rel:.0%} of {exact:.6g}: test has no power"
        )
    return mean, half


def queue_text(
    *,
    rate_rps: float,
    servers: int,
    duration_s: float,
    bin_s: float | None = None,
    dist: str = "exponential",
    mean_s: float | None = 1.0,
    cv: float | None = None,
    samples: list[float] | None = None,
    queue_limit: int | str = "inf",
    discipline: str = "fifo",
    seed: int = 1,
    name: str = "test",
) -> str:
    """TOML text of a single-pool scenario with Poisson arrivals (no client, no SLO tweaks)."""
    time_parts = [f'dist = "{dist}"']
    if mean_s is not None and dist != "empirical":
        time_parts.append(f"mean = {mean_s!r}")
    if cv is not None:
        time_parts.append(f"cv = {cv!r}")
    if samples is not None:
        time_parts.append("samples = [" + ", ".join(repr(float(s)) for s in samples) + "]")
    limit = f'"{queue_limit}"' if isinstance(queue_limit, str) else str(queue_limit)
    return f"""\
[scenario]
name = "{name}"
duration = {duration_s!r}
seed = {seed}
bin = {bin_s or duration_s / 10!r}

[arrivals]
rate = {rate_rps!r}

[service]
servers = {servers}
time = {{ {", ".join(time_parts)} }}
queue_limit = {limit}
discipline = "{discipline}"
"""


def replicate(text: str, seeds: Iterable[int]) -> list[sim.Result]:
    """Run scenario text once per seed (the seed given by an override, as `--seed` does)."""
    return [sim.simulate(parse_scenario(text, overrides={"scenario.seed": s})) for s in seeds]


SLO_TEXT = """\
[scenario]
name = "o"
duration = "10min"
bin = "1min"

[arrivals]
rate = 1

[service]
servers = 1
time = { dist = "exponential", mean = 1 }

[slo]
success_ratio = 0.9
latency_p99 = "2s"
min_duration = "2min"
"""


def timeseries_by_hand(ok, failed, p99=None, queue=None, fresh=None, **columns) -> Timeseries:
    """A hand-made Timeseries of 1-min bins: `ok` and `failed` fresh requests by arrival bin
    (`fresh` defaults to their sum: every fate decided), client latencies all equal to `p99`
    (NaN: none), the queue at each bin's end; demand 1/s against capacity 2/s unless given."""
    n = len(ok)
    p99 = np.asarray(p99 if p99 is not None else [1.0] * n, dtype=float)
    ok, failed = np.asarray(ok, dtype=float), np.asarray(failed, dtype=float)
    cols = {
        "t_s": np.arange(n) * 60.0,
        "fresh": np.asarray(fresh, dtype=float) if fresh is not None else ok + failed,
        "fresh_ok": ok,
        "fresh_failed": failed,
        "attempts": ok + failed,
        "queue": np.asarray(queue if queue is not None else [0] * n, dtype=float),
        "latency_p50": p99.copy(),
        "latency_p95": p99.copy(),
        "latency_p99": p99,
        "demand_rps": np.ones(n),
        "capacity_rps": np.full(n, 2.0),
    }
    with np.errstate(invalid="ignore"):
        cols["success_ratio"] = ok / (ok + failed)
    cols.update({k: np.asarray(v, dtype=float) for k, v in columns.items()})
    return Timeseries(bin_s=60.0, start=None, columns=cols)


def fault_marks(at_s: float, end_s: float) -> list[dict]:
    """Timeline marks of a fault from `at_s` to `end_s` (as a run's timeline lists them)."""
    return [
        {"t_s": at_s, "kind": "fault", "label": "fault: 30% capacity"},
        {"t_s": end_s, "kind": "fault_end", "label": "fault ends"},
    ]
