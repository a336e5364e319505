"""The service graph in the DES: tiers, sync and async calls, providers, retries at every layer.

Exact answers the kernel must meet: an async chain of M/M/c tiers with several routes is a
Jackson network (each tier an M/M/c at the flow summed over the routes that call it); a sync
call to a provider with deterministic latency d makes the caller an M/G/1 whose holding time
is S + d (Pollaczek–Khinchine); retries at L layers against a tier that always fails give
(N+1)^L attempts at the bottom; a provider's rate limit admits its rate in the long run; and a
one-tier scenario spelled `[tiers.service]` runs byte for byte as its `[service]` spelling.
Intervals are Student t over replications with different seeds (tests/helpers.py).
"""

from __future__ import annotations

import json

import pytest
from helpers import REPO, assert_within

import sim
from sim.analysis import theory
from sim.analysis.metrics import TIMESERIES_COLUMNS
from sim.io import summary_json
from sim.model.scenario import load_scenario, parse_scenario
from sim.report.writer import timeseries_csv

SEEDS = range(1, 9)

JACKSON = """\
[scenario]
name = "jackson"
duration = "3h"
seed = {seed}
bin = "1min"

[arrivals]
rate = "8/s"

[tiers.front]
servers = 10
time = {{ dist = "exponential", mean = "1s" }}

[tiers.back]
servers = 6
time = {{ dist = "exponential", mean = "1s" }}

[[routes]]
name = "deep"
share = 0.6
calls = ["front", "back"]
mode = "async"

[[routes]]
name = "shallow"
share = 0.4
calls = ["front"]
"""


def _runs(template: str, **fields) -> list[dict]:
    return [
        sim.simulate(parse_scenario(template.format(seed=seed, **fields))).summary for seed in SEEDS
    ]


def test_an_async_chain_with_two_routes_is_a_jackson_network() -> None:
    """front sees 8/s (both routes) on 10 servers, back 4.8/s (the deep route) on 6: each an
    M/M/c at its summed flow, utilisation 0.8; a route's mean latency is the sum of its
    tiers' response times, and the service's the routes' mean weighted by their shares."""
    runs = _runs(JACKSON)
    front, back = theory.mmc(8.0, 1.0, 10), theory.mmc(4.8, 1.0, 6)
    for name, exact in (("front", front), ("back", back)):
        assert_within([r["tiers"][name]["wait_s"]["mean"] for r in runs], exact.wait_mean_s,
                      max_rel=0.25)  # fmt: skip
        assert_within([r["tiers"][name]["wait_s"]["p_wait"] for r in runs], exact.p_wait,
                      max_rel=0.1)  # fmt: skip
        assert_within([r["tiers"][name]["utilization"] for r in runs], 0.8, max_rel=0.02)
    deep = front.response_mean_s + back.response_mean_s
    latency = 0.6 * deep + 0.4 * front.response_mean_s
    assert_within([r["latency_s"]["mean"] for r in runs], latency, max_rel=0.05)
    # Each route's mean sojourn is the sum over the tiers it calls.
    assert_within([r["routes"]["deep"]["latency_s"]["mean"] for r in runs], deep, max_rel=0.05)
    shallow = [r["routes"]["shallow"]["latency_s"]["mean"] for r in runs]
    assert_within(shallow, front.response_mean_s, max_rel=0.05)
    for r in runs:
        assert r["routes"]["deep"]["latency_s"]["p99"] > r["routes"]["shallow"]["latency_s"]["p99"]
    for r in runs:
        # Every request reaches back, but those still at front when the run ends.
        amplification = r["routes"]["deep"]["amplification"]
        assert amplification["front"] == 1.0 and amplification["back"] == pytest.approx(1, abs=1e-3)
        assert r["routes"]["shallow"]["success_ratio"] == 1.0
        assert abs(r["routes"]["deep"]["fresh"] / r["requests"]["fresh"] - 0.6) < 0.02


