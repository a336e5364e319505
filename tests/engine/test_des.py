"""The DES engine judged by queueing theory, through the public API `sim.simulate`.

Each statistical test runs independent replications (one seed each) and checks that the exact
answer of `sim.analysis.theory` lies inside the 99.9% Student t interval of the replication
means; it
also checks the interval is narrow enough to have caught a real error. 99.9% rather than 99%
because the file makes about sixty such comparisons: at 99% a mere change of the engine's
random streams would fail one of them about half the time (at 99.9%, about one time in 16).
The cases are deliberately not the worked examples of the theory reference: the mechanism is
tested, not the examples. Runs start empty; at these lengths (10^4 arrivals or more a
replication, relaxation times of tens of seconds) the start-up bias is a fraction of a per
cent, well inside the intervals (800 replications of M/M/2 at ρ = 0.7: 0.4 ± 0.3%).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import assert_within, mean_interval, queue_text, replicate, t_quantile

import sim
from sim.analysis import theory
from sim.io import summary_json
from sim.model.scenario import parse_scenario
from sim.report.writer import timeseries_csv

SEEDS = range(1, 21)
ARRIVALS_PER_REP = 10_000
CONFIDENCE = 0.999
# Largest half-widths, relative to the exact answer, that a test accepts: about 1.3 times the
# widest seen over six groups of seeds, so a test cannot pass by being too vague to fail.
MEAN_REL, RATIO_REL, BLOCKING_REL, UTILIZATION_REL = 0.15, 0.05, 0.08, 0.02


def assert_theory(values, exact: float, max_rel: float | None = None):
    """The exact answer lies in the 99.9% interval of the replications (see the docstring)."""
    return assert_within(values, exact, confidence=CONFIDENCE, max_rel=max_rel)


def _waits(results, key: str) -> list[float]:
    return [r.summary["wait_s"][key] for r in results]


def _blocking(results) -> list[float]:
    return [r.summary["requests"]["rejected"] / r.summary["requests"]["attempts"] for r in results]


def test_t_quantile_matches_tables() -> None:
    """The Student t quantile the intervals use matches printed tables to 3 decimals."""
    assert t_quantile(0.995, 19) == pytest.approx(2.861, abs=1e-3)
    assert t_quantile(0.995, 9) == pytest.approx(3.250, abs=1e-3)
    assert t_quantile(0.975, 29) == pytest.approx(2.045, abs=1e-3)


# ------------------------------------------------------------------------- M/M/c (Erlang C)


@pytest.mark.parametrize(
    ("rate_rps", "mean_s", "servers"),
    [(1.4, 1.0, 2), (4.0, 1.0, 5), (6.0, 0.5, 4)],
    ids=["c2-rho0.7", "c5-rho0.8", "c4-mean0.5s-rho0.75"],
)
def test_mmc_wait_matches_erlang_c(rate_rps: float, mean_s: float, servers: int) -> None:
    """M/M/c mean wait, P(wait), mean queue and utilisation match Erlang C within 99% CIs."""
    exact = theory.mmc(rate_rps, 1 / mean_s, servers)
    text = queue_text(
        rate_rps=rate_rps, servers=servers, mean_s=mean_s, duration_s=20_000 / rate_rps
    )
    results = replicate(text, SEEDS)
    assert_theory(_waits(results, "mean"), exact.wait_mean_s, max_rel=MEAN_REL)
    assert_theory(_waits(results, "p_wait"), exact.p_wait, max_rel=RATIO_REL)
    assert_theory([r.summary["queue"]["mean"] for r in results], exact.queue_mean, MEAN_REL)
    assert_theory(
        [r.summary["latency_s"]["mean"] for r in results], exact.response_mean_s, MEAN_REL
    )
    assert_theory([r.summary["utilization"] for r in results], exact.utilization, UTILIZATION_REL)


def test_lifo_keeps_the_mean_wait_of_fifo() -> None:
    """LIFO in M/M/c keeps Erlang C's mean wait and P(wait) but spreads waits wider (p99)."""
    rate_rps, servers = 2.4, 3
    exact = theory.mmc(rate_rps, 1.0, servers)
    common = dict(rate_rps=rate_rps, servers=servers, duration_s=2 * ARRIVALS_PER_REP / rate_rps)
    lifo = replicate(queue_text(discipline="lifo", **common), SEEDS)
    assert_theory(_waits(lifo, "mean"), exact.wait_mean_s, max_rel=MEAN_REL)
    assert_theory(_waits(lifo, "p_wait"), exact.p_wait, max_rel=RATIO_REL)
    fifo = replicate(queue_text(discipline="fifo", **common), SEEDS[:10])
    lifo_p99 = np.mean([r.summary["latency_s"]["p99"] for r in lifo[:10]])
    fifo_p99 = np.mean([r.summary["latency_s"]["p99"] for r in fifo])
    assert lifo_p99 > 1.2 * fifo_p99


