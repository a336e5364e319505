"""Clients that time out and retry: amplification, budgets, backoff, abandoned work, storms.

Retry amplification is judged against (1 - p^(N+1)) / (1 - p) with a batch-means interval
from the run itself; the retry-storm scenarios pin the metastability verdicts of issue 3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import REPO, mean_interval, t_quantile
from scipy import stats

import sim
from sim.analysis import theory
from sim.analysis.metrics import HIST_EDGES
from sim.model.scenario import load_scenario, parse_scenario

STORM = REPO / "scenarios" / "retry-storm.toml"
BUCKET_RATIO = HIST_EDGES[1] / HIST_EDGES[0]


def _error_text(p_fail: float, retries: int, *, seed: int = 1, backoff: str = "none") -> str:
    return f"""
[scenario]
name = "errors"
duration = 2000
bin = 20
seed = {seed}

[arrivals]
rate = 50

[service]
servers = 100
time = {{ dist = "exponential", mean = 0.01 }}
error_rate = {p_fail}

[client]
retries = {retries}
backoff = {{ base = 0.001, cap = 0.01, jitter = "{backoff}" }}
"""


def _batch_interval(numerator: np.ndarray, denominator: np.ndarray, confidence: float = 0.99):
    """Ratio estimate and half-width from batch means (10 batches of consecutive bins)."""
    batches = np.array_split(np.arange(len(numerator)), 10)
    ratios = np.array([numerator[b].sum() / denominator[b].sum() for b in batches])
    half = t_quantile(0.5 + confidence / 2, len(ratios) - 1) * ratios.std(ddof=1) / math.sqrt(10)
    return numerator.sum() / denominator.sum(), half


@pytest.mark.parametrize(("p_fail", "retries"), [(0.3, 3), (0.5, 2), (0.8, 5)])
def test_retry_amplification_matches_formula(p_fail: float, retries: int) -> None:
    """Attempts per fresh request equal (1 - p^(N+1)) / (1 - p) within a batch-means 99% CI."""
    result = sim.simulate(parse_scenario(_error_text(p_fail, retries)))
    ts = result.timeseries
    estimate, half = _batch_interval(ts["attempts"], ts["fresh"])
    exact = theory.retry_expected_attempts(p_fail, retries)
    assert abs(estimate - exact) <= half, f"{estimate:.4f} ± {half:.4f} vs exact {exact:.4f}"
    assert half < 0.02 * exact, "interval too wide to catch a wrong amplification"
    assert result.summary["amplification"] == pytest.approx(estimate)


def test_success_probability_matches_formula() -> None:
    """The share of fresh requests that finally succeed is 1 - p^(N+1)."""
    p_fail, retries = 0.5, 2
    result = sim.simulate(parse_scenario(_error_text(p_fail, retries)))
    ts = result.timeseries
    decided = ts["fresh_ok"] + ts["fresh_failed"]
    estimate, half = _batch_interval(ts["fresh_ok"], decided)
    exact = theory.retry_success_probability(p_fail, retries)
    assert abs(estimate - exact) <= half


def test_always_failing_server_sees_n_plus_one_times_the_load() -> None:
    """With p = 1 every request is sent exactly N + 1 times and none succeeds."""
    result = sim.simulate(parse_scenario(_error_text(1.0, 4)))
    requests = result.summary["requests"]
    decided = result.timeseries["fresh_failed"].sum()  # the rest were mid-backoff at the end
    assert requests["fresh"] - 10 <= decided <= requests["fresh"]
    assert 5 * decided <= requests["attempts"] <= 5 * requests["fresh"]
    assert requests["attempts"] - requests["fresh"] == requests["retries"]
    assert requests["succeeded"] == 0
    assert requests["rejected"] == requests["attempts"]


def test_backoff_delays_retries_by_the_base() -> None:
    """Without jitter a retry follows its failure after exactly `base` (then base x multiplier)."""
    text = _error_text(1.0, 2).replace("base = 0.001, cap = 0.01", "base = 40, cap = 1000")
    ts = sim.simulate(parse_scenario(text)).timeseries
    bins = np.flatnonzero(ts["retries"])
    # First retries start two 20 s bins after the first fresh requests; second ones 80 s later.
    assert bins[0] == 2
    assert ts["retries"][2] == pytest.approx(ts["fresh"][0], rel=0.2)
    assert ts["retries"][6:].sum() > 0 and ts["retries"][:2].sum() == 0


def _burst_text(jitter: str, *, base_s: float = 20.0) -> str:
    """2,000 requests in the first 10 s, each rejected once and retried once after backoff."""
    return f"""
