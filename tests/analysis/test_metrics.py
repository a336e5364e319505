"""The Recorder: per-bin counters, bounded-memory latency histograms (client and server
views), and the Timeseries."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from helpers import REPO, queue_text
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.analysis.metrics import (
    COUNTERS,
    HIST_EDGES,
    TIMESERIES_COLUMNS,
    Recorder,
    bucket_counts,
    histogram_percentiles,
    percentile_rows,
)
from sim.engine import kernel_store

QUANTILES = (0.5, 0.95, 0.99)
BUCKET_RATIO = HIST_EDGES[1] / HIST_EDGES[0]


def _record(recorder: Recorder, b: int, latencies) -> None:
    """Server latencies completed in bin b, then the bin's close."""
    recorder.add_server_latencies(b, np.asarray(latencies, dtype=float))
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
    assert recorder.server_latency.pct[0] == pytest.approx(exact, rel=0.03)
    assert np.isnan(recorder.server_latency.pct[1]).all()  # an empty bin has no percentiles
    summary = recorder.server_latency_summary()
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
    summary = recorder.server_latency_summary()
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
    estimate = recorder.server_latency.pct[0][QUANTILES.index(q)]
    ordered = np.sort(values)
    rank = max(math.ceil(q * len(values)), 1) - 1
    exact = ordered[rank]
    assert exact / BUCKET_RATIO <= estimate <= exact * BUCKET_RATIO


def test_percentile_rows_match_a_search_on_each_rows_cumulative_counts() -> None:
    """Numpy's passes and the kernel's compiled walk give, to the last bit, what a plain
    search gives: the first bucket whose cumulative count reaches q · total, and a geometric
    interpolation inside it; on counts and on weighted masses, empty rows, one-bucket rows
    and the end buckets."""
    rng = np.random.default_rng(7)
    rows = [bucket_counts(rng.exponential(1.0, int(rng.integers(1, 2000)))) for _ in range(60)]
    rows += [bucket_counts(10 ** rng.uniform(-5, 6, 50), rng.uniform(0, 3, 50)) for _ in range(60)]
    for _ in range(20):
        one, ends = np.zeros(len(HIST_EDGES) - 1), np.zeros(len(HIST_EDGES) - 1)
        one[rng.integers(0, len(one))] = rng.integers(1, 5)
        ends[0], ends[-1] = 1.0, rng.uniform(0.1, 100.0)
        rows += [one, ends, np.zeros(len(one))]
    rows = np.stack(rows)
    for quantiles in [(0.5, 0.95, 0.99), (0.0, 0.25, 1.0), (0.001,)]:
        expected = np.full((len(rows), len(quantiles)), np.nan)
        for r, counts in enumerate(rows):
            cumulative = np.cumsum(counts)
            total = cumulative[-1]
            for i, q in enumerate(quantiles):
                rank = q * total
                j = min(int(np.searchsorted(cumulative, rank, side="left")), len(counts) - 1)
                before = cumulative[j - 1] if j > 0 else 0.0
                inside = (rank - before) / counts[j] if counts[j] > 0 else 0.5
                low, high = float(HIST_EDGES[j]), float(HIST_EDGES[j + 1])
                if total > 0:
                    expected[r, i] = low * (high / low) ** min(max(float(inside), 0.0), 1.0)
        got = percentile_rows(rows, quantiles)
        assert np.array_equal(got, expected, equal_nan=True), quantiles
        # The kernel's compiled walk (what a run's Recorder uses) gives the same bytes.
        walked = kernel_store.percentile_rows(rows, quantiles)
        assert np.array_equal(walked, expected, equal_nan=True), quantiles
    for function in (percentile_rows, kernel_store.percentile_rows):
        with pytest.raises(ValueError, match="ascend"):
            function(rows, (0.99, 0.5))


def _hand_over_bin_by_bin(recorder: Recorder, first: int, end: int, server, client) -> None:
    """What `close_bins` stands for: each histogram added just before the close of its bin,
    the bins closed one at a time."""
    i = j = 0
    for b in range(first, end):
        while i < len(server[0]) and server[0][i] <= b:
            recorder.add_server_histogram(*(x[i] for x in server))
            i += 1
        while j < len(client[0]) and client[0][j] <= b:
            recorder.add_client_histogram(*(x[j] for x in client))
            j += 1
        recorder.close_bin(b, queue=0, busy=0, servers=1)
    for k in range(i, len(server[0])):
        recorder.add_server_histogram(*(x[k] for x in server))
    for k in range(j, len(client[0])):
        recorder.add_client_histogram(*(x[k] for x in client))


