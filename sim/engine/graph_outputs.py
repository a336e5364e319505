"""The service graph's figures, the same for both engines: per-tier and per-route columns,
summary.json's `tiers` and `routes`, and what the graph can serve (its bottleneck).

An engine mixes in `GraphOutputs` and offers, after its run, `self.k` with the kernel's
per-bin layout (`kernel_state.py`): `counts` (client rows x C_* x bins), `areas` and `snaps`
per station, `cl_f[:, CL_STATION]`, `st_i[:, ST_PROVIDER | ST_STARTED | ST_WAITED]`,
`st_f[:, STF_RATE | STF_WAIT_SUM]`, `ro_hist`/`ro_f` (each route's client latencies) and
`sf[SF_NOW]`; and `tiers`, `station`, `routes`, `call_rows`, `scenario`, `scale`,
`recorder`, `_capacities` (None until asked). The DES's kernel state is that layout; the
fluid engine's graph fills arrays of the same layout.
"""

from __future__ import annotations

import numpy as np

from sim.analysis.metrics import histogram_percentiles
from sim.engine.kernel_state import (
    AR_BUSY,
    AR_CAPACITY,
    AR_QUEUE,
    AR_SERVERS,
    C_ATTEMPTS,
    C_FRESH,
    C_FRESH_FAILED,
    C_FRESH_OK,
    C_LIMITED,
    C_REJECTED,
    C_RETRIES,
    C_SUCCEEDED,
    C_TIMED_OUT,
    CL_STATION,
    ROF_LATENCY_SUM,
    SF_NOW,
    SN_BUSY,
    SN_QUEUE,
    SN_SERVERS,
    ST_PROVIDER,
    ST_STARTED,
    ST_WAITED,
    STF_RATE,
    STF_WAIT_SUM,
)


