"""The fluid engine's clients: mean backoff delays, the latency clients see, scale-free budgets.

Issue 10: item 8 (decorrelated jitter jitters the first retry too), item 5 (client latency is
per request from first send to success, the server's view is kept apart) and item 6(c) (the
retry budget's burst and the throttle's counters keep their real meaning at any scale).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import mean_interval
from scipy import stats

import sim
from sim.engine.clients import backoff_means
from sim.engine.fluid import slot_length
from sim.model.scenario import Backoff, parse_scenario

# ------------------------------------------------------------------ item 8: backoff means

MC_SAMPLES = 400_000
MC_CONFIDENCE = 0.9999  # per comparison; a handful of comparisons per test


def _decorrelated_mc(base: float, cap: float, retries: int, seed: int) -> np.ndarray:
    """Delays of the definition (AWS, "Exponential Backoff And Jitter"), one row per retry:
    sleep starts at base; each retry sleeps min(cap, uniform(base, 3 * sleep))."""
    rng = np.random.default_rng(seed)
    sleep = np.full(MC_SAMPLES, base)
    rows = []
    for _ in range(retries):
        sleep = np.minimum(cap, rng.uniform(base, 3 * sleep))
        rows.append(sleep)
    return np.asarray(rows)


def test_decorrelated_first_retry_is_jittered() -> None:
    """The first decorrelated delay is uniform in [base, 3·base]: mean 2·base, not base; later
    means follow m_k = (base + 3·m_(k−1)) / 2 exactly while uncapped."""
    means = backoff_means(Backoff(base=1.0, cap=1e6, jitter="decorrelated"), 4)
    exact = [2.0]
    for _ in range(3):
        exact.append((1.0 + 3 * exact[-1]) / 2)
    # The engine's means come from a fixed stratified sample: 1e-3 is far above its error.
    assert means == pytest.approx(exact, rel=1e-3)


@pytest.mark.parametrize(("base", "cap"), [(0.1, 20.0), (1.0, 2.5), (1.0, 5.0), (0.5, 0.5)])
def test_decorrelated_means_match_a_monte_carlo_of_the_definition(base: float, cap: float):
    """With a cap, each mean delay lies in the 99.99% interval of a Monte Carlo of the
    definition (400,000 chains, an independent seed), widened by the engine's own 1e-3."""
    retries = 5
    means = backoff_means(Backoff(base=base, cap=cap, jitter="decorrelated"), retries)
    sample = _decorrelated_mc(base, cap, retries, seed=20260101)
    z = stats.norm.ppf(0.5 + MC_CONFIDENCE / 2)
    for k in range(retries):
        half = z * sample[k].std(ddof=1) / math.sqrt(MC_SAMPLES) + 1e-3 * sample[k].mean()
        assert abs(means[k] - sample[k].mean()) <= half, (k, means[k], sample[k].mean(), half)


def test_first_decorrelated_mean_with_a_cap_below_three_base() -> None:
    """cap inside [base, 3·base]: E[min(cap, U(base, 3·base))] in closed form."""
    base, cap = 1.0, 2.5
    exact = ((cap**2 - base**2) / 2 + cap * (3 * base - cap)) / (2 * base)
    assert backoff_means(Backoff(base=base, cap=cap, jitter="decorrelated"), 1)[0] == (
        pytest.approx(exact, rel=1e-3)
    )


@pytest.mark.parametrize(("jitter", "share"), [("none", 1.0), ("full", 0.5), ("equal", 0.75)])
def test_exponential_backoff_means(jitter: str, share: float) -> None:
    """none: min(cap, base·m^k); full: half of it (uniform below); equal: three quarters."""
    spec = Backoff(base=0.5, cap=6.0, multiplier=2.0, jitter=jitter)
    tops = [min(6.0, 0.5 * 2.0**k) for k in range(6)]
    assert backoff_means(spec, 6) == pytest.approx([share * t for t in tops], rel=1e-12)


# ---------------------------------------------------------- item 5: what clients see


def _scenario(extra: str, rate: str = "10/s", duration: str = "1h", servers: int = 100) -> str:
    return f"""\
[scenario]
name = "fluid-clients"
duration = "{duration}"
bin = "1min"
engine = "fluid"

[arrivals]
rate = "{rate}"

[service]
servers = {servers}
time = {{ dist = "exponential", mean = "1s" }}
{extra}
"""


def test_client_latency_counts_retries_and_backoff() -> None:
    """Each attempt fails fast with p = 0.5 and is retried after exactly 2 s, up to 3 times: a
    success on try k has waited 2·k s before its last attempt, so clients see a mean of
    1 s + 2 s·E[k | success]; the server sees 1 s per completed attempt."""
    p, retries, delay_s = 0.5, 3, 2.0
    extra = f"""error_rate = {p}

[client]
retries = {retries}
backoff = {{ base = "{delay_s}s", cap = "{delay_s}s", multiplier = 1, jitter = "none" }}
"""
    summary = sim.simulate(parse_scenario(_scenario(extra))).summary
    weights = [p**k * (1 - p) for k in range(retries + 1)]
    tries_before = sum(k * w for k, w in enumerate(weights)) / sum(weights)
    # Means are exact sums in the fluid engine; the run's first and last seconds (no retries
    # yet, retries cut off) move them by far less than 1e-3.
    assert summary["latency_s"]["mean"] == pytest.approx(1.0 + delay_s * tries_before, rel=1e-3)
    assert summary["server_latency_s"]["mean"] == pytest.approx(1.0, rel=1e-3)
    assert summary["server_latency_s"]["p99"] == pytest.approx(-math.log(0.01), rel=0.03)
    assert summary["latency_s"]["p99"] > summary["server_latency_s"]["p99"] + delay_s


