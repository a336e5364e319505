"""SLO breaches to outage windows: which bins breach (beyond noise, open fates at the end),
min_duration and gap merging, each outage's criterion and cause, and the metastable verdict.

Time series are built by hand (the Timeseries contract), so each case states its counts.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SLO_TEXT, timeseries_by_hand
from hypothesis import given
from hypothesis import strategies as st

from sim.analysis.outages import (
    analyse_outages,
    bin_verdicts,
    outage_windows,
    share_slower,
)
from sim.model.scenario import parse_scenario


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
        ("........xx", [(8, 10)]),  # short, but still under way at the end: kept
        ("xx.......x", [(9, 10)]),  # one breached last bin is enough
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
    """Windows are long (or run to the end), breach-bounded, split by long gaps and cover every
    long breach run and a breached last bin."""
    breach_array = np.array(breach, dtype=bool)
    min_duration_s = min_bins * bin_s
    windows = outage_windows(breach_array, bin_s, min_duration_s)
    for first, end in windows:
        assert (end - first) * bin_s >= min_duration_s or end == len(breach)
        assert breach_array[first] and breach_array[end - 1]
    if breach and breach[-1]:
        assert windows and windows[-1][1] == len(breach)
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


def test_breached_bins_by_success_ratio_and_p99() -> None:
    """A bin breaches on success ratio below target or p99 above it; idle bins do not."""
    scenario = parse_scenario(SLO_TEXT)
    ts = timeseries_by_hand(
        ok=[100, 50, 90, 0, 100, 100],
        failed=[0, 50, 10, 0, 0, 0],
        p99=[1.0, 1.0, 1.0, np.nan, 2.5, 1.5],
    )
    verdicts = bin_verdicts(scenario, ts)
    assert bin_verdicts(scenario, ts)["breach"].tolist() == [False, True, False, False, True, False]
    assert verdicts["success"].tolist() == [False, True, False, False, False, False]
    assert verdicts["latency"].tolist() == [False, False, False, False, True, False]


def test_without_latency_target_only_success_counts() -> None:
    """With no latency_p99 in the SLO, slow bins that succeed do not breach."""
    scenario = parse_scenario(SLO_TEXT.replace('latency_p99 = "2s"\n', ""))
    ts = timeseries_by_hand(ok=[100, 50], failed=[0, 50], p99=[100.0, 1.0])
    assert bin_verdicts(scenario, ts)["breach"].tolist() == [False, True]


def test_analyse_outages_reports_windows_in_seconds() -> None:
    """The summary's outages give start, end, duration and peak queue of each window."""
    scenario = parse_scenario(SLO_TEXT)
    ts = timeseries_by_hand(
        ok=[100, 50, 50, 50, 100, 100, 50, 100],
        failed=[0, 50, 50, 50, 0, 0, 50, 0],
        queue=[0, 5, 40, 9, 0, 0, 3, 0],
    )
    result = analyse_outages(scenario, ts, events=[])
    assert [(o["start_s"], o["end_s"]) for o in result["outages"]] == [(60.0, 240.0)]
    outage = result["outages"][0]
    assert outage["duration_s"] == 180.0
    assert outage["peak_queue"] == 40.0
    assert outage["start"] is None  # no scenario.start
    assert outage["criterion"] == "success_ratio" and outage["ongoing"] is False
    assert result["outage_total_s"] == 180.0
    assert result["first_outage_start_s"] == 60.0
    assert result["recovered"] is True


def test_an_outage_at_the_end_is_not_recovered() -> None:
    """An outage that runs to the last bin leaves the run unrecovered."""
    scenario = parse_scenario(SLO_TEXT)
    ts = timeseries_by_hand(ok=[100, 100, 100, 0, 0], failed=[0, 0, 0, 100, 100])
    result = analyse_outages(scenario, ts, events=[])
    assert result["recovered"] is False
    assert result["outages"][-1]["end_s"] == 300.0 and result["outages"][-1]["ongoing"]


