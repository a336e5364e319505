"""The fluid engine: the DES's scenario semantics stepped in numpy, requests as a continuous mass.

`sim.run` sends a single pool here only when it uses what the compiled slot step of
`fluid_graph.py` leaves out (LIFO, `lifo_over`, `sojourn_limit`, throttling); any other fluid
run, a single pool included (a graph of one tier), takes that step: the reference month in
about 0.5 s against 6.6 s here, with the same verdicts on every shipped single-pool scenario.

Time advances on a grid of slots of `dt` seconds set by the client timeout alone (six or more
slots per timeout, the timeout half a slot past a whole number of slots, at most two seconds);
the reporting bin only cuts the slot its edge falls in, so results do not depend on the bin
beyond its resolution. Where nothing queues and every slot's load stays within capacity, one
step spans many slots (a "quiet" step, up to the bin's edge or the next control action) and is
the slot-by-slot computation done at once in numpy: each slot's attempts start in their own
slot, and timeouts, retries and successes fall due in the slots they would one slot at a time
(retries of a try class are worked out before the next class starts, so a retry falling due
inside the step is served in its slot). A quiet month costs a few thousand steps.

In a step, fresh demand (`Demand.cumulative`, divided by `scale`) and the retries falling due
arrive as a new cohort; the pool serves `servers · h / mean` attempts from the queue (fifo
from the oldest cohort, lifo from the newest, lifo above `lifo_over`); what is left waits.
A cohort keeps its arrival time and its mass per try count, so its clients give up when its
age passes `client.timeout`: they count as timed out and retry after the mean backoff delay
(retry budget applied), while their work stays queued and is still served unless
`drop_expired`. An attempt started at wait w times out in service with probability
P(S > timeout − w), from quantiles of the service-time distribution (the tail interpolated
log-linearly between them); completions count as successes one mean service time later.
Controls reuse the DES's decision rules: capacity from `planned_changes` and the
`DailyPlanner` (which reads the load recorded so far), faults from `combine_faults`, the
autoscaler from `Autoscaler`.

Latency, two views (the Recorder's contract). The server's view is every completed attempt's
time in system by the bin it started in: its wait plus each service quantile, abandoned work
included. The client's view is per request that succeeds, from its first send to its success:
a mass of try class k carries the sum of its requests' first-arrival times, so a success
started at time t after waiting w has client latency (t − mean first-arrival time) + S, with S
over the quantiles below the time its client has left (timeout − w). The first term holds this
try's wait and every earlier try's timeout or rejection and mean backoff delay, as realised on
the slot grid; the approximation is that a cohort's requests share the mean of their
first-arrival times (their spread within one cohort is not kept), counted in the bin of that
mean like their fate.

Approximations, by design: below capacity nothing waits (no Erlang C queueing delay: latency
is the service time alone); a finite queue rejects only the mass above its limit, so a loss
system (`queue_limit = 0`) blocks only the excess of load over capacity, not Erlang B's share;
backoff delays are their means (exact for every jitter kind: see `backoff_means`) and fall on
the slot grid (a retry arrives in the slot its delay ends in, at least one slot later);
throttling and the retry budget act on expected counts, in real units at any scale (the burst
is RETRY_BUDGET_BURST real tokens, the throttle's "+ 1" one real request); a request's fate is
counted in the bin of the mean fresh-arrival time of its try class.

Servers are rounded to whole simulated servers at `scale` as in the DES, and every count goes
into the Recorder in simulated units (real / scale), so both engines' outputs compare directly.

This module is longer than ~400 lines because the step, the cohort queue and the controls
share one mutable state whose pieces make no sense apart.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable

import numpy as np

from sim.analysis.metrics import Recorder, bucket_counts, bucket_index
from sim.engine.clients import RETRY_BUDGET_BURST, THROTTLE_SLOTS, backoff_means, p_reject
from sim.engine.controls import (
    Autoscaler,
    DailyPlanner,
    combine_faults,
    fault_label,
    planned_changes,
)
from sim.model.scenario import Scenario, ServiceTime
from sim.model.workload import Demand, service_time_draw

MAX_DT_S = 2.0  # the longest slot (a timeout asks for shorter ones)
SLOTS_PER_TIMEOUT = 6  # slots per client timeout (the age resolution of cohorts)
MIN_DT_S = 0.01
EPS = 1e-9  # mass (simulated requests) below which a queue counts as empty
EDGE_TOL = 1e-9  # in slots: a bin edge this close to a slot edge is that slot edge
MAX_QUIET_SLOTS = 512  # slots in one quiet step (bounds its arrays)
MAX_RING_SLOTS = 1 << 18  # longest delay a retry, timeout or completion can be scheduled
CHUNK_SLOTS = 1 << 16  # demand is evaluated this many slots at a time


def service_quantiles(
    spec: ServiceTime, even: int = 45, tail: int = 40
) -> tuple[np.ndarray, np.ndarray]:
    """Service times (seconds, sorted) and their probabilities, keeping the mean of `spec`.

    Probability is cut evenly into `even` parts up to the 90th percentile and log-evenly into
    `tail` parts beyond, down to 1 − 10⁻⁵, so the tail percentiles an SLO reads (p99) are
    resolved as well as the median.
    """
    edges = np.concatenate(
        [np.linspace(0.0, 0.9, even + 1), 1.0 - np.logspace(-1, -5, tail + 1)[1:], [1.0]]
    )
    weights = np.diff(edges)
    u = (edges[:-1] + edges[1:]) / 2
    if spec.dist == "exponential":
        values = -np.log1p(-u)
    elif spec.dist == "deterministic":
        values = np.ones_like(u)
    else:
        sample = service_time_draw(spec, np.random.default_rng(0))(1 << 18)
        values = np.quantile(sample, u)
    return values / (values @ weights) * spec.mean_s, weights


def slot_length(timeout_s: float) -> float:
    """The slot (seconds): at most MAX_DT_S, SLOTS_PER_TIMEOUT or more per timeout.

    It depends on the timeout only, never on the reporting bin. Cohorts are born mid-slot, so
    their ages are whole slots; with the timeout half a slot past a whole number of slots, a
    cohort is either wholly younger or wholly older than the timeout, and clients give up at
    the right age on average.
    """
    if not math.isfinite(timeout_s):
        return MAX_DT_S
    timeout_s = max(timeout_s, MIN_DT_S)
    whole = max(SLOTS_PER_TIMEOUT, math.ceil(timeout_s / MAX_DT_S - 0.5))
    return timeout_s / (whole + 0.5)


class FluidEngine:
    """One fluid run of a scenario, writing into a Recorder (interface of `DesEngine`).

    Masses travel as rows of 2·W numbers (W = retries + 1): the mass with k tries before, then
    the sum of mass × fresh-arrival time per k, so a request's final fate (`fresh_ok`,
    `fresh_failed`) is counted in the bin its fresh attempt arrived in, as the DES counts it,
    and its client latency is known when it succeeds.
    """

    def __init__(self, scenario: Scenario, demand: Demand, recorder: Recorder) -> None:
        meta, service, client = scenario.scenario, scenario.service, scenario.client
        self.scenario, self.demand, self.recorder = scenario, demand, recorder
        self.scale, self.bin_s, self.duration_s = meta.scale, meta.bin, meta.duration
        self.interrupted = False
        self.steps = 0
        # Clients, in simulated units that keep real meaning: a simulated retry stands for
        # `scale` real ones and costs as many real tokens, so the burst is RETRY_BUDGET_BURST
        # real tokens; the throttle's "+ 1" is one real request.
        self.timeout_s = client.timeout if client and client.timeout else math.inf
        self.retries_max = n = client.retries if client else 0
        self.width = w = n + 1
        self.delays = backoff_means(client.backoff if client else None, n).tolist()
        self.budget = client.retry_budget if client else None
        self.burst = RETRY_BUDGET_BURST / self.scale
        self.tokens = self.burst
        self.throttle_k = client.throttle_k if client else None
        self.throttle_slot_s = client.throttle_window / THROTTLE_SLOTS if client else 1.0
        self.throttle_one = 1.0 / self.scale
        self.throttle_req = [0.0] * THROTTLE_SLOTS
        self.throttle_acc = [0.0] * THROTTLE_SLOTS
        self.throttle_slot = 0
        # Time grid: slots of dt from the timeout; bins cut the slot their edge falls in.
        self.dt = slot_length(self.timeout_s)
        self.n_slots = math.ceil(self.duration_s / self.dt - EDGE_TOL)
        self.time_reached = 0.0
        # The pool.
        self.mean_s = service.time.mean_s
        self.quantiles, self.quantile_weights = service_quantiles(service.time)
        # P(S > quantile j), for the attempts that outlast their timeout in service.
        self.beyond = np.concatenate([[1.0], 1.0 - np.cumsum(self.quantile_weights)])
        # P(S > quantile j) at the middle of its probability, for interpolating the tail.
        self.tail_mid = self.beyond[1:] + self.quantile_weights / 2
        self.planned = self.scaled(service.servers)
        self.servers = self.planned
        self.fault_factor, self.slowdown = 1.0, 1.0
        self.error_base = self.error_rate = service.error_rate
        self.queue_limit = service.queue_limit / self.scale
        self.lifo = service.discipline == "lifo"
        self.lifo_over = service.lifo_over / self.scale if service.lifo_over is not None else None
        self.drop_expired, self.sojourn_limit = service.drop_expired, service.sojourn_limit
        self.busy = 0.0
        # The queue: cohorts [head, tail) in arrival order; those before `live` timed out.
        self.rows = np.zeros((1024, 2 * w))
        self.total = np.zeros(1024)
        self.born = np.zeros(1024)
        self.head = self.tail = self.live = 0
        self.queued = 0.0
        # Delayed work by slot (rings): retries, timeouts in service, successes.
        self.slowest_s = float(self.quantiles[-1]) * math.prod(f.slowdown for f in scenario.faults)
        longest = sum(self.delays) + self.slowest_s
        longest += self.timeout_s if math.isfinite(self.timeout_s) else 0.0
        self.ring = min(MAX_RING_SLOTS, math.ceil(longest / self.dt) + MAX_QUIET_SLOTS + 4)
        self.ring_retry = np.zeros((self.ring, 2 * w))
        self.ring_timeout = np.zeros((self.ring, 2 * w))
        self.ring_success = np.zeros((self.ring, 2 * w))
        self.pending_retry = self.pending_timeout = self.pending_success = 0.0
        self.next_slot = 0
        # A request is decided within `life_s` of its first send (finite timeout): its tries'
        # timeouts, its backoff delays and a last service, with a bin and a few slots to spare.
        self.spare_s = sum(self.delays) + self.slowest_s + self.bin_s + 4 * self.dt
        self.life_s = w * self.timeout_s + self.spare_s
        self.quiet_from = 0  # no quiet step before this slot
        # Server latency of the bin: zero-wait mass by slowdown, and (wait, mass, slowdown).
        self.srv_zero: dict[float, float] = {}
        self.srv_rows: list[tuple[float, float, float]] = []
        # Client latency of successes started in the bin: by (fresh bin, slowdown, quantiles
        # that succeed) when nothing came before the attempt, else (bin, before, mass, ...).
        self.cli_zero: dict[tuple[int, float, int], float] = {}
        self.cli_rows: list[tuple[int, float, float, float, int]] = []
        self.cli_chunks: list[tuple] = []
        # Successes of the quantile that straddles the time left: (bin, latency, mass).
        self.cli_points: list[tuple] = []
        self.hist_cache: dict[tuple[float, int], tuple[np.ndarray, float, float]] = {}
        self.b = 0
        self._fresh_first = -1
        self._fresh_cum = np.zeros(0)
        bin_edges = np.minimum(np.arange(recorder.n_bins + 1) * self.bin_s, self.duration_s)
        self._bin_cum = demand.cumulative(bin_edges) / self.scale
        # Controls: (slot, order, time, action, argument) in a heap.
        self.controls: list = []
        self.order = 0
        self.active_faults: list = []
        self.autoscale = scenario.capacity.autoscale
        self.busy_seconds = 0.0

    def scaled(self, real_servers: float) -> int:
        """Simulated servers standing for `real_servers` at this run's scale (as the DES)."""
        return max(0, round(real_servers / self.scale)) if real_servers else 0

    # -- controls --------------------------------------------------------------------------
    def _at(self, t_s: float, action: str, argument=None) -> None:
        slot = max(0, round(t_s / self.dt))
        if slot < self.n_slots:
            self.order += 1
            heapq.heappush(self.controls, (slot, self.order, t_s, action, argument))

    def _start_controls(self) -> None:
        for step in planned_changes(self.scenario):
            self._at(max(0.0, step.t_s), "capacity", step)
        if self.scenario.capacity.planner is not None:
            planner = DailyPlanner(self.scenario)
            for review_s in planner.review_times():
                self._at(review_s, "review", planner)
        for fault in self.scenario.faults:
            self._at(fault.at, "fault", fault)
            self._at(fault.at + fault.duration, "fault_end", fault)
        if self.autoscale is not None:
            self.scaler = Autoscaler(self.autoscale)
            self._at(self.autoscale.interval, "autoscale")

    def _apply_controls(self, slot: int) -> None:
        recorder = self.recorder
        while self.controls and self.controls[0][0] <= slot:
            _, _, t_s, action, argument = heapq.heappop(self.controls)
            if action == "capacity":
                self.set_planned_servers(argument.servers)
                recorder.add_event(t_s, "capacity", argument.label)
            elif action == "review":
                step = argument.review(t_s, recorder)
                if step is not None:
                    self._at(max(t_s, step.t_s), "capacity", step)
            elif action == "fault":
                self.active_faults.append(argument)
                self.set_fault(*combine_faults(self.active_faults))
                recorder.add_event(t_s, "fault", fault_label(argument))
            elif action == "fault_end":
                self.active_faults.remove(argument)
                self.set_fault(*combine_faults(self.active_faults))
                recorder.add_event(t_s, "fault_end", "fault ends")
            elif action == "provision":
                self.set_planned_servers(argument)
                recorder.add_event(t_s, "autoscale", f"autoscaler → {argument:,} servers")
            else:
                self._autoscale(t_s)

    def _autoscale(self, t_s: float) -> None:
        """One look of the autoscaler: the shared `Autoscaler` decides, as in the DES."""
        self._at(t_s + self.autoscale.interval, "autoscale")
        state = self.observe()
        decision = self.scaler.decide(t_s, state["servers"], state["busy_seconds"], state["queue"])
        if decision is None:
            return
        servers, delay_s = decision
        if delay_s > 0:
            self._at(t_s + delay_s, "provision", servers)
        else:
            self.set_planned_servers(servers)
            self.recorder.add_event(t_s, "autoscale", f"autoscaler → {servers:,} servers")

    def set_planned_servers(self, real_servers: float, tier: str | None = None) -> None:
        """Set the planned number of servers (real units); faults still apply on top."""
        self.planned = self.scaled(real_servers)
        self.servers = max(0, round(self.planned * self.fault_factor))

    def set_fault(
        self, capacity_factor: float, slowdown: float, error_rate: float, tier: str | None = None
    ) -> None:
        """Apply the combined effect of the active faults (1, 1, 0 when none)."""
        self.fault_factor, self.slowdown = capacity_factor, slowdown
        self.error_rate = 1 - (1 - self.error_base) * (1 - error_rate)
        self.servers = max(0, round(self.planned * self.fault_factor))

    def observe(self, tier: str | None = None) -> dict:
        """State for an autoscaler (real units): servers, busy, queue, busy server-seconds."""
        s = self.scale
        return {
            "servers": self.planned * s,
            "busy": self.busy * s,
            "queue": self.queued * s,
            "busy_seconds": self.busy_seconds * s,
        }

    # -- fates and delayed work ------------------------------------------------------------
    def _fate_bin(self, mass: float, moment: float) -> int:
        """The bin of the mean fresh-arrival time `moment / mass`."""
        return min(max(int(moment / mass / self.bin_s), 0), self.recorder.n_bins - 1)

    def _decide(self, counter: list, row: np.ndarray) -> None:
        """Count the requests in `row` (decided now) in the bins their fresh attempts came in."""
        w = self.width
        values = row.tolist()
        for k in range(w):
            self._count_fate(counter, values[k], values[w + k])

    def _count_fate(self, counter: list, mass: float, moment: float) -> None:
        if mass > 0:
            counter[self._fate_bin(mass, moment)] += mass

    def _decide_many(self, counter: list, masses: np.ndarray, moments: np.ndarray) -> None:
        """`_count_fate` over arrays of masses and their moments."""
        masses, moments = np.ravel(masses), np.ravel(moments)
        keep = masses > 0
        if not keep.any():
            return
        mass = masses[keep]
        bins = np.clip((moments[keep] / mass / self.bin_s).astype(np.int64), 0, None)
        bins = np.minimum(bins, self.recorder.n_bins - 1)
        low = int(bins.min())
        sums = np.bincount(bins - low, weights=mass)
        for offset in np.flatnonzero(sums).tolist():
            counter[low + offset] += float(sums[offset])

    def _event_slot(self, t_s: float) -> int:
        """The slot whose start is nearest `t_s` (timeouts and successes are due at a start)."""
        return math.floor(t_s / self.dt + 0.5)

    def _arrival_slot(self, t_s: float) -> int:
        """The slot `t_s` falls in (a retry arrives with that slot's cohort, mid-slot)."""
        return math.floor(t_s / self.dt + EDGE_TOL)

    def _ring_index(self, slot: int) -> int:
        """The ring row of `slot`, never before the next step nor past the ring."""
        return min(max(slot, self.next_slot), self.next_slot + self.ring - 2) % self.ring

    def _due(self, ring: np.ndarray, slot: int, share: float = 1.0) -> np.ndarray:
        """Take `share` of what falls due in `slot` (a bin edge splits a slot by length)."""
        index = slot % self.ring
        if share >= 1.0:
            due = ring[index].copy()
            ring[index] = 0.0
        else:
            due = ring[index] * share
            ring[index] -= due
        return due

    def _fail(self, row: np.ndarray, t_s: float) -> float:
        """Attempts timed out or rejected at `t_s`: retry those with tries left, later.

        Returns the mass that failed.
        """
        n, w = self.retries_max, self.width
        values = row.tolist()
        failed = self.recorder.fresh_failed
        self._count_fate(failed, values[n], values[w + n])
        wanted = sum(values[:n])
        if wanted <= 0:
            return wanted + values[n]
        share = 1.0
        if self.budget is not None:
            allowed = min(wanted, self.tokens)
            self.tokens -= allowed
            share = allowed / wanted
        ring, dt, first = self.ring_retry, self.dt, self.next_slot
        last = first + self.ring - 2
        for k in range(n):
            mass, moment = values[k], values[w + k]
            if mass <= 0:
                continue
            if share < 1.0:
                self._count_fate(failed, mass * (1.0 - share), moment * (1.0 - share))
            if share > 0:
                # `_arrival_slot` within `_ring_index`, inline (the hottest call of a step)
                slot = math.floor((t_s + self.delays[k]) / dt + EDGE_TOL)
                index = min(max(slot, first), last) % self.ring
                ring[index, k + 1] += mass * share
                ring[index, w + k + 1] += moment * share
        self.pending_retry += wanted * share
        return wanted + values[n]

    def _succeed(self, row: np.ndarray) -> None:
        mass = float(row[: self.width].sum())
        self.recorder.succeeded[self.b] += mass
        self._decide(self.recorder.fresh_ok, row)
        if self.budget is not None:
            self.tokens = min(self.burst, self.tokens + self.budget * mass)
        if self.throttle_k is not None:
            self.throttle_acc[self.throttle_slot % THROTTLE_SLOTS] += mass

    def _time_out(self, row: np.ndarray, t_s: float) -> None:
        self.recorder.timed_out[self.b] += self._fail(row, t_s)

    def _later(self, kind: str, row: np.ndarray, t_s: float) -> None:
        """Time out (`kind` "timeout") or succeed ("success") at `t_s`: now if in this step."""
        slot = self._event_slot(t_s)
        if slot < self.next_slot:
            if kind == "timeout":
                self._time_out(row, t_s)
            else:
                self._succeed(row)
            return
        mass = float(row[: self.width].sum())
        if kind == "timeout":
            self.ring_timeout[self._ring_index(slot)] += row
            self.pending_timeout += mass
        else:
            self.ring_success[self._ring_index(slot)] += row
            self.pending_success += mass

    # -- the queue of cohorts --------------------------------------------------------------
    def _push(self, row: np.ndarray, mass: float, born_s: float) -> None:
        if self.tail == len(self.total):
            self._make_room()
        i = self.tail
        self.rows[i] = row
        self.total[i] = mass
        self.born[i] = born_s
        self.tail = i + 1
        self.queued += mass

    def _make_room(self) -> None:
        head, n = self.head, self.tail - self.head
        size = len(self.total) * (2 if n > len(self.total) // 2 else 1)
        for name in ("rows", "total", "born"):
            old = getattr(self, name)
            new = np.zeros((size, *old.shape[1:]))
            new[:n] = old[head : self.tail]
            setattr(self, name, new)
        self.live = max(self.live - head, 0)
        self.head, self.tail = 0, n

    def _expire(self, now: float) -> None:
        """Clients of cohorts older than the timeout give up (their work stays queued)."""
        cutoff = now - self.timeout_s
        self.live = max(self.live, self.head)
        while self.live < self.tail and self.born[self.live] <= cutoff:
            i = self.live
            if self.total[i] > 0:
                self._time_out(self.rows[i].copy(), float(self.born[i]) + self.timeout_s)
            self.live = i + 1

    def _remove(self, i: int, mass: float) -> None:
        self.total[i] = 0.0
        self.queued -= mass

    def _front(self, from_back: bool) -> int:
        """Index of the cohort to serve next (dropping expired work first if asked to)."""
        if from_back:
            while self.tail > self.head and self.total[self.tail - 1] <= 0:
                self.tail -= 1
            self.live = min(self.live, self.tail)
            return self.tail - 1
        if self.drop_expired and self.live > self.head:
            dropped = float(self.total[self.head : self.live].sum())
            self.recorder.dropped[self.b] += dropped
            self.total[self.head : self.live] = 0.0
            self.queued -= dropped
            self.head = self.live
        while self.head < self.tail and self.total[self.head] <= 0:
            self.head += 1
        return self.head

    def _serve(self, capacity: float, now: float) -> float:
        """Start up to `capacity` queued attempts at time `now`; return the mass started."""
        started = 0.0
        recorder, b = self.recorder, self.b
        while capacity > EPS and self.queued > EPS:
            from_back = self.lifo or (self.lifo_over is not None and self.queued > self.lifo_over)
            i = self._front(from_back)
            if i < self.head or i >= self.tail:
                self.queued = 0.0  # every cohort is served: what is left is rounding
                break
            mass = float(self.total[i])
            gone = i < self.live
            wait = max(0.0, now - float(self.born[i]))
            if gone and self.drop_expired:
                recorder.dropped[b] += mass
                self._remove(i, mass)
                continue
            if self.sojourn_limit is not None and wait > self.sojourn_limit:
                if gone:
                    recorder.dropped[b] += mass
                else:
                    recorder.rejected[b] += mass
                    self._fail(self.rows[i].copy(), now)
                self._remove(i, mass)
                continue
            take = min(mass, capacity)
            if from_back and not self.lifo:
                take = min(take, self.queued - self.lifo_over)
            row = self.rows[i] * (take / mass)
            self.rows[i] -= row
            self.total[i] = mass - take
            self.queued -= take
            if not gone:
                self._start(row, wait, now)
            self._note_start(take, wait)
            capacity -= take
            started += take
        if self.queued <= EPS:
            self.head = self.tail = self.live = 0
            self.queued = 0.0
        return started

    def _start(self, row: np.ndarray, wait: float, now: float) -> None:
        """Live attempts begin service: some will outlast their client's timeout."""
        succeed, late, partial = len(self.quantiles), 0.0, 0.0
        if math.isfinite(self.timeout_s):
            late, succeed, partial = self._outlast((self.timeout_s - wait) / self.slowdown)
            if late > 0:
                self._later("timeout", row * late, now + self.timeout_s - wait)
        if late < 1.0:
            self._later(
                "success",
                row if late <= 0 else row * (1.0 - late),
                now + self.mean_s * self.slowdown,
            )
            self._note_client(row, now, succeed)
            if partial > 0:
                self._note_points(row, now, partial, self.timeout_s - wait)

    def _outlast(self, left: float) -> tuple[float, int, float]:
        """Attempts whose clients have `left` seconds of (unslowed) service time left: the share
        that outlasts it, the number of quantiles wholly below it, and the share that succeeds
        within the quantile straddling it. The tail is interpolated log-linearly between
        quantiles (exact for an exponential tail) rather than read off the quantile grid."""
        q = self.quantiles
        j = int(np.searchsorted(q, left, "right"))
        if j == 0 or j >= len(q) or q[j] <= q[j - 1]:
            return max(0.0, float(self.beyond[j])), j, 0.0
        low, high = math.log(self.tail_mid[j - 1]), math.log(self.tail_mid[j])
        tail = math.exp(low + (left - q[j - 1]) / (q[j] - q[j - 1]) * (high - low))
        late = min(max(tail, float(self.beyond[j + 1])), float(self.beyond[j]))
        return late, j, float(self.beyond[j]) - late

    def _note_points(self, row: np.ndarray, now: float, partial: float, left_s: float) -> None:
        """The successes within the straddling quantile end just inside the time left."""
        w = self.width
        values = row.tolist()
        for k in range(w):
            mass = values[k]
            if mass > 0:
                before = max(0.0, now - values[w + k] / mass)
                fresh_bin = self._fate_bin(mass, values[w + k])
                self.cli_points.append((fresh_bin, before + left_s, mass * partial))

    def _note_client(self, row: np.ndarray, now: float, succeed: int) -> None:
        """Client latency of the successes among `row` started `now`: the time since each try
        class's mean first send, plus the service quantiles below what their clients have
        left (the first `succeed`); weighted by the whole mass, since those quantiles'
        probabilities add up to the share that succeeds."""
        w = self.width
        values = row.tolist()
        for k in range(w):
            mass = values[k]
            if mass <= 0:
                continue
            fresh_bin = self._fate_bin(mass, values[w + k])
            before = now - values[w + k] / mass
            if before <= 1e-9 * max(1.0, now):
                key = (fresh_bin, self.slowdown, succeed)
                self.cli_zero[key] = self.cli_zero.get(key, 0.0) + mass
            else:
                self.cli_rows.append((fresh_bin, before, mass, self.slowdown, succeed))

    def _note_start(self, mass: float, wait: float) -> None:
        recorder = self.recorder
        recorder.started += mass
        if wait > 0:
            recorder.waited += mass
            recorder.wait_sum += mass * wait
            self.srv_rows.append((wait, mass, self.slowdown))
        else:
            self.srv_zero[self.slowdown] = self.srv_zero.get(self.slowdown, 0.0) + mass

    def _reject_newest(self, excess: float, now: float) -> None:
        """A full queue turns away the newest arrivals (the cohort pushed in this step)."""
        i = self.tail - 1
        mass = float(self.total[i])
        if i < self.head or i < self.live or self.born[i] != now or mass <= 0:
            return
        take = min(excess, mass)
        row = self.rows[i] * (take / mass)
        self.rows[i] -= row
        self.total[i] = mass - take
        self.queued -= take
        self.recorder.rejected[self.b] += take
        self._fail(row, now)

    # -- a step ----------------------------------------------------------------------------
    def _throttle_turn(self, t_s: float) -> int:
        """Move the throttle's window of slots to time `t_s`; return the current slot."""
        slot = int(t_s / self.throttle_slot_s)
        for s in range(self.throttle_slot + 1, min(slot, self.throttle_slot + THROTTLE_SLOTS) + 1):
            self.throttle_req[s % THROTTLE_SLOTS] = 0.0
            self.throttle_acc[s % THROTTLE_SLOTS] = 0.0
        self.throttle_slot = max(slot, self.throttle_slot)
        return slot

    def _p_reject(self, requests: float, accepts: float) -> float:
        """The SRE book's client-side rejection probability; its "+ 1" is one real request."""
        return p_reject(requests, accepts, self.throttle_k, self.throttle_one)

    def _throttle(self, t_s: float, row: np.ndarray) -> np.ndarray:
        """Client-side adaptive throttling on expected counts (the DES's window of slots)."""
        slot = self._throttle_turn(t_s)
        requests, accepts = sum(self.throttle_req), sum(self.throttle_acc)
        self.throttle_req[slot % THROTTLE_SLOTS] += float(row[: self.width].sum())
        p_reject = self._p_reject(requests, accepts)
        if p_reject <= 0:
            return row
        throttled = row * p_reject
        self.recorder.throttled[self.b] += float(throttled[: self.width].sum())
        self._decide(self.recorder.fresh_failed, throttled)
        return row - throttled

    def _step(self, slot: int, t0: float, t1: float, fresh: float) -> None:
        """One slot, or the part of it on one side of a bin edge."""
        recorder, b, w = self.recorder, self.b, self.width
        h, now = t1 - t0, (t0 + t1) / 2
        self.next_slot = slot + 1
        self.steps += 1
        self.time_reached = t1
        # The part of the slot before a bin edge takes its share of what is due in the slot.
        share = min(1.0, h / ((slot + 1) * self.dt - t0))
        if self.pending_success > EPS:
            done = self._due(self.ring_success, slot, share)
            self.pending_success -= float(done[:w].sum())
            self._succeed(done)
        if self.pending_timeout > EPS:
            late = self._due(self.ring_timeout, slot, share)
            self.pending_timeout -= float(late[:w].sum())
            self._time_out(late, t0)
        if self.queued > EPS and math.isfinite(self.timeout_s):
            self._expire(now)
        # New attempts: fresh requests and the retries due.
        if self.pending_retry > EPS:
            row = self._due(self.ring_retry, slot, share)
            retries = float(row[:w].sum())
            self.pending_retry -= retries
            recorder.retries[b] += retries
        else:
            row = np.zeros(2 * w)
        row[0] += fresh
        row[w] += fresh * now
        recorder.fresh[b] += fresh
        if self.throttle_k is not None:
            row = self._throttle(t0, row)
        offered = float(row[:w].sum())
        recorder.attempts[b] += offered
        if self.error_rate > 0 and offered > 0:
            recorder.rejected[b] += offered * self.error_rate
            self._fail(row * self.error_rate, now)
            row = row * (1.0 - self.error_rate)
            offered -= offered * self.error_rate
        # Serve: the pool completes servers·h/mean attempts in the step.
        service_s = self.mean_s * self.slowdown
        capacity = self.servers * h / service_s
        queued_before = self.queued
        if self.queued <= EPS and offered <= capacity:
            if offered > 0:
                self._start(row, 0.0, now)
                self._note_start(offered, 0.0)
            started = offered
        else:
            if offered > 0:
                self._push(row, offered, now)
            started = self._serve(capacity, now)
            excess = self.queued - self.queue_limit
            if excess > EPS:
                self._reject_newest(excess, now)
        self.busy = (
            self.servers if self.queued > EPS else min(self.servers, started * service_s / h)
        )
        recorder.busy_area[b] += self.busy * h
        self.busy_seconds += self.busy * h
        recorder.queue_area[b] += (queued_before + self.queued) / 2 * h
        recorder.server_area[b] += self.servers * h
        recorder.capacity_area[b] += self.servers / self.slowdown * h

    # -- a quiet step: many slots at once --------------------------------------------------
    def _quiet(self, slot: int, fresh: np.ndarray) -> int:
        """Step the full slots slot .. slot + n − 1 (n = len(fresh)) at once, as one by one.

        Nothing queues, so slots interact only through delayed work: a try class's failures
        become the next class's retries, so classes are worked out in order and a retry due
        inside the step joins its slot's attempts. Returns the slots stepped: n, a shorter
        prefix when a later slot's attempts would not fit its capacity (or would overdraw the
        retry budget), or 0, with nothing changed, when fewer than two slots would.
        """
        if slot < self.quiet_from:
            return 0
        if self.throttle_k is not None:
            self._throttle_turn(slot * self.dt)
            if self._p_reject(sum(self.throttle_req), sum(self.throttle_acc)) > 0:
                return 0
        n = len(fresh)
        w, dt, e = self.width, self.dt, self.error_rate
        abs_slots = np.arange(slot, slot + n)
        index = abs_slots % self.ring
        t_start = abs_slots * dt
        t_mid = t_start + dt / 2
        service_s = self.mean_s * self.slowdown
        attempts = self.ring_retry[index]
        attempts[:, 0] += fresh
        attempts[:, w] += fresh * t_mid
        timeouts = self.ring_timeout[index]
        successes = self.ring_success[index]
        plan = _QuietPlan(slot, n)
        late, succeed, partial = 0.0, len(self.quantiles), 0.0
        if math.isfinite(self.timeout_s):
            late, succeed, partial = self._outlast(self.timeout_s / self.slowdown)
            timeout_at = np.floor((t_mid + self.timeout_s) / dt + 0.5).astype(np.int64)
        success_at = np.floor((t_mid + service_s) / dt + 0.5).astype(np.int64)
        started = np.zeros(n)
        for k in range(w):
            mass, moment = attempts[:, k].copy(), attempts[:, w + k].copy()
            if e > 0:
                plan.rejected += e * float(mass.sum())
                self._quiet_fail(plan, attempts, k, e * mass, e * moment, t_mid)
                mass, moment = mass * (1 - e), moment * (1 - e)
            started += mass
            if late > 0:
                plan.place(
                    timeouts, plan.later_timeout, timeout_at, k, w, late * mass, late * moment
                )
            if late < 1:
                ok = 1 - late
                plan.place(successes, plan.later_success, success_at, k, w, ok * mass, ok * moment)
                plan.client.append((k, mass, moment))
            due, due_moment = timeouts[:, k], timeouts[:, w + k]
            plan.timed_out += float(due.sum())
            self._quiet_fail(plan, attempts, k, due, due_moment, t_start)
        capacity = self.servers * dt / service_s
        over = np.flatnonzero(started > capacity)
        fits = int(over[0]) if len(over) else n
        tokens = self.tokens
        if self.budget is not None:
            earned = self.budget * successes[:, :w].sum(axis=1)
            for j, (earn, spend) in enumerate(
                zip(earned.tolist(), plan.wanted.tolist(), strict=True)
            ):
                if j >= fits:
                    break
                tokens = min(self.burst, tokens + earn) - spend
                if tokens < -1e-12:
                    fits = j
        if self.throttle_k is not None and fits == n:
            requests = sum(self.throttle_req) + float(attempts[:, :w].sum())
            accepts = sum(self.throttle_acc) + float(successes[:, :w].sum())
            if (
                self._p_reject(requests, accepts) > 0
                or t_start[-1] + dt > (self.throttle_slot + 1) * self.throttle_slot_s
            ):
                fits = 0
        if fits < n:
            if fits >= 2:
                return self._quiet(slot, fresh[:fits])
            self.quiet_from = slot + 8  # load is near capacity: step slot by slot a while
            return 0
        self._commit_quiet(
            plan, fresh, attempts, successes, started, tokens, t_mid, (succeed, partial)
        )
        return n

    def _quiet_fail(self, plan, attempts, k, mass, moment, t_s) -> None:
        """Failures of try class k in a quiet step, by slot: retries (later, or joining the
        next class's attempts in the step) or final failures."""
        if self.retries_max == k:
            plan.failed.append((mass, moment))
            return
        origin = np.arange(plan.slot, plan.slot + plan.n)
        target = np.floor((t_s + self.delays[k]) / self.dt + EDGE_TOL).astype(np.int64)
        target = np.maximum(target, origin + 1)
        plan.place(attempts, plan.later_retry, target, k + 1, self.width, mass, moment)
        plan.wanted += mass

    def _commit_quiet(self, plan, fresh, attempts, successes, started, tokens, t_mid, outlast):
        recorder, b, w, n = self.recorder, self.b, self.width, plan.n
        index = np.arange(plan.slot, plan.slot + n) % self.ring
        for ring, name in (
            (self.ring_retry, "pending_retry"),
            (self.ring_timeout, "pending_timeout"),
            (self.ring_success, "pending_success"),
        ):
            setattr(self, name, getattr(self, name) - float(ring[index, :w].sum()))
            ring[index] = 0.0
        self.next_slot = plan.slot + n
        for ring, name, later in (
            (self.ring_retry, "pending_retry", plan.later_retry),
            (self.ring_timeout, "pending_timeout", plan.later_timeout),
            (self.ring_success, "pending_success", plan.later_success),
        ):
            for slots, k, mass, moment in later:
                rows = np.minimum(slots, self.next_slot + self.ring - 2) % self.ring
                ring[:, k] += np.bincount(rows, weights=mass, minlength=self.ring)
                ring[:, w + k] += np.bincount(rows, weights=moment, minlength=self.ring)
                setattr(self, name, getattr(self, name) + float(mass.sum()))
        recorder.fresh[b] += float(fresh.sum())
        offered = float(attempts[:, :w].sum())
        recorder.retries[b] += offered - float(attempts[:, 0].sum())
        recorder.attempts[b] += offered
        recorder.rejected[b] += plan.rejected
        recorder.timed_out[b] += plan.timed_out
        done = float(successes[:, :w].sum())
        recorder.succeeded[b] += done
        self._decide_many(recorder.fresh_ok, successes[:, :w], successes[:, w:])
        for mass, moment in plan.failed:
            self._decide_many(recorder.fresh_failed, mass, moment)
        if self.budget is not None:
            self.tokens = tokens
        if self.throttle_k is not None:
            self.throttle_req[self.throttle_slot % THROTTLE_SLOTS] += offered
            self.throttle_acc[self.throttle_slot % THROTTLE_SLOTS] += done
        succeed, partial = outlast
        total = float(started.sum())
        recorder.started += total
        self.srv_zero[self.slowdown] = self.srv_zero.get(self.slowdown, 0.0) + total
        for k, mass, moment in plan.client:
            keep = mass > 0
            if not keep.any():
                continue
            mass, moment = mass[keep], moment[keep]
            bins = np.minimum(
                np.clip((moment / mass / self.bin_s).astype(np.int64), 0, None), recorder.n_bins - 1
            )
            if k == 0:  # fresh attempts served at once: nothing before them
                low = int(bins.min())
                sums = np.bincount(bins - low, weights=mass)
                for offset in np.flatnonzero(sums).tolist():
                    key = (low + offset, self.slowdown, succeed)
                    self.cli_zero[key] = self.cli_zero.get(key, 0.0) + float(sums[offset])
            else:
                before = t_mid[keep] - moment / mass
                self.cli_chunks.append((bins, before, mass, self.slowdown, succeed))
                if partial > 0:
                    self.cli_points.append((bins, before + self.timeout_s, mass * partial))
        service_s = self.mean_s * self.slowdown
        busy = np.minimum(self.servers, started * service_s / self.dt)
        self.busy = float(busy[-1])
        recorder.busy_area[b] += float(busy.sum()) * self.dt
        self.busy_seconds += float(busy.sum()) * self.dt
        recorder.server_area[b] += self.servers * n * self.dt
        recorder.capacity_area[b] += self.servers / self.slowdown * n * self.dt
        self.steps += 1
        self.time_reached = (plan.slot + n) * self.dt

    # -- bins and the run ------------------------------------------------------------------
    def _slot_cum(self, first: int, count: int) -> np.ndarray:
        """Expected fresh requests (simulated units) from 0 to slot edges first .. first+count."""
        offset = first - self._fresh_first
        if self._fresh_first < 0 or offset < 0 or offset + count >= len(self._fresh_cum):
            self._fresh_first = first
            last = min(self.n_slots, first + max(count, CHUNK_SLOTS)) + 1
            edges = np.minimum(np.arange(first, last + 1) * self.dt, self.duration_s)
            self._fresh_cum = self.demand.cumulative(edges) / self.scale
            offset = 0
        return self._fresh_cum[offset : offset + count + 1]

    def _run_bin(self, b: int) -> None:
        """Step bin b: the slot its start cuts, its whole slots, the slot its end cuts."""
        dt = self.dt
        start, end = b * self.bin_s, min((b + 1) * self.bin_s, self.duration_s)
        if end <= start:
            return
        first = math.ceil(start / dt - EDGE_TOL)  # first slot edge in the bin
        last = math.floor(end / dt + EDGE_TOL)  # last slot edge in the bin
        bin_cum = self._bin_cum
        if first > last:  # the bin lies inside one slot
            self._apply_controls(last)
            self._step(last, start, end, float(bin_cum[b + 1] - bin_cum[b]))
            return
        cum = self._slot_cum(first, last - first)
        if first - start / dt > EDGE_TOL:
            self._apply_controls(first - 1)
            self._step(first - 1, start, first * dt, float(cum[0] - bin_cum[b]))
        fresh = np.diff(cum)
        count, j = last - first, 0
        while j < count:
            slot = first + j
            self._apply_controls(slot)
            n = min(count - j, MAX_QUIET_SLOTS)
            if self.controls:
                n = min(n, self.controls[0][0] - slot)
            taken = self._quiet(slot, fresh[j : j + n]) if n >= 2 and self.queued <= EPS else 0
            if taken == 0:
                self._step(slot, slot * dt, (slot + 1) * dt, float(fresh[j]))
                taken = 1
            j += taken
        if end / dt - last > EDGE_TOL:
            self._apply_controls(last)
            self._step(last, last * dt, end, float(bin_cum[b + 1] - cum[-1]))

    def _hist(self, slowdown: float, succeed: int) -> tuple[np.ndarray, float, float]:
        """Latency histogram of one unit of mass served at once (the first `succeed` service
        quantiles), its latency sum and its largest latency (cached)."""
        key = (slowdown, succeed)
        if key not in self.hist_cache:
            latency = slowdown * self.quantiles[:succeed]
            weight = self.quantile_weights[:succeed]
            top = float(latency[-1]) if succeed else 0.0
            self.hist_cache[key] = (bucket_counts(latency, weight), float(latency @ weight), top)
        return self.hist_cache[key]

    def _open_bins(self, bins: np.ndarray) -> np.ndarray:
        """Client bins to credit: a bin already settled (every request of it was decided, as
        far as the mean fresh-arrival times tell) passes its late residue to the next open
        one (the current bin is open until it closes)."""
        settled = self.recorder.client_latency.settled
        if not settled[bins].any():
            return bins
        open_bins = np.flatnonzero(~settled[: self.b + 1])
        return open_bins[np.minimum(np.searchsorted(open_bins, bins), len(open_bins) - 1)]

    def _flush_latencies(self, b: int) -> None:
        """Hand the bin's served masses to the Recorder: server view by the bin they started
        in, client view by their fresh-arrival bin."""
        recorder, every = self.recorder, len(self.quantiles)
        q, qw = self.quantiles, self.quantile_weights
        for slowdown, mass in self.srv_zero.items():
            if mass > 0:
                unit, total, top = self._hist(slowdown, every)
                recorder.add_server_histogram(b, unit * mass, total * mass, top)
        if self.srv_rows:
            # Waits within one histogram bucket (~6%) are pooled at their mean, as for clients.
            waits, masses, slowdowns = (np.array(c) for c in zip(*self.srv_rows, strict=True))
            group, inverse = _groups(bucket_index(waits), slowdowns)
            mass = np.bincount(inverse, weights=masses)
            waits = np.bincount(inverse, weights=masses * waits) / mass
            latency = waits[:, None] + slowdowns[group][:, None] * q[None, :]
            recorder.add_server_latencies(b, latency.ravel(), (mass[:, None] * qw[None, :]).ravel())
        for (fresh_bin, slowdown, succeed), mass in self.cli_zero.items():
            (where,) = self._open_bins(np.array([fresh_bin])).tolist()
            if mass > 0 and succeed > 0:
                unit, total, top = self._hist(slowdown, succeed)
                recorder.add_client_histogram(where, unit * mass, total * mass, top)
            if mass > 0 and math.isfinite(self.timeout_s):
                partial = self._outlast(self.timeout_s / slowdown)[2]
                if partial > 0:
                    self.cli_points.append((where, self.timeout_s, mass * partial))
        if self.cli_points:
            bins, latency, masses = (
                np.concatenate([np.atleast_1d(np.asarray(p[i])) for p in self.cli_points])
                for i in range(3)
            )
            bins = self._open_bins(bins.astype(np.int64))
            recorder.add_client_latencies(bins, latency, masses)
        if self.cli_rows or self.cli_chunks:
            self._flush_client_rows()
        self.srv_zero, self.srv_rows = {}, []
        self.cli_zero, self.cli_rows, self.cli_chunks, self.cli_points = {}, [], [], []

    def _flush_client_rows(self) -> None:
        """Client latencies of successes that waited or retried: masses with nearly the same
        time before their last attempt (one histogram bucket, ~6%) are pooled at their mean,
        so a bin costs one latency table however many cohorts it served."""
        columns = [np.array(c, dtype=float) for c in zip(*self.cli_rows, strict=True)]
        parts = [columns] if columns else []
        for bins, before, masses, slowdown, succeed in self.cli_chunks:
            size = len(masses)
            parts.append([bins, before, masses, np.full(size, slowdown), np.full(size, succeed)])
        bins, before, masses, slowdowns, succeeds = (
            np.concatenate([part[i] for part in parts]) for i in range(5)
        )
        keep = masses > 0
        bins, before, masses = bins[keep].astype(np.int64), before[keep], masses[keep]
        slowdowns, succeeds = slowdowns[keep], succeeds[keep].astype(np.int64)
        if not len(masses):
            return
        group, inverse = _groups(bins, bucket_index(before), succeeds, slowdowns)
        mass = np.bincount(inverse, weights=masses)
        before = np.bincount(inverse, weights=masses * before) / mass
        bins, slowdowns, succeeds = bins[group], slowdowns[group], succeeds[group]
        q, qw = self.quantiles, self.quantile_weights
        latency = before[:, None] + slowdowns[:, None] * q[None, :]
        ok = np.arange(len(q))[None, :] < succeeds[:, None]
        weight = mass[:, None] * qw[None, :] * ok
        where = np.broadcast_to(self._open_bins(bins)[:, None], latency.shape)
        self.recorder.add_client_latencies(where.ravel(), latency.ravel(), weight.ravel())

    def _close_bin(self, b: int) -> None:
        recorder = self.recorder
        self._flush_latencies(b)
        recorder.close_bin(b, self.queued, self.busy, self.servers)
        # Bins whose requests have all been decided get no more client latencies.
        end_s = min((b + 1) * self.bin_s, self.duration_s)
        if math.isfinite(self.timeout_s):
            oldest_s = end_s - self.life_s
        else:
            # Without a timeout a request lives as long as the queue holds it.
            queued_s = float(self.born[self.head]) if self.queued > EPS else end_s
            retried_s = self.retries_max * (self.sojourn_limit or 0.0)
            oldest_s = queued_s - retried_s - self.spare_s
        before = math.floor(oldest_s / self.bin_s)
        if before > 0:
            recorder.settle_client_bins(min(before, b))

    def run(self, progress: Callable[[float], None] | None = None) -> float:
        """Step to the end (or to Ctrl-C); return the simulated time reached."""
        self._start_controls()
        n_bins = self.recorder.n_bins
        wall_last = time.monotonic()
        end = self.duration_s
        try:
            for b in range(n_bins):
                self.b = b
                self._run_bin(b)
                self._close_bin(b)
                if progress is not None and time.monotonic() - wall_last > 0.2:
                    wall_last = time.monotonic()
                    progress((b + 1) / n_bins)
        except KeyboardInterrupt:
            self.interrupted = True
            end = min(self.time_reached, self.duration_s)
            if self.recorder.closed_bins <= self.b:
                self._close_bin(self.b)
        return end

    def simulated_events(self) -> int:
        """Steps taken (each advances every cohort at once)."""
        return self.steps


def _groups(*columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with equal values in every column: (first row of each group, group of each row)."""
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for column in columns:
        _, code = np.unique(column, return_inverse=True)
        key = key * (int(code.max()) + 1) + code.ravel()
    _, group, inverse = np.unique(key, return_index=True, return_inverse=True)
    return group, inverse.ravel()


class _QuietPlan:
    """What a quiet step would do, kept apart until it is known to fit."""

    __slots__ = ("slot", "n", "later_retry", "later_timeout", "later_success", "failed",
                 "client", "wanted", "rejected", "timed_out")  # fmt: skip

    def __init__(self, slot: int, n: int) -> None:
        self.slot, self.n = slot, n
        self.later_retry: list = []
        self.later_timeout: list = []
        self.later_success: list = []
        self.failed: list = []
        self.client: list = []
        self.wanted = np.zeros(n)
        self.rejected = self.timed_out = 0.0

    def place(self, inside, later, slots, k, w, mass, moment) -> None:
        """Masses of class k due at absolute `slots`: into `inside` (rows of this step's
        slots) when due in the step, else onto the list `later` for the rings."""
        rel = slots - self.slot
        here = rel < self.n
        if here.all():
            inside[:, k] += np.bincount(rel, weights=mass, minlength=self.n)
            inside[:, w + k] += np.bincount(rel, weights=moment, minlength=self.n)
            return
        if here.any():
            inside[:, k] += np.bincount(rel[here], weights=mass[here], minlength=self.n)
            inside[:, w + k] += np.bincount(rel[here], weights=moment[here], minlength=self.n)
        if not here.all():
            away = ~here
            later.append((slots[away], k, mass[away], moment[away]))
