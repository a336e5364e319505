"""The discrete-event engine: the compiled request kernel driven by a SimPy clock.

The request path (arrivals, the tiers and their queues, clients) lives in `kernel.py` as
compiled functions over arrays; this module is the Python around it, and lays a scenario's
service graph out as kernel rows: station 0 is the entry tier (the service as its users see
it, which the Recorder records), one client row per call of each route, one arrival process
per route. One SimPy process, the clock,
advances the kernel to the next instant any other SimPy process is due (a capacity change,
the planner's review, an autoscaler tick, a fault), or to the next progress tick, then sleeps
until then; so when a control acts, the kernel stands exactly at the control's time. Controls
(`controls.py`) act through `set_planned_servers`, `set_fault` and `observe`.

Between kernel calls the driver refills the random blocks (one numpy Generator per purpose:
arrivals, service, errors, jitter, throttling, spawned from the scenario's seed; the kernel
turns the arrival stream's exponentials into arrival times itself), grows arrays when they
fill, and copies what the kernel counted into the Recorder: the counters of the bins touched
since the last copy, the bins the kernel closed, and the latency records, in bulk.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import simpy

from sim.analysis.metrics import COUNTERS, HIST_BUCKETS, NO_HISTOGRAMS, Histograms, Recorder
from sim.engine.clients import JITTER_CODES, JITTER_NONE, RETRY_BUDGET_BURST, THROTTLE_SLOTS
from sim.engine.controls import clock, start_controls
from sim.engine.graph_outputs import GraphOutputs
from sim.engine.kernel import REACHED, advance, next_arrival
from sim.engine.kernel_state import (
    AR_BUSY,
    AR_CAPACITY,
    AR_QUEUE,
    AR_SERVERS,
    CL_ASYNC,
    CL_BASE_S,
    CL_BUDGET_BURST,
    CL_BUDGET_COST,
    CL_BUDGET_EARN,
    CL_CAP_S,
    CL_END_USER,
    CL_HAS_BUDGET,
    CL_HAS_THROTTLE,
    CL_JITTER,
    CL_MULTIPLIER,
    CL_NEXT,
    CL_RETRIES,
    CL_ROUTE,
    CL_SCALE,
    CL_SLOT_S,
    CL_STATION,
    CL_THROTTLE_K,
    CL_TIMEOUT_S,
    CL_TOKENS,
    LAT_CLIENT,
    LAT_SERVER,
    R_ARRIVAL,
    R_ERRORS,
    R_JITTER,
    R_SERVICE,
    R_THROTTLE,
    RAND0,
    RO_CLIENT,
    SF_BIN_S,
    SF_NEXT_EDGE,
    SF_NOW,
    SI_BIN,
    SI_CLOSED,
    SI_DIRTY_LO,
    SI_EVENTS,
    SI_FREE_N,
    SI_HEAP_N,
    SI_LAT_CLIENT_N,
    SI_LAT_SERVER_N,
    SI_N_BINS,
    SI_ROUTE_LATENCY,
    SN_BUSY,
    SN_QUEUE,
    SN_SERVERS,
    ST_BUSY,
    ST_DROP_EXPIRED,
    ST_LIFO,
    ST_PROVIDER,
    ST_QLEN,
    ST_SERVERS,
    ST_STARTED,
    ST_WAITED,
    STF_BURST,
    STF_BUSY_ACC,
    STF_BUSY_CLOSED,
    STF_ERROR_RATE,
    STF_LAST_T,
    STF_LIFO_OVER,
    STF_QUEUE_LIMIT,
    STF_RATE,
    STF_SLOWDOWN,
    STF_SOJOURN_S,
    STF_TOKENS,
    STF_WAIT_SUM,
    UNBOUNDED_SERVERS,
    UNFILLED,
    KernelState,
    grow_attempts,
    grow_heap,
    grow_lanes,
    grow_queues,
    lane_room,
    new_state,
    queue_room,
)
from sim.engine.kernel_store import close_bin, count_codes, mark_bins, touch
from sim.model.fields import Tier
from sim.model.scenario import Client, Scenario, Service
from sim.model.workload import Demand, service_time_draw

ENTRY = 0  # the station (and client) of today's single pool: a graph of one
# Refill a random block once it is down to a quarter; grow an array once it is three-quarters
# full: each refill or growth then buys many thousands of kernel steps.
REFILL_BELOW = RAND0 // 4
TICK_REQUESTS = 500_000
TICK_BINS = 1_000  # and at most about this many bins: what a hand-over holds as histograms


def _histograms(codes: np.ndarray, sums: np.ndarray, maxes: np.ndarray) -> Histograms:
    """The kernel's latency records (codes bin · HIST_BUCKETS + bucket) as per-bin histograms,
    bins ascending, with each bin's sum and maximum; those bins' sums and maxima are reset."""
    low, high = int(codes.min()) // HIST_BUCKETS, int(codes.max()) // HIST_BUCKETS + 1
    row_of = np.zeros(high - low, dtype=np.int64)
    mark_bins(codes, low, row_of)
    filled = np.flatnonzero(row_of)
    row_of[filled] = np.arange(len(filled))
    bins = low + filled
    counts = np.zeros((len(bins), HIST_BUCKETS))  # a row for each bin with records only
    count_codes(codes, low, row_of, counts)
    out = (bins, counts, sums[bins].copy(), maxes[bins].copy())
    sums[bins], maxes[bins] = 0.0, -math.inf
    return out


class DesEngine(GraphOutputs):
    """One discrete-event run of a scenario on the compiled kernel, writing into a Recorder."""

    def __init__(self, scenario: Scenario, demand: Demand, recorder: Recorder) -> None:
        meta = scenario.scenario
        self.env = simpy.Environment()
        self.scenario, self.demand, self.recorder = scenario, demand, recorder
        self.scale, self.duration_s = meta.scale, meta.duration
        self.controls_steps = 0
        self._capacities = None  # (closed bins, _capacities_now()) once asked
        self.interrupted = False
        arrival_rng, service_rng, error_rng, jitter_rng, throttle_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(meta.seed).spawn(5)
        )
        self._lay_out(scenario)
        tiers, routes = scenario.tier_specs, scenario.route_specs
        n_clients = sum(len(r) for r in self.call_rows)
        self.draws: dict[int, Callable[[int], np.ndarray]] = {
            R_ARRIVAL: arrival_rng.standard_exponential,
            R_JITTER: jitter_rng.random,
            R_ERRORS: error_rng.random,
            R_THROTTLE: throttle_rng.random,
        }
        # Station 0 draws from the fifth generator, as before tiers; others from their own.
        extra = np.random.SeedSequence(meta.seed).spawn(4 + len(self.tiers))[5:]
        for s, name in enumerate(self.tiers):
            rng = service_rng if s == 0 else np.random.default_rng(extra[s - 1])
            self.draws[R_SERVICE + s] = service_time_draw(tiers[name].time, rng)
        grids = [
            demand.unit_grid(self.scale, 1.0 if r.share is None else r.share, r.source)
            for r in routes
        ]
        grid = (grids[0][0], *(np.stack([g[i] for g in grids]) for i in (1, 2, 3)))
        self.k: KernelState = new_state(len(self.tiers), n_clients, recorder.n_bins, meta.bin, grid)
        self.planned = np.zeros(len(self.tiers), dtype=np.int64)
        self.fault_factor = np.ones(len(self.tiers))
        self.error_base = np.zeros(len(self.tiers))
        for s, name in enumerate(self.tiers):
            self._configure_tier(s, tiers[name])
        for r, route in enumerate(routes):
            rows = self.call_rows[r]
            self.k.ro_i[r, RO_CLIENT] = rows[0]
            for i, call in enumerate(route.calls):
                client = scenario.client if i == 0 else call.client
                self._configure_client(rows[i], client, self.station[call.tier])
                cl = self.k.cl_f[rows[i]]
                cl[CL_END_USER] = 1.0 if i == 0 else 0.0
                cl[CL_NEXT] = rows[i + 1] if i + 1 < len(rows) else -1
                cl[CL_ASYNC] = 1.0 if route.mode == "async" else 0.0
                cl[CL_ROUTE] = r
        self.k.si[SI_ROUTE_LATENCY] = 1 if scenario.has_graph else 0
        cl_f, st_f = self.k.cl_f, self.k.st_f
        can_draw = {
            R_JITTER: bool(((cl_f[:, CL_RETRIES] > 0) & (cl_f[:, CL_JITTER] != JITTER_NONE)).any()),
            R_ERRORS: bool((st_f[:, STF_ERROR_RATE] > 0).any()),
            R_THROTTLE: bool((cl_f[:, CL_HAS_THROTTLE] != 0).any()),
        }
        for stream in self.draws:
            if can_draw.get(stream, True):
                self._refill(stream)
            else:
                self.k.rand_n[stream] = UNFILLED
        for r in range(len(routes)):
            next_arrival(self.k, r)

    def scaled(self, real_servers: float) -> int:
        """Simulated servers standing for `real_servers` at this run's scale."""
        return max(0, round(real_servers / self.scale)) if real_servers else 0

    def _configure_tier(self, s: int, tier: Tier) -> None:
        """Row s of the station arrays: a pool, or a provider (a token bucket in simulated
        calls: its rate and burst over the scale, a burst of at least one call)."""
        if tier.kind == "pool":
            self.planned[s] = self.scaled(tier.service.servers)
            self.error_base[s] = tier.service.error_rate
            self._configure_station(s, tier.service, int(self.planned[s]))
            return
        st_i, st_f = self.k.st_i[s], self.k.st_f[s]
        st_i[ST_PROVIDER] = 1
        st_i[ST_SERVERS] = UNBOUNDED_SERVERS
        self.planned[s] = UNBOUNDED_SERVERS
        st_f[STF_RATE] = tier.rate_limit / self.scale
        st_f[STF_BURST] = st_f[STF_TOKENS] = max(1.0, tier.burst / self.scale)

    def _configure_station(self, s: int, service: Service, servers: int) -> None:
        """Row s of the station arrays from a `[service]`-shaped spec (a pool)."""
        st_i, st_f = self.k.st_i[s], self.k.st_f[s]
        st_i[ST_SERVERS] = servers
        st_i[ST_LIFO] = service.discipline == "lifo"
        st_i[ST_DROP_EXPIRED] = service.drop_expired
        st_f[STF_QUEUE_LIMIT] = service.queue_limit / self.scale if service.queue_limit > 0 else 0
        if service.lifo_over is not None:
            st_f[STF_LIFO_OVER] = service.lifo_over / self.scale
        if service.sojourn_limit is not None:
            st_f[STF_SOJOURN_S] = service.sojourn_limit
        st_f[STF_ERROR_RATE] = service.error_rate

    def _configure_client(self, c: int, client: Client | None, station: int) -> None:
        """Row c of the client arrays: `client`'s policy towards `station` (None: one try, no
        timeout). A service graph adds one row per call edge."""
        cl = self.k.cl_f[c]
        cl[CL_STATION] = station
        cl[CL_SCALE] = self.scale
        cl[CL_TIMEOUT_S] = client.timeout if client and client.timeout else math.inf
        cl[CL_SLOT_S] = 1.0
        if client is None:
            return
        cl[CL_RETRIES] = client.retries
        backoff = client.backoff
        cl[CL_JITTER] = JITTER_CODES[backoff.jitter]
        cl[CL_BASE_S], cl[CL_CAP_S] = backoff.base, backoff.cap
        cl[CL_MULTIPLIER] = backoff.multiplier
        if client.retry_budget is not None:
            # Tokens in real units: a simulated success earns for `scale` real ones, a simulated
            # retry costs `scale` real tokens; the burst is the real client's.
            cl[CL_HAS_BUDGET] = 1.0
            cl[CL_BUDGET_EARN] = client.retry_budget * self.scale
            cl[CL_BUDGET_COST] = self.scale
            cl[CL_BUDGET_BURST] = cl[CL_TOKENS] = RETRY_BUDGET_BURST
        if client.throttle_k is not None:
            cl[CL_HAS_THROTTLE] = 1.0
            cl[CL_THROTTLE_K] = client.throttle_k
            cl[CL_SLOT_S] = client.throttle_window / THROTTLE_SLOTS

    # -- keeping the kernel supplied -------------------------------------------------------
    def _check_unfilled(self) -> None:
        """An engine's bug made loud: the kernel drew from a stream the run never filled."""
        k = self.k
        for stream in np.flatnonzero((k.rand_n == UNFILLED) & (k.rand_pos != 0)).tolist():
            raise RuntimeError(f"the kernel drew from random stream {stream}, never filled")

    def _refill(self, stream: int) -> None:
        """A full block for a random stream, the numbers not yet used kept at its front."""
        k = self.k
        if k.rand_n[stream] == UNFILLED:  # (never drawn: `_sync` checks at every hand-over)
            k.rand_n[stream] = 0
        pos, n = k.rand_pos[stream], k.rand_n[stream]
        left = n - pos
        k.rand[stream, :left] = k.rand[stream, pos:n].copy()
        k.rand[stream, left:] = self.draws[stream](RAND0 - left)
        k.rand_pos[stream], k.rand_n[stream] = 0, RAND0

    def _service(self) -> None:
        """Refill, grow or empty whatever the kernel is short of."""
        k = self.k
        for stream in self.draws:
            if (
                k.rand_n[stream] != UNFILLED
                and k.rand_n[stream] - k.rand_pos[stream] < REFILL_BELOW
            ):
                self._refill(stream)
        if k.si[SI_FREE_N] < len(k.att_i) // 4:
            k = grow_attempts(k, len(k.att_i))
        if len(k.heap_t) - k.si[SI_HEAP_N] < len(k.heap_t) // 4:
            k = grow_heap(k)
        if queue_room(k) < k.queue.shape[1] // 4:
            k = grow_queues(k)
        if lane_room(k) < k.lane_id.shape[1] // 4:
            k = grow_lanes(k)
        self.k = k
        if max(k.si[SI_LAT_CLIENT_N], k.si[SI_LAT_SERVER_N]) > k.lat_code.shape[1] // 2:
            # The latency buffer is half full: hand everything over, closing the bins the
            # kernel has closed (their histograms then settle at once, never held open).
            self._sync(amid_events=True)

    def _take_latencies(self) -> tuple[Histograms, Histograms]:
        """The buffered latency records as per-bin histograms (server, client), buffers emptied."""
        k, out = self.k, []
        for row, index in ((LAT_SERVER, SI_LAT_SERVER_N), (LAT_CLIENT, SI_LAT_CLIENT_N)):
            n = k.si[index]
            codes = k.lat_code[row, :n]
            out.append(_histograms(codes, k.lat_sum[row], k.lat_max[row]) if n else NO_HISTOGRAMS)
            k.si[index] = 0
        return out[0], out[1]

    def _sync(self, amid_events: bool = False) -> None:
        """Copy into the Recorder what changed since the last copy, with the latencies
        recorded since, and close the bins the kernel closed: the Recorder then holds open
        histograms only for bins whose requests are still in flight. `amid_events`: the
        kernel stopped inside an instant's events (its buffers ran short), so the last bin
        stays open even once closed, because the rest of an instant at the run's end still
        lands in it."""
        self._check_unfilled()
        k, recorder = self.k, self.recorder
        low, high = k.si[SI_DIRTY_LO], k.si[SI_BIN] + 1
        # The service's counters are its end users': the entry calls of every route.
        users = (
            k.counts[self.end_users[0]]
            if len(self.end_users) == 1
            else k.counts[self.end_users].sum(axis=0)
        )
        for j, name in enumerate(COUNTERS):
            getattr(recorder, name)[low:high] = users[j, low:high].tolist()
        k.si[SI_DIRTY_LO] = k.si[SI_BIN]
        server, client = self._take_latencies()
        first, end = recorder.closed_bins, int(k.si[SI_CLOSED])
        if amid_events:
            end = min(end, int(k.si[SI_N_BINS]) - 1)
        areas, snaps = k.areas[ENTRY, :, first:end], k.snaps[ENTRY, :, first:end]
        recorder.busy_area[first:end] = areas[AR_BUSY].tolist()
        recorder.queue_area[first:end] = areas[AR_QUEUE].tolist()
        recorder.server_area[first:end] = areas[AR_SERVERS].tolist()
        recorder.capacity_area[first:end] = areas[AR_CAPACITY].tolist()
        queue, busy, servers = (snaps[row].tolist() for row in (SN_QUEUE, SN_BUSY, SN_SERVERS))
        recorder.close_bins(first, end, queue, busy, servers, server, client)
        recorder.started = int(k.st_i[ENTRY, ST_STARTED])
        recorder.waited = int(k.st_i[ENTRY, ST_WAITED])
        recorder.wait_sum = float(k.st_f[ENTRY, STF_WAIT_SUM])

    def _advance_to(self, t_s: float) -> None:
        """Run the kernel to `t_s` (events at `t_s` included) and bring the Recorder up to date."""
        t_s = max(t_s, float(self.k.sf[SF_NOW]))  # SimPy's clock may lag by a rounding
        while advance(self.k, t_s) != REACHED:
            self._service()
        self._sync()

    # -- controls' interface ---------------------------------------------------------------
    def _pool_changed(self, s: int, now: float) -> None:
        k = self.k
        k.st_i[s, ST_SERVERS] = max(0, round(self.planned[s] * self.fault_factor[s]))
        self._advance_to(now)  # free servers take queued work at once

    def set_planned_servers(self, real_servers: float, tier: str | None = None) -> None:
        """Set the planned number of servers (real units) of a pool tier (default: the entry
        tier); faults still apply on top."""
        now, s = self.env.now, self._tier_station(tier)
        self._advance_to(now)
        touch(self.k.st_i, self.k.st_f, s, now)
        self.planned[s] = self.scaled(real_servers)
        self._pool_changed(s, now)

    def set_fault(
        self, capacity_factor: float, slowdown: float, error_rate: float, tier: str | None = None
    ) -> None:
        """Apply the combined effect of a tier's active faults (1, 1, 0 when none)."""
        now, s = self.env.now, self._tier_station(tier)
        self._advance_to(now)
        touch(self.k.st_i, self.k.st_f, s, now)
        self.fault_factor[s] = capacity_factor
        self.k.st_f[s, STF_SLOWDOWN] = slowdown
        self.k.st_f[s, STF_ERROR_RATE] = 1 - (1 - self.error_base[s]) * (1 - error_rate)
        if self.k.st_f[s, STF_ERROR_RATE] > 0 and self.k.rand_n[R_ERRORS] == UNFILLED:
            self._refill(R_ERRORS)
        if self.k.st_i[s, ST_PROVIDER] == 0:
            self._pool_changed(s, now)
        else:
            self._advance_to(now)

    def observe(self, tier: str | None = None) -> dict:
        """State of a pool tier for an autoscaler (real units): servers, busy and queue now,
        and the busy server-seconds so far (an autoscaler averages utilisation over its
        interval)."""
        now, s = self.env.now, self._tier_station(tier)
        self._advance_to(now)
        scale, k = self.scale, self.k
        busy = int(k.st_i[s, ST_BUSY])
        since = now - k.st_f[s, STF_LAST_T]
        busy_seconds = k.st_f[s, STF_BUSY_CLOSED] + k.st_f[s, STF_BUSY_ACC] + busy * since
        return {
            "servers": int(self.planned[s]) * scale,
            "busy": busy * scale,
            "queue": int(k.st_i[s, ST_QLEN]) * scale,
            "busy_seconds": float(busy_seconds) * scale,
        }

    # -- running ---------------------------------------------------------------------------
    def run(self, progress: Callable[[float], None] | None = None) -> float:
        """Simulate to the end (or to Ctrl-C); return the simulated time reached."""
        start_controls(self)
        # Ticks: for the progress bar and Ctrl-C, which the compiled kernel only sees between
        # calls; a tick is at most about TICK_REQUESTS requests (a few tenths of a second) and
        # TICK_BINS bins. Each tick hands the closed bins to the Recorder, so a short run
        # takes one.
        expected = self.demand.expected_total() / self.scale
        n_bins = self.recorder.n_bins
        ticks = max(1, math.ceil(expected / TICK_REQUESTS), math.ceil(n_bins / TICK_BINS))
        self.env.process(clock(self, ticks, progress))
        try:
            self.env.run(until=self.duration_s)
            self._advance_to(self.duration_s)
        except KeyboardInterrupt:
            self.interrupted = True
        end = self.duration_s if not self.interrupted else float(self.k.sf[SF_NOW])
        self._finish(end)
        return end

    def _finish(self, end_s: float) -> None:
        k = self.k
        bin_start_s = k.sf[SF_NEXT_EDGE] - k.sf[SF_BIN_S]
        if k.si[SI_CLOSED] < k.si[SI_N_BINS] and end_s > bin_start_s:
            close_bin(k, end_s)  # the last, partial bin (an interrupted run's too)
        self._sync()

    def simulated_events(self) -> int:
        """Events processed (arrivals, completions, timeouts, retries, control steps)."""
        return int(self.k.si[SI_EVENTS]) + self.controls_steps