@pytest.mark.parametrize("seed", range(6))
def test_closing_bins_in_batches_is_closing_them_one_by_one(seed: int) -> None:
    """`close_bins` with array histograms (bins twice, empty rows, bins open from an earlier
    hand-over, requests decided late) leaves the Recorder as closing bin by bin does: the
    same bins settled and open, the same percentiles to the bit, the same counts."""
    rng = np.random.default_rng(seed)
    n_bins, buckets = 120, len(HIST_EDGES) - 1
    batched, by_bin = Recorder(n_bins, 1.0), Recorder(n_bins, 1.0)

    def rows(bins: np.ndarray):
        counts = np.zeros((len(bins), buckets))
        for r in range(len(bins)):
            if rng.random() < 0.9:  # some rows are empty
                counts[r, rng.integers(50, 300, 5)] += rng.integers(1, 4, 5)
        sums = counts @ HIST_EDGES[:-1]
        return bins, counts, sums, np.where(counts.any(axis=1), 1e3, -math.inf)

    fresh = rng.integers(1, 20, n_bins)
    decided = np.zeros(n_bins, dtype=bool)
    closed = 0
    while closed < n_bins:
        end = min(n_bins, closed + int(rng.integers(1, 12)))
        for recorder in (batched, by_bin):
            recorder.fresh[:] = fresh.tolist()
        # Requests are decided late, at random, only once their bin has closed.
        decided |= (np.arange(n_bins) < end) & (rng.random(n_bins) < 0.4)
        for recorder in (batched, by_bin):
            recorder.fresh_ok[:] = np.where(decided, fresh, fresh - 1).tolist()
        server = rows(np.unique(rng.integers(closed, min(n_bins, end + 2), 6)))
        open_client = np.flatnonzero(~by_bin.client_latency.settled[: min(n_bins, end + 1)])
        client = rows(np.sort(rng.choice(open_client, min(8, len(open_client)))))
        batched.close_bins(closed, end, [0] * (end - closed), [0] * (end - closed),
                           [1] * (end - closed), server, client)  # fmt: skip
        _hand_over_bin_by_bin(by_bin, closed, end, server, client)
        closed = end
    for view in ("client_latency", "server_latency"):
        a, b = getattr(batched, view), getattr(by_bin, view)
        assert np.array_equal(a.settled, b.settled), view
        assert sorted(a.open) == sorted(b.open), view
        assert all(np.array_equal(a.open[k], b.open[k]) for k in a.open), view
        assert np.array_equal(a.pct, b.pct, equal_nan=True), view
        assert np.array_equal(a.hist, b.hist), view
        assert (a.count, a.max_s) == (b.count, b.max_s), view
        assert a.total_s == pytest.approx(b.total_s, rel=1e-12), view


def test_histogram_percentiles_of_nothing_are_nan() -> None:
    """No completed attempts: every percentile is NaN (written as an empty CSV cell)."""
    assert all(math.isnan(v) for v in histogram_percentiles(np.zeros(len(HIST_EDGES) - 1), (0.5,)))


def test_out_of_range_latencies_are_clipped_into_the_end_buckets() -> None:
    """Zero and huge latencies fall in the first and last buckets instead of failing."""
    recorder = Recorder(n_bins=1, bin_s=1.0)
    _record(recorder, 0, [0.0, 0.0, 1e9])
    assert recorder.server_latency.hist[0] == 2 and recorder.server_latency.hist[-1] == 1
    assert recorder.server_latency_summary()["max"] == 1e9


def test_memory_grows_with_bins_not_requests() -> None:
    """After a bin closes its server latencies live only in the merged histogram."""
    recorder = Recorder(n_bins=3, bin_s=1.0)
    for b, n in enumerate((10, 100_000, 1)):
        _record(recorder, b, np.full(n, 0.5))
        assert recorder.server_latency.open == {}
        assert recorder.server_latency.hist.shape == (len(HIST_EDGES) - 1,)
    assert recorder.server_latency.hist.sum() == 100_011
    assert recorder.server_latency.count == 100_011


def _client_bins(recorder: Recorder, fresh: list[int], ok: list[int], failed: list[int]) -> None:
    recorder.fresh[: len(fresh)] = fresh
    recorder.fresh_ok[: len(ok)] = ok
    recorder.fresh_failed[: len(failed)] = failed


