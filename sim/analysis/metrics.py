"""The one contract between the engines and the analysis: a Recorder in, a Timeseries out.

The Recorder keeps per-bin counters, time integrals and snapshots, and two latency views, each
a fixed log-spaced histogram per bin (percentiles within about 3%), never a list of every
request:

- client latency, what clients see: per request that succeeded, from its first send to its
  success (retries and backoff waits included), counted in the request's first-arrival bin;
- server latency: the time in system of every completed attempt, abandoned work included,
  counted in its completion bin.

Memory grows with bins, not requests: a bin's histogram lives only while the bin can still
receive latencies (a server bin until it closes; a client bin until every request that first
arrived in it is decided, or the engine settles it), then it is reduced to three percentiles
and folded into the whole run's histogram. With a client timeout the open client bins span
the longest life of a request, (retries + 1) · timeout + backoffs; without one, as many bins
as hold requests still waiting. Each open bin costs one histogram (440 floats, 3.5 kB).
Engines write simulated units; `Recorder.timeseries` reports real units (times `scale`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

COUNTERS = (
    "fresh",
    "attempts",
    "retries",
    "succeeded",
    "timed_out",
    "rejected",
    "dropped",
    "throttled",
    "fresh_ok",
    "fresh_failed",
)
# Latency histogram: 40 log-spaced buckets per decade from 10 µs to 10^6 s (ratio 1.059).
HIST_MIN_S = 1e-5
HIST_PER_DECADE = 40
HIST_DECADES = 11
HIST_EDGES = np.logspace(
    math.log10(HIST_MIN_S),
    math.log10(HIST_MIN_S) + HIST_DECADES,
    HIST_DECADES * HIST_PER_DECADE + 1,
)
HIST_BUCKETS = len(HIST_EDGES) - 1
QUANTILES = (0.5, 0.95, 0.99)
SETTLE_BATCH = 256
# A client bin is decided when its undecided share of fresh requests is below this (the fluid
# engine's masses are floats; the DES's counts are exact).
DECIDED_REL = 1e-9
TIMESERIES_COLUMNS = (
    "t_s",
    "time",
    "fresh",
    "attempts",
    "retries",
    "succeeded",
    "timed_out",
    "rejected",
    "dropped",
    "queue",
    "busy",
    "servers",
    "utilization",
    "demand_rps",
    "offered_rps",
    "capacity_rps",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    # Beyond DESIGN.md's columns: the fate of the fresh requests that arrived in the bin.
    "success_ratio",
    "fresh_ok",
    "fresh_failed",
    # The server's view: time in system of completed attempts, abandoned work included.
    "server_latency_p50",
    "server_latency_p95",
    "server_latency_p99",
)


def histogram_percentiles(counts: np.ndarray, quantiles: tuple[float, ...]) -> list[float]:
    """Quantiles (ascending) from log-bucket counts, interpolated geometrically inside the
    bucket."""
    return percentile_rows(np.asarray(counts, dtype=float)[None, :], quantiles)[0].tolist()


def percentile_rows(counts: np.ndarray, quantiles: tuple[float, ...]) -> np.ndarray:
    """`histogram_percentiles` of each row of a (rows, HIST_BUCKETS) array at once: (rows, q),
    NaN for an empty row; `quantiles` ascending. Numpy passes over the whole array, with the
    power taken one number at a time (numpy's vectorised power can differ from the C
    library's in the last bit), so the kernel's compiled walk (`kernel_store.percentile_rows`,
    which a run's Recorder uses) gives the same bytes."""
    if list(quantiles) != sorted(quantiles):
        raise ValueError(f"quantiles must ascend, got {quantiles}")
    counts = np.asarray(counts, dtype=np.float64)
    cumulative = np.cumsum(counts, axis=1)
    total = cumulative[:, -1:]
    rank = np.asarray(quantiles)[None, :] * total
    # The first bucket whose running count reaches the rank (the last at most).
    index = np.minimum((cumulative[:, None, :] < rank[:, :, None]).sum(axis=2), counts.shape[1] - 1)
    rows = np.arange(len(counts))[:, None]
    before = np.where(index > 0, cumulative[rows, index - 1], 0.0)
    inside_count = counts[rows, index]
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = np.clip(np.where(inside_count > 0, (rank - before) / inside_count, 0.5), 0, 1)
    low = HIST_EDGES[index]
    ratio = HIST_EDGES[index + 1] / low
    power = [r**e for r, e in zip(ratio.ravel().tolist(), inside.ravel().tolist(), strict=True)]
    out = low * np.array(power).reshape(ratio.shape)
    out[total[:, 0] <= 0] = np.nan
    return out


def bucket_index(latencies_s) -> np.ndarray:
    """The bucket of HIST_EDGES each latency falls in (out-of-range ones in the end buckets)."""
    values = np.asarray(latencies_s, dtype=float)
    index = np.floor(
        (np.log10(np.maximum(values, HIST_MIN_S)) - math.log10(HIST_MIN_S)) * HIST_PER_DECADE
    )
    return np.clip(index.astype(np.int64), 0, HIST_BUCKETS - 1)


def bucket_counts(latencies_s, weights=None) -> np.ndarray:
    """Counts (or summed `weights`) of latencies in the buckets of HIST_EDGES."""
    return np.bincount(bucket_index(latencies_s), weights=weights, minlength=HIST_BUCKETS)


Percentiles = Callable[[np.ndarray, tuple[float, ...]], np.ndarray]  # as `percentile_rows`
# Latencies already bucketed, for many bins at once: the bins (ascending), their counts on
# HIST_EDGES (one row each, weighted), and each row's sum and maximum (seconds).
Histograms = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
NO_BINS = np.zeros(0, dtype=np.int64)
NO_HISTOGRAMS: Histograms = (NO_BINS, np.zeros((0, HIST_BUCKETS)), np.zeros(0), np.zeros(0))


class LatencyBins:
    """Latency histograms by bin, each kept only until its bin is settled.

    `add` folds latencies (optionally weighted) into the histograms of their bins; `settle(b)`
    reduces bin b to its percentiles and merges it into the whole run's histogram. Adding to a
    settled bin is an engine's bug and raises ValueError.
    """

    def __init__(self, n_bins: int, percentiles: Percentiles = percentile_rows) -> None:
        self.n_bins = n_bins
        self._percentiles = percentiles
        self._pct = np.full((n_bins, len(QUANTILES)), np.nan)
        # Settled bins whose percentiles are still to do: chunks of (bins, histogram rows).
        self._settling: list[tuple[np.ndarray, np.ndarray]] = []
        self._settling_rows = 0
        self.open: dict[int, np.ndarray] = {}
        self.settled = np.zeros(n_bins, dtype=bool)
        self.hist = np.zeros(HIST_BUCKETS)  # settled bins, summed
        self.count = 0.0
        self.total_s = 0.0
        self.max_s = -math.inf

    def add(self, bins, latencies_s, weights=None) -> None:
        """Add latencies (seconds) in `bins` (one int, or one per latency), `weights` or 1 each."""
        values = np.asarray(latencies_s, dtype=float).ravel()
        if values.size == 0:
            return
        index = bucket_index(values)
        where = np.broadcast_to(np.asarray(bins, dtype=np.int64), values.shape)
        if self.settled[where].any():
            late = int(where[self.settled[where]][0])
            raise ValueError(f"latency added to bin {late} after it was settled")
        if weights is None:
            mass = None
            self.count += values.size
            self.total_s += float(values.sum())
            self.max_s = max(self.max_s, float(values.max()))
        else:
            mass = np.broadcast_to(np.asarray(weights, dtype=float), values.shape)
            self.count += float(mass.sum())
            self.total_s += float(values @ mass)
            if (mass > 0).any():
                self.max_s = max(self.max_s, float(values[mass > 0].max()))
        first = int(where[0])
        if (where == first).all():
            self._fold(first, np.bincount(index, weights=mass, minlength=HIST_BUCKETS))
            return
        bins_seen, inverse = np.unique(where, return_inverse=True)
        flat = np.bincount(
            inverse * HIST_BUCKETS + index, weights=mass, minlength=len(bins_seen) * HIST_BUCKETS
        )
        for b, counts in zip(bins_seen.tolist(), flat.reshape(-1, HIST_BUCKETS), strict=True):
            self._fold(b, counts)

    def add_histogram(self, b: int, counts: np.ndarray, latency_sum_s: float, max_s: float):
        """Add latencies already bucketed on HIST_EDGES (weighted `counts`) to bin `b`.

        `latency_sum_s` is their weighted sum (for the mean), `max_s` the largest of them.
        """
        counts = np.asarray(counts, dtype=float)
        mass = float(counts.sum())
        if mass <= 0:
            return
        if self.settled[b]:
            raise ValueError(f"latency added to bin {b} after it was settled")
        self.count += mass
        self.total_s += float(latency_sum_s)
        self.max_s = max(self.max_s, float(max_s))
        self._fold(b, counts)

    def merge(self, histograms: Histograms, settle: np.ndarray) -> None:
        """Add per-bin histograms (`Histograms`: bins ascending), then settle the bins `settle`
        (ascending): what `add_histogram` for each and `settle` for each would do, in a few
        numpy passes. A bin settled now whose histogram arrives whole here (not open already,
        not twice) goes straight to its percentiles, never into `open`."""
        bins, counts, sums, maxes = histograms
        masses = counts.sum(axis=1)
        full = masses > 0
        if not full.all():
            bins, counts, sums, maxes = bins[full], counts[full], sums[full], maxes[full]
            masses = masses[full]
        if len(bins):
            if self.settled[bins].any():
                late = int(bins[self.settled[bins]][0])
                raise ValueError(f"latency added to bin {late} after it was settled")
            self.count += float(masses.sum())
            self.total_s += float(sums.sum())
            self.max_s = max(self.max_s, float(maxes.max()))
        single = np.ones(len(bins), dtype=bool)
        single[1:] = bins[1:] != bins[:-1]
        single[:-1] &= bins[:-1] != bins[1:]
        # Settled now (both arrays ascend: a search, not an array over every bin of the run).
        at = np.minimum(np.searchsorted(settle, bins), max(len(settle) - 1, 0))
        direct = single & (settle[at] == bins) if len(settle) else np.zeros(len(bins), bool)
        if self.open:
            direct &= np.array([b not in self.open for b in bins.tolist()], dtype=bool)
        for b, row in zip(bins[~direct].tolist(), counts[~direct], strict=True):
            self._fold(b, row)
        settling = [(b, self.open.pop(b)) for b in settle.tolist() if b in self.open]
        rows_bins, rows = (bins, counts) if direct.all() else (bins[direct], counts[direct])
        if settling:
            rows_bins = np.concatenate([rows_bins, [b for b, _ in settling]]).astype(np.int64)
            rows = np.concatenate([rows, np.stack([h for _, h in settling])])
        if len(rows_bins):
            self.hist += rows.sum(axis=0)
            self._defer(rows_bins, rows)
        self.settled[settle] = True

    def _fold(self, b: int, counts: np.ndarray) -> None:
        hist = self.open.get(b)
        if hist is None:
            self.open[b] = counts.astype(float)
        else:
            hist += counts

    def settle(self, b: int) -> None:
        """Bin b will receive no more latencies: keep its percentiles, free its histogram.

        Percentiles are computed for many settled bins at once (one call over a batch of at
        least SETTLE_BATCH histograms, or at the first read), since bins settle one by one and
        a call per bin costs more than the arithmetic."""
        self.settled[b] = True
        hist = self.open.pop(b, None)
        if hist is not None:
            self.hist += hist
            self._defer(np.array([b]), hist[None, :])

    def _defer(self, bins: np.ndarray, rows: np.ndarray) -> None:
        """Settled bins' histograms, their percentiles computed with the next batch (a large
        one at once: copying it into a batch would cost more than the percentiles)."""
        if len(bins) >= SETTLE_BATCH:
            self._pct[bins] = self._percentiles(rows, QUANTILES)
            return
        self._settling.append((bins, rows))
        self._settling_rows += len(bins)
        if self._settling_rows >= SETTLE_BATCH:
            self._settle_pending()

    def _settle_pending(self) -> None:
        if self._settling:
            bins, rows = self._settling[0]
            if len(self._settling) > 1:
                bins = np.concatenate([b for b, _ in self._settling])
                rows = np.concatenate([h for _, h in self._settling])
            self._pct[bins] = self._percentiles(rows, QUANTILES)
            self._settling, self._settling_rows = [], 0

    @property
    def pct(self) -> np.ndarray:
        """(n_bins, 3) p50, p95, p99 of the settled bins (NaN for the others)."""
        self._settle_pending()
        return self._pct

    def percentiles(self, n: int) -> np.ndarray:
        """(n, 3) p50, p95, p99 of the first n bins (open bins: from what they hold so far)."""
        pct = self.pct[:n].copy()
        for b, hist in self.open.items():
            if b < n:
                pct[b] = histogram_percentiles(hist, QUANTILES)
        return pct

    def summary(self) -> dict:
        """Mean, p50, p95, p99 and max over every latency added (NaN when none)."""
        hist = self.hist.copy()
        for counts in self.open.values():
            hist += counts
        if self.count <= 0:
            return dict.fromkeys(("mean", "p50", "p95", "p99", "max"), math.nan)
        top = self.max_s
        # Interpolation inside the top bucket must not pass the largest value seen.
        p50, p95, p99 = (min(p, top) for p in histogram_percentiles(hist, QUANTILES))
        return {"mean": self.total_s / self.count, "p50": p50, "p95": p95, "p99": p99, "max": top}


class Recorder:
    """Streaming per-bin statistics of one run, written by an engine as it goes.

    Engines add to the counter lists at index `b` (the current bin), add time integrals
    (`busy_area`, `queue_area`, `server_area`, `capacity_area`, in unit-seconds), feed
    latencies through `add_client_latencies` / `add_server_latencies` (or the pre-bucketed
    `add_*_histogram`) and call `close_bin(b, ...)` once per bin, in order, with the state at
    the bin's end. Latencies must be added before the `close_bin` that ends their bin (server)
    or decides their request (client): see `close_bin`. An engine that closes many bins at a
    time hands them over with `close_bins`, their latencies as `Histograms` arrays.
    """

    def __init__(
        self,
        n_bins: int,
        bin_s: float,
        scale: float = 1.0,
        percentiles: Percentiles = percentile_rows,
    ) -> None:
        """`percentiles`: how settled bins' histograms become percentiles (`percentile_rows`, or
        a faster one that gives the same bytes)."""
        self.n_bins = n_bins
        self.bin_s = bin_s
        self.scale = scale
        for name in COUNTERS:
            setattr(self, name, [0] * n_bins)
        self.busy_area = [0.0] * n_bins
        self.queue_area = [0.0] * n_bins
        self.server_area = [0.0] * n_bins
        self.capacity_area = [0.0] * n_bins
        self.queue_end = [0] * n_bins
        self.busy_end = [0] * n_bins
        self.servers_end = [0] * n_bins
        self.client_latency = LatencyBins(n_bins, percentiles)
        self.server_latency = LatencyBins(n_bins, percentiles)
        self.started = 0
        self.waited = 0
        self.wait_sum = 0.0
        self.closed_bins = 0
        self.events: list[dict] = []

    # -- latency ---------------------------------------------------------------------------
    def add_client_latencies(self, fresh_bins, latencies_s, weights=None) -> None:
        """Requests that succeeded: their first-arrival bins (an int or an int array), the
        time from first send to success (seconds), and how many simulated requests each
        stands for (default 1; the fluid engine's masses)."""
        self.client_latency.add(fresh_bins, latencies_s, weights)

    def add_server_latencies(self, bins, latencies_s, weights=None) -> None:
        """Completed attempts (abandoned work included): completion bins, time in system."""
        self.server_latency.add(bins, latencies_s, weights)

    def add_client_histogram(self, fresh_bin: int, counts, latency_sum_s: float, max_s: float):
        """Client latencies of `fresh_bin` already bucketed on HIST_EDGES (weighted)."""
        self.client_latency.add_histogram(fresh_bin, counts, latency_sum_s, max_s)

    def add_server_histogram(self, b: int, counts, latency_sum_s: float, max_s: float) -> None:
        """Server latencies completed in bin `b`, already bucketed on HIST_EDGES (weighted)."""
        self.server_latency.add_histogram(b, counts, latency_sum_s, max_s)

    def settle_client_bins(self, before_bin: int) -> None:
        """No request that first arrived before `before_bin` can still succeed: settle them.

        For an engine that knows the longest life of a request (the fluid engine); the DES
        relies on `close_bin` finding bins whose requests are all decided.
        """
        for b in [b for b in self.client_latency.open if b < before_bin]:
            self.client_latency.settle(b)
        self.client_latency.settled[: max(0, min(before_bin, self.n_bins))] = True

    def close_bin(self, b: int, queue: int, busy: int, servers: int) -> None:
        """Finish bin `b`: snapshot the state at its end, settle its server latencies, and
        settle every open client bin (up to b) whose fresh requests are all decided."""
        self.queue_end[b] = queue
        self.busy_end[b] = busy
        self.servers_end[b] = servers
        self.server_latency.settle(b)
        fresh, ok, failed = self.fresh, self.fresh_ok, self.fresh_failed
        client = self.client_latency
        for k in [k for k in client.open if k <= b]:
            if fresh[k] - ok[k] - failed[k] <= DECIDED_REL * fresh[k]:
                client.settle(k)
        self.closed_bins = b + 1

    def close_bins(
        self,
        first: int,
        end: int,
        queue,
        busy,
        servers,
        server: Histograms = NO_HISTOGRAMS,
        client: Histograms = NO_HISTOGRAMS,
    ) -> None:
        """`close_bin` for bins first..end-1 (the snapshots as sequences), for an engine that
        hands over many closed bins together, with their latencies as `Histograms` (server
        latencies by completion bin, client latencies by fresh bin). The closed bins' server
        histograms settle; so does every client bin before `end` whose fresh requests are all
        decided (the counters are up to date when an engine closes bins), so open client
        histograms span a request's life, not the copy. Histograms of later bins stay open."""
        self.queue_end[first:end] = queue
        self.busy_end[first:end] = busy
        self.servers_end[first:end] = servers
        self.server_latency.merge(server, np.arange(first, end))
        fresh, ok, failed = self.fresh, self.fresh_ok, self.fresh_failed
        # The client bins that hold latencies (open ones, or arriving now) may settle.
        candidates = set(self.client_latency.open)
        arriving = (client[0] < end) & (client[1].sum(axis=1) > 0)
        candidates.update(client[0][arriving].tolist())
        decided = [
            k
            for k in sorted(candidates)
            if k < end and fresh[k] - ok[k] - failed[k] <= DECIDED_REL * fresh[k]
        ]
        self.client_latency.merge(client, np.array(decided, dtype=np.int64))
        self.closed_bins = max(self.closed_bins, end)

    def add_event(self, t_s: float, kind: str, label: str) -> None:
        """Note a control action (capacity change, fault, surge) for charts and reports."""
        self.events.append({"t_s": float(t_s), "kind": kind, "label": label})

    # -- results ---------------------------------------------------------------------------
    def timeseries(self, demand_rps: np.ndarray, mean_service_s: float, start=None) -> Timeseries:
        """Per-bin columns in real units, for the bins closed so far."""
        n = self.closed_bins
        scale, bin_s = self.scale, self.bin_s
        cols: dict[str, np.ndarray] = {"t_s": np.arange(n) * bin_s}
        for name in COUNTERS:
            cols[name] = np.asarray(getattr(self, name)[:n], dtype=float) * scale
        cols["queue"] = np.asarray(self.queue_end[:n], dtype=float) * scale
        cols["busy"] = np.asarray(self.busy_end[:n], dtype=float) * scale
        cols["servers"] = np.asarray(self.servers_end[:n], dtype=float) * scale
        busy_area = np.asarray(self.busy_area[:n])
        server_area = np.asarray(self.server_area[:n])
        with np.errstate(divide="ignore", invalid="ignore"):
            # Work still in service after capacity is cut keeps its server: at most 100%.
            cols["utilization"] = np.where(
                server_area > 0, np.minimum(busy_area / server_area, 1.0), 1.0
            )
        cols["queue_mean"] = np.asarray(self.queue_area[:n]) / bin_s * scale
        cols["demand_rps"] = np.asarray(demand_rps[:n], dtype=float)
        cols["offered_rps"] = cols["attempts"] / bin_s
        cols["capacity_rps"] = np.asarray(self.capacity_area[:n]) / bin_s * scale / mean_service_s
        client, server = self.client_latency.percentiles(n), self.server_latency.percentiles(n)
        for i, q in enumerate(("p50", "p95", "p99")):
            cols[f"latency_{q}"] = client[:, i]
            cols[f"server_latency_{q}"] = server[:, i]
        decided = cols["fresh_ok"] + cols["fresh_failed"]
        with np.errstate(divide="ignore", invalid="ignore"):
            cols["success_ratio"] = np.where(decided > 0, cols["fresh_ok"] / decided, np.nan)
        return Timeseries(bin_s=bin_s, start=start, columns=cols)

    def latency_summary(self) -> dict:
        """What clients saw: mean, p50, p95, p99 and max latency of the requests that
        succeeded, first send to success (summary.json `latency_s`)."""
        return self.client_latency.summary()

    def server_latency_summary(self) -> dict:
        """Mean, p50, p95, p99 and max time in system of every completed attempt, abandoned
        work included (summary.json `server_latency_s`)."""
        return self.server_latency.summary()


@dataclass
class Timeseries:
    """Per-bin columns of a run, as numpy arrays keyed by the names of timeseries.csv."""

    bin_s: float
    start: object = None  # datetime of t = 0, or None
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __len__(self) -> int:
        return len(self.columns["t_s"])

    def times(self) -> list:
        """Bin starts as datetimes when the scenario has a start, else seconds."""
        from datetime import timedelta

        if self.start is None:
            return list(self.columns["t_s"])
        return [self.start + timedelta(seconds=float(t)) for t in self.columns["t_s"]]

    def to_pandas(self):
        """The columns as a pandas DataFrame (pandas is optional and imported here only)."""
        import pandas as pd

        return pd.DataFrame({k: v for k, v in self.columns.items()})
