"""The fluid engine: exact where fluid theory is exact, and in agreement with the DES.

Mechanics are checked against `sim.analysis.theory` on deterministic cases (a fluid run has no
noise,
so the tolerances are those of its time grid: a slot or a bin). Agreement with the DES runs
both engines on every shipped scenario and compares what an incident review reads: whether
there is an outage, when it starts, how long the main one lasts, its peak queue and whether
the service recovered.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO
from scipy import stats

import sim
from sim.analysis import theory
from sim.analysis.metrics import Recorder
from sim.engine.fluid import FluidEngine, service_quantiles, slot_length
from sim.model.scenario import load_scenario, parse_scenario
from sim.model.workload import Demand
from sim.run import estimate_requests

# Single pools here; the fluid engine on service graphs is tests/engine/test_fluid_graph.py.
SCENARIOS = [
    path
    for path in sorted((REPO / "scenarios").glob("*.toml"))
    if not load_scenario(path).has_graph
]
# DES runs of shipped scenarios in this file stay below this many simulated requests (~10 s);
# a larger one is compared with its committed report, which its own test pins to a fresh run.
DES_BUDGET = 5_000_000
ONSET_TOLERANCE_S = 2 * 3600  # the bound for the reference scenario
DURATION_TOLERANCE = 0.25  # main outage duration, relative to the DES
PEAK_QUEUE_FACTOR = 1.5  # the DES queue is noisy at its peak; the fluid one is a mean path


def _fluid(text: str, **overrides) -> sim.Result:
    return sim.simulate(parse_scenario(text, overrides={"scenario.engine": "fluid", **overrides}))


def _pool(rate: str, servers: int, duration: str, bin_: str, extra: str = "") -> str:
    return f"""\
[scenario]
name = "fluid-test"
duration = "{duration}"
bin = "{bin_}"

[arrivals]
rate = "{rate}"

[service]
servers = {servers}
time = {{ dist = "exponential", mean = "1s" }}
{extra}
"""


# ------------------------------------------------------------------------ fluid mechanics


def test_overload_queue_follows_the_fluid_line() -> None:
    """From empty, λ > cμ grows the queue as (λ − cμ)·t at every bin end."""
    result = _fluid(_pool("130/s", 100, "30min", "1min"))
    ts = result.timeseries
    ends = ts["t_s"] + ts.bin_s
    line = [theory.overload_queue_line(130.0, 1.0, 100, t) for t in ends]
    np.testing.assert_allclose(ts["queue"], line, rtol=1e-9)
    assert ts["busy"] == pytest.approx(np.full(len(ts), 100.0))


def test_backlog_drains_in_q_over_spare_capacity() -> None:
    """After a surge, the backlog empties Q / (cμ − λ′) later, to within a slot."""
    surge = '[[arrivals.surge]]\nat = "10min"\nduration = "20min"\nrate = "150/s"\n'
    text = _pool("60/s", 100, "3h", "10s") + surge
    result = _fluid(text)
    ts = result.timeseries
    backlog = theory.overload_queue_line(150.0, 1.0, 100, 20 * 60)
    drained_at = 30 * 60 + theory.drain_time_s(backlog, 100, 1.0, 60.0)
    empty = ts["t_s"][(ts["queue"] <= 1e-6) & (ts["t_s"] > 30 * 60)][0] + ts.bin_s
    assert result.summary["queue"]["max"] == pytest.approx(backlog, rel=1e-6)
    assert abs(empty - drained_at) <= ts.bin_s


@pytest.mark.parametrize(("p_fail", "retries"), [(1.0, 3), (1.0, 1), (0.3, 2), (0.6, 4)])
def test_retry_amplification_matches_theory(p_fail: float, retries: int) -> None:
    """A server failing each attempt fast with probability p sees (1 − p^(N+1))/(1 − p) × the
    fresh load ((N + 1)× for p = 1); 1 − p^(N+1) of the requests succeed."""
    client = f"""error_rate = {p_fail}

