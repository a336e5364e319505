"""Impossible SLOs are told, with the numbers; theory of a scenario's steady parts is given."""

from __future__ import annotations

import math

import pytest
from helpers import REPO
from scipy import stats

import sim
from sim.analysis.expectations import scenario_theory
from sim.analysis.warnings import idle_slo_warnings, scenario_warnings
from sim.model.scenario import load_scenario, parse_scenario
from sim.model.workload import Demand

IDLE = """\
[scenario]
name = "idle"
duration = "2h"
seed = 5
bin = "1min"

[arrivals]
rate = "1/s"

[service]
servers = 60
time = { dist = "exponential", mean = "1s" }

[slo]
success_ratio = 0.5
"""


def _scenario(**overrides):
    return parse_scenario(IDLE, overrides=overrides)


def test_latency_target_under_the_services_own_p99_is_warned() -> None:
    """exp(1 s) has a p99 of 4.61 s: a 4 s target is warned with both figures, 5 s is not."""
    (warning,) = idle_slo_warnings(_scenario(**{"slo.latency_p99": "4s"}))
    assert "slo.latency_p99 = 4s" in warning and "4.61s" in warning
    assert idle_slo_warnings(_scenario(**{"slo.latency_p99": "5s"})) == []


@pytest.mark.parametrize(
    ("retries", "success_max"), [(0, 1 - math.exp(-1)), (3, 1 - math.exp(-4)), (5, None)]
)
def test_timeout_under_the_p99_warns_when_retries_cannot_rescue(retries, success_max) -> None:
    """A 1 s timeout on exp(1 s) service: an idle attempt succeeds with 1 − e⁻¹; N retries
    lift that to 1 − e^−(N+1): under 0.99 for 3 retries (warned), over it for 5 (silent)."""
    scenario = _scenario(
        **{"client.timeout": "1s", "client.retries": retries, "slo.success_ratio": 0.99}
    )
    warnings = idle_slo_warnings(scenario)
    if success_max is None:
        assert warnings == []
        return
    (warning,) = warnings
    assert "slo.success_ratio = 0.99" in warning
    assert f"{success_max:.4g}" in warning and "0.6321" in warning


def test_idle_success_is_what_the_warning_says() -> None:
    """The warned success (1 − e⁻¹ with a 1 s timeout, no retries) is what an idle DES run
    gets, within a 99.9% binomial interval."""
    scenario = _scenario(**{"client.timeout": "1s", "slo.success_ratio": 0.99})
    summary = sim.simulate(scenario).summary
    fresh = summary["requests"]["fresh"]
    succeeded = summary["requests"]["succeeded"]
    low, high = stats.binomtest(succeeded, fresh).proportion_ci(0.999)
    assert low <= 1 - math.exp(-1) <= high
    assert any("0.6321" in w for w in summary["warnings"])


def test_latency_bound_with_a_timeout_is_the_conditional_quantile() -> None:
    """With a 2 s timeout, successes idle have latency S | S ≤ 2: p99 = F⁻¹(0.99·F(2))
    = 1.938 s, so a 1.9 s target is warned and a 2 s one is not."""
    bound_s = -math.log(1 - 0.99 * (1 - math.exp(-2)))
    assert round(bound_s, 3) == 1.938
    timeout = {"client.timeout": "2s", "slo.success_ratio": 0.5}
    (warning,) = idle_slo_warnings(_scenario(**timeout, **{"slo.latency_p99": "1.9s"}))
    assert "1.94s" in warning
    assert idle_slo_warnings(_scenario(**timeout, **{"slo.latency_p99": "2s"})) == []


def test_deterministic_service_longer_than_the_timeout_never_succeeds() -> None:
    """Constant 1 s service behind a 0.5 s timeout: nothing can succeed, and it is said."""
    scenario = _scenario(
        **{"service.time": {"dist": "deterministic", "mean": "1s"}, "client.timeout": "500ms"}
    )
    (warning,) = idle_slo_warnings(scenario)
    assert "at most 0 of requests succeed" in warning


def test_lognormal_and_empirical_p99_are_their_own() -> None:
    """A lognormal's warned p99 is scipy's; an empirical law's is its 99th sample."""
    lognormal = {"dist": "lognormal", "mean": "1s", "cv": 2.0}
    p99_s = stats.lognorm(s=math.sqrt(math.log(5)), scale=math.exp(-math.log(5) / 2)).ppf(0.99)
    (warning,) = idle_slo_warnings(
        _scenario(**{"service.time": lognormal, "slo.latency_p99": "1s"})
    )
    assert f"{p99_s:.3g}s" in warning
    samples = [0.01 * k for k in range(1, 101)]  # p99 is the 99th: 0.99 s
    empirical = {"dist": "empirical", "samples": samples}
    assert idle_slo_warnings(_scenario(**{"service.time": empirical, "slo.latency_p99": 0.98}))
    assert not idle_slo_warnings(_scenario(**{"service.time": empirical, "slo.latency_p99": 0.99}))


