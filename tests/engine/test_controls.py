"""Capacity controls: planned changes, the daily planner, the autoscaler and faults."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import REPO, queue_text

import sim
from sim.analysis.metrics import Recorder
from sim.engine.controls import (
    Autoscaler,
    DailyPlanner,
    autoscale_target,
    combine_faults,
    observed_peak_rps,
)
from sim.model.scenario import load_scenario, parse_scenario
from sim.model.workload import DAY_S

PLANNER_TEXT = """
[scenario]
name = "planner"
duration = "10d"
bin = "1h"

[arrivals]
rate = 100

[service]
servers = 100
time = { dist = "exponential", mean = 1.0 }

[capacity.planner]
review_at = "12:00"
lead_time = "6h"
forecast = "trend"
trend_days = 1
target_utilization = 0.5
max_growth = 1.5
"""


def _recorder_with_daily_peaks(peaks_rps: list[float], scale: float = 1.0) -> Recorder:
    """A recorder whose day d has one busy hour at peaks_rps[d] (and 10/s otherwise)."""
    recorder = Recorder(len(peaks_rps) * 24, 3600.0, scale)
    for day, peak in enumerate(peaks_rps):
        for hour in range(24):
            rate = peak if hour == 6 else 10.0
            recorder.attempts[day * 24 + hour] = rate * 3600 / scale
    recorder.closed_bins = len(peaks_rps) * 24
    return recorder


def test_observed_peak_reads_closed_bins_in_real_units() -> None:
    """The planner's view of load: peak attempts per second of the bins in the window."""
    recorder = _recorder_with_daily_peaks([100.0, 300.0], scale=10)
    assert observed_peak_rps(recorder, 0, DAY_S) == pytest.approx(100.0)
    assert observed_peak_rps(recorder, 0, 2 * DAY_S) == pytest.approx(300.0)
    assert observed_peak_rps(recorder, 3 * DAY_S, 4 * DAY_S) == 0.0


def test_planner_sizes_for_forecast_and_caps_growth() -> None:
    """Servers = peak x growth x mean / target utilisation, at most max_growth a day, after lead."""
    planner = DailyPlanner(parse_scenario(PLANNER_TEXT))
    recorder = _recorder_with_daily_peaks([100.0, 120.0, 144.0])
    # Day 2's review (t = 2d 12h) sees 144/s, growth 1.2: forecast 172.8/s -> 346 servers,
    # capped at 1.5 x 100 = 150.
    step = planner.review(2 * DAY_S + 43200, recorder)
    assert step.servers == 150
    assert step.t_s == pytest.approx(2 * DAY_S + 43200 + 6 * 3600)
    assert "planner" in step.label
    # Flat load already covered: no change, and capacity never goes down.
    flat = DailyPlanner(parse_scenario(PLANNER_TEXT.replace("servers = 100", "servers = 500")))
    assert flat.review(2 * DAY_S + 43200, _recorder_with_daily_peaks([100.0] * 3)) is None


def test_planner_without_trend_uses_the_last_peak() -> None:
    """forecast = "last": tomorrow's peak is today's (no growth term)."""
    text = PLANNER_TEXT.replace('forecast = "trend"', 'forecast = "last"').replace(
        "max_growth = 1.5", "max_growth = 10"
    )
    step = DailyPlanner(parse_scenario(text)).review(
        2 * DAY_S + 43200, _recorder_with_daily_peaks([100.0, 120.0, 144.0])
    )
    assert step.servers == math.ceil(144.0 * 1.0 / 0.5)


def test_planner_in_the_engine_follows_growing_demand() -> None:
    """In a run, a daily planner adds servers as a ramping demand grows, after its lead time."""
    text = PLANNER_TEXT + '\n[[arrivals.surge]]\nat = "1d"\nfactor = 3\nramp = "6d"\n'
    text = text.replace('duration = "10d"', 'duration = "9d"').replace("rate = 100", "rate = 1")
    text = text.replace("servers = 100", "servers = 3")
    result = sim.simulate(parse_scenario(text))
    servers = result.timeseries["servers"]
    changes = [e for e in result.summary["timeline"] if e["kind"] == "capacity"]
    assert len(changes) >= 2
    assert all((e["t_s"] - 43200 - 6 * 3600) % DAY_S == pytest.approx(0) for e in changes)
    assert servers[-1] > servers[0]
    assert result.summary["outages"] == []