[client]
timeout = "30s"
retries = {retries}
backoff = {{ base = "1s", cap = "4s", jitter = "none" }}
"""
    result = _fluid(_pool("10/s", 100, "1h", "1min", client))
    ts = result.timeseries
    middle = slice(5, len(ts) - 5)  # retries of the last requests fall past the end
    amplification = ts["attempts"][middle].sum() / ts["fresh"][middle].sum()
    assert amplification == pytest.approx(theory.retry_expected_attempts(p_fail, retries))
    ok, failed = ts["fresh_ok"][middle].sum(), ts["fresh_failed"][middle].sum()
    assert ok / (ok + failed) == pytest.approx(theory.retry_success_probability(p_fail, retries))


def test_below_capacity_nothing_waits_and_utilisation_is_offered_load() -> None:
    """Under capacity the fluid queue stays empty, utilisation is λ/(cμ) and the latency
    percentiles are the service time's (exponential: p50 = ln 2 · mean, histogram ±3%)."""
    summary = _fluid(_pool("72/s", 100, "2h", "1min")).summary
    assert summary["queue"]["max"] == 0.0
    assert summary["utilization"] == pytest.approx(0.72)
    assert summary["latency_s"]["mean"] == pytest.approx(1.0)
    assert summary["latency_s"]["p50"] == pytest.approx(math.log(2), rel=0.03)
    assert summary["latency_s"]["p99"] == pytest.approx(-math.log(0.01), rel=0.03)


@pytest.mark.parametrize("timeout", ["4s", "3s", "7s"])
def test_a_hold_of_a_fraction_of_slots_takes_its_own_server_time(timeout: str) -> None:
    """With a timeout the slot is a tenth of it (0.4, 0.3, 0.7 s), so a 1 s service spans 2.5,
    3.33 or 1.43 slots: the servers it frees count from its mean end, not rounded up to a
    slot (which made 88% load 106% at 0.4 s slots, and the run a retry storm)."""
    extra = f'[client]\ntimeout = "{timeout}"\n'
    summary = _fluid(_pool("88/s", 100, "1h", "1min", extra)).summary
    assert summary["queue"]["max"] == pytest.approx(0.0, abs=1e-6)
    assert summary["utilization"] == pytest.approx(0.88, rel=1e-3)
    assert summary["amplification"] < 1.02


def test_abandoned_work_still_takes_the_servers() -> None:
    """In overload with a timeout and fifo, clients give up while the servers keep working on
    their requests: goodput falls to zero though every server is busy. `drop_expired` skips
    that work instead (exactly the excess λ − cμ is dropped) and some goodput returns."""
    extra = '[client]\ntimeout = "5s"\n'
    text = _pool("130/s", 100, "20min", "1min", extra)
    kept, dropped = _fluid(text), _fluid(text, **{"service.drop_expired": True})
    late = slice(5, None)  # once the queue holds more than a timeout's worth of work
    assert kept.timeseries["succeeded"][late].max() == 0.0
    assert kept.timeseries["busy"][late] == pytest.approx(np.full(15, 100.0))
    # With expired work dropped, served attempts have waited just under 5 s: some succeed.
    assert dropped.timeseries["succeeded"][late].min() > 0.1 * 100 * 60
    assert dropped.timeseries["dropped"][late] == pytest.approx(np.full(15, 30.0 * 60))


def test_lifo_serves_the_newest_and_keeps_goodput_in_overload() -> None:
    """Under lifo the newest attempts are served at once, so goodput stays at the service
    capacity times P(S < timeout) while fifo serves only abandoned work."""
    extra = 'discipline = "lifo"\n\n[client]\ntimeout = "5s"\n'
    lifo = _fluid(_pool("130/s", 100, "20min", "1min", extra))
    per_bin = lifo.timeseries["succeeded"][5:]
    assert per_bin == pytest.approx(np.full(15, 100 * 60 * (1 - math.exp(-5.0))), rel=0.02)