class GraphOutputs:
    """The graph's outputs from an engine's per-bin arrays (see the module docstring)."""

    def _lay_out(self, scenario) -> None:
        """The graph as rows, the same in both engines: stations are the entry tier first
        (station 0, the service as its users see it), then the other tiers in the file's
        order; clients are one row per call of each route (`call_rows`, the end user's
        first: `end_users`)."""
        entry, tiers = scenario.entry_tier, scenario.tier_specs
        self.tiers = [entry, *(name for name in tiers if name != entry)]
        self.station = {name: s for s, name in enumerate(self.tiers)}
        self.routes = [route.name for route in scenario.route_specs]
        self.call_rows: list[list[int]] = []
        for route in scenario.route_specs:
            first = sum(len(r) for r in self.call_rows)
            self.call_rows.append(list(range(first, first + len(route.calls))))
        self.end_users = np.array([rows[0] for rows in self.call_rows])

    def _tier_station(self, tier: str | None) -> int:
        """The station a control names (None: the entry tier, station 0)."""
        return self.station[tier] if tier is not None else 0

    def _tier_counts(self, s: int) -> np.ndarray:
        """Station s's per-bin counters (C_* rows, simulated units, closed bins): the sum over
        the clients that call it."""
        k = self.k
        rows = [c for c in range(len(k.cl_f)) if int(k.cl_f[c, CL_STATION]) == s]
        return k.counts[rows].sum(axis=0)[:, : self.recorder.closed_bins]

    def tier_columns(self) -> dict[str, np.ndarray]:
        """Per-bin columns of every tier and route (real units), for timeseries.csv:
        TIER.queue, .busy, .servers, .utilization, .attempts, .rejected, .timed_out (and
        .limited for a provider), ROUTE.success_ratio."""
        k, n, scale = self.k, self.recorder.closed_bins, self.scale
        cols: dict[str, np.ndarray] = {}
        for s, name in enumerate(self.tiers):
            counts = self._tier_counts(s)
            provider = k.st_i[s, ST_PROVIDER] == 1
            cols[f"{name}.queue"] = k.snaps[s, SN_QUEUE, :n] * scale
            cols[f"{name}.busy"] = k.snaps[s, SN_BUSY, :n] * scale
            servers = k.snaps[s, SN_SERVERS, :n]
            cols[f"{name}.servers"] = np.where(provider, np.nan, servers * scale)
            area = k.areas[s, AR_SERVERS, :n]
            with np.errstate(divide="ignore", invalid="ignore"):
                utilization = np.where(area > 0, k.areas[s, AR_BUSY, :n] / area, np.nan)
            cols[f"{name}.utilization"] = np.where(provider, np.nan, utilization)
            cols[f"{name}.attempts"] = counts[C_ATTEMPTS] * scale
            cols[f"{name}.rejected"] = counts[C_REJECTED] * scale
            cols[f"{name}.timed_out"] = counts[C_TIMED_OUT] * scale
            if provider:
                cols[f"{name}.limited"] = counts[C_LIMITED] * scale
        for r, name in enumerate(self.routes):
            user = k.counts[self.call_rows[r][0]]
            ok, failed = user[C_FRESH_OK, :n], user[C_FRESH_FAILED, :n]
            with np.errstate(divide="ignore", invalid="ignore"):
                cols[f"{name}.success_ratio"] = np.where(
                    ok + failed > 0, ok / (ok + failed), np.nan
                )
        return cols

    def _tier_capacities(self) -> tuple[np.ndarray, list[tuple[int, np.ndarray, np.ndarray]]]:
        """`_capacities_now`, computed once the run has ended (the service and every route
        ask for it)."""
        if self._capacities is None or self._capacities[0] != self.recorder.closed_bins:
            self._capacities = (self.recorder.closed_bins, self._capacities_now())
        return self._capacities[1]

    def _capacities_now(self) -> tuple[np.ndarray, list[tuple[int, np.ndarray, np.ndarray]]]:
        """Per bin, each route's share of fresh demand (routes x bins), and for each tier a
        route calls: (station, the share of fresh demand through it, its capacity in
        requests a second, real units). A pool's capacity is its servers over the mean time a
        request holds one: its own work, plus in a sync route the mean work of every tier
        below it, each slowed by its faults in the bin (waits left out, so this is an upper
        bound); a provider's is its rate limit. The shares are the routes' fresh requests in
        the bin (their expected shares in an empty bin)."""
        k, n, scale = self.k, self.recorder.closed_bins, self.scale
        bin_s = self.recorder.bin_s
        routes = self.scenario.route_specs
        tiers = self.scenario.tier_specs
        fresh = np.array([k.counts[rows[0], C_FRESH, :n] for rows in self.call_rows], float)
        total = fresh.sum(axis=0)
        expected = np.array([r.share if r.share is not None else 1.0 for r in routes])
        expected = expected / expected.sum()
        share = np.where(total > 0, fresh / np.maximum(total, 1), expected[:, None])
        # Each pool's slowdown per bin (its faults), from its server and capacity areas.
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = k.areas[:, AR_SERVERS, :n] / k.areas[:, AR_CAPACITY, :n]
        slowdown = np.where(np.isfinite(ratio) & (ratio > 0), ratio, 1.0)
        out = []
        for s, name in enumerate(self.tiers):
            through = np.zeros(n)
            holding = np.zeros(n)
            for r, route in enumerate(routes):
                calls = [call.tier for call in route.calls]
                if name not in calls:
                    continue
                i = calls.index(name)
                below = calls[i + 1 :] if route.mode == "sync" else []
                hold = tiers[name].time.mean_s * slowdown[s]
                for t in below:
                    hold = hold + tiers[t].time.mean_s * slowdown[self.station[t]]
                through += share[r]
                holding += share[r] * hold
            if not through.any():
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                if k.st_i[s, ST_PROVIDER] == 1:
                    capacity = np.full(n, k.st_f[s, STF_RATE] * scale)
                else:
                    servers = k.areas[s, AR_SERVERS, :n] / bin_s
                    capacity = servers * scale / (holding / through)
            out.append((s, through, capacity))
        return share, out

    def service_capacity_rps(self) -> np.ndarray:
        """Per bin, the fresh requests a second the service can serve (real units): the
        bottleneck bound over its pools, min of a pool's capacity over the share of fresh
        demand through it. Providers are left out: one refuses its excess at once, so it
        builds no backlog for the service to drain; it bounds its own routes
        (`route_capacity_rps`)."""
        _, capacities = self._tier_capacities()
        bound = np.full(self.recorder.closed_bins, np.inf)
        for s, through, capacity in capacities:
            if self.k.st_i[s, ST_PROVIDER] == 0:
                with np.errstate(divide="ignore", invalid="ignore"):
                    bound = np.minimum(bound, np.where(through > 0, capacity / through, np.inf))
        return bound

    def route_capacity_rps(self, r: int) -> np.ndarray:
        """Per bin, route r's part of what the graph can serve (real units): over the tiers it
        calls, providers included, the least of a tier's capacity times the route's share of
        that tier's demand (each tier's capacity shared in proportion to demand)."""
        share, capacities = self._tier_capacities()
        calls = {call.tier for call in self.scenario.route_specs[r].calls}
        bound = np.full(self.recorder.closed_bins, np.inf)
        for s, through, capacity in capacities:
            if self.tiers[s] in calls:
                with np.errstate(divide="ignore", invalid="ignore"):
                    part = np.where(through > 0, capacity * share[r] / through, np.inf)
                bound = np.minimum(bound, part)
        return bound

    def route_counts(self, r: int) -> dict[str, np.ndarray]:
        """Route r's end users' per-bin counters (real units): fresh, fresh_ok, fresh_failed,
        attempts, retries."""
        k, n, scale = self.k, self.recorder.closed_bins, self.scale
        user = k.counts[self.call_rows[r][0]]
        names = {"fresh": C_FRESH, "fresh_ok": C_FRESH_OK, "fresh_failed": C_FRESH_FAILED,
                 "attempts": C_ATTEMPTS, "retries": C_RETRIES}  # fmt: skip
        return {name: user[row, :n] * scale for name, row in names.items()}

    def graph_summary(self) -> dict:
        """summary.json's `tiers` and `routes`: per tier its utilisation, queue, wait,
        attempts and outcomes (a provider's calls its rate limit refused as `limited`); per
        route its fresh requests, success ratio and amplification at each tier it calls."""
        k, n, scale = self.k, self.recorder.closed_bins, self.scale
        end = float(k.sf[SF_NOW])
        tiers = {}
        for s, name in enumerate(self.tiers):
            total = self._tier_counts(s).sum(axis=1)
            provider = k.st_i[s, ST_PROVIDER] == 1
            server_area = float(k.areas[s, AR_SERVERS, :n].sum())
            busy_area = float(k.areas[s, AR_BUSY, :n].sum())
            started = float(k.st_i[s, ST_STARTED])
            queue = k.snaps[s, SN_QUEUE, :n]
            entry = {
                "kind": "provider" if provider else "pool",
                "utilization": None
                if provider or server_area <= 0
                else min(busy_area / server_area, 1.0),
                "queue": {
                    "mean": float(k.areas[s, AR_QUEUE, :n].sum()) / end * scale if end else 0.0,
                    "max": float(queue.max()) * scale if n else 0.0,
                    "final": float(queue[-1]) * scale if n else 0.0,
                },
                "wait_s": {
                    "mean": float(k.st_f[s, STF_WAIT_SUM]) / started if started else None,
                    "p_wait": float(k.st_i[s, ST_WAITED]) / started if started else None,
                },
                "attempts": int(round(total[C_ATTEMPTS] * scale)),
                "succeeded": int(round(total[C_SUCCEEDED] * scale)),
                "rejected": int(round(total[C_REJECTED] * scale)),
                "timed_out": int(round(total[C_TIMED_OUT] * scale)),
            }
            if provider:
                entry["limited"] = int(round(total[C_LIMITED] * scale))
            tiers[name] = entry
        routes = {}
        for r, route in enumerate(self.scenario.route_specs):
            rows = self.call_rows[r]
            user = k.counts[rows[0]].sum(axis=1)
            fresh = float(user[C_FRESH])
            decided = float(user[C_FRESH_OK] + user[C_FRESH_FAILED])
            hist, ok = k.ro_hist[r].astype(float), float(k.ro_hist[r].sum())
            p50, p99 = histogram_percentiles(hist, (0.5, 0.99)) if ok else (None, None)
            routes[route.name] = {
                "fresh": int(round(fresh * scale)),
                "success_ratio": float(user[C_FRESH_OK]) / decided if decided else None,
                "latency_s": {
                    "mean": float(k.ro_f[r, ROF_LATENCY_SUM]) / ok if ok else None,
                    "p50": p50,
                    "p99": p99,
                },
                "amplification": {
                    call.tier: float(k.counts[row, C_ATTEMPTS].sum()) / fresh if fresh else None
                    for call, row in zip(route.calls, rows, strict=True)
                },
            }
        return {"tiers": tiers, "routes": routes}
