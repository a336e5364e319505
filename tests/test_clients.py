"""Clients that time out and retry: amplification, budgets, backoff, abandoned work, storms.

Retry amplification is judged against (1 - p^(N+1)) / (1 - p) with a batch-means interval
from the run itself; the retry-storm scenarios pin the metastability verdicts of issue 3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import REPO, t_quantile

import sim
from sim import theory
from sim.scenario import load_scenario, parse_scenario

STORM = REPO / "scenarios" / "retry-storm.toml"


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


@pytest.mark.parametrize("jitter", ["full", "equal", "decorrelated"])
def test_jittered_backoff_spreads_retries(jitter: str) -> None:
    """Jittered backoff keeps amplification (N+1 for p = 1) while spreading retry times."""
    text = _error_text(1.0, 3, backoff=jitter).replace("cap = 0.01", "cap = 60")
    result = sim.simulate(parse_scenario(text))
    requests = result.summary["requests"]
    assert requests["attempts"] == pytest.approx(4 * requests["fresh"], rel=0.01)
    retries = result.timeseries["retries"]
    assert np.count_nonzero(retries) > 0.9 * len(retries)


def test_server_keeps_serving_abandoned_work_unless_told_to_drop_it() -> None:
    """Timed-out requests still cost server time; drop_expired skips them instead."""
    base = load_scenario(STORM, overrides={"client.retries": 0})
    dropping = load_scenario(STORM, overrides={"client.retries": 0, "service.drop_expired": True})
    kept, dropped = sim.simulate(base).summary, sim.simulate(dropping).summary
    assert kept["requests"]["dropped"] == 0
    assert kept["latency_s"]["max"] > base.client.timeout  # work done after the client left
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
