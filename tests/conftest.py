"""Shared helpers for the tests: small scenario texts, replications and confidence intervals.

The statistical tests judge the engine by intervals computed from the runs themselves: the
mean of independent replications (different seeds) with a Student t interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest

import sim
from sim.experiments.sweep import t_quantile  # exact Student t quantile (re-exported for the tests)
from sim.model.scenario import parse_scenario

REPO = Path(__file__).resolve().parent.parent


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


@pytest.fixture
def write_scenario(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write scenario text to tmp_path/<name> and return its path."""

    def write(text: str, name: str = "scenario.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