def test_client_latency_leaves_out_abandoned_work() -> None:
    """In overload with a 5 s timeout and no retries, the servers spend most of their time on
    work whose clients left (server p99 far above 5 s); no client saw more than 5 s."""
    extra = '[client]\ntimeout = "5s"\n'
    result = sim.simulate(parse_scenario(_scenario(extra, rate="130/s", duration="20min")))
    summary, ts = result.summary, result.timeseries
    assert summary["server_latency_s"]["p99"] > 60.0
    assert summary["latency_s"]["max"] <= 5.0 + 1e-9
    per_bin = ts["latency_p99"][~np.isnan(ts["latency_p99"])]
    assert len(per_bin) > 0 and per_bin.max() <= 5.0 + 1e-9
    server = ts["server_latency_p99"]
    assert np.nanmax(server) > 60.0


def test_client_latency_includes_earlier_timeouts() -> None:
    """A request that timed out once (4 s) and waited its backoff (2 s) before a success has
    waited 6 s before its last attempt: with timeouts, client p99 passes the timeout."""
    extra = """
[client]
timeout = "4s"
retries = 2
backoff = { base = "2s", cap = "2s", multiplier = 1, jitter = "none" }
"""
    summary = sim.simulate(parse_scenario(_scenario(extra, rate="88/s"))).summary
    # exp(1 s) outlasts 4 s with probability e^-4: 1.8% of requests retry, so the p99 of what
    # clients see includes a timeout plus a backoff (>= 6 s), while each attempt stays < 4 s.
    assert summary["latency_s"]["p99"] > 6.0
    # At most three tries' timeouts and two backoffs; each retry lands on the slot grid, up
    # to one slot after its delay ends.
    longest = 3 * 4.0 + 2 * 2.0 + 2 * slot_length(4.0)
    assert 3 * 4.0 < summary["latency_s"]["max"] <= longest


# ----------------------------------------------------- item 6(c): scale keeps the meaning


FAULT_BUDGET = """
[[faults]]
at = "10min"
duration = "2min"
capacity_factor = 1.0
error_rate = 1.0

[client]
timeout = "10s"
retries = 3
retry_budget = 0.1
backoff = { base = "1s", cap = "1s", multiplier = 1, jitter = "none" }
"""
THROTTLE = """error_rate = 0.6

[client]
timeout = "10s"
retries = 2
throttle_k = 1.1
throttle_window = "60s"
backoff = { base = "1s", cap = "1s", multiplier = 1, jitter = "none" }
"""


@pytest.mark.parametrize("extra", [FAULT_BUDGET, THROTTLE], ids=["retry-budget", "throttle"])
def test_client_side_quantities_keep_their_meaning_at_any_scale(extra: str) -> None:
    """The retry budget's burst (10 real tokens) and the throttle's counters are in real
    units: at scale 10 the fluid engine reports the real counts it reports at scale 1."""
    text = _scenario(extra, rate="20/s", duration="30min")
    one = sim.simulate(parse_scenario(text)).summary
    ten = sim.simulate(parse_scenario(text, overrides={"scenario.scale": 10})).summary
    for key in ("fresh", "attempts", "retries", "succeeded", "rejected"):
        assert ten["requests"][key] == pytest.approx(one["requests"][key], rel=1e-9), key
    assert ten["requests"]["retries"] > 0


def test_client_latency_mean_agrees_with_the_des() -> None:
    """Fast failures (p = 0.5) retried with full jitter (mean delays 2, 4, 8 s on the fluid's
    2 s grid): the fluid's mean client latency lies in the 99% Student t interval of six DES
    runs, widened by 0.5% for the retries the fluid run cuts off at its end."""
    extra = """error_rate = 0.5

[client]
retries = 3
backoff = { base = "4s", cap = "64s", multiplier = 2, jitter = "full" }
"""
    text = _scenario(extra, duration="30min").replace('engine = "fluid"\n', "")
    fluid = sim.simulate(parse_scenario(text, overrides={"scenario.engine": "fluid"})).summary
    des = [
        sim.simulate(parse_scenario(text, overrides={"scenario.seed": seed})).summary
        for seed in range(1, 7)
    ]
    mean, half = mean_interval([d["latency_s"]["mean"] for d in des], confidence=0.99)
    assert abs(fluid["latency_s"]["mean"] - mean) <= half + 0.005 * mean
    assert half < 0.05 * mean  # the interval is tight enough to catch a missing backoff
