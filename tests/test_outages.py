"""SLO breaches to outage windows: min_duration, gap merging, and which bins breach."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.metrics import Recorder, Timeseries
from sim.outages import analyse_outages, breached_bins, outage_windows
from sim.scenario import parse_scenario


def _breach(pattern: str) -> np.ndarray:
    """'..xxx.' -> boolean array, x = a breached bin."""
    return np.array([c == "x" for c in pattern])


@pytest.mark.parametrize(
    ("pattern", "windows"),
    [
        ("..........", []),
        ("..xxxxx...", [(2, 7)]),  # exactly min_duration
        ("..xxxx....", []),  # one bin short
        ("xxx..xxx..", [(0, 8)]),  # a 2-bin gap is merged
        ("xxxxx.....xxxxx", [(0, 5), (10, 15)]),  # a gap of min_duration splits
        ("xxxxx....x", [(0, 10)]),  # a 4-bin gap merges a lone bin into the outage
        ("x.x.x.x.x.", [(0, 9)]),  # scattered breaches add up to one outage
        ("x..x......", []),  # merged, still shorter than min_duration
        ("x...x.....", [(0, 5)]),  # merged span reaches min_duration
        (".......xxxxx", [(7, 12)]),  # ongoing at the end
        ("xxxxxxxxxxxx", [(0, 12)]),
    ],
)
def test_outage_windows_with_five_bin_minimum(pattern: str, windows) -> None:
    """With 1-min bins and min_duration 5 min: short breaches drop, close ones merge."""
    assert outage_windows(_breach(pattern), 60.0, 300.0) == windows


def test_min_duration_not_a_multiple_of_the_bin() -> None:
    """min_duration 90 s with 1-min bins: two bins make an outage, a 1-bin gap merges."""
    assert outage_windows(_breach("x...xx..x.x."), 60.0, 90.0) == [(4, 6), (8, 11)]


def test_zero_min_duration_keeps_every_breach_run_apart() -> None:
    """min_duration 0: every run of breached bins is its own outage, nothing merges."""
    assert outage_windows(_breach(".x.xx...x"), 60.0, 0.0) == [(1, 2), (3, 5), (8, 9)]


@given(
    st.lists(st.booleans(), max_size=80),
    st.sampled_from([10.0, 60.0]),
    st.integers(min_value=1, max_value=8),
)
def test_outage_windows_properties(breach: list[bool], bin_s: float, min_bins: int) -> None:
    """Windows are long, breach-bounded, split by long gaps and cover every long breach run."""
    breach_array = np.array(breach, dtype=bool)
    min_duration_s = min_bins * bin_s
    windows = outage_windows(breach_array, bin_s, min_duration_s)
    for first, end in windows:
        assert (end - first) * bin_s >= min_duration_s
        assert breach_array[first] and breach_array[end - 1]
    for (_, end), (first, _) in zip(windows, windows[1:], strict=False):
        assert (first - end) * bin_s >= min_duration_s
    covered = np.zeros(len(breach), dtype=bool)
    for first, end in windows:
        covered[first:end] = True
    run = 0
    for i, value in enumerate([*breach, False]):
        if value:
            run += 1
            continue
        if run * bin_s >= min_duration_s:
            assert covered[i - run : i].all()
        run = 0


SLO_TEXT = """\
[scenario]
name = "o"
duration = "10min"
bin = "1min"

[arrivals]
rate = 1

[service]
servers = 1
time = { dist = "exponential", mean = 1 }

[slo]
success_ratio = 0.9
latency_p99 = "2s"
min_duration = "2min"
"""


def _timeseries(ok, failed, p99, queue=None) -> Timeseries:
    """A Timeseries made the way the engines make it: through a Recorder.

    Per bin: `ok` and `failed` fresh requests (counted in their arrival bin), latencies all
    equal to `p99` (NaN: none completed), and the queue at the bin's end.
    """
    n = len(ok)
    queue = queue if queue is not None else [0] * n
    recorder = Recorder(n_bins=n, bin_s=60.0)
    for b in range(n):
        recorder.fresh[b] = recorder.attempts[b] = ok[b] + failed[b]
        recorder.succeeded[b] = recorder.fresh_ok[b] = ok[b]
        recorder.fresh_failed[b] = failed[b]
        if not np.isnan(p99[b]):
            recorder.latencies.extend([p99[b]] * 10)
        recorder.close_bin(b, queue=queue[b], busy=0, servers=1)
    return recorder.timeseries(np.ones(n), mean_service_s=0.5)


def test_breached_bins_by_success_ratio_and_p99() -> None:
    """A bin breaches on success ratio below target or p99 above it; idle bins do not."""
    scenario = parse_scenario(SLO_TEXT)
    ts = _timeseries(
        ok=[100, 89, 90, 0, 100, 100],
        failed=[0, 11, 10, 0, 0, 0],
        p99=[1.0, 1.0, 1.0, np.nan, 2.5, 1.5],
    )
    assert breached_bins(scenario, ts).tolist() == [False, True, False, False, True, False]


def test_without_latency_target_only_success_counts() -> None:
    """With no latency_p99 in the SLO, slow bins that succeed do not breach."""
    scenario = parse_scenario(SLO_TEXT.replace('latency_p99 = "2s"\n', ""))
    ts = _timeseries(ok=[10, 5], failed=[0, 5], p99=[100.0, 1.0])
    assert breached_bins(scenario, ts).tolist() == [False, True]


def test_analyse_outages_reports_windows_in_seconds() -> None:
    """The summary's outages give start, end, duration and peak queue of each window."""
    scenario = parse_scenario(SLO_TEXT)
    ts = _timeseries(
        ok=[100, 50, 50, 50, 100, 100, 50, 100],
        failed=[0, 50, 50, 50, 0, 0, 50, 0],
        p99=[1.0] * 8,
        queue=[0, 5, 40, 9, 0, 0, 3, 0],
    )
    result = analyse_outages(scenario, ts, events=[])
    assert [(o["start_s"], o["end_s"]) for o in result["outages"]] == [(60.0, 240.0)]
    outage = result["outages"][0]
    assert outage["duration_s"] == 180.0
    assert outage["peak_queue"] == 40.0
    assert outage["start"] is None  # no scenario.start
    assert result["outage_total_s"] == 180.0
    assert result["first_outage_start_s"] == 60.0
    assert result["recovered"] is True


def test_an_outage_at_the_end_is_not_recovered() -> None:
    """An outage that runs to the last bin leaves the run unrecovered."""
    scenario = parse_scenario(SLO_TEXT)
    ts = _timeseries(ok=[10, 10, 10, 0, 0], failed=[0, 0, 0, 10, 10], p99=[1.0] * 5)
    result = analyse_outages(scenario, ts, events=[])
    assert result["recovered"] is False
    assert result["outages"][-1]["end_s"] == 300.0
