"""The one contract between the engines and the analysis: a Recorder in, a Timeseries out.

The Recorder keeps per-bin counters, time integrals and snapshots, and latency as a fixed
log-spaced histogram per bin (percentiles within about 3%), never a list of every request:
its memory grows with the number of bins, not with the number of requests.
Engines write simulated units; `Recorder.timeseries` reports real units (times `scale`).
"""

from __future__ import annotations

import math
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
_FLUSH = 65536
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
)


def histogram_percentiles(counts: np.ndarray, quantiles: tuple[float, ...]) -> list[float]:
    """Quantiles from log-bucket counts, interpolated geometrically inside the bucket."""
    total = counts.sum()
    if total == 0:
        return [math.nan] * len(quantiles)
    cumulative = np.cumsum(counts)
    out = []
    for q in quantiles:
        rank = q * total
        index = int(np.searchsorted(cumulative, rank, side="left"))
        index = min(index, len(counts) - 1)
        before = cumulative[index - 1] if index else 0
        inside = (rank - before) / counts[index] if counts[index] else 0.5
        low, high = HIST_EDGES[index], HIST_EDGES[index + 1]
        out.append(float(low * (high / low) ** min(max(inside, 0.0), 1.0)))
    return out


def bucket_counts(latencies, weights=None) -> np.ndarray:
    """Counts (or summed `weights`) of latencies in the buckets of HIST_EDGES."""
    values = np.asarray(latencies, dtype=float)
    index = np.floor(
        (np.log10(np.maximum(values, HIST_MIN_S)) - math.log10(HIST_MIN_S)) * HIST_PER_DECADE
    )
    index = np.clip(index.astype(np.int64), 0, len(HIST_EDGES) - 2)
    return np.bincount(index, weights=weights, minlength=len(HIST_EDGES) - 1)


class Recorder:
    """Streaming per-bin statistics of one run, written by an engine as it goes.

    Engines add to the counter lists at index `b` (the current bin), add time integrals
    (`busy_area`, `queue_area`, `server_area`, `capacity_area`, in unit-seconds), append the
    time in system of each completed attempt to `latencies` and call `close_bin(b, ...)` once
    per bin, in order, with the state at the bin's end.
    """

    def __init__(self, n_bins: int, bin_s: float, scale: float = 1.0) -> None:
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
        self.latency_pct = np.full((n_bins, 3), np.nan)
        self.latencies: list[float] = []
        self._bin_hist: np.ndarray | None = None
        self.hist = np.zeros(len(HIST_EDGES) - 1, dtype=np.int64)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.latency_max = 0.0
        self.started = 0
        self.waited = 0
        self.wait_sum = 0.0
        self.closed_bins = 0
        self.events: list[dict] = []

    # -- latency ---------------------------------------------------------------------------
    def flush_latencies(self) -> None:
        """Fold the buffered latencies of the current bin into its histogram (bounds memory)."""
        if not self.latencies:
            return
        counts = bucket_counts(self.latencies)
        self._bin_hist = counts if self._bin_hist is None else self._bin_hist + counts
        values = self.latencies
        self.latency_sum += math.fsum(values)
        self.latency_count += len(values)
        self.latency_max = max(self.latency_max, max(values))
        values.clear()  # the engine holds this list's append: keep the same list

    def close_bin(self, b: int, queue: int, busy: int, servers: int) -> None:
        """Finish bin `b`: snapshot the state at its end and summarise its latencies."""
        self.queue_end[b] = queue
        self.busy_end[b] = busy
        self.servers_end[b] = servers
        if self.latencies or self._bin_hist is not None:
            self.flush_latencies()
            self.latency_pct[b] = histogram_percentiles(self._bin_hist, (0.5, 0.95, 0.99))
            self.hist += self._bin_hist
            self._bin_hist = None
        self.closed_bins = b + 1

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
        for i, q in enumerate(("latency_p50", "latency_p95", "latency_p99")):
            cols[q] = self.latency_pct[:n, i].copy()
        decided = cols["fresh_ok"] + cols["fresh_failed"]
        with np.errstate(divide="ignore", invalid="ignore"):
            cols["success_ratio"] = np.where(decided > 0, cols["fresh_ok"] / decided, np.nan)
        return Timeseries(bin_s=bin_s, start=start, columns=cols)

    def latency_summary(self) -> dict:
        """Mean, p50, p95, p99 and max time in system of all completed attempts."""
        self.flush_latencies()
        hist = self.hist + (self._bin_hist if self._bin_hist is not None else 0)
        mean = self.latency_sum / self.latency_count if self.latency_count else math.nan
        top = self.latency_max if self.latency_count else math.nan
        # Interpolation inside the top bucket must not pass the largest value seen.
        p50, p95, p99 = (min(p, top) for p in histogram_percentiles(hist, (0.5, 0.95, 0.99)))
        return {"mean": mean, "p50": p50, "p95": p95, "p99": p99, "max": top}


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