SYNC_PROVIDER = """\
[scenario]
name = "sync-provider"
duration = "4h"
seed = {seed}
bin = "1min"

[arrivals]
rate = "1.4/s"

[tiers.api]
servers = 1
time = {{ dist = "exponential", mean = "200ms" }}

[tiers.sms]
rate_limit = "1000/s"
time = {{ dist = "deterministic", mean = "300ms" }}

[[routes]]
name = "signup"
share = 1
calls = ["api", "sms"]
"""


def test_a_sync_call_to_a_provider_holds_the_callers_server() -> None:
    """api's one server holds each request through its 300 ms provider call: api is an M/G/1
    with holding time S + d (S exponential 200 ms), ρ = 0.7, and its mean wait is
    Pollaczek–Khinchine's λE[H²] / (2(1 − ρ)); the end user sees wait + S + d."""
    runs = _runs(SYNC_PROVIDER)
    mean, d = 0.2, 0.3
    second_moment = mean**2 + (mean + d) ** 2
    wait = theory.pollaczek_khinchine_wait(1.4, mean + d, second_moment)
    assert_within([r["tiers"]["api"]["wait_s"]["mean"] for r in runs], wait, max_rel=0.2)
    assert_within([r["tiers"]["api"]["utilization"] for r in runs], 0.7, max_rel=0.03)
    assert_within([r["latency_s"]["mean"] for r in runs], wait + mean + d, max_rel=0.1)
    for r in runs:
        # The entry tier's time in system holds the call: with no retries it is what the
        # end user sees.
        assert r["server_latency_s"]["mean"] == pytest.approx(r["latency_s"]["mean"], rel=1e-3)
        assert r["tiers"]["sms"]["limited"] == 0 and r["tiers"]["sms"]["kind"] == "provider"
        assert r["tiers"]["sms"]["utilization"] is None


LAYERS = """\
[scenario]
name = "layers"
duration = "10min"
seed = 1
bin = "1min"

[arrivals]
rate = "2/s"

[[arrivals.surge]]  # no arrivals in the last minute: every request is decided by the end
at = "9min"
duration = "1min"
factor = 0

[client]
retries = 2
backoff = {{ base = "10ms", cap = "10ms", jitter = "none" }}

[tiers.a]
servers = 1000
time = {{ dist = "exponential", mean = "5ms" }}

[tiers.b]
servers = 1000
time = {{ dist = "exponential", mean = "5ms" }}

[tiers.c]
servers = 1000
time = {{ dist = "exponential", mean = "5ms" }}
error_rate = 1.0

[[routes]]
name = "deep"
share = 1
calls = [
    "a",
    {{ tier = "b", retries = 2, backoff = {{ base = "10ms", cap = "10ms", jitter = "none" }} }},
    {{ tier = "c", retries = 2, backoff = {{ base = "10ms", cap = "10ms", jitter = "none" }} }},
]
"""


def test_retries_at_three_layers_multiply_to_27_attempts_at_the_bottom() -> None:
    """Every layer retries twice against a tier that always fails: each end-user request
    makes 3 attempts at a, 9 at b and 27 at c, and every request fails."""
    summary = sim.simulate(parse_scenario(LAYERS.format())).summary
    route = summary["routes"]["deep"]
    assert route["fresh"] > 1000
    assert route["amplification"] == {"a": 3.0, "b": 9.0, "c": 27.0}
    assert route["success_ratio"] == 0.0
    assert summary["tiers"]["c"]["attempts"] == 27 * route["fresh"]
    assert summary["tiers"]["c"]["rejected"] == 27 * route["fresh"]
    # A failed call is the caller's error answer: b answers each of a's attempts an error.
    assert summary["tiers"]["b"]["rejected"] == 9 * route["fresh"]


LIMITED = """\
[scenario]
name = "limited"
duration = "{duration}"
seed = 3
bin = "1min"

[arrivals]
rate = "100/s"

[tiers.api]
servers = 500
time = {{ dist = "exponential", mean = "10ms" }}

[tiers.sms]
rate_limit = "50/s"
burst = 200
time = {{ dist = "deterministic", mean = "300ms" }}

[[routes]]
name = "signup"
share = 1
calls = ["api", "sms"]
"""


