"""The discrete-event engine: requests against a server pool, on a SimPy clock.

The request path is lean by design (it runs millions of times): no SimPy process per request.
A fresh arrival, a completion, a client's timeout and a retry are plain SimPy events with a
callback; the arrival and timer events are reused, completion events are recycled, random
numbers come from numpy in blocks, and the pool keeps its own counters. Rare controls
(capacity schedule, planner, autoscaler, faults) are ordinary SimPy processes in
`controls.py`, acting through `set_planned_servers` and `set_fault`.

An attempt is a small list `[arrival_t, deadline_t, tries, state, last_backoff_s, fresh_bin,
first_t]`;
its state is LIVE (its client waits), GONE (its client timed out; the server may still do the
work) or DONE (answered). `fresh_bin` is the bin where its request first arrived: the request's
final fate (succeeded on some attempt, or failed for good) is counted there, so the SLO's
success ratio compares like with like and carries no lag noise; `first_t` is when the request
was first sent, so a success records what its client saw (first send to success, retries and
backoff included) beside the attempt's own time in system. Timeouts are all equal, so
deadlines come in arrival order and one timer event walks them in a deque. The engine writes
only into a `Recorder`. (Over 400 lines: the request path, the clients and the controls'
interface share the engine's state, and splitting them would put attribute hops on the path.)
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import simpy
from simpy.events import NORMAL, Event

from sim.engine.controls import start_controls
from sim.metrics import Recorder
from sim.scenario import Scenario
from sim.workload import ArrivalSampler, Demand, service_time_draw

T, DEADLINE, TRIES, STATE, BACKOFF, FRESH_BIN, FIRST_T = range(7)
LIVE, GONE, DONE = 0, 1, 2
BLOCK = 65536
# Client-side state is kept in REAL units so a run means the same at every scale (one
# simulated request stands for `scale` real ones): the retry budget's bucket holds real tokens
# (at most RETRY_BUDGET_BURST), a simulated success earns budget · scale of them and a simulated
# retry costs scale. A retry passes while the bucket holds one real token, as a real client's
# would, so at scale > 1 the bucket may end up to scale − 1 tokens in debt, which later
# successes repay: the long-run retry rate is exact and a burst overshoots by less than one
# simulated retry (`scale` real ones), the resolution of any count at that scale. Throttling
# counts real requests and accepts, so the "+ 1" of P_reject weighs one real request; its
# counts still move in steps of `scale`, so a window holding only a few simulated requests is
# noisier than the real one (20 real requests a window at scale 5: amplification 0.22 against
# 0.20 at scale 1; 100 a window: 0.051 against 0.052).
RETRY_BUDGET_BURST = 10.0  # real tokens (real retries)
THROTTLE_SLOTS = 10  # time slots of the throttling window (a resolution, not a count)
# Latencies are handed to the Recorder at least every this many expected attempts (a run
# chunk), so the engine's buffers stay small however long a bin is.
FLUSH_REQUESTS = 32768


class _Blocks:
    """Numbers drawn from numpy in blocks and handed out one at a time."""

    __slots__ = ("_draw", "_next")

    def __init__(self, draw: Callable[[int], np.ndarray]) -> None:
        self._draw = draw
        self._next = iter(()).__next__

    def __call__(self) -> float:
        try:
            return self._next()
        except StopIteration:
            self._next = iter(self._draw(BLOCK).tolist()).__next__
            return self._next()


class DesEngine:
    """One discrete-event run of a scenario, writing into a Recorder."""

    __slots__ = (
        "env", "scenario", "demand", "recorder", "scale", "bin_s", "duration_s",
        "b", "next_edge", "last", "busy_acc", "queue_acc", "last_srv", "srv_acc", "cap_acc",
        "fresh", "attempts", "retries", "succeeded", "timed_out", "rejected", "dropped",
        "throttled", "fresh_ok", "fresh_failed", "server_lat", "client_bins", "client_lat",
        "servers", "planned", "busy", "queue", "take", "queue_limit", "lifo_over",
        "drop_expired", "sojourn_limit", "slowdown", "fault_factor", "error_base", "error_rate",
        "service", "error_draw", "jitter", "throttle_draw", "free_events", "complete_cbs",
        "arrival_event", "arrival_cbs", "arrivals", "arrival_times", "arrival_i",
        "timeout_s", "retries_max", "pending", "timer", "timer_cbs", "timer_armed",
        "backoff", "budget", "tokens", "token_earn", "throttle_k", "throttle_req", "throttle_acc",
        "throttle_slot", "throttle_slot_s", "timer_fires", "controls_steps", "interrupted",
        "busy_closed",
    )  # fmt: skip

    def __init__(self, scenario: Scenario, demand: Demand, recorder: Recorder) -> None:
        meta = scenario.scenario
        self.env = simpy.Environment()
        self.scenario, self.demand, self.recorder = scenario, demand, recorder
        self.scale, self.bin_s, self.duration_s = meta.scale, meta.bin, meta.duration
        # One stream per purpose (common random numbers): a parameter that changes how many
        # draws one purpose takes (jitter kind, error rate, throttling) leaves the others'
        # draws as they were. Children 0 and 1 are the arrival and service streams of old.
        arrival_rng, service_rng, error_rng, jitter_rng, throttle_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(meta.seed).spawn(5)
        )
        # Bins and time integrals.
        self.b, self.next_edge, self.last = 0, self.bin_s, 0.0
        self.busy_acc = self.queue_acc = self.srv_acc = self.cap_acc = 0.0
        self.last_srv = self.busy_closed = 0.0
        for name in ("fresh", "attempts", "retries", "succeeded", "timed_out", "rejected",
                     "dropped", "throttled", "fresh_ok", "fresh_failed"):  # fmt: skip
            setattr(self, name, getattr(recorder, name))
        # Latencies wait here (flushed at each bin's end and each run chunk) so the request
        # path only appends to lists.
        self.server_lat: list[float] = []
        self.client_bins: list[int] = []
        self.client_lat: list[float] = []
        # The pool.
        service = scenario.service
        self.planned = self.scaled(service.servers)
        self.servers, self.busy, self.queue = self.planned, 0, deque()
        self.take = self.queue.pop if service.discipline == "lifo" else self.queue.popleft
        self.queue_limit = service.queue_limit / self.scale if service.queue_limit > 0 else 0
        self.lifo_over = service.lifo_over / self.scale if service.lifo_over is not None else None
        self.drop_expired = service.drop_expired
        self.sojourn_limit = service.sojourn_limit
        self.slowdown, self.fault_factor = 1.0, 1.0
        self.error_base = self.error_rate = service.error_rate
        self.service = _Blocks(service_time_draw(service.time, service_rng))
        self.error_draw = _Blocks(error_rng.random)
        self.jitter = _Blocks(jitter_rng.random)
        self.throttle_draw = _Blocks(throttle_rng.random)
        self.free_events: list[Event] = []
        self.complete_cbs = [self._on_complete]
        # Arrivals: one reused event walks blocks of arrival times.
        self.arrivals = ArrivalSampler(demand, self.scale, arrival_rng)
        self.arrival_times, self.arrival_i = [], 0
        self.arrival_event = Event(self.env)
        self.arrival_event._ok = True
        self.arrival_cbs = [self._on_arrival]
        # Clients.
        client = scenario.client
        self.timeout_s = client.timeout if client and client.timeout else math.inf
        self.retries_max = client.retries if client else 0
        self.backoff = client.backoff if client else None
        self.budget = client.retry_budget if client else None
        self.tokens = RETRY_BUDGET_BURST
        self.token_earn = self.budget * self.scale if self.budget is not None else 0.0
        self.throttle_k = client.throttle_k if client else None
        self.throttle_slot_s = (client.throttle_window / THROTTLE_SLOTS) if client else 1.0
        self.throttle_req = [0] * THROTTLE_SLOTS
        self.throttle_acc = [0] * THROTTLE_SLOTS
        self.throttle_slot = 0
        self.pending: deque = deque()
        self.timer = Event(self.env)
        self.timer._ok = True
        self.timer_cbs = [self._on_timer]
        self.timer_armed = False
        self.timer_fires = self.controls_steps = 0
        self.interrupted = False

    def scaled(self, real_servers: float) -> int:
        """Simulated servers standing for `real_servers` at this run's scale."""
        return max(0, round(real_servers / self.scale)) if real_servers else 0

    # -- time and bins ---------------------------------------------------------------------
    def _roll(self, now: float) -> None:
        """Close every bin that ended at or before `now`; the last bin closes in `_finish`, so
        no event of the run (an edge summed in floating point may fall a hair before the
        end) lands in a bin already closed."""
        recorder = self.recorder
        while now >= self.next_edge and self.b < recorder.n_bins - 1:
            self._close_bin(self.next_edge)
            self.next_edge += self.bin_s

    def _close_bin(self, edge: float) -> None:
        recorder, b = self.recorder, self.b
        dt = edge - self.last
        qlen = len(self.queue)
        recorder.busy_area[b] = self.busy_acc + self.busy * dt
        self.busy_closed += recorder.busy_area[b]
        recorder.queue_area[b] = self.queue_acc + qlen * dt
        dt_srv = edge - self.last_srv
        recorder.server_area[b] = self.srv_acc + self.servers * dt_srv
        recorder.capacity_area[b] = self.cap_acc + self.servers / self.slowdown * dt_srv
        self.busy_acc = self.queue_acc = self.srv_acc = self.cap_acc = 0.0
        self.last = self.last_srv = edge
        self._flush_latencies()
        recorder.close_bin(b, qlen, self.busy, self.servers)
        self.b = min(b + 1, recorder.n_bins - 1)

    def _advance(self, now: float) -> None:
        """Bring bins and time integrals up to `now`; every callback starts here."""
        if now >= self.next_edge:
            self._roll(now)
        dt = now - self.last
        self.busy_acc += self.busy * dt
        self.queue_acc += len(self.queue) * dt
        self.last = now

    # -- the request path --------------------------------------------------------------------
    def _on_arrival(self, event: Event) -> None:
        now = self.env._now
        self._advance(now)
        b = self.b
        self.fresh[b] += 1
        self._send([now, now + self.timeout_s, 0, LIVE, 0.0, b, now], now)
        i = self.arrival_i
        if i == len(self.arrival_times):
            block = self.arrivals.next_block()
            if block is None:
                return
            self.arrival_times, i = block, 0
        self.arrival_i = i + 1
        event.callbacks = self.arrival_cbs
        self.env.schedule(event, NORMAL, self.arrival_times[i] - now)

    def _send(self, attempt: list, now: float) -> None:
        """An attempt leaves its client: throttled, failed fast, started, queued or rejected."""
        b = self.b
        if self.throttle_k is not None and self._throttled(now):
            self.throttled[b] += 1
            self.fresh_failed[attempt[FRESH_BIN]] += 1
            attempt[STATE] = DONE
            return
        self.attempts[b] += 1
        if self.error_rate and self.error_draw() < self.error_rate:
            self.rejected[b] += 1
            attempt[STATE] = DONE
            self._retry_or_fail(attempt, now)
            return
        if self.busy < self.servers:
            self.recorder.started += 1
            self._start(attempt, now)
        elif len(self.queue) >= self.queue_limit:
            self.rejected[b] += 1
            attempt[STATE] = DONE
            self._retry_or_fail(attempt, now)
            return
        else:
            self.queue.append(attempt)
        if self.timeout_s != math.inf:
            self.pending.append(attempt)
            if not self.timer_armed:
                self.timer_armed = True
                self.timer.callbacks = self.timer_cbs
                self.env.schedule(self.timer, NORMAL, attempt[DEADLINE] - now)

    def _start(self, attempt: list, now: float) -> None:
        self.busy += 1
        event = self.free_events.pop() if self.free_events else Event(self.env)
        event._ok = True
        event._value = attempt
        event.callbacks = self.complete_cbs
        self.env.schedule(event, NORMAL, self.service() * self.slowdown)

    def _on_complete(self, event: Event) -> None:
        now = self.env._now
        self._advance(now)
        attempt = event._value
        self.free_events.append(event)
        self.server_lat.append(now - attempt[T])
        if attempt[STATE] == LIVE:
            attempt[STATE] = DONE
            self.client_bins.append(attempt[FRESH_BIN])
            self.client_lat.append(now - attempt[FIRST_T])
            self.succeeded[self.b] += 1
            self.fresh_ok[attempt[FRESH_BIN]] += 1
            if self.budget is not None:
                self.tokens = min(RETRY_BUDGET_BURST, self.tokens + self.token_earn)
            if self.throttle_k is not None:
                self.throttle_acc[self.throttle_slot % THROTTLE_SLOTS] += self.scale
        self.busy -= 1
        if self.queue and self.busy < self.servers:
            self._start_queued(now)

    def _start_queued(self, now: float) -> None:
        """Start queued attempts while servers are free (skipping or shedding some)."""
        queue, recorder = self.queue, self.recorder
        while queue and self.busy < self.servers:
            lifo = self.lifo_over is not None and len(queue) > self.lifo_over
            attempt = queue.pop() if lifo else self.take()
            if attempt[STATE] == GONE and self.drop_expired:
                self.dropped[self.b] += 1
                continue
            wait = now - attempt[T]
            if self.sojourn_limit is not None and wait > self.sojourn_limit:
                if attempt[STATE] == LIVE:
                    self.rejected[self.b] += 1
                    attempt[STATE] = DONE
                    self._retry_or_fail(attempt, now)
                else:
                    self.dropped[self.b] += 1
                continue
            recorder.started += 1
            if wait > 0:
                recorder.waited += 1
                recorder.wait_sum += wait
            self._start(attempt, now)

    # -- clients: timeouts, retries, budgets, throttling -----------------------------------
    def _on_timer(self, event: Event) -> None:
        now = self.env._now
        self._advance(now)
        self.timer_fires += 1
        pending = self.pending
        while pending and pending[0][DEADLINE] <= now:
            attempt = pending.popleft()
            if attempt[STATE] == LIVE:
                attempt[STATE] = GONE
                self.timed_out[self.b] += 1
                self._retry_or_fail(attempt, now)
        while pending and pending[0][STATE] != LIVE:
            pending.popleft()
        if pending:
            event.callbacks = self.timer_cbs
            self.env.schedule(event, NORMAL, pending[0][DEADLINE] - now)
        else:
            self.timer_armed = False

    def _retry_or_fail(self, attempt: list, now: float) -> None:
        tries = attempt[TRIES]
        if tries >= self.retries_max or (self.budget is not None and self.tokens < 1.0):
            self.fresh_failed[attempt[FRESH_BIN]] += 1
            return
        if self.budget is not None:
            self.tokens -= self.scale
        delay = self._backoff(tries, attempt[BACKOFF])
        retry = self.env.timeout(delay, (tries + 1, delay, attempt[FRESH_BIN], attempt[FIRST_T]))
        retry.callbacks.append(self._on_retry)

    def _backoff(self, tries: int, previous_s: float) -> float:
        spec = self.backoff
        if spec.jitter == "decorrelated":
            # AWS "Exponential Backoff And Jitter": sleep = min(cap, U(base, 3 · sleep)) with
            # sleep starting at base, so even the first retry is jittered (previous_s is 0).
            high = 3 * max(spec.base, previous_s)
            return min(spec.cap, spec.base + self.jitter() * (high - spec.base))
        delay = min(spec.cap, spec.base * spec.multiplier**tries)
        if spec.jitter == "full":
            return self.jitter() * delay
        if spec.jitter == "equal":
            return delay / 2 + self.jitter() * delay / 2
        return delay

    def _on_retry(self, event: Event) -> None:
        now = self.env._now
        self._advance(now)
        tries, delay, fresh_bin, first_t = event._value
        self.retries[self.b] += 1
        self._send([now, now + self.timeout_s, tries, LIVE, delay, fresh_bin, first_t], now)

    def _throttled(self, now: float) -> bool:
        """Client-side adaptive throttling (Google SRE book): reject locally with P_reject."""
        slot = int(now / self.throttle_slot_s)
        if slot != self.throttle_slot:
            for s in range(
                self.throttle_slot + 1, min(slot, self.throttle_slot + THROTTLE_SLOTS) + 1
            ):
                self.throttle_req[s % THROTTLE_SLOTS] = 0
                self.throttle_acc[s % THROTTLE_SLOTS] = 0
            self.throttle_slot = slot
        index = slot % THROTTLE_SLOTS
        requests, accepts = sum(self.throttle_req), sum(self.throttle_acc)
        self.throttle_req[index] += self.scale
        p_reject = max(0.0, (requests - self.throttle_k * accepts) / (requests + 1))
        return p_reject > 0 and self.throttle_draw() < p_reject

    # -- controls' interface ---------------------------------------------------------------
    def _servers_changed(self, now: float) -> None:
        self._advance(now)
        dt = now - self.last_srv
        self.srv_acc += self.servers * dt
        self.cap_acc += self.servers / self.slowdown * dt
        self.last_srv = now
        self.servers = max(0, round(self.planned * self.fault_factor))
        if self.queue and self.busy < self.servers:
            self._start_queued(now)

    def set_planned_servers(self, real_servers: float) -> None:
        """Set the planned number of servers (real units); faults still apply on top."""
        self.planned = self.scaled(real_servers)
        self._servers_changed(self.env.now)

    def set_fault(self, capacity_factor: float, slowdown: float, error_rate: float) -> None:
        """Apply the combined effect of the active faults (1, 1, 0 when none)."""
        now = self.env.now
        self._advance(now)
        dt = now - self.last_srv
        self.srv_acc += self.servers * dt
        self.cap_acc += self.servers / self.slowdown * dt
        self.last_srv = now
        self.fault_factor, self.slowdown = capacity_factor, slowdown
        self.error_rate = 1 - (1 - self.error_base) * (1 - error_rate)
        self._servers_changed(now)

    def observe(self) -> dict:
        """State for an autoscaler (real units): servers, busy and queue now, and the busy
        server-seconds so far (an autoscaler averages utilisation over its interval)."""
        s, now = self.scale, self.env.now
        busy_seconds = self.busy_closed + self.busy_acc + self.busy * (now - self.last)
        return {
            "servers": self.planned * s,
            "busy": self.busy * s,
            "queue": len(self.queue) * s,
            "busy_seconds": busy_seconds * s,
        }

    # -- running ---------------------------------------------------------------------------
    def run(self, progress: Callable[[float], None] | None = None) -> float:
        """Simulate to the end (or to Ctrl-C); return the simulated time reached."""
        env = self.env
        block = self.arrivals.next_block()
        if block:
            self.arrival_times, self.arrival_i = block, 1
            self.arrival_event.callbacks = self.arrival_cbs
            env.schedule(self.arrival_event, NORMAL, block[0])
        start_controls(self)
        # Run in chunks: for the progress bar, Ctrl-C, and to fold latencies into histograms
        # at least every FLUSH_REQUESTS attempts (memory stays flat however long a bin is).
        expected = self.demand.expected_total() / self.scale * (1 + self.retries_max)
        chunks = max(200, math.ceil(expected / FLUSH_REQUESTS))
        wall_last = time.monotonic()
        try:
            for k in range(1, chunks + 1):
                env.run(until=self.duration_s * k / chunks)
                self._flush_latencies()
                if progress is not None and time.monotonic() - wall_last > 0.2:
                    wall_last = time.monotonic()
                    progress(env.now / self.duration_s)
        except KeyboardInterrupt:
            self.interrupted = True
        end = self.duration_s if not self.interrupted else env.now
        self._finish(end)
        return end

    def _finish(self, end: float) -> None:
        self._roll(end)
        recorder = self.recorder
        if recorder.closed_bins < recorder.n_bins:
            self._close_bin(end)
        self._flush_latencies()

    def _flush_latencies(self) -> None:
        """Hand the buffered latencies to the Recorder (server ones belong to the current bin)."""
        recorder = self.recorder
        if self.server_lat:
            recorder.add_server_latencies(self.b, self.server_lat)
            self.server_lat.clear()
        if self.client_lat:
            recorder.add_client_latencies(self.client_bins, self.client_lat)
            self.client_bins.clear()
            self.client_lat.clear()

    def simulated_events(self) -> int:
        """Events processed (arrivals, retries, completions, timer firings, control steps)."""
        recorder = self.recorder
        return int(
            sum(recorder.fresh)
            + sum(recorder.retries)
            + sum(recorder.attempts)
            - sum(recorder.rejected)
            + self.timer_fires
            + self.controls_steps
        )
