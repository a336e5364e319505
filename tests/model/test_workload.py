"""Demand λ(t) and the kernel's arrival sampler (inversion of the mean count on the demand's
grid): counts, surges, the daily cycle, user populations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from sim.engine.kernel_store import arrival_after
from sim.errors import ScenarioError
from sim.model.scenario import load_scenario, parse_scenario
from sim.model.workload import DAY_S, Demand

SERVICE = '\n[service]\nservers = 1\ntime = { dist = "exponential", mean = 1 }\n'


def _demand(text: str) -> Demand:
    return Demand(parse_scenario(text + SERVICE))


def _arrivals(demand: Demand, scale: float = 1.0, seed: int = 1) -> np.ndarray:
    """The arrival times the kernel draws: each point of a unit-rate Poisson process (running
    sums of the arrival stream's exponentials) through `arrival_after`, as `next_arrival` does."""
    t, low, slope, mass = demand.unit_grid(scale)
    grid = t, low[None, :], slope[None, :], mass[None, :]
    total = mass[-1]
    n = int(total + 10 * math.sqrt(total) + 100)
    units = np.cumsum(np.random.default_rng(seed).standard_exponential(n))
    assert units[-1] > total  # the demand is spent within the draws
    times, cell = [], 0
    for u in units.tolist():
        at, cell = arrival_after(*grid, 0, cell, u)
        if at == math.inf:
            break
        times.append(at)
    return np.maximum.accumulate(np.asarray(times))


def _assert_poisson_counts(arrivals: np.ndarray, demand: Demand, edges: np.ndarray, scale=1.0):
    """Counts per window match the integral of λ/scale within 4 sd (Bonferroni over windows)."""
    counts = np.histogram(arrivals, bins=edges)[0]
    expected = np.diff(demand.cumulative(edges)) / scale
    # 4 sd leaves ~6e-5 per window, so 100 windows share well under 1% of false alarms.
    assert np.all(np.abs(counts - expected) <= 4 * np.sqrt(expected) + 1), np.max(
        np.abs(counts - expected) / np.sqrt(np.maximum(expected, 1))
    )
    total, expected_total = len(arrivals), expected.sum()
    assert abs(total - expected_total) <= 3.3 * math.sqrt(expected_total)


BUSY_DAY = """\
[scenario]
name = "w"
start = 2021-01-15T06:00:00Z
duration = "1d"
bin = "10min"

[arrivals]
rate = "3/s"
diurnal = { amplitude = 0.6, peak = "20:00" }

[[arrivals.surge]]
at = "3h"
duration = "2h"
factor = 4
ramp = "30min"

[[arrivals.surge]]
at = "15h"
duration = "90s"
rate = "40/s"
"""


def test_arrival_counts_match_the_integral_of_the_rate() -> None:
    """Arrivals per 15 min match ∫λ over each window (surges, ramps, daily cycle) in Poisson CIs."""
    demand = _demand(BUSY_DAY)
    arrivals = _arrivals(demand)
    assert np.all(np.diff(arrivals) >= 0)
    assert arrivals[0] >= 0 and arrivals[-1] < DAY_S
    _assert_poisson_counts(arrivals, demand, np.arange(0, DAY_S + 1, 900.0))


def test_arrivals_at_scale_are_a_scaled_process() -> None:
    """At scale s the sampler draws λ/s (each arrival stands for s real ones)."""
    demand = _demand(BUSY_DAY)
    arrivals = _arrivals(demand, scale=25.0, seed=2)
    _assert_poisson_counts(arrivals, demand, np.arange(0, DAY_S + 1, 3600.0), scale=25.0)


def test_gaps_at_a_constant_rate_are_exponential() -> None:
    """At a constant rate, gaps between arrivals are exponential with mean 1/λ (KS test at 1%,
    seed fixed): the inversion adds no structure inside or across the grid's cells."""
    demand = _demand(
        '[scenario]\nname = "w"\nduration = "2h"\nbin = "1min"\n[arrivals]\nrate = 7\n'
    )
    gaps = np.diff(_arrivals(demand, seed=4))
    assert stats.kstest(gaps, "expon", args=(0, 1 / 7)).pvalue > 0.01


def test_arrivals_on_a_ramp_follow_the_quadratic_mean_count() -> None:
    """On a rate climbing linearly from 1/s to 200/s, the counts in 6 s windows (a tenth of the
    grid's 60 s cells) follow the integral of the ramp: the root of each cell's quadratic,
    not its mean rate spread evenly (which would miss by about 10% at the cells' ends)."""
    text = """\
[scenario]
name = "w"
duration = "10min"
bin = "10min"

[arrivals]
rate = 1

[[arrivals.surge]]
at = 0
duration = "20min"
factor = 200
ramp = "10min"
"""
    demand = _demand(text)
    assert demand.rate(300.0) == pytest.approx(100.5)
    arrivals = np.concatenate([_arrivals(demand, seed=seed) for seed in range(1, 6)])
    edges = np.linspace(0.0, 600.0, 101)
    counts = np.histogram(arrivals, bins=edges)[0]
    expected = 5 * np.diff(demand.cumulative(edges))
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < stats.chi2.ppf(0.999, df=len(counts))


def test_same_rng_seed_gives_the_same_arrivals() -> None:
    """The sampler is a pure function of its generator's seed."""
    demand = _demand(BUSY_DAY)
    assert np.array_equal(_arrivals(demand, seed=5), _arrivals(demand, seed=5))
    assert not np.array_equal(_arrivals(demand, seed=5)[:100], _arrivals(demand, seed=6)[:100])


def test_rate_follows_surge_ramps() -> None:
    """A factor surge ramps linearly up and down; a rate surge replaces the rate outright."""
    demand = _demand(BUSY_DAY.replace('diurnal = { amplitude = 0.6, peak = "20:00" }', ""))
    h = 3600.0
    assert demand.rate(2.9 * h) == pytest.approx(3.0)
    assert demand.rate(3 * h + 900) == pytest.approx(3.0 + 0.5 * 9.0)  # half-way up the ramp
    assert demand.rate(4 * h) == pytest.approx(12.0)
    assert demand.rate(5 * h - 900) == pytest.approx(3.0 + 0.5 * 9.0)  # half-way down
    assert demand.rate(5.1 * h) == pytest.approx(3.0)
    assert demand.rate(15 * h + 45) == pytest.approx(40.0)
    # Expected count of the ramped surge: 2 h at 12/s less two half-ramps of 9/s.
    extra = demand.cumulative(5 * h) - demand.cumulative(3 * h) - 3.0 * 2 * h
    assert extra == pytest.approx(9.0 * (2 * h - 1800))


@pytest.mark.parametrize("at_s", [3601.3, 3659.9, 10.0])
def test_a_short_surge_is_never_skipped(at_s: float) -> None:
    """A 700 ms surge inside one one-hour bin gets its arrivals (the grid splits at its edges)."""
    text = f"""\
[scenario]
name = "w"
duration = "2h"
bin = "1h"

[arrivals]
rate = 0.01

[[arrivals.surge]]
at = {at_s}
duration = "700ms"
rate = "2000/s"
"""
    demand = _demand(text)
    assert demand.peak(0, 7200) == pytest.approx(2000.0)
    assert demand.rate(at_s + 0.35) == pytest.approx(2000.0)
    expected = 2000 * 0.7
    for seed in range(1, 4):
        arrivals = _arrivals(demand, seed=seed)
        inside = np.count_nonzero((arrivals >= at_s) & (arrivals < at_s + 0.7))
        assert abs(inside - expected) <= 4 * math.sqrt(expected)


def test_daily_cycle_peaks_at_its_local_time() -> None:
    """λ = rate·(1 + a·cos(2π(clock − peak)/1 d)), with the clock from scenario.start."""
    text = BUSY_DAY.split("[[arrivals.surge]]")[0].replace('"1d"', '"2d"')
    demand = _demand(text)
    h = 3600.0
    # start is 06:00 UTC, so the 20:00 peak is 14 h in and the trough 12 h later.
    assert demand.rate(14 * h) == pytest.approx(3.0 * 1.6, rel=1e-4)
    assert demand.rate(26 * h) == pytest.approx(3.0 * 0.4, rel=1e-4)
    assert demand.rate(38 * h) == pytest.approx(3.0 * 1.6, rel=1e-4)
    grid = np.linspace(0, 2 * DAY_S, 2001)
    assert abs(grid[np.argmax(demand.rate(grid))] - 14 * h) <= 2 * 60
    # Over whole days the cycle averages out.
    assert demand.cumulative(DAY_S) == pytest.approx(3.0 * DAY_S, rel=1e-4)
    assert demand.bin_means(DAY_S, 2) == pytest.approx([3.0, 3.0], rel=1e-4)


# ------------------------------------------------------------------------------ population

POPULATION = """\
[scenario]
name = "p"
duration = "4d"
bin = "1h"

[population]
initial_users = 1_000_000
downloads = "86400/day"
activation = 0.5
requests_per_user = "8640/day"
requests_per_signup = 20
"""


def test_population_users_accumulate_from_downloads() -> None:
    """λ = (U0 + a·D·t)·r + a·D·k: users grow linearly with downloads, sign-ups add a step."""
    demand = _demand(POPULATION)
    downloads_rps, activation, per_user_rps, per_signup = 1.0, 0.5, 0.1, 20
    for t in (0.5 * DAY_S, DAY_S, 2.5 * DAY_S, 3.9 * DAY_S):
        users = 1_000_000 + activation * downloads_rps * t
        expected = users * per_user_rps + activation * downloads_rps * per_signup
        assert demand.rate(t) == pytest.approx(expected, rel=1e-6)


def test_population_surge_leaves_more_users_behind() -> None:
    """A download surge adds users who stay: after it the rate is higher by a·ΔD·dur·r."""
    base = _demand(POPULATION)
    text = POPULATION + '\n[[population.surge]]\nat = "1d"\nduration = "12h"\nfactor = 11\n'
    surged = _demand(text)
    extra_users = 0.5 * (11 - 1) * 1.0 * 12 * 3600
    for t in (2 * DAY_S, 3.5 * DAY_S):
        assert surged.rate(t) - base.rate(t) == pytest.approx(extra_users * 0.1, rel=1e-3)
    # During the surge sign-up work arrives at once: 10 more downloads/s, half activate.
    # Users are integrated on a one-minute grid, so a jump may count a minute's downloads.
    mid = 1.25 * DAY_S
    assert surged.rate(mid) - base.rate(mid) == pytest.approx(
        0.5 * 10 * 20 + 0.5 * 10 * 6 * 3600 * 0.1, abs=0.5 * 10 * 60 * 0.1
    )


def _csv_scenario(tmp_path: Path, rows: list[str], header: str = "date,downloads") -> Path:
    (tmp_path / "downloads.csv").write_text("\n".join([header, *rows]) + "\n")
    path = tmp_path / "s.toml"
    path.write_text(
        """\
[scenario]
name = "csv"
start = 2021-01-01T00:00:00Z
duration = "5d"
bin = "1h"

[population]
downloads_csv = "downloads.csv"
requests_per_user = 0
requests_per_signup = 1
"""
        + SERVICE
    )
    return path


def test_csv_replay_interpolates_between_daily_noons(tmp_path: Path) -> None:
    """Each CSV row is a day's downloads at that day's noon; between rows λ is linear."""
    path = _csv_scenario(tmp_path, ["2021-01-02,86400", "2021-01-03,259200", "2021-01-04,86400"])
    demand = Demand(load_scenario(path))
    h = 3600.0
    assert demand.rate(36 * h) == pytest.approx(1.0)  # 2 Jan noon
    assert demand.rate(60 * h) == pytest.approx(3.0)  # 3 Jan noon
    assert demand.rate(48 * h) == pytest.approx(2.0)  # midnight between them
    assert demand.rate(54 * h) == pytest.approx(2.5)
    assert demand.rate(6 * h) == pytest.approx(1.0)  # before the first row: held
    assert demand.rate(110 * h) == pytest.approx(1.0)  # after the last row: held


def test_csv_replay_accumulates_users(tmp_path: Path) -> None:
    """Users from replayed downloads accumulate: λ from users grows by ∫downloads."""
    path = _csv_scenario(tmp_path, ["2021-01-01,86400", "2021-01-05,86400"])
    path.write_text(
        path.read_text()
        .replace("requests_per_user = 0", 'requests_per_user = "86400/day"')
        .replace("requests_per_signup = 1", "requests_per_signup = 0")
    )
    demand = Demand(load_scenario(path))
    for days in (1, 2, 4):
        # 1 download/s all along, all activate, each user sends 1 request/s.
        assert demand.rate(days * DAY_S) == pytest.approx(days * DAY_S, rel=1e-3)


@pytest.mark.parametrize(
    ("rows", "line", "fragment"),
    [
        (["2021-01-02,100", "2021-01-03,lots", "2021-01-04,5"], 3, "bad row"),
        (["2021-01-02,100", "not-a-date,100"], 3, "bad row"),
        (["2021-01-02,100", "2021-01-03,200", "2021-01-04,-5"], 4, ">= 0"),
        (["2021-01-03,100", "2021-01-02,100"], 3, "dates must increase"),
        (["2021-01-02,100", "2021-01-03,nan"], 3, "finite"),
    ],
)
def test_bad_csv_row_names_its_line(tmp_path: Path, rows, line, fragment) -> None:
    """A bad row of a downloads CSV is a ScenarioError naming the CSV file and the row's line."""
    path = _csv_scenario(tmp_path, rows)
    with pytest.raises(ScenarioError, match=fragment) as info:
        Demand(load_scenario(path))
    assert info.value.line == line
    assert info.value.file.endswith("downloads.csv")


def test_csv_without_the_columns_is_an_error_on_line_one(tmp_path: Path) -> None:
    """A CSV without `date` and `downloads` columns is reported on its header line."""
    path = _csv_scenario(tmp_path, ["2021-01-02,100"], header="day,count")
    with pytest.raises(ScenarioError, match="no column") as info:
        Demand(load_scenario(path))
    assert info.value.line == 1


def test_csv_needs_a_start(tmp_path: Path) -> None:
    """Replaying dates needs scenario.start to place them."""
    path = _csv_scenario(tmp_path, ["2021-01-02,100"])
    path.write_text(path.read_text().replace("start = 2021-01-01T00:00:00Z\n", ""))
    with pytest.raises(ScenarioError, match="scenario.start"):
        Demand(load_scenario(path))