def test_summary_warnings_are_always_a_list() -> None:
    """summary.json holds `warnings`, empty when nothing is wrong."""
    assert sim.simulate(_scenario(**{"scenario.duration": "10min"})).summary["warnings"] == []


# ---------------------------------------------------------------- theory of a scenario


def _theory(path_or_text, **overrides):
    if isinstance(path_or_text, str):
        scenario = parse_scenario(path_or_text, overrides=overrides)
    else:
        scenario = load_scenario(path_or_text, overrides=overrides)
    return scenario_theory(scenario, Demand(scenario))


def test_mmc_scenario_theory_is_erlang_c() -> None:
    """scenarios/mmc.toml is M/M/10 at λ = 9: P(wait) = W_q = 0.668732, 10 servers needed."""
    expected = _theory(REPO / "scenarios" / "mmc.toml")
    assert expected["applies"] and expected["model"] == "M/M/c (Erlang C)"
    assert round(expected["p_wait"], 6) == 0.668732
    assert round(expected["wait_mean_s"], 6) == 0.668732
    assert expected["utilization"] == pytest.approx(0.9)
    assert expected["offered_load"] == pytest.approx(9.0)
    assert expected["servers_needed"] == 10


def test_servers_needed_is_the_least_that_meets_the_latency_target() -> None:
    """With a 6 s p99 target, M/M/10 at λ = 9 (p99 6.25 s) falls short and M/M/11 meets it."""
    expected = _theory(REPO / "scenarios" / "mmc.toml", **{"slo.latency_p99": "6s"})
    assert expected["latency_p99_s"] > 6
    assert expected["servers_needed"] == 11


def test_loss_system_is_erlang_b_and_finite_queue_is_mmck() -> None:
    """queue_limit = 0 gives Erlang B (0.167963 at c = 10, A = 9); a finite queue M/M/c/K."""
    loss = _theory(REPO / "scenarios" / "mmc.toml", **{"service.queue_limit": 0})
    assert loss["model"] == "M/M/c/c (Erlang B)" and round(loss["blocking"], 6) == 0.167963
    finite = _theory(REPO / "scenarios" / "mmc.toml", **{"service.queue_limit": 5})
    assert finite["model"] == "M/M/c/K" and 0 < finite["blocking"] < loss["blocking"]


def test_non_exponential_service_is_allen_cunneen_named_as_such() -> None:
    """Deterministic service is M/G/c with the Allen–Cunneen wait, half of Erlang C's."""
    expected = _theory(
        REPO / "scenarios" / "mmc.toml",
        **{"service.time": {"dist": "deterministic", "mean": "1s"}},
    )
    assert expected["model"] == "M/G/c (Allen–Cunneen approximation)"
    assert expected["wait_mean_s"] == pytest.approx(0.668732 / 2, abs=1e-6)


def test_no_formula_for_retrying_clients_or_a_resized_pool() -> None:
    """Retries after timeouts, or a planner, leave theory silent with the reason, no number."""
    storm = _theory(REPO / "scenarios" / "retry-storm.toml")
    assert not storm["applies"] and "Poisson" in storm["reason"] and "p_wait" not in storm
    signal = _theory(REPO / "scenarios" / "signal-2021-01.toml")
    assert not signal["applies"] and "planner" in signal["reason"]


def test_surges_and_faults_split_the_run_into_steady_stretches() -> None:
    """A fault and a surge give stretches with the reduced pool and the raised rate."""
    text = IDLE + '\n[[faults]]\nat = "30min"\nduration = "10min"\ncapacity_factor = 0.5\n'
    text += '\n[[arrivals.surge]]\nat = "1h"\nduration = "20min"\nfactor = 40\n'
    expected = _theory(text)
    spans = [(s["start_s"], s["end_s"], s["arrival_rps"], s["servers"])
             for s in expected["stretches"]]  # fmt: skip
    assert spans == [
        (0.0, 1800.0, 1.0, 60), (1800.0, 2400.0, 1.0, 30), (2400.0, 3600.0, 1.0, 60),
        (3600.0, 4800.0, 40.0, 60), (4800.0, 7200.0, 1.0, 60),
    ]  # fmt: skip
    surge = expected["stretches"][3]
    assert surge["p_wait"] == pytest.approx(sim.analysis.theory.erlang_c(60, 40.0))
    assert "p_wait" not in expected  # not stationary as a whole


SEEDS = range(1, 21)
# A 95% interval misses its true value in 1 run of 20 on average; 15 of 20 or more hold with
# probability 0.9997 when the coverage is right (binomial), and 0.02 when the model and the
# run differ enough that each interval holds half the time.
MIN_AGREEING = 15


