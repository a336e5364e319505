"""The fluid engine: the DES's scenario semantics stepped in numpy, requests as a continuous mass.

Time advances in slots of `dt` seconds (six or more per client timeout, at most two seconds;
a bin is a whole number of slots). Where nothing queues and the load stays below capacity, one
step spans many slots (up to the next bin edge or control action), so a quiet month costs a
few thousand steps and a day of outage about fifty thousand.

In a step, fresh demand (`Demand.cumulative`, divided by `scale`) and the retries falling due
arrive as a new cohort; the pool serves `servers · h / mean` attempts from the queue (fifo
from the oldest cohort, lifo from the newest, lifo above `lifo_over`); what is left waits.
A cohort keeps its arrival time and its mass per try count, so its clients give up when its
age passes `client.timeout`: they count as timed out and retry after the mean backoff delay
(retry budget applied), while their work stays queued and is still served unless
`drop_expired`. An attempt started at wait w times out in service with probability
P(S > timeout − w), from quantiles of the service-time distribution; completions count as
successes one mean service time later. Controls reuse the DES's decision rules: capacity from
`planned_changes` and the `DailyPlanner` (which reads the load recorded so far), faults from
`combine_faults`, the autoscaler from `Autoscaler`.

Approximations, by design: below capacity nothing waits (no Erlang C queueing delay: latency
is the service time alone); a finite queue rejects only the mass above its limit, so a loss
system (`queue_limit = 0`) blocks only the excess of load over capacity, not Erlang B's share;
backoff delays are their means; throttling and the retry budget act on expected counts; a
request's fate is counted in the bin of the mean fresh-arrival time of its try class.

Servers are rounded to whole simulated servers at `scale` as in the DES, and every count goes
into the Recorder in simulated units (real / scale), so both engines' outputs compare directly.
Latency goes into the Recorder as weighted histograms (each served mass spread over the
service-time quantiles), set per bin as the DES's would be.

This module is longer than ~400 lines because the step, the cohort queue and the controls
share one mutable state whose pieces make no sense apart.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable

import numpy as np

from sim.engine.controls import (
    Autoscaler,
    DailyPlanner,
    combine_faults,
    fault_label,
    planned_changes,
)
from sim.engine.des import RETRY_BUDGET_BURST, THROTTLE_SLOTS, service_time_draw
from sim.metrics import HIST_EDGES, Recorder, bucket_counts, histogram_percentiles
from sim.scenario import Backoff, Scenario, ServiceTime
from sim.workload import Demand

MAX_DT_S = 2.0  # the longest slot (a timeout asks for shorter ones)
SLOTS_PER_TIMEOUT = 6  # slots per client timeout (the age resolution of cohorts)
MIN_DT_S = 0.01
QUIET_LOAD = 0.98  # a long step is taken only while the load stays below this share
EPS = 1e-9  # mass (simulated requests) below which a queue counts as empty
MAX_RING_SLOTS = 1 << 18  # longest delay a retry, timeout or completion can be scheduled
CHUNK_SLOTS = 1 << 18  # demand is evaluated this many slots at a time


def service_quantiles(spec: ServiceTime) -> tuple[np.ndarray, np.ndarray]:
    """Service times (seconds, sorted) and their probabilities, keeping the mean of `spec`.

    Probability is cut evenly up to the 90th percentile and log-evenly beyond, down to
    1 − 10⁻⁵, so the tail percentiles an SLO reads (p99) are resolved as well as the median.
    """
    edges = np.concatenate([np.linspace(0.0, 0.9, 46), 1.0 - np.logspace(-1, -5, 41)[1:], [1.0]])
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


def slots_per_bin(bin_s: float, timeout_s: float) -> int:
    """Slots in a bin: at most MAX_DT_S each, SLOTS_PER_TIMEOUT or more per timeout.

    Cohorts are born mid-slot, so their ages are whole slots; with the timeout half a slot
    past a whole number of slots, a cohort is either wholly younger or wholly older than the
    timeout, and clients give up at the right age on average.
    """
    least = max(1, math.ceil(bin_s / MAX_DT_S - 1e-9))
    if not math.isfinite(timeout_s):
        return least
    least = max(least, math.ceil(bin_s * SLOTS_PER_TIMEOUT / max(timeout_s, MIN_DT_S) - 1e-9))
    candidates = range(least, 2 * least + 8)
    return min(candidates, key=lambda n: abs((timeout_s * n / bin_s) % 1.0 - 0.5))


def backoff_means(spec: Backoff | None, retries: int) -> np.ndarray:
    """Mean delay (seconds) before the retry that follows a failed attempt with k tries before."""
    if spec is None or retries == 0:
        return np.zeros(0)
    delays, previous = [], 0.0
    for tries in range(retries):
        if spec.jitter == "decorrelated":
            delay = min(spec.cap, (spec.base + max(spec.base, 3 * previous)) / 2)
        else:
            top = min(spec.cap, spec.base * spec.multiplier**tries)
            delay = {"full": top / 2, "equal": 0.75 * top}.get(spec.jitter, top)
        delays.append(delay)
        previous = delay
    return np.asarray(delays)


class FluidEngine:
    """One fluid run of a scenario, writing into a Recorder (interface of `DesEngine`).

    Masses travel as rows of 2·W numbers (W = retries + 1): the mass with k tries before, then
    the sum of mass × fresh-arrival time per k, so a request's final fate (`fresh_ok`,
    `fresh_failed`) is counted in the bin its fresh attempt arrived in, as the DES counts it.
    """

    def __init__(self, scenario: Scenario, demand: Demand, recorder: Recorder) -> None:
        meta, service, client = scenario.scenario, scenario.service, scenario.client
        self.scenario, self.demand, self.recorder = scenario, demand, recorder
        self.scale, self.bin_s, self.duration_s = meta.scale, meta.bin, meta.duration
        self.interrupted = False
        self.steps = 0
        # Clients.
        self.timeout_s = client.timeout if client and client.timeout else math.inf
        self.retries_max = n = client.retries if client else 0
        self.width = w = n + 1
        self.delays = backoff_means(client.backoff if client else None, n).tolist()
        self.budget = client.retry_budget if client else None
        self.tokens = RETRY_BUDGET_BURST
        self.throttle_k = client.throttle_k if client else None
        self.throttle_slot_s = client.throttle_window / THROTTLE_SLOTS if client else 1.0
        self.throttle_req = [0.0] * THROTTLE_SLOTS
        self.throttle_acc = [0.0] * THROTTLE_SLOTS
        self.throttle_slot = 0
        # Time grid: a bin is a whole number of slots.
        self.slots_per_bin = slots_per_bin(self.bin_s, self.timeout_s)
        self.dt = self.bin_s / self.slots_per_bin
        self.n_slots = math.ceil(self.duration_s / self.dt - 1e-9)
        # The pool.
        self.mean_s = service.time.mean_s
        self.quantiles, self.quantile_weights = service_quantiles(service.time)
        # P(S > quantile j), for the attempts that outlast their timeout in service.
        self.beyond = np.concatenate([[1.0], 1.0 - np.cumsum(self.quantile_weights)])
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
        slowest = self.mean_s * math.prod(f.slowdown for f in scenario.faults)
        longest = max(self.delays, default=0.0) + slowest
        longest += self.timeout_s if math.isfinite(self.timeout_s) else 0.0
        self.ring = min(MAX_RING_SLOTS, math.ceil(longest / self.dt) + self.slots_per_bin + 2)
        self.ring_retry = np.zeros((self.ring, 2 * w))
        self.ring_timeout = np.zeros((self.ring, 2 * w))
        self.ring_success = np.zeros((self.ring, 2 * w))
        self.pending_retry = self.pending_timeout = self.pending_success = 0.0
        self.next_slot = 0
        # Per-bin latency: zero-wait mass by slowdown, and (wait, mass, slowdown) rows.
        self.lat_zero: dict[float, float] = {}
        self.lat_rows: list[tuple[float, float, float]] = []
        self.lat_cache: dict[float, tuple[np.ndarray, list[float]]] = {}
        recorder.hist = np.zeros(len(HIST_EDGES) - 1)
        self.b = 0
        self._fresh_first = -1
        self._fresh_cum = np.zeros(0)
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

    def set_planned_servers(self, real_servers: float) -> None:
        """Set the planned number of servers (real units); faults still apply on top."""
        self.planned = self.scaled(real_servers)
        self.servers = max(0, round(self.planned * self.fault_factor))

    def set_fault(self, capacity_factor: float, slowdown: float, error_rate: float) -> None:
        """Apply the combined effect of the active faults (1, 1, 0 when none)."""
        self.fault_factor, self.slowdown = capacity_factor, slowdown
        self.error_rate = 1 - (1 - self.error_base) * (1 - error_rate)
        self.servers = max(0, round(self.planned * self.fault_factor))

    def observe(self) -> dict:
        """State for an autoscaler (real units): servers, busy, queue, busy server-seconds."""
        s = self.scale
        return {
            "servers": self.planned * s,
            "busy": self.busy * s,
            "queue": self.queued * s,
            "busy_seconds": self.busy_seconds * s,
        }

    # -- fates and delayed work ------------------------------------------------------------
    def _decide(self, counter: list, row: np.ndarray) -> None:
        """Count the requests in `row` (decided now) in the bins their fresh attempts came in."""
        w = self.width
        values = row.tolist()
        for k in range(w):
            self._count_fate(counter, values[k], values[w + k])

    def _count_fate(self, counter: list, mass: float, moment: float) -> None:
        if mass > 0:
            b = int(moment / mass / self.bin_s)
            counter[min(max(b, 0), len(counter) - 1)] += mass

    def _ring_slot(self, t_s: float) -> int:
        """The ring row of time `t_s`, never before the next step nor past the ring."""
        slot = min(max(round(t_s / self.dt), self.next_slot), self.next_slot + self.ring - 1)
        return slot % self.ring

    def _due(self, ring: np.ndarray, slot: int, n: int) -> np.ndarray:
        if n == 1:
            index = slot % self.ring
            due = ring[index].copy()
        else:
            index = np.arange(slot, slot + n) % self.ring
            due = ring[index].sum(axis=0)
        ring[index] = 0.0
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
        first, ring, dt = self.next_slot, self.ring_retry, self.dt
        for k in range(n):
            mass, moment = values[k], values[w + k]
            if mass <= 0:
                continue
            if share < 1.0:
                self._count_fate(failed, mass * (1.0 - share), moment * (1.0 - share))
            if share > 0:
                slot = min(max(round((t_s + self.delays[k]) / dt), first), first + self.ring - 1)
                slot %= self.ring
                ring[slot, k + 1] += mass * share
                ring[slot, w + k + 1] += moment * share
        self.pending_retry += wanted * share
        return wanted + values[n]

    def _succeed(self, row: np.ndarray) -> None:
        mass = float(row[: self.width].sum())
        self.recorder.succeeded[self.b] += mass
        self._decide(self.recorder.fresh_ok, row)
        if self.budget is not None:
            self.tokens = min(RETRY_BUDGET_BURST, self.tokens + self.budget * mass)
        if self.throttle_k is not None:
            self.throttle_acc[self.throttle_slot % THROTTLE_SLOTS] += mass

    def _time_out(self, row: np.ndarray, t_s: float) -> None:
        self.recorder.timed_out[self.b] += self._fail(row, t_s)

    def _later(self, kind: str, row: np.ndarray, t_s: float) -> None:
        """Time out (`kind` "timeout") or succeed ("success") at `t_s`: now if in this step."""
        if round(t_s / self.dt) < self.next_slot:
            if kind == "timeout":
                self._time_out(row, t_s)
            else:
                self._succeed(row)
            return
        mass = float(row[: self.width].sum())
        if kind == "timeout":
            self.ring_timeout[self._ring_slot(t_s)] += row
            self.pending_timeout += mass
        else:
            self.ring_success[self._ring_slot(t_s)] += row
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
        if math.isfinite(self.timeout_s):
            left = (self.timeout_s - wait) / self.slowdown
            late = max(0.0, float(self.beyond[np.searchsorted(self.quantiles, left, "right")]))
            if late > 0:
                self._later("timeout", row * late, now + self.timeout_s - wait)
                if late >= 1.0:
                    return
                row = row * (1.0 - late)
        self._later("success", row, now + self.mean_s * self.slowdown)

    def _note_start(self, mass: float, wait: float) -> None:
        recorder = self.recorder
        recorder.started += mass
        if wait > 0:
            recorder.waited += mass
            recorder.wait_sum += mass * wait
            self.lat_rows.append((wait, mass, self.slowdown))
        else:
            self.lat_zero[self.slowdown] = self.lat_zero.get(self.slowdown, 0.0) + mass

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
    def _throttle(self, t_s: float, row: np.ndarray) -> np.ndarray:
        """Client-side adaptive throttling on expected counts (the DES's window of slots)."""
        slot = int(t_s / self.throttle_slot_s)
        for s in range(self.throttle_slot + 1, min(slot, self.throttle_slot + THROTTLE_SLOTS) + 1):
            self.throttle_req[s % THROTTLE_SLOTS] = 0.0
            self.throttle_acc[s % THROTTLE_SLOTS] = 0.0
        self.throttle_slot = max(slot, self.throttle_slot)
        requests, accepts = sum(self.throttle_req), sum(self.throttle_acc)
        self.throttle_req[slot % THROTTLE_SLOTS] += float(row[: self.width].sum())
        p_reject = max(0.0, (requests - self.throttle_k * accepts) / (requests + 1))
        if p_reject <= 0:
            return row
        throttled = row * p_reject
        self.recorder.throttled[self.b] += float(throttled[: self.width].sum())
        self._decide(self.recorder.fresh_failed, throttled)
        return row - throttled

    def _step(self, slot: int, n: int, t0: float, t1: float, fresh: float) -> None:
        recorder, b, w = self.recorder, self.b, self.width
        h, now = t1 - t0, (t0 + t1) / 2
        self.next_slot = slot + n
        self.steps += 1
        if self.pending_success > EPS:
            done = self._due(self.ring_success, slot, n)
            self.pending_success -= float(done[:w].sum())
            self._succeed(done)
        if self.pending_timeout > EPS:
            late = self._due(self.ring_timeout, slot, n)
            self.pending_timeout -= float(late[:w].sum())
            self._time_out(late, t0)
        if self.queued > EPS and math.isfinite(self.timeout_s):
            self._expire(now)
        # New attempts: fresh requests and the retries due.
        if self.pending_retry > EPS:
            row = self._due(self.ring_retry, slot, n)
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

    # -- bins and the run ------------------------------------------------------------------
    def _fresh_slots(self, first: int, count: int) -> np.ndarray:
        """Expected fresh requests (simulated units) in slots first .. first+count-1."""
        offset = first - self._fresh_first
        if self._fresh_first < 0 or offset < 0 or offset + count >= len(self._fresh_cum):
            self._fresh_first = first
            last = min(self.n_slots, first + max(count, CHUNK_SLOTS))
            edges = np.minimum(np.arange(first, last + 1) * self.dt, self.duration_s)
            self._fresh_cum = self.demand.cumulative(edges) / self.scale
            offset = 0
        return np.diff(self._fresh_cum[offset : offset + count + 1])

    def _run_bin(self, b: int) -> None:
        first = b * self.slots_per_bin
        count = min(self.slots_per_bin, self.n_slots - first)
        fresh = self._fresh_slots(first, count)
        j = 0
        while j < count:
            slot = first + j
            self._apply_controls(slot)
            n = 1
            if self.queued <= EPS and j + 1 < count:
                n = count - j
                if self.controls:
                    n = max(1, min(n, self.controls[0][0] - slot))
                if n > 1:
                    room = QUIET_LOAD * self.servers * self.dt / (self.mean_s * self.slowdown)
                    peak = float(fresh[j : j + n].max()) + self.pending_retry + self.pending_timeout
                    if peak > room * (1 - self.error_rate):
                        n = 1
            t0 = slot * self.dt
            t1 = min((slot + n) * self.dt, self.duration_s)
            self._step(slot, n, t0, t1, float(fresh[j : j + n].sum()))
            j += n

    def _latency_hist(self, waits: np.ndarray, masses: np.ndarray, slowdowns: np.ndarray):
        """Weighted latency histogram of served masses: wait plus each service quantile."""
        latency = waits[:, None] + slowdowns[:, None] * self.quantiles[None, :]
        weight = (masses[:, None] * self.quantile_weights[None, :]).ravel()
        return bucket_counts(latency.ravel(), weight), latency.max()

    def _close_bin(self, b: int) -> None:
        recorder = self.recorder
        recorder.close_bin(b, self.queued, self.busy, self.servers)
        if not self.lat_zero and not self.lat_rows:
            return
        if not self.lat_rows and len(self.lat_zero) == 1:
            # The common quiet bin: only zero-wait service at one slowdown (cached shape).
            ((slowdown, mass),) = self.lat_zero.items()
            if slowdown not in self.lat_cache:
                one = np.ones(1)
                unit, top = self._latency_hist(np.zeros(1), one, one * slowdown)
                pct = histogram_percentiles(unit, (0.5, 0.95, 0.99))
                self.lat_cache[slowdown] = (unit, pct, top)
            unit, pct, top = self.lat_cache[slowdown]
            hist = unit * mass
            mean_sum = mass * slowdown * self.mean_s
        else:
            waits = np.array([0.0] * len(self.lat_zero) + [r[0] for r in self.lat_rows])
            masses = np.array(list(self.lat_zero.values()) + [r[1] for r in self.lat_rows])
            slowdowns = np.array(list(self.lat_zero) + [r[2] for r in self.lat_rows])
            hist, top = self._latency_hist(waits, masses, slowdowns)
            pct = histogram_percentiles(hist, (0.5, 0.95, 0.99))
            mass = float(masses.sum())
            mean_sum = float(masses @ (waits + slowdowns * self.mean_s))
        recorder.latency_pct[b] = pct
        recorder.hist = recorder.hist + hist
        recorder.latency_sum += mean_sum
        recorder.latency_count += mass
        recorder.latency_max = max(recorder.latency_max, float(top))
        self.lat_zero, self.lat_rows = {}, []

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
            end = min(self.next_slot * self.dt, self.duration_s)
            if self.recorder.closed_bins <= self.b:
                self._close_bin(self.b)
        return end

    def simulated_events(self) -> int:
        """Steps taken (each advances every cohort at once)."""
        return self.steps