def test_capacity_change_applies_at_its_time() -> None:
    """A [[capacity.change]] sets the server count from its time on."""
    text = queue_text(rate_rps=5, servers=10, duration_s=1000, bin_s=10)
    text += '\n[[capacity.change]]\nat = "500s"\nservers = 20\n'
    ts = sim.simulate(parse_scenario(text)).timeseries
    assert set(ts["servers"][:49]) == {10.0}
    assert set(ts["servers"][50:]) == {20.0}
    assert ts["capacity_rps"][25] == pytest.approx(10.0)
    assert ts["capacity_rps"][75] == pytest.approx(20.0)


def test_fault_takes_capacity_for_its_duration() -> None:
    """A fault with capacity_factor 0.3 leaves 30% of servers, then restores them."""
    text = queue_text(rate_rps=5, servers=10, duration_s=1000, bin_s=10)
    text += '\n[[faults]]\nat = "200s"\nduration = "100s"\ncapacity_factor = 0.3\n'
    result = sim.simulate(parse_scenario(text))
    servers = result.timeseries["servers"]
    assert servers[15] == 10 and servers[25] == 3 and servers[35] == 10
    kinds = [e["kind"] for e in result.summary["timeline"]]
    assert kinds == ["fault", "fault_end"]


def test_slowdown_fault_lowers_capacity_not_servers() -> None:
    """A slowdown fault keeps the servers but divides the capacity in requests per second."""
    text = queue_text(rate_rps=2, servers=10, duration_s=1000, bin_s=10)
    text += '\n[[faults]]\nat = "200s"\nduration = "100s"\nslowdown = 4\n'
    ts = sim.simulate(parse_scenario(text)).timeseries
    assert ts["servers"][25] == 10
    assert ts["capacity_rps"][25] == pytest.approx(2.5)
    assert ts["capacity_rps"][45] == pytest.approx(10.0)


def test_overlapping_faults_combine() -> None:
    """Two faults at once multiply their capacity factors and slowdowns."""
    faults = parse_scenario(
        queue_text(rate_rps=1, servers=10, duration_s=100)
        + "\n[[faults]]\nat = 1\nduration = 5\ncapacity_factor = 0.5\nerror_rate = 0.5\n"
        + "\n[[faults]]\nat = 1\nduration = 5\ncapacity_factor = 0.5\nslowdown = 2\n"
        + "error_rate = 0.5\n"
    ).faults
    factor, slowdown, error_rate = combine_faults(list(faults))
    assert (factor, slowdown, error_rate) == (0.25, 2.0, 0.75)


def test_autoscaler_scales_up_after_delay_and_down_calmly() -> None:
    """Up: busy/target servers after the delay, nothing decided meanwhile; down: by half at most."""
    spec = parse_scenario(
        queue_text(rate_rps=1, servers=10, duration_s=100)
        + "\n[capacity.autoscale]\ntarget = 0.5\ndelay = 300\ncooldown = 120\ninterval = 60\n"
    ).capacity.autoscale
    scaler = Autoscaler(spec)
    assert scaler.decide(0.0, 10, 0.0, 0) is None  # first observation only sets the baseline
    assert scaler.decide(60.0, 10, 600.0, 0) == (20, 300)  # 10 busy / 0.5 = 20 servers
    assert scaler.decide(120.0, 10, 1200.0, 5) is None  # provisioning in flight
    assert scaler.decide(420.0, 20, 4200.0, 0) is None  # 10 busy: 20 servers is right
    decision = scaler.decide(600.0, 20, 4380.0, 0)  # 1 busy: down, but by half at most
    assert decision == (10, 0.0)
    assert autoscale_target(spec, 10, 10, 0) == 20
    assert autoscale_target(spec, 10, 100, 0) == 20  # capped by max_step (x2)


def test_launch_surge_autoscaler_catches_up() -> None:
    """The launch-surge scenario: an outage while the autoscaler climbs, then recovery."""
    summary = sim.simulate(
        load_scenario(REPO / "scenarios" / "launch-surge.toml", overrides={"scenario.scale": 10})
    ).summary
    steps = [e for e in summary["timeline"] if e["kind"] == "autoscale"]
    assert len(steps) >= 4
    assert summary["outages"] and summary["recovered"] is True
    assert summary["outages"][0]["start_s"] == pytest.approx(20 * 60, abs=5 * 60)


def test_capacity_never_negative_and_zero_servers_fail_everything() -> None:
    """A capacity change to zero servers stops service; queued clients time out."""
    text = queue_text(rate_rps=5, servers=10, duration_s=600, bin_s=10)
    text += '\n[[capacity.change]]\nat = "300s"\nservers = 0\n'
    text += '\n[client]\ntimeout = "5s"\n'
    ts = sim.simulate(parse_scenario(text)).timeseries
    assert np.all(ts["servers"][31:] == 0)
    assert ts["succeeded"][32:].sum() == 0
    assert ts["timed_out"][32:].sum() > 0