def _compare_rows(overrides: dict) -> list[list[dict]]:
    """summary.theory.compare of the 6 h M/M/10 run (λ = 9, μ = 1) for each of SEEDS."""
    runs = []
    for seed in SEEDS:
        scenario = load_scenario(
            REPO / "scenarios" / "mmc.toml",
            overrides={"scenario.duration": "6h", "scenario.seed": seed, **overrides},
        )
        runs.append(sim.simulate(scenario).summary["theory"]["compare"])
    return runs


def test_compare_puts_theory_inside_the_runs_interval() -> None:
    """Runs of M/M/10 at λ = 9 (6 h) have Erlang C's utilisation, mean queue and mean wait
    inside their batch-means 95% intervals as often as 95% intervals should (a single seed
    misses now and then: seed 1 misses the wait by 0.012 s)."""
    runs = _compare_rows({})
    for rows in runs:
        by_figure = {row["figure"]: row for row in rows}
        assert set(by_figure) >= {"utilization", "wait_mean_s", "queue_mean"}
        for row in rows:
            assert row["ci_low"] < row["simulated"] < row["ci_high"]
            assert row["agrees"] == (row["ci_low"] <= row["theory"] <= row["ci_high"])
    for figure in ("utilization", "wait_mean_s", "queue_mean"):
        agreeing = sum(r["agrees"] for rows in runs for r in rows if r["figure"] == figure)
        assert agreeing >= MIN_AGREEING, (figure, agreeing)


def test_compare_disagrees_when_the_run_is_not_the_model() -> None:
    """Against a DES whose service is deterministic, the Erlang C figures of an exponential
    law would be wrong: the mean wait's interval excludes the M/M/c value."""
    scenario = load_scenario(
        REPO / "scenarios" / "mmc.toml",
        overrides={"scenario.duration": "6h",
                   "service.time": {"dist": "deterministic", "mean": "1s"}},
    )  # fmt: skip
    row = next(r for r in sim.simulate(scenario).summary["theory"]["compare"]
               if r["figure"] == "wait_mean_s")  # fmt: skip
    mmc_wait_s = 0.668732
    assert not row["ci_low"] <= mmc_wait_s <= row["ci_high"]
    # Allen–Cunneen halves it (exact for M/D/1, an approximation at c = 10), within 10%.
    assert row["theory"] == pytest.approx(row["simulated"], rel=0.1)


def test_scenario_warnings_join_both_kinds() -> None:
    """scenario_warnings holds the idle-SLO warning and the scale warning together."""
    scenario = parse_scenario(
        IDLE.replace("servers = 60", "servers = 100").replace('"1/s"', '"92/s"'),
        overrides={"scenario.scale": 10, "slo.latency_p99": "4s"},
    )
    warnings = scenario_warnings(scenario, Demand(scenario))
    assert len(warnings) == 2
    assert "slo.latency_p99" in warnings[0] and "scale 10" in warnings[1]


def test_success_with_a_timeout_is_the_response_tail_and_agrees_with_the_run() -> None:
    """Clients that give up after 2 s and never retry leave the pool M/M/10: success is
    P(W + S <= 2 s) = 0.6837 (the closed form), and the runs' batch-means intervals hold it
    as often as 95% intervals should."""
    scenario = load_scenario(
        REPO / "scenarios" / "mmc.toml",
        overrides={"scenario.duration": "6h", "client.timeout": "2s"},
    )
    summary = sim.simulate(scenario).summary
    # cμ − λ = μ = 1: W + S > t has probability e^{−t}(1 + C·t), C = Erlang C(10, 9).
    expected = 1 - math.exp(-2.0) * (1 + 2.0 * sim.analysis.theory.erlang_c(10, 9.0))
    assert summary["theory"]["success_ratio"] == pytest.approx(expected, rel=1e-9)
    rows = [
        next(r for r in compare if r["figure"] == "success_ratio")
        for compare in _compare_rows({"client.timeout": "2s"})
    ]
    assert all(row["theory"] == pytest.approx(expected, rel=1e-9) for row in rows)
    assert all(row["ci_high"] - row["ci_low"] < 0.1 for row in rows)
    assert sum(row["agrees"] for row in rows) >= MIN_AGREEING


def test_an_attempt_that_almost_never_finishes_in_time_warns_without_error() -> None:
    """A service time of 2e301 ms (a fuzzed file) against a 2 s timeout: an attempt finishes
    in time with a probability that rounds success_max to 0; the idle-SLO warnings say so
    instead of failing on a quantile of 0."""
    scenario = load_scenario(
        REPO / "scenarios" / "mmc.toml",
        overrides={
            "service.time": {"dist": "exponential", "mean": "20e300ms"},
            "client": {"timeout": "2s", "retries": 3},
            "slo.latency_p99": "2s",
        },
    )
    warnings = scenario_warnings(scenario, Demand(scenario))
    assert any("cannot be met even by an idle service" in w for w in warnings)