@pytest.mark.parametrize("duration_s", [600, 3600])
def test_a_providers_rate_limit_admits_its_rate(duration_s: int) -> None:
    """Offered twice its rate limit, the provider admits 50/s plus its initial burst of 200,
    and refuses the rest at once (limited); the refused calls fail their requests."""
    summary = sim.simulate(parse_scenario(LIMITED.format(duration=duration_s))).summary
    sms = summary["tiers"]["sms"]
    admitted = sms["attempts"] - sms["limited"]
    assert 50 * duration_s <= admitted <= 50 * duration_s + 200 + 1
    assert sms["limited"] > 0.4 * sms["attempts"]
    route = summary["routes"]["signup"]
    assert route["success_ratio"] == pytest.approx(admitted / sms["attempts"], abs=0.01)


ONE_POOL = """\
[scenario]
name = "one"
duration = "20min"
seed = 4
bin = "1min"

[arrivals]
rate = "9/s"

{pool}
servers = 10
time = {{ dist = "exponential", mean = "1s" }}
queue_limit = 40

[client]
timeout = "3s"
retries = 2
backoff = {{ base = "1s", cap = "4s", jitter = "full" }}

[[faults]]
at = "5min"
duration = "5min"
capacity_factor = 0.6
"""


def test_a_single_tier_spelled_as_tiers_runs_byte_for_byte_as_service() -> None:
    """`[tiers.service]` and `[service]` are one scenario: the same summary.json (wall time
    aside) and timeseries.csv."""

    def fingerprint(pool: str) -> tuple[str, str]:
        result = sim.simulate(parse_scenario(ONE_POOL.format(pool=pool)))
        summary = dict(result.summary)
        for key in ("wall_time_s", "simulated_per_s"):
            summary.pop(key)
        return summary_json(summary), timeseries_csv(result.timeseries)

    summary, csv_text = fingerprint("[service]")
    assert (summary, csv_text) == fingerprint("[tiers.service]")
    assert "tiers" not in json.loads(summary)
    # Exactly DESIGN.md's columns: nothing of the graph's, nothing internal.
    assert csv_text.splitlines()[0].split(",") == list(TIMESERIES_COLUMNS)


def test_the_shipped_cascade_is_metastable_and_its_retry_budget_ends_it() -> None:
    """scenarios/cascade.toml: five minutes of a 3x slower database leave the API down to the
    end of the hour (its threads held by database calls, retries at two layers keeping offered
    load above capacity); cascade-budget.toml, the same with a retry budget on the clients,
    recovers within ten minutes of the fault's start."""
    result = sim.simulate(load_scenario(REPO / "scenarios" / "cascade.toml"))
    cascade = result.summary
    assert cascade["metastable"] is True and not cascade["recovered"]
    # The service's capacity is its bottleneck's: the database's 8 servers / 40 ms = 200/s
    # (the API's 40 threads / 60 ms of holding = 667/s), a third of it while 3x slower.
    capacity = result.timeseries["capacity_rps"]
    t_s = result.timeseries["t_s"]
    assert capacity[t_s < 600] == pytest.approx(200.0)
    assert capacity[(t_s >= 610) & (t_s < 890)] == pytest.approx(200.0 / 3)
    assert "would drain in 40s" in outage_why(cascade)
    # With 100 database servers the API is the bottleneck, and a slow database still slows it:
    # 40 threads / (20 ms + 3 x 40 ms held on each call) = 286/s during the fault.
    roomy = load_scenario(REPO / "scenarios" / "cascade.toml", overrides={"tiers.db.servers": 100})
    capacity = sim.simulate(roomy).timeseries["capacity_rps"]
    assert capacity[t_s < 600] == pytest.approx(40 / 0.06)
    assert capacity[(t_s >= 610) & (t_s < 890)] == pytest.approx(40 / 0.14)
    # The verdict names the layer whose retries multiply load: the end users' (3.5 attempts
    # a request), not the API's towards the database (fewer than one per API attempt).
    reason = cascade["metastable_reason"]
    assert "the retries of end users → api (read) multiply load the most" in reason
    (outage,) = cascade["outages"]
    assert outage["start_s"] == pytest.approx(600, abs=60) and outage["cause"] == "metastable"
    assert cascade["routes"]["read"]["amplification"]["api"] > 3
    assert cascade["tiers"]["api"]["queue"]["final"] == 2000  # the API's queue stays full
    budget = sim.simulate(load_scenario(REPO / "scenarios" / "cascade-budget.toml")).summary
    assert budget["recovered"] and budget["metastable"] is False
    assert budget["outage_total_s"] <= 600
    assert budget["routes"]["read"]["success_ratio"] > cascade["routes"]["read"]["success_ratio"]


