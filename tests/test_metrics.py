"""The Recorder: per-bin counters, bounded-memory latency histograms, and the Timeseries."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.metrics import (
    COUNTERS,
    HIST_EDGES,
    TIMESERIES_COLUMNS,
    Recorder,
    histogram_percentiles,
)

QUANTILES = (0.5, 0.95, 0.99)
BUCKET_RATIO = HIST_EDGES[1] / HIST_EDGES[0]


def _record(recorder: Recorder, b: int, latencies) -> None:
    recorder.latencies.extend(float(x) for x in latencies)
    recorder.close_bin(b, queue=0, busy=0, servers=1)


@pytest.mark.parametrize(
    "sample",
    [
        np.random.default_rng(1).lognormal(math.log(0.2), 1.0, 50_000),
        np.random.default_rng(2).exponential(1.5, 50_000),
        np.geomspace(1e-3, 100.0, 20_001),  # a known sample: exact quantiles by formula
        np.random.default_rng(3).uniform(2.0, 3.0, 10_000),
    ],
    ids=["lognormal", "exponential", "geometric", "uniform"],
)
def test_percentiles_within_three_per_cent(sample: np.ndarray) -> None:
    """Per-bin and whole-run p50/p95/p99 are within 3% of the sample's exact quantiles."""
    recorder = Recorder(n_bins=2, bin_s=60.0)
    _record(recorder, 0, sample)
    _record(recorder, 1, [])
    exact = np.quantile(sample, QUANTILES)
    assert recorder.latency_pct[0] == pytest.approx(exact, rel=0.03)
    assert np.isnan(recorder.latency_pct[1]).all()  # an empty bin has no percentiles
    summary = recorder.latency_summary()
    assert [summary["p50"], summary["p95"], summary["p99"]] == pytest.approx(exact, rel=0.03)
    assert summary["mean"] == pytest.approx(sample.mean(), rel=1e-12)
    assert summary["max"] == sample.max()


def test_whole_run_percentiles_merge_bins() -> None:
    """The run's percentiles come from all bins' histograms together, not an average of bins."""
    rng = np.random.default_rng(4)
    fast, slow = rng.exponential(0.1, 30_000), rng.exponential(5.0, 10_000)
    recorder = Recorder(n_bins=2, bin_s=60.0)
    _record(recorder, 0, fast)
    _record(recorder, 1, slow)
    summary = recorder.latency_summary()
    both = np.concatenate([fast, slow])
    exact = np.quantile(both, QUANTILES)
    assert [summary["p50"], summary["p95"], summary["p99"]] == pytest.approx(exact, rel=0.03)
    assert summary["mean"] == pytest.approx(both.mean(), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-4, max_value=1e4), min_size=1, max_size=300),
    st.sampled_from(QUANTILES),
)
def test_any_sample_percentile_lies_within_one_bucket(values: list[float], q: float) -> None:
    """For any sample, a percentile is within one bucket's ratio (5.9%) of a sample quantile."""
    recorder = Recorder(n_bins=1, bin_s=1.0)
    _record(recorder, 0, values)
    estimate = recorder.latency_pct[0][QUANTILES.index(q)]
    ordered = np.sort(values)
    rank = max(math.ceil(q * len(values)), 1) - 1
    exact = ordered[rank]
    assert exact / BUCKET_RATIO <= estimate <= exact * BUCKET_RATIO


def test_histogram_percentiles_of_nothing_are_nan() -> None:
    """No completed attempts: every percentile is NaN (written as an empty CSV cell)."""
    assert all(math.isnan(v) for v in histogram_percentiles(np.zeros(len(HIST_EDGES) - 1), (0.5,)))


def test_out_of_range_latencies_are_clipped_into_the_end_buckets() -> None:
    """Zero and huge latencies fall in the first and last buckets instead of failing."""
    recorder = Recorder(n_bins=1, bin_s=1.0)
    _record(recorder, 0, [0.0, 0.0, 1e9])
    assert recorder.hist[0] == 2 and recorder.hist[-1] == 1
    assert recorder.latency_summary()["max"] == 1e9