# ----------------------------------------------------------------- loss and finite queues


@pytest.mark.parametrize(("servers", "load"), [(4, 3.0), (8, 10.0)], ids=["c4-A3", "c8-A10"])
def test_loss_system_blocking_matches_erlang_b(servers: int, load: float) -> None:
    """queue_limit = 0 makes M/M/c/c: rejected/attempts matches Erlang B; nobody waits."""
    text = queue_text(
        rate_rps=load, servers=servers, queue_limit=0, duration_s=ARRIVALS_PER_REP / load
    )
    results = replicate(text, SEEDS)
    blocking = theory.erlang_b(servers, load)
    assert_theory(_blocking(results), blocking, max_rel=BLOCKING_REL)
    # Carried load A(1 − B) spread over c servers.
    carried = load * (1 - blocking) / servers
    assert_theory([r.summary["utilization"] for r in results], carried, UTILIZATION_REL)
    assert all(r.summary["wait_s"]["p_wait"] == 0 for r in results)
    assert all(r.summary["queue"]["max"] == 0 for r in results)


@pytest.mark.parametrize(
    ("rate_rps", "servers", "queue_limit"),
    [(1.2, 1, 4), (2.7, 3, 3)],
    ids=["M/M/1/5-overloaded", "M/M/3/6"],
)
def test_finite_queue_blocking_matches_mmck(rate_rps: float, servers: int, queue_limit: int):
    """queue_limit = q gives M/M/c/K with K = c + q: the blocking ratio matches theory."""
    text = queue_text(
        rate_rps=rate_rps,
        servers=servers,
        queue_limit=queue_limit,
        duration_s=ARRIVALS_PER_REP / rate_rps,
    )
    results = replicate(text, SEEDS)
    exact = theory.mmck_blocking(rate_rps, 1.0, servers, servers + queue_limit)
    if servers == 1:
        assert exact == pytest.approx(theory.mm1k_blocking(rate_rps, 1.0, 1 + queue_limit))
    assert_theory(_blocking(results), exact, max_rel=BLOCKING_REL)
    for result in results:
        ts = result.timeseries
        assert ts["queue"].max() <= queue_limit
        assert result.summary["queue"]["max"] <= queue_limit
        # Every attempt was answered, refused, or is still in the system at the end.
        requests = result.summary["requests"]
        in_system = ts["queue"][-1] + ts["busy"][-1]
        assert requests["succeeded"] + requests["rejected"] + in_system == requests["attempts"]


# --------------------------------------------------------------- M/G/1 (Pollaczek–Khinchine)