[scenario]
name = "burst"
duration = 120
bin = 1

[arrivals]
rate = 0
surge = [{{ at = 0, duration = 10, rate = 200 }}]

[service]
servers = 10
time = {{ dist = "deterministic", mean = 0.01 }}
error_rate = 1.0

[client]
retries = 1
backoff = {{ base = {base_s}, cap = 1000, jitter = "{jitter}" }}
"""


def _time_variance(ts, column: str) -> float:
    t, weight = ts["t_s"] + ts.bin_s / 2, ts[column]
    mean = (weight * t).sum() / weight.sum()
    return float((weight * (t - mean) ** 2).sum() / weight.sum())


@pytest.mark.parametrize(
    ("jitter", "delay_variance"),
    # First-retry delay with base b = 20 s: full U(0, b), equal U(b/2, b), decorrelated
    # U(b, 3b) (AWS "Exponential Backoff And Jitter": sleep starts at base).
    [("full", 20.0**2 / 12), ("equal", 10.0**2 / 12), ("decorrelated", 40.0**2 / 12)],
)
def test_jittered_backoff_spreads_retries(jitter: str, delay_variance: float) -> None:
    """Jitter spreads retry times: Var(retry time) − Var(first send) = Var(delay), which
    is 0 without jitter; amplification stays exactly N + 1 for p = 1."""
    result = sim.simulate(parse_scenario(_burst_text(jitter)))
    ts, requests = result.timeseries, result.summary["requests"]
    assert requests["attempts"] == 2 * requests["fresh"]
    spread = _time_variance(ts, "retries") - _time_variance(ts, "fresh")
    # 2,000 delays: the estimate's sd is under 4% of Var(delay) here; 25% is over 5 sd.
    assert spread == pytest.approx(delay_variance, rel=0.25)


def test_decorrelated_jitter_draws_the_first_retry_between_base_and_three_base() -> None:
    """The first decorrelated delay is U(base, 3·base): retries begin after base, never
    before, and reach past 2·base (not all exactly at base)."""
    ts = sim.simulate(parse_scenario(_burst_text("decorrelated"))).timeseries
    retry_t = ts["t_s"][ts["retries"] > 0]
    assert retry_t.min() >= 20.0 and retry_t.max() >= 60.0 and retry_t.max() < 70.0


def _rejecting_text(p_fail: float, retries: int, jitter: str, *, duration_s: int = 400) -> str:
    return f"""
[scenario]
name = "fast-503s"
duration = {duration_s}
bin = 20

[arrivals]
rate = 50

[service]
servers = 100
time = {{ dist = "deterministic", mean = 0.01 }}
error_rate = {p_fail}

[client]
retries = {retries}
backoff = {{ base = 1, multiplier = 2, cap = 100, jitter = "{jitter}" }}
"""


def test_fast_rejections_that_succeed_on_retry_count_their_retry_delay() -> None:
    """A request rejected at once (503) and then served records first send to success:
    its backoff waits are in `latency_s`; the server's view holds the 10 ms service only."""
    p, retries = 0.5, 2
    # Success on try k + 1 after k rejections waits 1 + 2 + ... (k delays) and 10 ms service.
    shares = np.array([(1 - p) * p**k for k in range(retries + 1)])
    latencies = np.array([0.0, 1.0, 3.0]) + 0.01
    exact_mean = float(shares @ latencies / shares.sum())
    results = [
        sim.simulate(
            parse_scenario(_rejecting_text(p, retries, "none"), overrides={"scenario.seed": s})
        )
        for s in range(1, 7)
    ]
    means = [r.summary["latency_s"]["mean"] for r in results]
    mean, half = mean_interval(means, confidence=0.999)
    assert abs(mean - exact_mean) <= half and half < 0.05 * exact_mean
    summary = results[0].summary
    # 57% of successes take 10 ms, 14% wait 3 s of backoff: the p95 is the 3.01 s group.
    assert summary["latency_s"]["p50"] == pytest.approx(0.01, rel=0.06)
    assert summary["latency_s"]["p95"] == pytest.approx(3.01, rel=0.06)
    assert summary["server_latency_s"]["max"] == pytest.approx(0.01)
    ts = results[0].timeseries
    assert np.nanmax(ts["latency_p99"]) == pytest.approx(3.01, rel=0.06)
    assert np.nanmax(ts["server_latency_p99"]) == pytest.approx(0.01, rel=0.06)


