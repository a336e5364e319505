"""The fluid engine on a service graph: tiers, routes and calls as flows of request mass.

`FluidGraphEngine` runs a scenario with several tiers or routes (or a single pool, a graph of
one, unless it uses what `unsupported` names: those go to `fluid.py`) on the compiled fluid step of
`fluid_graph_kernel.py` (its docstring has the model of one attempt), and offers the same
interface as the DES: the Recorder is filled with the service as its end users see it (the
entry calls of every route), the per-tier and per-route figures come from the same
`GraphOutputs`, and controls act through `set_planned_servers`, `set_fault` and `observe`,
driven by the same SimPy processes (`controls.start_controls`) on the same timeline.

Time advances in slots of `dt` seconds that divide the bin: at most MAX_DT_S, and at least
SLOTS_PER_TIMEOUT slots per the shortest timeout of any call, since outcomes fall due on the
slot grid. Servers are rounded to whole simulated servers at `scale` as in the DES.

Approximations (beyond the single-pool fluid engine's, `fluid.py`), stated so a reader can
judge where the DES should decide instead:

* A sync caller holds its server for its own work plus the mean duration of its call below
  (with that call's retries), and decides its outcome from the state of the tiers below
  when it arrives; the DES decides when the answer comes. Under a fast change (a fault's
  start), the caller reacts up to a call's duration early.
* The quantile spread of latency is the caller's own work only; waits, calls below and
  backoff delays enter as means. Client latency percentiles are therefore narrower than the
  DES's when calls below vary a lot.
* A tier's queue is one FIFO of work for every route that calls it; a full queue refuses
  every route's arrivals alike; throttling, LIFO, `lifo_over` and `sojourn_limit` are not
  modelled on a graph (`unsupported` names them; the run is refused, not approximated).
* A provider's token bucket is filled and drawn as a continuous quantity: no clumps, so it
  refuses nothing below its rate once its burst covers a slot's calls.

Over ~400 lines: the layout of the compiled state from a scenario, and the driver that
keeps the Recorder and the controls in step with it, read the same arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import simpy

from sim.analysis.metrics import COUNTERS, HIST_BUCKETS, NO_HISTOGRAMS, Histograms, Recorder
from sim.analysis.theory import ServiceLaw
from sim.engine.clients import RETRY_BUDGET_BURST, backoff_means
from sim.engine.controls import clock, start_controls
from sim.engine.fluid import service_quantiles
from sim.engine.fluid_graph_kernel import (
    GF_BIN_S,
    GF_DT,
    GI_CLIENT_LO,
    GI_N_BINS,
    GI_RING,
    GI_SERVER_LO,
    GI_SLOT,
    GI_SLOTS_PER_BIN,
    N_EVK,
    N_GF,
    N_GI,
    N_PD,
    N_RW,
    N_SM,
    N_SP,
    RW_BURST,
    RW_CHILD,
    RW_EARN,
    RW_END_USER,
    RW_HAS_BUDGET,
    RW_RETRIES,
    RW_ROUTE,
    RW_STATION,
    RW_SYNC,
    RW_TIMEOUT_S,
    RW_TOKENS,
    SM_P_OK,
    SP_BURST,
    SP_BUSY,
    SP_BUSY_SECONDS,
    SP_DROP_EXPIRED,
    SP_ERROR_RATE,
    SP_MEAN_S,
    SP_PROVIDER,
    SP_QUEUE,
    SP_QUEUE_LIMIT,
    SP_RATE,
    SP_SCV,
    SP_SERVERS,
    SP_SLOWDOWN,
    SP_STARTED,
    SP_TOKENS,
    SP_WAIT_SUM,
    SP_WAITED,
    FluidGraphState,
    advance_slots,
    summarise_all,
)
from sim.engine.graph_outputs import GraphOutputs
from sim.engine.kernel_state import (
    AR_BUSY,
    AR_CAPACITY,
    AR_QUEUE,
    AR_SERVERS,
    CL_STATION,
    N_AR,
    N_C,
    N_CL,
    N_ROF,
    N_SF,
    N_SN,
    N_ST,
    N_STF,
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
from sim.model.scenario import Scenario
from sim.model.workload import Demand

MAX_DT_S = 2.0
# Ten slots per timeout: a full queue's refuse-and-retry loop turns on backoff delays under a
# timeout, and a retry falls due a slot later at least. With four, the reference month with
# +100%/day planner growth stayed down at the step that ends the DES's outage (34.2 h
# against the DES's 10.4 h at scale 100 and 250); at 10 and 40 it gives 10.2 h.
SLOTS_PER_TIMEOUT = 10
MIN_RING_SLOTS, MAX_RING_SLOTS = 4096, 1 << 17
CLOCK_TICKS = 200  # steps of the clock between controls: the progress bar's resolution
QUANTILES_EVEN, QUANTILES_TAIL = 45, 40  # service quantiles per tier: the single-pool engine's


def unsupported(scenario: Scenario) -> list[str]:
    """The features of a service graph this engine does not model (its keys, as written)."""
    found = []
    for name, tier in scenario.tier_specs.items():
        service = tier.service
        if service is None:
            continue
        if service.discipline != "fifo":
            found.append(f"tiers.{name}.discipline")
        if service.lifo_over is not None:
            found.append(f"tiers.{name}.lifo_over")
        if service.sojourn_limit is not None:
            found.append(f"tiers.{name}.sojourn_limit")
    clients = [("client", scenario.client)]
    for route in scenario.route_specs:
        clients += [(f"routes.{route.name}.calls.{c.tier}", c.client) for c in route.calls[1:]]
    found += [f"{where}.throttle_k" for where, c in clients if c and c.throttle_k is not None]
    return found


def slot_length(scenario: Scenario) -> float:
    """The slot: at most MAX_DT_S, SLOTS_PER_TIMEOUT per shortest timeout, dividing the bin."""
    timeouts = [scenario.client.timeout if scenario.client else None]
    for route in scenario.route_specs:
        timeouts += [c.client.timeout if c.client else None for c in route.calls[1:]]
    finite = [t for t in timeouts if t]
    target = min([MAX_DT_S, *(t / SLOTS_PER_TIMEOUT for t in finite)])
    bin_s = scenario.scenario.bin
    return bin_s / math.ceil(bin_s / target - 1e-9)


class FluidGraphEngine(GraphOutputs):
    """One fluid run of a service graph, writing into a Recorder (interface of `DesEngine`)."""

    def __init__(self, scenario: Scenario, demand: Demand, recorder: Recorder) -> None:
        meta = scenario.scenario
        self.env = simpy.Environment()
        self.scenario, self.demand, self.recorder = scenario, demand, recorder
        self.scale, self.duration_s = meta.scale, meta.duration
        self.controls_steps = 0
        self.interrupted = False
        self._capacities = None
        self._lay_out(scenario)
        self.dt = slot_length(scenario)
        self.n_slots = max(1, math.ceil(self.duration_s / self.dt - 1e-9))
        self.slots_per_bin = round(meta.bin / self.dt)
        self.f = self._state(scenario, demand, recorder)
        summarise_all(self.f)  # callers see the tiers below from the first slot
        self.planned = np.array([self.f.sp[s, SP_SERVERS] for s in range(len(self.tiers))])
        self.fault_factor = np.ones(len(self.tiers))
        self.error_base = self.f.sp[:, SP_ERROR_RATE].copy()

    def scaled(self, real_servers: float) -> int:
        """Simulated servers standing for `real_servers` at this run's scale."""
        return max(0, round(real_servers / self.scale)) if real_servers else 0

    # -- layout ----------------------------------------------------------------------------
    def _state(self, scenario: Scenario, demand: Demand, recorder: Recorder) -> FluidGraphState:
        routes, tiers = scenario.route_specs, scenario.tier_specs
        n_rows, n_st, n_bins = sum(map(len, self.call_rows)), len(self.tiers), recorder.n_bins
        policies = [
            (scenario.client if i == 0 else call.client) for route in routes for i, call in
            enumerate(route.calls)
        ]  # fmt: skip
        tries = 1 + max((p.retries for p in policies if p), default=0)
        rw, delay = np.zeros((n_rows, N_RW)), np.zeros((n_rows, max(1, tries)))
        order = []
        longest = 0.0
        for r, route in enumerate(routes):
            rows = self.call_rows[r]
            order += rows
            for i, call in enumerate(route.calls):
                c, policy = rows[i], policies[rows[i]]
                rw[c, RW_STATION] = self.station[call.tier]
                rw[c, RW_CHILD] = rows[i + 1] if i + 1 < len(rows) else -1
                rw[c, RW_SYNC] = route.mode == "sync"
                rw[c, RW_END_USER] = i == 0
                rw[c, RW_ROUTE] = r
                timeout = policy.timeout if policy and policy.timeout else math.inf
                rw[c, RW_TIMEOUT_S] = timeout
                if policy is None:
                    continue
                rw[c, RW_RETRIES] = policy.retries
                means = backoff_means(policy.backoff, policy.retries)
                delay[c, : len(means)] = means
                if math.isfinite(timeout):
                    longest += (policy.retries + 1) * timeout + float(means.sum())
                if policy.retry_budget is not None:
                    rw[c, RW_HAS_BUDGET] = 1.0
                    rw[c, RW_EARN] = policy.retry_budget
                    rw[c, RW_BURST] = rw[c, RW_TOKENS] = RETRY_BUDGET_BURST / self.scale
        sp = np.zeros((n_st, N_SP))
        quantiles = []
        for s, name in enumerate(self.tiers):
            tier = tiers[name]
            values, weights = service_quantiles(tier.time, QUANTILES_EVEN, QUANTILES_TAIL)
            quantiles.append(values)
            sp[s, SP_MEAN_S] = tier.time.mean_s
            sp[s, SP_SCV] = ServiceLaw.of(tier.time).scv / self.scale  # real units: `wait_sd`
            sp[s, SP_SLOWDOWN] = 1.0
            longest += float(values[-1]) * math.prod(
                f.slowdown for f in scenario.faults if f.tier == name
            )
            if tier.kind == "provider":
                sp[s, SP_PROVIDER] = 1.0
                sp[s, SP_RATE] = tier.rate_limit / self.scale
                sp[s, SP_BURST] = sp[s, SP_TOKENS] = tier.burst / self.scale
                continue
            service = tier.service
            sp[s, SP_SERVERS] = self.scaled(service.servers)
            sp[s, SP_ERROR_RATE] = service.error_rate
            sp[s, SP_QUEUE_LIMIT] = service.queue_limit / self.scale
            sp[s, SP_DROP_EXPIRED] = service.drop_expired
        cdf = np.cumsum(weights) - weights / 2
        ring = int(min(MAX_RING_SLOTS, max(MIN_RING_SLOTS, 2 * math.ceil(longest / self.dt) + 8)))
        gi = np.zeros(N_GI, dtype=np.int64)
        gi[GI_RING], gi[GI_SLOTS_PER_BIN], gi[GI_N_BINS] = ring, self.slots_per_bin, n_bins
        gi[GI_CLIENT_LO] = gi[GI_SERVER_LO] = 0
        gf = np.zeros(N_GF)
        gf[GF_DT], gf[GF_BIN_S] = self.dt, scenario.scenario.bin
        sm = np.zeros((n_rows, N_SM))
        sm[:, SM_P_OK] = 1.0
        return FluidGraphState(
            gi=gi,
            gf=gf,
            rw=rw,
            delay=delay,
            order=np.array(order, dtype=np.int64),
            sm=sm,
            sp=sp,
            quantile=np.array(quantiles),
            cdf=cdf,
            weight=weights,
            fresh_cum=self._fresh_cum(routes, demand),
            ring=np.zeros((n_rows, ring, N_EVK, max(1, tries), 2)),
            calls=np.zeros((n_rows, ring, 2)),
            queued=np.zeros(n_rows),
            releases=np.zeros((n_st, ring)),
            offered=np.zeros((n_rows, max(1, tries), 2)),
            counts=np.zeros((n_rows, N_C, n_bins)),
            areas=np.zeros((n_st, N_AR, n_bins)),
            snaps=np.zeros((n_st, N_SN, n_bins)),
            client_hist=np.zeros((n_bins, HIST_BUCKETS)),
            client_sum=np.zeros((n_bins, 2)),
            server_hist=np.zeros((n_bins, HIST_BUCKETS)),
            server_sum=np.zeros((n_bins, 2)),
            ro_hist=np.zeros((len(routes), HIST_BUCKETS)),
            ro_f=np.zeros((len(routes), N_ROF)),
            pending=np.zeros((n_rows, max(1, tries) + 1, N_PD)),
        )

    def _fresh_cum(self, routes, demand: Demand) -> np.ndarray:
        """Each route's expected fresh requests (simulated) from 0 to every slot edge: the
        DES's arrival grid (`Demand.unit_grid`), integrated exactly."""
        edges = np.minimum(np.arange(self.n_slots + 1) * self.dt, self.duration_s)
        out = np.empty((len(routes), len(edges)))
        for r, route in enumerate(routes):
            share = 1.0 if route.share is None else route.share
            t, low, slope, mass = demand.unit_grid(self.scale, share, route.source)
            cell = np.clip(np.searchsorted(t, edges, side="right") - 1, 0, len(low) - 1)
            x = edges - t[cell]
            out[r] = mass[cell] + low[cell] * x + slope[cell] * x * x
        return out

    # -- controls' interface ---------------------------------------------------------------
    def set_planned_servers(self, real_servers: float, tier: str | None = None) -> None:
        """Set the planned servers (real units) of a pool tier; faults still apply on top."""
        s = self._tier_station(tier)
        self._advance_to(self.env.now)
        self.planned[s] = self.scaled(real_servers)
        self.f.sp[s, SP_SERVERS] = max(0, round(self.planned[s] * self.fault_factor[s]))

    def set_fault(
        self, capacity_factor: float, slowdown: float, error_rate: float, tier: str | None = None
    ) -> None:
        """Apply the combined effect of a tier's active faults (1, 1, 0 when none)."""
        s = self._tier_station(tier)
        self._advance_to(self.env.now)
        sp = self.f.sp[s]
        self.fault_factor[s] = capacity_factor
        sp[SP_SLOWDOWN] = slowdown
        sp[SP_ERROR_RATE] = 1 - (1 - self.error_base[s]) * (1 - error_rate)
        if sp[SP_PROVIDER] == 0:
            sp[SP_SERVERS] = max(0, round(self.planned[s] * capacity_factor))

    def observe(self, tier: str | None = None) -> dict:
        """State of a pool tier for an autoscaler (real units), as the DES reports it."""
        s = self._tier_station(tier)
        self._advance_to(self.env.now)
        sp, scale = self.f.sp[s], self.scale
        return {
            "servers": float(self.planned[s]) * scale,
            "busy": float(sp[SP_BUSY]) * scale,
            "queue": float(sp[SP_QUEUE]) * scale,
            "busy_seconds": float(sp[SP_BUSY_SECONDS]) * scale,
        }

    # -- running ---------------------------------------------------------------------------
    def _advance_to(self, t_s: float) -> None:
        """Step every whole slot that ends by `t_s`, then hand the closed bins over."""
        end_slot = min(self.n_slots, math.floor(t_s / self.dt + 1e-9))
        if end_slot > self.f.gi[GI_SLOT]:
            advance_slots(self.f, end_slot)
            self._sync()

    def _sync(self) -> None:
        """Copy the end users' counters of the bins touched into the Recorder, and close the
        bins whose slots are all done (with their latencies)."""
        f, recorder = self.f, self.recorder
        slot = int(f.gi[GI_SLOT])
        n_bins = recorder.n_bins
        done = n_bins if slot >= self.n_slots else min(n_bins, slot // self.slots_per_bin)
        current = min(n_bins - 1, slot // self.slots_per_bin)
        low = min(int(f.gi[GI_CLIENT_LO]), recorder.closed_bins)
        users = f.counts[self.end_users, :, low : current + 1].sum(axis=0)
        for j, name in enumerate(COUNTERS):
            getattr(recorder, name)[low : current + 1] = users[j].tolist()
        first = recorder.closed_bins
        if done <= first:
            return
        client = self._client_histograms(low, current)
        server = self._histograms(f.server_hist, f.server_sum, int(f.gi[GI_SERVER_LO]), done)
        f.gi[GI_CLIENT_LO], f.gi[GI_SERVER_LO] = current, done
        areas, snaps = f.areas[0, :, first:done], f.snaps[0, :, first:done]
        recorder.busy_area[first:done] = areas[AR_BUSY].tolist()
        recorder.queue_area[first:done] = areas[AR_QUEUE].tolist()
        recorder.server_area[first:done] = areas[AR_SERVERS].tolist()
        recorder.capacity_area[first:done] = areas[AR_CAPACITY].tolist()
        queue, busy, servers = (snaps[row].tolist() for row in (SN_QUEUE, SN_BUSY, SN_SERVERS))
        recorder.close_bins(first, done, queue, busy, servers, server, client)
        sp = f.sp[0]
        recorder.started = float(sp[SP_STARTED])
        recorder.waited = float(sp[SP_WAITED])
        recorder.wait_sum = float(sp[SP_WAIT_SUM])

    @staticmethod
    def _histograms(hist: np.ndarray, sums: np.ndarray, low: int, high: int) -> Histograms:
        """Rows low..high-1 of a per-bin histogram array as `Histograms`, those rows emptied."""
        if high <= low:
            return NO_HISTOGRAMS
        bins = low + np.flatnonzero(hist[low:high].any(axis=1))
        out = (bins, hist[bins], sums[bins, 0], sums[bins, 1])
        hist[bins] = 0.0
        sums[bins] = 0.0
        return out

    def _client_histograms(self, low: int, current: int) -> Histograms:
        """The end users' latencies recorded since the last copy, by fresh bin; a bin the
        Recorder has settled passes them to the next open one (as the single-pool engine)."""
        f = self.f
        bins, counts, sums, maxes = self._histograms(f.client_hist, f.client_sum, low, current + 1)
        settled = self.recorder.client_latency.settled
        moved = bins.copy()
        for i, b in enumerate(bins.tolist()):
            while b < current and settled[b]:
                b += 1
            moved[i] = b
        keep = ~settled[moved]
        order = np.argsort(moved[keep], kind="stable")
        return tuple(x[keep][order] for x in (moved, counts, sums, maxes))

    def run(self, progress: Callable[[float], None] | None = None) -> float:
        """Step to the end (or to Ctrl-C); return the simulated time reached."""
        start_controls(self)
        self.env.process(clock(self, CLOCK_TICKS, progress))
        try:
            self.env.run(until=self.duration_s)
            self._advance_to(self.duration_s + self.dt)
        except KeyboardInterrupt:
            self.interrupted = True
        end = min(self.duration_s, float(self.f.gi[GI_SLOT]) * self.dt)
        if self.recorder.closed_bins < self.recorder.n_bins and self.interrupted:
            self._close_partial()
        self.k = self._outputs_view(end)
        return end

    def _close_partial(self) -> None:
        """An interrupted run closes the bin it stopped in, as the DES does."""
        f, recorder = self.f, self.recorder
        b = recorder.closed_bins
        f.snaps[:, SN_QUEUE, b] = f.sp[:, SP_QUEUE]
        f.snaps[:, SN_SERVERS, b] = f.sp[:, SP_SERVERS]
        f.snaps[:, SN_BUSY, b] = f.sp[:, SP_BUSY]
        slot = int(f.gi[GI_SLOT])
        f.gi[GI_SLOT] = (b + 1) * self.slots_per_bin
        self._sync()
        f.gi[GI_SLOT] = slot

    def _outputs_view(self, end_s: float):
        """The run's per-bin arrays in the kernel's layout, for `GraphOutputs`."""
        f, n_st = self.f, len(self.tiers)
        cl_f = np.zeros((len(f.rw), N_CL))
        cl_f[:, CL_STATION] = f.rw[:, RW_STATION]
        st_i, st_f = np.zeros((n_st, N_ST)), np.zeros((n_st, N_STF))
        st_i[:, ST_PROVIDER] = f.sp[:, SP_PROVIDER]
        st_i[:, ST_STARTED] = f.sp[:, SP_STARTED]
        st_i[:, ST_WAITED] = f.sp[:, SP_WAITED]
        st_f[:, STF_RATE] = f.sp[:, SP_RATE]
        st_f[:, STF_WAIT_SUM] = f.sp[:, SP_WAIT_SUM]
        sf = np.zeros(N_SF)
        sf[SF_NOW] = end_s
        return _View(f.counts, cl_f, st_i, st_f, f.areas, f.snaps, f.ro_hist, f.ro_f, sf)

    def simulated_events(self) -> int:
        """Slots stepped times the rows stepped in each."""
        return int(self.f.gi[GI_SLOT]) * len(self.f.rw)


class _View:
    """The arrays `GraphOutputs` reads, by the kernel's names."""

    def __init__(self, counts, cl_f, st_i, st_f, areas, snaps, ro_hist, ro_f, sf) -> None:
        self.counts, self.cl_f, self.st_i, self.st_f = counts, cl_f, st_i, st_f
        self.areas, self.snaps, self.ro_hist, self.ro_f, self.sf = areas, snaps, ro_hist, ro_f, sf