def test_memory_grows_with_bins_not_requests() -> None:
    """After a bin closes its latencies live only in a fixed-size histogram."""
    recorder = Recorder(n_bins=3, bin_s=1.0)
    buffer = recorder.latencies
    for b, n in enumerate((10, 100_000, 1)):
        _record(recorder, b, np.full(n, 0.5))
        assert recorder.latencies == [] and recorder.latencies is buffer  # the engine's append
        assert recorder.hist.shape == (len(HIST_EDGES) - 1,)
    assert recorder.hist.sum() == 100_011
    assert recorder.latency_count == 100_011


def test_timeseries_reports_real_units() -> None:
    """Counters, queue, busy and servers are multiplied by scale; rates derive from areas."""
    scale, bin_s, mean_s = 10.0, 60.0, 0.5
    recorder = Recorder(n_bins=2, bin_s=bin_s, scale=scale)
    for name in COUNTERS:
        getattr(recorder, name)[0] = 3
        getattr(recorder, name)[1] = 5
    recorder.busy_area[:] = [30.0, 60.0]  # unit-seconds
    recorder.server_area[:] = [120.0, 120.0]
    recorder.capacity_area[:] = [120.0, 60.0]
    recorder.queue_area[:] = [0.0, 600.0]
    recorder.close_bin(0, queue=0, busy=1, servers=2)
    recorder.close_bin(1, queue=7, busy=2, servers=2)
    ts = recorder.timeseries(np.array([1.0, 2.0]), mean_service_s=mean_s)
    assert len(ts) == 2
    assert ts["t_s"].tolist() == [0.0, 60.0]
    for name in COUNTERS:
        assert ts[name].tolist() == [30.0, 50.0]
    assert ts["queue"].tolist() == [0.0, 70.0]
    assert ts["busy"].tolist() == [10.0, 20.0]
    assert ts["servers"].tolist() == [20.0, 20.0]
    assert ts["utilization"].tolist() == [0.25, 0.5]
    assert ts["offered_rps"].tolist() == [30.0 / 60, 50.0 / 60]
    # Capacity: server-seconds / bin × scale / mean service time.
    assert ts["capacity_rps"].tolist() == [40.0, 20.0]
    assert ts["queue_mean"].tolist() == [0.0, 100.0]
    assert ts["demand_rps"].tolist() == [1.0, 2.0]
    for column in TIMESERIES_COLUMNS:
        if column != "time":
            assert column in ts.columns, column


def test_timeseries_holds_only_closed_bins_and_times() -> None:
    """An interrupted run reports the bins it closed; times() gives datetimes from a start."""
    recorder = Recorder(n_bins=5, bin_s=30.0)
    _record(recorder, 0, [0.1])
    _record(recorder, 1, [0.2])
    start = datetime(2021, 1, 15, tzinfo=UTC)
    ts = recorder.timeseries(np.ones(5), mean_service_s=1.0, start=start)
    assert len(ts) == 2
    assert ts.times()[1] == datetime(2021, 1, 15, 0, 0, 30, tzinfo=UTC)
    plain = recorder.timeseries(np.ones(5), mean_service_s=1.0)
    assert plain.times() == [0.0, 30.0]


def test_to_pandas_has_every_column() -> None:
    """The Timeseries converts to a DataFrame with one column per series (pandas optional)."""
    pd = pytest.importorskip("pandas")
    recorder = Recorder(n_bins=1, bin_s=1.0)
    _record(recorder, 0, [0.1])
    ts = recorder.timeseries(np.ones(1), mean_service_s=1.0)
    frame = ts.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert set(ts.columns) == set(frame.columns)


def test_engine_keeps_the_latency_buffer_bounded_within_a_bin(monkeypatch) -> None:
    """A run of one long bin never buffers more than _FLUSH latencies before folding them."""
    import sim
    from sim import metrics
    from sim.scenario import parse_scenario

    longest = []
    flush = Recorder.flush_latencies

    def watched(self):
        longest.append(len(self.latencies))
        flush(self)

    monkeypatch.setattr(Recorder, "flush_latencies", watched)
    text = """\
[scenario]
name = "one-bin"
duration = 2500
bin = 2500

[arrivals]
rate = 40

[service]
servers = 60
time = { dist = "exponential", mean = 1 }
"""
    result = sim.simulate(parse_scenario(text))
    assert result.summary["requests"]["succeeded"] > 1.3 * metrics._FLUSH
    assert max(longest) <= metrics._FLUSH