def test_client_latency_counts_in_the_first_arrival_bin_until_decided() -> None:
    """A success that arrives late still lands in its first-arrival bin; a bin is settled
    (histogram freed) only once all its fresh requests are decided."""
    recorder = Recorder(n_bins=4, bin_s=10.0)
    _client_bins(recorder, fresh=[2, 1, 0, 0], ok=[1, 0], failed=[0, 0])
    recorder.add_client_latencies(0, [0.5])
    recorder.close_bin(0, queue=0, busy=0, servers=1)
    assert set(recorder.client_latency.open) == {0}  # one request of bin 0 still in flight
    recorder.fresh_ok[0] += 1
    recorder.fresh_ok[1] += 1
    recorder.add_client_latencies(np.array([0, 1]), np.array([12.0, 3.0]))
    recorder.close_bin(1, queue=0, busy=0, servers=1)
    assert recorder.client_latency.open == {}
    pct = recorder.client_latency.pct
    assert pct[0, 0] == pytest.approx(0.5, rel=0.06) and pct[0, 2] == pytest.approx(12, rel=0.06)
    assert pct[1] == pytest.approx([3.0] * 3, rel=0.06)
    with pytest.raises(ValueError, match="settled"):
        recorder.add_client_latencies(0, [1.0])
    summary = recorder.latency_summary()
    assert summary["max"] == 12.0 and summary["mean"] == pytest.approx(15.5 / 3)
    assert math.isnan(recorder.server_latency_summary()["mean"])  # no attempt completed


def test_client_bins_open_only_while_requests_are_in_flight() -> None:
    """Over many bins whose requests are decided two bins later, at most three client
    histograms are ever held, and percentiles of still-open bins are reported too."""
    n = 200
    recorder = Recorder(n_bins=n, bin_s=1.0)
    recorder.fresh[:] = [10] * n
    most_open = 0
    for b in range(n):
        if b >= 2:  # the requests of bin b - 2 are all decided now: 7 succeed, 3 fail
            recorder.fresh_ok[b - 2], recorder.fresh_failed[b - 2] = 7, 3
            recorder.add_client_latencies(b - 2, np.full(7, 2.5))
        recorder.add_client_latencies(b, [0.1])  # a fast success, still undecided bin
        recorder.fresh_ok[b] += 1
        recorder.close_bin(b, queue=0, busy=0, servers=1)
        most_open = max(most_open, len(recorder.client_latency.open))
    assert most_open <= 3
    ts = recorder.timeseries(np.ones(n), mean_service_s=1.0)
    assert ts["latency_p50"][-1] == pytest.approx(0.1, rel=0.06)  # open: from what it holds
    assert ts["latency_p99"][0] == pytest.approx(2.5, rel=0.06)
    assert np.isnan(ts["server_latency_p50"]).all()


def test_weighted_latencies_and_histograms_agree() -> None:
    """Weighted latencies (fluid masses) give the same percentiles and mean as the same
    histogram added pre-bucketed, and as repeating each latency weight times."""
    from sim.analysis.metrics import bucket_counts

    values, weights = np.array([0.2, 1.0, 7.0]), np.array([50.0, 40.0, 10.0])
    by_weight, by_hist, repeated = (Recorder(n_bins=1, bin_s=1.0) for _ in range(3))
    by_weight.add_server_latencies(0, values, weights)
    by_hist.add_server_histogram(0, bucket_counts(values, weights), float(values @ weights), 7.0)
    repeated.add_server_latencies(0, np.repeat(values, weights.astype(int)))
    for recorder in (by_weight, by_hist, repeated):
        recorder.close_bin(0, queue=0, busy=0, servers=1)
    expected = repeated.server_latency_summary()
    for recorder in (by_weight, by_hist):
        assert recorder.server_latency_summary() == pytest.approx(expected)
        assert recorder.server_latency.pct[0] == pytest.approx(repeated.server_latency.pct[0])