def test_decorrelated_first_retry_waits_two_base_on_average() -> None:
    """With decorrelated jitter the successes on a second try waited U(1 s, 3 s): mean 2 s."""
    p = 0.5
    exact_mean = ((1 - p) * 0.01 + p * (1 - p) * 2.01) / (1 - p**2)
    results = [
        sim.simulate(
            parse_scenario(_rejecting_text(p, 1, "decorrelated"), overrides={"scenario.seed": s})
        )
        for s in range(1, 7)
    ]
    means = [r.summary["latency_s"]["mean"] for r in results]
    mean, half = mean_interval(means, confidence=0.999)
    # A first delay of exactly base (the old bug) gives a mean of 0.34 s: half of this one.
    assert abs(mean - exact_mean) <= half and half < 0.1 * exact_mean


def test_client_latency_is_bounded_by_the_clients_patience() -> None:
    """With a 4 s timeout and 3 retries no client waits more than 4 · 4 s plus three backoffs
    (each at most the 1 s cap), while the server still finishes abandoned work far later."""
    scenario = load_scenario(STORM, overrides={"client.timeout": "4s"})
    result = sim.simulate(scenario)
    client = result.summary["latency_s"]
    bound_s = 4.0 * (3 + 1) + 3 * 1.0
    assert client["max"] <= bound_s
    assert np.nanmax(result.timeseries["latency_p99"]) <= bound_s * BUCKET_RATIO
    server = result.summary["server_latency_s"]
    assert server["max"] > 2 * bound_s  # the server view keeps work nobody waited for
    assert server["p99"] > client["p99"]


def test_server_keeps_serving_abandoned_work_unless_told_to_drop_it() -> None:
    """Timed-out requests still cost server time; drop_expired skips them instead."""
    base = load_scenario(STORM, overrides={"client.retries": 0})
    dropping = load_scenario(STORM, overrides={"client.retries": 0, "service.drop_expired": True})
    kept, dropped = sim.simulate(base).summary, sim.simulate(dropping).summary
    assert kept["requests"]["dropped"] == 0
    # Work done after the client left: in the server's view, never in what clients saw.
    assert kept["server_latency_s"]["max"] > base.client.timeout
    assert kept["latency_s"]["max"] <= base.client.timeout
    assert dropped["requests"]["dropped"] > 0
    assert dropped["outage_total_s"] < kept["outage_total_s"]


def test_retry_storm_is_metastable() -> None:
    """A one-minute fault that retries make permanent is reported metastable, not recovered."""
    summary = sim.simulate(load_scenario(STORM)).summary
    assert summary["metastable"] is True
    assert summary["recovered"] is False
    assert summary["first_outage_start_s"] == pytest.approx(600, abs=60)
    assert summary["amplification"] > 3
    assert "retries" in summary["metastable_reason"]


def test_same_fault_without_retries_recovers() -> None:
    """The same fault with clients that do not retry recovers once the backlog drains."""
    summary = sim.simulate(load_scenario(STORM, overrides={"client.retries": 0})).summary
    assert summary["metastable"] is False
    assert summary["recovered"] is True
    assert 0 < summary["outage_total_s"] < 600


def test_retry_budget_prevents_the_storm() -> None:
    """The mitigated scenario (retry budget) recovers and keeps amplification near 1."""
    summary = sim.simulate(load_scenario(REPO / "scenarios" / "retry-storm-budget.toml")).summary
    assert summary["metastable"] is False
    assert summary["recovered"] is True
    assert summary["amplification"] < 1.1


def test_small_fault_causes_no_outage() -> None:
    """A 10 s loss of 20% of capacity is absorbed: no outage at all."""
    overrides = {"faults.0.capacity_factor": 0.8, "faults.0.duration": "10s"}
    summary = sim.simulate(load_scenario(STORM, overrides=overrides)).summary
    assert summary["outages"] == []
    assert summary["recovered"] is True