PK_CASES = {
    "M/D/1-rho0.7": (dict(rate_rps=0.7, dist="deterministic", mean_s=1.0), 1.0, 1.0),
    "M/D/1-S0.25s-rho0.75": (dict(rate_rps=3.0, dist="deterministic", mean_s=0.25), 0.25, 0.0625),
    "lognormal-cv1.5": (dict(rate_rps=0.5, dist="lognormal", mean_s=1.0, cv=1.5), 1.0, 3.25),
    "gamma-cv0.5": (dict(rate_rps=0.8, dist="gamma", mean_s=1.0, cv=0.5), 1.0, 1.25),
    "empirical": (dict(rate_rps=0.5, dist="empirical", samples=[0.5, 0.5, 1, 3]), 1.25, 2.625),
}


@pytest.mark.parametrize("case", list(PK_CASES))
def test_mg1_wait_matches_pollaczek_khinchine(case: str) -> None:
    """M/G/1 mean wait matches Pollaczek–Khinchine and P(wait) equals ρ (PASTA), 99% CIs."""
    spec, mean_s, second_moment_s2 = PK_CASES[case]
    rate_rps = spec["rate_rps"]
    text = queue_text(servers=1, duration_s=1.5 * ARRIVALS_PER_REP / rate_rps, **spec)
    exact = theory.pollaczek_khinchine_wait(rate_rps, mean_s, second_moment_s2)
    # The table's moments agree with the helpers and the scenario's own service-time model.
    scenario = parse_scenario(text)
    assert scenario.service.time.mean_s == pytest.approx(mean_s)
    assert scenario.service.time.second_moment_s2 == pytest.approx(second_moment_s2)
    if spec["dist"] == "deterministic":
        assert exact == pytest.approx(theory.md1_wait(rate_rps, mean_s))
    if "cv" in spec:
        assert exact == pytest.approx(theory.mg1_wait_from_cv(rate_rps, mean_s, spec["cv"]))
    results = replicate(text, SEEDS)
    assert_theory(_waits(results, "mean"), exact, max_rel=MEAN_REL)
    assert_theory(_waits(results, "p_wait"), rate_rps * mean_s, max_rel=RATIO_REL)


# ------------------------------------------------------------------- overload from empty