def test_full_queue_rejects_only_the_excess() -> None:
    """A queue limit K holds the queue at K and rejects the excess (λ − cμ) once it is full;
    a loss system (K = 0) rejects exactly the load above capacity (the fluid blocking)."""
    bounded = _fluid(_pool("130/s", 100, "10min", "1min", "queue_limit = 600"))
    ts = bounded.timeseries
    assert ts["queue"].max() == pytest.approx(600.0)
    assert ts["rejected"][1:] == pytest.approx(np.full(9, 30.0 * 60))
    loss = _fluid(_pool("130/s", 100, "10min", "1min", "queue_limit = 0")).summary
    assert loss["requests"]["rejected"] == pytest.approx(30.0 * 600)
    assert loss["queue"]["max"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("dist", ["exponential", "deterministic"])
def test_behind_a_full_queue_at_the_timeout_the_shorter_waits_succeed(dist: str) -> None:
    """Ten servers behind a full queue of 50 wait 5 s on average, the client's timeout. With
    exponential work the wait spreads (the 50 ahead leave after a sum of random works), and
    the DES serves about a sixth in time; a fluid wait without that spread served 0.1%. With
    constant work the wait hardly spreads, and both engines serve almost none."""
    text = _pool("15/s", 10, "2h", "5min", 'queue_limit = 50\n\n[client]\ntimeout = "5s"\n')
    text = text.replace('dist = "exponential"', f'dist = "{dist}"')
    fluid = _fluid(text).summary["success_ratio"]
    des = [
        sim.simulate(
            parse_scenario(text, overrides={"scenario.engine": "des", "scenario.seed": seed})
        ).summary["success_ratio"]
        for seed in (1, 2, 3)
    ]
    if dist == "exponential":
        # The fluid's normal spread of a full queue's wait leaves out that the DES queue is
        # sometimes short of full; half the DES's share is what it must reach at least.
        assert min(des) > 0.12
        assert 0.5 * np.mean(des) <= fluid <= 1.1 * max(des)
    else:
        assert max(des) < 0.01 and fluid < 0.01


def test_every_fresh_request_is_decided_in_its_arrival_bin() -> None:
    """Succeeded and failed-for-good, counted in the bin the request first arrived in, add up
    to that bin's fresh requests, however many timeouts and retries happened on the way."""
    extra = """
[[faults]]
at = "5min"
duration = "5min"
capacity_factor = 0.5

[client]
timeout = "3s"
retries = 2
retry_budget = 0.1
backoff = { base = "200ms", cap = "2s" }
"""
    result = _fluid(_pool("80/s", 100, "1h", "1min", extra))
    requests = result.summary["requests"]
    assert result.summary["queue"]["final"] == 0.0
    ts = result.timeseries
    decided = ts["fresh_ok"] + ts["fresh_failed"]  # by the bin the request first came in
    # The last bin's latest requests are still in service when the run ends.
    assert decided[:-1] == pytest.approx(ts["fresh"][:-1], rel=1e-3)
    assert requests["timed_out"] > 0 and requests["retries"] > 0


def test_scale_changes_only_the_units() -> None:
    """At scale 10 the fluid engine reports the same real counts and queue as at scale 1."""
    text = _pool("130/s", 100, "10min", "1min", '[client]\ntimeout = "5s"\nretries = 2\n')
    one, ten = _fluid(text), _fluid(text, **{"scenario.scale": 10})
    for key in ("fresh", "attempts", "succeeded", "timed_out"):
        assert ten.summary["requests"][key] == pytest.approx(one.summary["requests"][key])
    np.testing.assert_allclose(ten.timeseries["queue"], one.timeseries["queue"], rtol=1e-9)


def test_time_grid_puts_the_timeout_between_cohorts() -> None:
    """Slots are six or more per timeout, at most 2 s, the timeout half a slot past a whole
    number of slots (so a cohort is wholly live or wholly expired), whatever the bin."""
    for timeout_s in (5.0, 10.0, 1.0, 7.0, 0.3):
        dt = slot_length(timeout_s)
        assert dt <= min(timeout_s / 6, 2.0) + 1e-12
        assert abs((timeout_s / dt) % 1.0 - 0.5) < 1e-9
    assert slot_length(math.inf) == 2.0


def test_service_quantiles_keep_the_mean() -> None:
    """The service-time quantiles the fluid engine spreads latency over keep the exact mean."""
    spec = load_scenario(SCENARIOS[0]).service.time.model_copy(
        update={"dist": "lognormal", "mean": 0.2, "cv": 1.5}
    )
    quantiles, weights = service_quantiles(spec)
    assert weights.sum() == pytest.approx(1.0)
    assert quantiles @ weights == pytest.approx(0.2)
    assert np.all(np.diff(quantiles) >= 0)


def test_engine_fills_a_recorder_like_the_des() -> None:
    """FluidEngine has the DES's interface: run() returns the end time and fills every bin."""
    scenario = parse_scenario(_pool("90/s", 100, "10min", "1min"))
    recorder = Recorder(10, 60.0, 1.0)
    engine = FluidEngine(scenario, Demand(scenario), recorder)
    assert engine.run() == 600.0
    assert not engine.interrupted and engine.simulated_events() > 0
    assert recorder.closed_bins == 10
    assert sum(recorder.fresh) == pytest.approx(90 * 600)


def test_interrupt_keeps_what_was_simulated() -> None:
    """Ctrl-C during a run marks it interrupted, returns the time reached and closes its bin."""

    class Interrupted(FluidEngine):
        def _run_bin(self, b: int) -> None:
            if b == 4:
                raise KeyboardInterrupt
            super()._run_bin(b)

    scenario = parse_scenario(_pool("90/s", 100, "10min", "1min"))
    recorder = Recorder(10, 60.0, 1.0)
    engine = Interrupted(scenario, Demand(scenario), recorder)
    assert engine.run() == 240.0
    assert engine.interrupted
    assert recorder.closed_bins == 5
    assert sum(recorder.fresh) == pytest.approx(90 * 240)


# ----------------------------------------------------------------- agreement with the DES


def _des_summary(path: Path) -> dict:
    """The DES summary of a shipped scenario: a fresh run, or its committed report if big."""
    scenario = load_scenario(path, overrides={"scenario.engine": "des"})
    if estimate_requests(scenario) <= DES_BUDGET:
        return sim.simulate(scenario).summary
    committed = REPO / "reports" / scenario.scenario.name / "summary.json"
    if committed.is_file():
        summary = json.loads(committed.read_text(encoding="utf-8"))
        if summary.get("scenario_sha256") == scenario.sha256:
            return summary
    pytest.skip(f"{path.name}: DES run too long for this test and no current committed report")


def _main(summary: dict) -> dict:
    return max(summary["outages"], key=lambda o: o["duration_s"])


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_fluid_agrees_with_the_des(path: Path) -> None:
    """Same outage verdict; onset within min(2 h, max(5 bins, 5% of the run)); main outage
    duration within 25%; its peak queue within a factor 1.5; same recovery."""
    des = _des_summary(path)
    fluid = sim.simulate(load_scenario(path, overrides={"scenario.engine": "fluid"})).summary
    assert fluid["engine"] == "fluid"
    assert bool(fluid["outages"]) == bool(des["outages"])
    if not des["outages"]:
        return
    scenario = load_scenario(path)
    meta = scenario.scenario
    onset_tolerance = min(ONSET_TOLERANCE_S, max(5 * meta.bin, 0.05 * meta.duration))
    assert abs(fluid["first_outage_start_s"] - des["first_outage_start_s"]) <= onset_tolerance
    des_main, fluid_main = _main(des), _main(fluid)
    assert fluid_main["duration_s"] == pytest.approx(des_main["duration_s"], rel=0.25)
    ratio = fluid_main["peak_queue"] / max(des_main["peak_queue"], 1.0)
    assert 1 / PEAK_QUEUE_FACTOR <= ratio <= PEAK_QUEUE_FACTOR
    assert fluid["recovered"] == des["recovered"]


@pytest.mark.parametrize(
    ("dist", "timeout_s"),
    [("exponential", 2.0), ("exponential", 4.0), ("exponential", 7.0), ("lognormal", 3.0)],
)
def test_share_timing_out_in_service_is_the_service_tail(dist: str, timeout_s: float) -> None:
    """Below capacity nothing waits, so the share of attempts whose clients give up in service
    is P(S > timeout): interpolated between service quantiles, not rounded to one of them."""
    law = '{ dist = "exponential", mean = "1s" }'
    tail = math.exp(-timeout_s)
    if dist == "lognormal":
        law = '{ dist = "lognormal", mean = "1s", cv = 1.5 }'
        sigma = math.sqrt(math.log1p(1.5**2))
        tail = float(stats.lognorm.sf(timeout_s, sigma, scale=math.exp(-(sigma**2) / 2)))
    text = _pool("50/s", 100, "1h", "1min", f'[client]\ntimeout = "{timeout_s}s"\n')
    text = text.replace('{ dist = "exponential", mean = "1s" }', law)
    requests = _fluid(text).summary["requests"]
    # Exponential tails are log-linear between quantiles (exact); the lognormal's quantiles
    # come from a sample of 2^18 (the tail share at 3 s is known to about 1%).
    rel = 2e-3 if dist == "exponential" else 0.03
    assert requests["timed_out"] / requests["fresh"] == pytest.approx(tail, rel=rel)