def test_adaptive_throttling_sheds_locally_only_when_the_backend_fails() -> None:
    """Client-side throttling (K = 2): next to nothing shed when healthy; when the backend
    accepts under 1/K of requests, P_reject = max(0, (R - K A) / (R + 1)) tends to 1."""
    healthy = _error_text(0.0, 0).replace("[client]", "[client]\nthrottle_k = 2")
    failing = _error_text(0.9, 0).replace("[client]", "[client]\nthrottle_k = 2")
    ok = sim.simulate(parse_scenario(healthy)).summary["requests"]
    bad = sim.simulate(parse_scenario(failing)).summary["requests"]
    # Only the first few requests, before any accept came back, can be shed.
    assert ok["throttled"] < 1e-4 * ok["fresh"]
    assert bad["throttled"] > 0.95 * bad["fresh"]
    assert 0 < bad["attempts"] < 0.05 * bad["fresh"]


def test_backoff_jitter_draws_leave_error_injection_alone() -> None:
    """Common random numbers: runs that differ only in jitter (equal, or none, which draws
    nothing) agree bin for bin until the first retry could land (base/2 = 100 s), because
    errors, jitter and throttling each have their own random stream."""
    text = _rejecting_text(0.3, 2, "none", duration_s=300).replace("base = 1,", "base = 200,")
    text = text.replace("cap = 100,", "cap = 1000,")
    text = text.replace("[client]", "[client]\nthrottle_k = 3")
    plain = sim.simulate(parse_scenario(text)).timeseries
    jittered = sim.simulate(parse_scenario(text.replace('"none"', '"equal"'))).timeseries
    before = plain["t_s"] < 100
    for column in ("fresh", "attempts", "rejected", "throttled", "succeeded", "server_latency_p99"):
        assert np.array_equal(plain[column][before], jittered[column][before]), column
    assert plain["rejected"][before].sum() > 1000
    assert not np.array_equal(plain["retries"], jittered["retries"])  # they do differ later


def _budget_bursts_text() -> str:
    """Errors for 5 s of every minute: each burst of failures spends the budget's burst."""
    faults = "".join(
        f"\n[[faults]]\nat = {60 * k + 30}\nduration = 5\nerror_rate = 1.0\n" for k in range(30)
    )
    return f"""
[scenario]
name = "budget-scale"
duration = 1800
bin = 60

[arrivals]
rate = 20

[service]
servers = 100
time = {{ dist = "exponential", mean = 0.05 }}
{faults}
[client]
retries = 3
retry_budget = 0.01
backoff = {{ base = 0.1, cap = 1, jitter = "full" }}
"""


def _throttling_text() -> str:
    """A 5 s throttling window over 20 requests/s (100 real requests, 20 simulated at scale
    5): counted in simulated units, the "+ 1" of P_reject would weigh five real requests."""
    return """
[scenario]
name = "throttle-scale"
duration = 1800
bin = 60

[arrivals]
rate = 20

[service]
servers = 100
time = { dist = "exponential", mean = 0.05 }
error_rate = 0.6

[client]
throttle_k = 2
throttle_window = 5
"""


@pytest.mark.parametrize(
    ("make_text", "max_half"),
    # Counted in simulated units at scale 5, the budget's refill and burst moved the
    # amplification by 0.0018 and throttling moved it from 0.05 to 0.21: each interval must
    # be narrow enough to see that.
    [
        (_budget_bursts_text, {"amplification": 0.0006, "success_ratio": 0.01}),
        (_throttling_text, {"amplification": 0.05, "success_ratio": 0.05}),
    ],
    ids=["retry-budget", "throttling"],
)
def test_client_controls_mean_the_same_at_every_scale(make_text, max_half: dict) -> None:
    """Retry budget and throttling count real requests: amplification and success ratio at
    scale 5 equal those at scale 1 (99.9% Welch interval of the difference holds 0)."""
    figures = {}
    for scale in (1, 5):
        summaries = [
            sim.simulate(
                parse_scenario(make_text(), overrides={"scenario.scale": scale, "scenario.seed": s})
            ).summary
            for s in range(1, 9)
        ]
        figures[scale] = {
            key: [summary[key] for summary in summaries]
            for key in ("amplification", "success_ratio")
        }
    for key in ("amplification", "success_ratio"):
        test = stats.ttest_ind(figures[1][key], figures[5][key], equal_var=False)
        low, high = test.confidence_interval(0.999)
        assert low <= 0 <= high, f"{key}: scale 1 − scale 5 in [{low:.4g}, {high:.4g}]"
        assert (high - low) / 2 < max_half[key], f"{key}: interval too wide to see a difference"