def test_settle_client_bins_frees_bins_a_fluid_engine_knows_are_done() -> None:
    """settle_client_bins closes bins whose float masses never exactly add up."""
    recorder = Recorder(n_bins=3, bin_s=1.0)
    recorder.fresh[:] = [1.0, 1.0, 1.0]
    recorder.fresh_ok[:] = [0.7, 0.7, 0.7]
    recorder.add_client_latencies([0, 1, 2], [1.0, 1.0, 1.0], weights=[0.7, 0.7, 0.7])
    recorder.close_bin(0, queue=0, busy=0, servers=1)
    assert set(recorder.client_latency.open) == {0, 1, 2}
    recorder.settle_client_bins(2)
    assert set(recorder.client_latency.open) == {2}
    assert recorder.client_latency.pct[0] == pytest.approx([1.0] * 3, rel=0.06)


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
    """A run of one long bin hands latencies to the Recorder whenever the kernel's buffer of
    latency records is half full: the buffer never grows past its size, and none is lost."""
    import sim
    from sim.engine import kernel_state
    from sim.model.scenario import parse_scenario

    monkeypatch.setattr(kernel_state, "LAT0", 512)
    masses: list[float] = []  # the server latencies of each hand-over
    close_bins = Recorder.close_bins

    def watched(self, first, end, queue, busy, servers, server, client):
        masses.append(float(server[1].sum()))
        close_bins(self, first, end, queue, busy, servers, server, client)

    monkeypatch.setattr(Recorder, "close_bins", watched)
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
    succeeded = result.summary["requests"]["succeeded"]
    assert succeeded > 100 * 512
    assert sum(masses) == succeeded  # every completion reached the histogram
    assert len(masses) > 100  # handed over in many pieces, not once at the bin's end
    assert max(masses) <= 512  # never more than the buffer holds


def test_a_hand_over_amid_the_runs_last_instant_leaves_the_last_bin_open(monkeypatch) -> None:
    """Completions at exactly the run's end still land in its last bin: a hand-over while
    the latency buffer is half full, amid that instant's batch, must not settle that bin
    (it once did, and the next completion raised "latency added to bin 9 after it was
    settled"). Here 800 requests queue behind a 40 s outage of every server and all finish
    at t = 100 s, the end."""
    import sim
    from sim.engine import kernel_state
    from sim.model.scenario import parse_scenario

    monkeypatch.setattr(kernel_state, "LAT0", 512)
    text = queue_text(
        rate_rps=20.0, servers=1000, duration_s=100.0, bin_s=10.0, dist="deterministic", mean_s=10.0
    )
    fault = "\n[[faults]]\nat = 50\nduration = 40\ncapacity_factor = 0\n"
    result = sim.simulate(parse_scenario(text + fault))
    requests = result.summary["requests"]
    served_by_the_end = int(np.sum(result.timeseries["succeeded"]))
    assert served_by_the_end == requests["succeeded"] > 800
    assert result.summary["server_latency_s"]["max"] > 49.0  # queued up to 40 s, served 10 s


def test_a_hand_over_holds_histograms_for_a_bounded_span_of_bins(monkeypatch) -> None:
    """A light day in 1 s bins (86,400 bins, 170k requests: one tick by requests) hands its
    latencies over in pieces of about TICK_BINS bins, never as one histogram array for the
    whole day (440 floats a bin: 300 MB)."""
    import sim
    from sim.model.scenario import parse_scenario

    rows: list[int] = []
    close_bins = Recorder.close_bins

    def watched(self, first, end, queue, busy, servers, server, client):
        rows.append(len(server[0]) + len(client[0]))
        close_bins(self, first, end, queue, busy, servers, server, client)

    monkeypatch.setattr(Recorder, "close_bins", watched)
    text = queue_text(rate_rps=2.0, servers=4, duration_s=86_400.0, bin_s=1.0)
    result = sim.simulate(parse_scenario(text))
    assert result.summary["requests"]["succeeded"] > 100_000
    assert len(rows) >= 86
    assert max(rows) <= 2 * 1_050  # server and client rows of about 1,000 bins


def test_engine_holds_client_histograms_only_for_bins_still_in_flight(monkeypatch) -> None:
    """In a retry storm judged in 1 s bins, the DES never holds more open client histograms
    than a request's longest life spans: 4 tries · 1 s timeout + 3 backoffs ≤ 1 s = 7 bins."""
    import sim
    from sim.model.scenario import load_scenario

    most_open: list[int] = []
    close_bins = Recorder.close_bins

    def watched(self, *args):
        close_bins(self, *args)
        most_open.append(len(self.client_latency.open))

    monkeypatch.setattr(Recorder, "close_bins", watched)
    monkeypatch.setattr(sim.engine.des, "TICK_REQUESTS", 500)  # many hand-overs
    storm = REPO / "scenarios" / "retry-storm.toml"
    overrides = {"scenario.duration": "20min", "scenario.bin": "1s"}
    result = sim.simulate(load_scenario(storm, overrides=overrides))
    assert result.summary["requests"]["timed_out"] > 10_000  # requests do live long here
    assert len(result.timeseries) == 1200
    assert len(most_open) > 100
    assert max(most_open) <= 7 + 2  # the span, plus the bin in progress and a partial one