@pytest.mark.parametrize(
    ("rate_rps", "servers", "duration_s", "bin_s", "reps"),
    [(1.3, 1, 300, 10, 200), (4.0, 3, 120, 10, 150)],
    ids=["M/M/1-rho1.3", "M/M/3-rho1.33"],
)
def test_overload_mean_in_system_matches_transient(rate_rps, servers, duration_s, bin_s, reps):
    """From empty with λ > cμ, mean (queue + busy) at bin ends matches the exact transient."""
    text = queue_text(rate_rps=rate_rps, servers=servers, duration_s=duration_s, bin_s=bin_s)
    results = replicate(text, range(1, reps + 1))
    in_system = np.array([r.timeseries["queue"] + r.timeseries["busy"] for r in results])
    ends = results[0].timeseries["t_s"] + bin_s
    checks = [len(ends) // 4 - 1, len(ends) // 2 - 1, len(ends) - 1]
    for i in checks:  # Bonferroni: three looks share the 0.1% error
        exact = theory.mmc_transient_mean_in_system(rate_rps, 1.0, servers, float(ends[i]))
        assert_within(
            in_system[:, i], exact, confidence=1 - (1 - CONFIDENCE) / len(checks), max_rel=0.2
        )
    # Late in the run the queue grows at the fluid line's slope λ − cμ.
    first, last = checks[1], checks[2]
    span = float(ends[last] - ends[first])
    line = theory.overload_queue_line(rate_rps, 1.0, servers, span)
    exact_growth = theory.mmc_transient_mean_in_system(
        rate_rps, 1.0, servers, float(ends[last])
    ) - theory.mmc_transient_mean_in_system(rate_rps, 1.0, servers, float(ends[first]))
    growth, half = mean_interval(in_system[:, last] - in_system[:, first], CONFIDENCE)
    assert abs(exact_growth - line) < 0.1 * half  # the line is exact here, to the CI's scale
    assert abs(growth - line) <= half
    # Those not in service wait: busy is all servers once the queue has built up.
    assert np.all(in_system[:, last] >= 0)
    late = np.array([r.timeseries["queue"][last] for r in results]) > 0
    busy = np.array([r.timeseries["busy"][last] for r in results])
    assert np.all(busy[late] == servers)


# ------------------------------------------------------------------------------- retries

RETRY_TEXT = """\
[scenario]
name = "retries"
duration = "1000s"
bin = "100s"

[arrivals]
rate = 20

[service]
servers = 50
time = { dist = "exponential", mean = "50ms" }
error_rate = 0.3

[client]
retries = 2
backoff = { base = "10ms", cap = "100ms", jitter = "full" }
"""


def test_retries_of_independent_failures_match_theory() -> None:
    """Attempts fail with p = 0.3, 2 retries: amplification and success match the formulas."""
    # attempts/fresh = (1 − p³)/(1 − p), success 1 − p³; with p = 1 exactly 3× the fresh load.
    results = replicate(RETRY_TEXT, SEEDS[:10])
    assert_theory(
        [r.summary["amplification"] for r in results],
        theory.retry_expected_attempts(0.3, 2),
        max_rel=0.02,
    )
    assert_theory(
        [r.summary["success_ratio"] for r in results],
        theory.retry_success_probability(0.3, 2),
        max_rel=0.01,
    )
    always = sim.simulate(parse_scenario(RETRY_TEXT, overrides={"service.error_rate": 1.0}))
    requests = always.summary["requests"]
    assert requests["succeeded"] == 0
    # Only retries still waiting out their backoff at the very end are missing.
    assert 3 * requests["fresh"] - requests["attempts"] <= 2 * 20 * 0.1 * 10
    assert requests["rejected"] == requests["attempts"]


# ------------------------------------------------------------------------ counting and scale


def test_counts_are_poisson_and_reported_in_real_units() -> None:
    """Fresh counts match λT within a Poisson interval, also at scale = 10 (real units)."""
    rate_rps, duration_s = 50.0, 2000.0
    text = queue_text(rate_rps=rate_rps, servers=60, duration_s=duration_s)
    expected = rate_rps * duration_s
    plain = sim.simulate(parse_scenario(text))
    scaled = sim.simulate(parse_scenario(text, overrides={"scenario.scale": 10}))
    z = 3.29  # two-sided 99.9%
    assert abs(plain.summary["requests"]["fresh"] - expected) <= z * math.sqrt(expected)
    # At scale 10 each simulated request stands for 10: the count's sd is 10·sqrt(λT/10).
    assert abs(scaled.summary["requests"]["fresh"] - expected) <= z * 10 * math.sqrt(expected / 10)
    assert scaled.summary["requests"]["fresh"] % 10 == 0
    assert np.all(scaled.timeseries["servers"] == 60)
    assert scaled.summary["scale"] == 10
    # Per-bin fresh counts add up to the total and demand_rps is the scenario's rate.
    assert plain.timeseries["fresh"].sum() == plain.summary["requests"]["fresh"]
    assert np.allclose(plain.timeseries["demand_rps"], rate_rps)


# ------------------------------------------------------------------- capacity and faults

CONTROLS_TEXT = """\
[scenario]
name = "controls"
duration = "1h"
bin = "1min"
seed = 4

[arrivals]
rate = "5/s"

[service]
servers = 10
time = { dist = "exponential", mean = "1s" }

[[capacity.change]]
at = "30min"
servers = 20

[[faults]]
at = "10min"
duration = "5min"
capacity_factor = 0.2
"""


def test_capacity_changes_and_faults_set_the_servers() -> None:
    """Planned changes and faults set the servers column; the fault's ends are events."""
    result = sim.simulate(parse_scenario(CONTROLS_TEXT))
    # At each bin's end, before any change at that very instant (the left limit).
    servers = result.timeseries["servers"]
    minute = np.arange(len(servers)) + 1
    expected = np.where(minute > 30, 20, 10)
    expected = np.where((minute > 10) & (minute <= 15), 2, expected)
    assert servers.tolist() == expected.tolist()
    assert np.all(result.timeseries["busy"] <= servers)
    kinds = [e["kind"] for e in result.summary["timeline"]]
    assert "fault_end" in kinds
    # Capacity while 2 servers serve 5/s: the queue builds during the fault.
    assert result.timeseries["queue"][13] > 100
    assert result.timeseries["capacity_rps"][11] == pytest.approx(2.0)


def test_utilization_never_exceeds_one_when_capacity_drops() -> None:
    """Per-bin utilisation stays within [0, 1] through a fault that removes busy servers."""
    result = sim.simulate(parse_scenario(CONTROLS_TEXT))
    utilization = result.timeseries["utilization"]
    assert np.all((utilization >= 0) & (utilization <= 1 + 1e-12)), utilization.max()


# ---------------------------------------------------------------------------- determinism

BUSY_TEXT = """\
[scenario]
name = "busy"
title = "every random path at once"
start = 2021-01-15T00:00:00Z
duration = "1h"
bin = "1min"
seed = 7

[arrivals]
rate = "8/s"
diurnal = { amplitude = 0.3, peak = "01:00" }

[[arrivals.surge]]
at = "15min"
duration = "15min"
factor = 2.5
ramp = "2min"

[service]
servers = 12
time = { dist = "lognormal", mean = "1s", cv = 1.2 }
queue_limit = 400

[[faults]]
at = "45min"
duration = "5min"
capacity_factor = 0.5

[client]
timeout = "5s"
retries = 2
backoff = { base = "200ms", cap = "5s", jitter = "full" }

[slo]
success_ratio = 0.95
latency_p99 = "4s"
min_duration = "3min"
"""


def _without_wall_time(summary_text: str) -> str:
    """summary.json text without the lines that measure the machine, not the run."""
    return "".join(
        line
        for line in summary_text.splitlines(keepends=True)
        if '"wall_time_s"' not in line and '"simulated_per_s"' not in line
    )


@pytest.fixture(scope="module")
def busy_run() -> sim.Result:
    """One run of BUSY_TEXT with its own seed, shared by the determinism tests."""
    return sim.simulate(parse_scenario(BUSY_TEXT))


def test_same_seed_gives_identical_outputs(busy_run: sim.Result, tmp_path) -> None:
    """The same seed gives byte-identical summary.json (wall time aside) and timeseries.csv."""
    again = sim.simulate(parse_scenario(BUSY_TEXT))
    requests = busy_run.summary["requests"]
    assert requests["retries"] > 0 and requests["timed_out"] > 0  # the client path really ran
    assert _without_wall_time(summary_json(busy_run.summary)) == _without_wall_time(
        summary_json(again.summary)
    )
    assert timeseries_csv(busy_run.timeseries) == timeseries_csv(again.timeseries)
    # And as files, through write_report.
    for folder, result in (("a", busy_run), ("b", again)):
        sim.write_report(result, tmp_path / folder, charts=False)
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "timeseries.csv").read_bytes() == (b / "timeseries.csv").read_bytes()
    assert _without_wall_time((a / "summary.json").read_text()) == _without_wall_time(
        (b / "summary.json").read_text()
    )


def test_another_seed_gives_other_numbers(busy_run: sim.Result) -> None:
    """A different seed changes the counts, the waits and the per-bin series."""
    other = sim.simulate(parse_scenario(BUSY_TEXT, overrides={"scenario.seed": 8}))
    assert other.summary["seed"] == 8
    assert busy_run.summary["requests"]["fresh"] != other.summary["requests"]["fresh"]
    assert busy_run.summary["wait_s"]["mean"] != other.summary["wait_s"]["mean"]
    assert timeseries_csv(busy_run.timeseries) != timeseries_csv(other.timeseries)