def outage_why(summary: dict) -> str:
    return summary["outages"][0]["why"]


TWO_ROUTES = """\
[scenario]
name = "two-routes"
duration = "30min"
seed = 2
bin = "1min"

[arrivals]
rate = "50/s"

[tiers.api]
servers = 200
time = { dist = "exponential", mean = "20ms" }

[tiers.sms]
rate_limit = "2/s"
time = { dist = "deterministic", mean = "300ms" }

[[routes]]
name = "message"
share = 0.8
calls = ["api"]

[[routes]]
name = "signup"
share = 0.2
calls = ["api", "sms"]

[slo]
success_ratio = 0.99
min_duration = "2min"
"""


def test_outages_are_judged_per_route() -> None:
    """Sign-ups (10/s) through an SMS provider limited to 2/s fail four in five for the whole
    run, while messages through the same API all succeed: the signup route is down from the
    start, the message route never, and the service (a fifth of its requests failing) is down
    too."""
    summary = sim.simulate(parse_scenario(TWO_ROUTES)).summary
    message, signup = summary["routes"]["message"], summary["routes"]["signup"]
    assert message["success_ratio"] == 1.0 and message["outages"] == []
    assert message["recovered"] is True
    assert signup["success_ratio"] == pytest.approx(0.2, abs=0.02)
    (outage,) = signup["outages"]
    assert outage["start_s"] <= 120 and outage["end_s"] == 1800
    assert outage["criterion"] == "success_ratio" and signup["recovered"] is False
    assert summary["outages"] and summary["outage_total_s"] >= 1680


SPLIT_SOURCE = """\
[scenario]
name = "split-source"
duration = "1h"
seed = 5
bin = "1min"

[population]
initial_users = 100000
downloads = "200000/day"
activation = 0.5
requests_per_user = "20/day"
requests_per_signup = 10

[tiers.api]
servers = 200
time = { dist = "exponential", mean = "20ms" }

[tiers.sms]
rate_limit = "1000/s"
time = { dist = "deterministic", mean = "300ms" }

[[routes]]
name = "messages"
source = "steady"
calls = ["api"]

[[routes]]
name = "signup"
source = "signup"
share = 0.9
calls = ["api"]

[[routes]]
name = "verify"
source = "signup"
share = 0.1
calls = ["api", "sms"]
"""


def test_routes_splitting_a_source_get_their_shares_of_it() -> None:
    """Sign-up work (0.5 x 200,000/day x 10 = 11.6/s) split 0.9 / 0.1 between a route that
    stays at the API and one that also calls the SMS provider: the fresh requests of each are
    their share of the source (binomial 4-sigma bounds), and only the second reaches sms."""
    summary = sim.simulate(parse_scenario(SPLIT_SOURCE)).summary
    routes = summary["routes"]
    signups = routes["signup"]["fresh"] + routes["verify"]["fresh"]
    assert signups == pytest.approx(0.5 * 200_000 / 86_400 * 10 * 3600, rel=0.03)
    expected = 0.1 * signups
    assert abs(routes["verify"]["fresh"] - expected) <= 4 * (expected * 0.9) ** 0.5
    assert summary["tiers"]["sms"]["attempts"] == routes["verify"]["fresh"]
    assert routes["messages"]["fresh"] > 0 and "sms" not in routes["signup"]["amplification"]