def test_a_breach_at_the_end_shorter_than_min_duration_is_ongoing() -> None:
    """One breached last bin (min_duration is two) still means the service is down at the end."""
    scenario = parse_scenario(SLO_TEXT)
    ts = timeseries_by_hand(ok=[100] * 5 + [0], failed=[0] * 5 + [100])
    result = analyse_outages(scenario, ts, events=[])
    assert result["recovered"] is False
    assert [(o["start_s"], o["end_s"], o["ongoing"]) for o in result["outages"]] == [
        (300.0, 360.0, True)
    ]


def test_bins_whose_fates_are_open_at_the_end_are_not_healthy() -> None:
    """Last bins whose requests are all still waiting (no success, no failure yet) keep the
    verdict of the bins before them: down at the end, not recovered (issue 10, item 1)."""
    scenario = parse_scenario(SLO_TEXT.replace('latency_p99 = "2s"\n', ""))
    ts = timeseries_by_hand(
        ok=[100, 100, 0, 0, 0, 0], failed=[0, 0, 100, 100, 0, 0], fresh=[100] * 6, p99=[np.nan] * 6
    )
    result = analyse_outages(scenario, ts, events=[])
    assert result["recovered"] is False
    assert [(o["start_s"], o["end_s"], o["ongoing"]) for o in result["outages"]] == [
        (120.0, 360.0, True)
    ]


def test_a_healthy_end_with_requests_still_in_service_is_healthy() -> None:
    """A last bin whose few open requests arrived in its last seconds is judged on the rest."""
    scenario = parse_scenario(SLO_TEXT)
    ts = timeseries_by_hand(ok=[100] * 5 + [97], failed=[0] * 6, fresh=[100] * 5 + [100])
    result = analyse_outages(scenario, ts, events=[])
    assert result["outages"] == [] and result["recovered"] is True


def test_requests_waiting_longer_than_the_latency_target_count_as_slow() -> None:
    """Without a timeout nothing fails; requests still queued at the end for longer than the
    latency target (2 s) make their bins breach the latency criterion."""
    scenario = parse_scenario(SLO_TEXT)
    ts = timeseries_by_hand(
        ok=[100, 100, 100, 20, 0, 0], failed=[0] * 6, fresh=[100] * 6, p99=[1.0] * 4 + [np.nan] * 2
    )
    result = analyse_outages(scenario, ts, events=[])
    assert bin_verdicts(scenario, ts)["latency"].tolist() == [False] * 3 + [True] * 3
    assert result["recovered"] is False
    assert result["outages"][0]["criterion"] == "latency"
    assert result["outages"][0]["start_s"] == 180.0


def test_criterion_both_when_each_target_is_missed() -> None:
    """An outage missing the success target in some bins and the latency one in others is
    'both'."""
    scenario = parse_scenario(SLO_TEXT)
    ts = timeseries_by_hand(
        ok=[100, 50, 100, 100, 100], failed=[0, 50, 0, 0, 0], p99=[1, 1, 9, 1, 1]
    )
    (outage,) = analyse_outages(scenario, ts, events=[])["outages"]
    assert outage["criterion"] == "both"


def test_share_slower_follows_the_percentiles() -> None:
    """The share above a target is 1% at p99, 5% at p95, 50% at p50, and in between on an
    exponential tail (an exp(1 s) service: e^-4 = 1.8% above 4 s)."""
    p50, p95, p99 = np.log(2), np.log(20), np.log(100)  # exp(1 s) percentiles
    shares = share_slower(4.0, [p50] * 3, [p95] * 3, [p99] * 3)
    assert shares[0] == pytest.approx(np.exp(-4), rel=1e-9)
    for target, share in ((p99, 0.01), (p95, 0.05), (p50, 0.5), (8.0, np.exp(-8))):
        assert share_slower(target, [p50], [p95], [p99])[0] == pytest.approx(share, rel=1e-9)
    assert np.isnan(share_slower(1.0, [np.nan], [np.nan], [np.nan])[0])
