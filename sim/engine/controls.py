"""Rare controls beside the request path: capacity schedule, daily planner, autoscaler, faults.

Each is an ordinary SimPy process acting on an engine through three calls:
`set_planned_servers(real_servers)`, `set_fault(capacity_factor, slowdown, error_rate)` and
`observe()`. Adding a control is a generator function here and a line in `start_controls`.

The decisions themselves (`DailyPlanner.review`, `autoscale_target`, `combine_faults`) are
plain functions of what an engine recorded, shared with the fluid engine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from sim.analysis.metrics import Recorder
from sim.model.scenario import Autoscale, Fault, Planner, Scenario
from sim.model.workload import DAY_S


@dataclass(frozen=True)
class CapacityStep:
    """A planned change: from `t_s` on, `servers` (real units); `label` says why."""

    t_s: float
    servers: int
    label: str
    tier: str | None = None  # the pool it resizes (None: the entry tier)


def planned_changes(scenario: Scenario) -> list[CapacityStep]:
    """The `[[capacity.change]]` entries as steps, in time order."""
    steps = [
        CapacityStep(
            c.at, c.servers, _on_tier(scenario, c.tier, f"capacity → {c.servers:,} servers"), c.tier
        )
        for c in scenario.capacity.change
    ]
    return sorted(steps, key=lambda s: s.t_s)


def _on_tier(scenario: Scenario, tier: str | None, label: str) -> str:
    """A control's label, naming its tier in a service graph."""
    return f"{tier}: {label}" if scenario.has_graph and tier is not None else label


def observed_peak_rps(recorder: Recorder, t0_s: float, t1_s: float) -> float:
    """Peak load operators saw in [t0, t1): attempts per second of the closed bins, real units."""
    first = max(0, int(t0_s // recorder.bin_s))
    last = min(recorder.closed_bins, int(t1_s // recorder.bin_s))
    if last <= first:
        return 0.0
    return max(recorder.attempts[first:last]) * recorder.scale / recorder.bin_s


class DailyPlanner:
    """Daily capacity review: next day's servers from a forecast of the load operators saw.

    At each review the planner takes the peak load of the last 24 h (attempts, retries
    included: that is what dashboards show), multiplies it by the day-on-day growth of that
    peak ("trend") to forecast tomorrow's peak, and sizes for the target utilisation with
    headroom. New servers arrive after the lead time, at most `max_growth` times the servers
    planned so far: how adding servers at a record pace every day still loses to an
    accelerating surge. Both engines call `review`; the DES wraps it in a SimPy process.
    """

    def __init__(self, scenario: Scenario) -> None:
        self.spec: Planner = scenario.capacity.planner
        self.mean_s = scenario.service.time.mean_s
        self.duration_s = scenario.scenario.duration
        self.servers = scenario.service.servers
        self.changes = planned_changes(scenario)
        start = scenario.scenario.start
        clock0 = start.hour * 3600 + start.minute * 60 + start.second if start else 0.0
        self.first_review_s = (self.spec.review_at - clock0) % DAY_S

    def review_times(self) -> list[float]:
        """Times of the daily reviews inside the run."""
        return list(np.arange(self.first_review_s, self.duration_s, DAY_S))

    def review(self, t_s: float, recorder: Recorder) -> CapacityStep | None:
        """The decision of the review at `t_s`: a step after the lead time, or None."""
        spec = self.spec
        for change in self.changes:
            if change.t_s <= t_s:
                self.servers = max(self.servers, change.servers)
        last = observed_peak_rps(recorder, t_s - DAY_S, t_s)
        if last <= 0:
            return None
        growth = 1.0
        if spec.forecast == "trend":
            # The daily growth of the peak over the last `trend_days` days (fewer at the start).
            days = min(spec.trend_days, int((t_s - recorder.bin_s) // DAY_S))
            if days >= 1:
                earlier = observed_peak_rps(recorder, t_s - (days + 1) * DAY_S, t_s - days * DAY_S)
                growth = max(1.0, last / earlier) ** (1 / days) if earlier > 0 else 1.0
        forecast_rps = last * growth
        needed = math.ceil(forecast_rps * self.mean_s * spec.headroom / spec.target_utilization)
        target = min(needed, math.floor(self.servers * spec.max_growth), spec.max_servers)
        target = max(target, spec.min_servers)
        if target <= self.servers:
            return None
        held = ""  # a limit that kept the addition below what the forecast needs
        if target < needed:
            cap = f"+{spec.max_growth - 1:.0%}" if target < spec.max_servers else "max_servers"
            held = f"; needs {needed:,}, {cap} cap applied"
        label = (
            f"planner: {self.servers:,} → {target:,} servers "
            f"(peak seen {last:,.0f}/s, forecast {forecast_rps:,.0f}/s{held})"
        )
        self.servers = target
        return CapacityStep(t_s + spec.lead_time, target, label, spec.tier)


def autoscale_target(spec: Autoscale, servers: float, busy: float, queue: float) -> int:
    """Servers an autoscaler asks for, from utilisation (and queue, for metric "queue")."""
    if servers <= 0:
        return spec.min_servers
    if spec.metric == "utilization":
        desired = busy / spec.target
    else:
        desired = busy / 0.9 + queue / spec.target
    desired = min(desired, servers * spec.max_step)
    return int(min(spec.max_servers, max(spec.min_servers, math.ceil(desired - 1e-9))))


class Autoscaler:
    """Reactive scaling decisions, shared by both engines.

    Every `interval` it asks for `autoscale_target` servers, from the mean number of busy
    servers over the interval (an instantaneous sample is too noisy). Scaling up takes the
    provisioning `delay`, and no other decision is taken until it lands; scaling down is
    immediate, by at most half, only with an empty queue, when the target is 10% below the
    servers, and not within `cooldown` of the last action (so it does not flap on noise).
    """

    def __init__(self, spec: Autoscale) -> None:
        self.spec = spec
        self.last_action_s = -math.inf
        self.busy_until_s = -math.inf
        self.last_observation = (0.0, 0.0)

    def decide(self, t_s: float, servers: float, busy_seconds: float, queue: float):
        """(servers, delay_s) to apply, or None, from the busy server-seconds so far."""
        spec = self.spec
        t0, busy0 = self.last_observation
        self.last_observation = (t_s, busy_seconds)
        if t_s < self.busy_until_s or t_s <= t0:
            return None
        busy = (busy_seconds - busy0) / (t_s - t0)  # mean busy servers over the interval
        desired = autoscale_target(spec, servers, busy, queue)
        if desired > servers:
            self.last_action_s, self.busy_until_s = t_s, t_s + spec.delay
            return desired, spec.delay
        calm = queue == 0 and t_s - self.last_action_s >= spec.cooldown
        if calm and desired < 0.9 * servers:
            self.last_action_s = t_s
            return max(desired, math.ceil(servers / 2), spec.min_servers), 0.0
        return None


def combine_faults(active: list[Fault]) -> tuple[float, float, float]:
    """(capacity_factor, slowdown, error_rate) of several faults at once."""
    factor, slowdown, ok = 1.0, 1.0, 1.0
    for fault in active:
        factor *= fault.capacity_factor
        slowdown *= fault.slowdown
        ok *= 1 - fault.error_rate
    return factor, slowdown, 1 - ok


def _planned(engine, steps: list[CapacityStep]):
    env = engine.env
    for step in steps:
        if step.t_s > env.now:
            yield env.timeout(step.t_s - env.now)
        engine.controls_steps += 1
        engine.set_planned_servers(step.servers, step.tier)
        engine.recorder.add_event(env.now, "capacity", step.label)


def _planner(engine, planner: DailyPlanner):
    env = engine.env
    for review in planner.review_times():
        yield env.timeout(review - env.now)
        engine.controls_steps += 1
        step = planner.review(env.now, engine.recorder)
        if step is not None:
            env.process(_planned(engine, [step]))


def _fault(engine, fault: Fault, active: list[Fault]):
    """One fault's process; `active` holds the faults in force on the fault's tier."""
    env = engine.env
    yield env.timeout(max(0.0, fault.at))
    active.append(fault)
    engine.set_fault(*combine_faults(active), fault.tier)
    label = _on_tier(engine.scenario, fault.tier, fault_label(fault))
    engine.recorder.add_event(env.now, "fault", label)
    yield env.timeout(fault.duration)
    active.remove(fault)
    engine.set_fault(*combine_faults(active), fault.tier)
    engine.recorder.add_event(env.now, "fault_end", "fault ends")
    engine.controls_steps += 2


def fault_label(fault: Fault) -> str:
    parts = []
    if fault.capacity_factor < 1:
        parts.append(f"{fault.capacity_factor:.0%} capacity")
    if fault.slowdown > 1:
        parts.append(f"{fault.slowdown:g}× slower")
    if fault.error_rate > 0:
        parts.append(f"{fault.error_rate:.0%} errors")
    return "fault: " + (", ".join(parts) or "no effect")


def _autoscaler(engine, spec: Autoscale):
    env = engine.env
    scaler = Autoscaler(spec)
    while True:
        yield env.timeout(spec.interval)
        engine.controls_steps += 1
        state = engine.observe(spec.tier)
        decision = scaler.decide(env.now, state["servers"], state["busy_seconds"], state["queue"])
        if decision is not None:
            env.process(_provision(engine, *decision, spec.tier))


def _provision(engine, servers: int, delay_s: float, tier: str | None = None):
    env = engine.env
    if delay_s > 0:
        yield env.timeout(delay_s)
    engine.set_planned_servers(servers, tier)
    engine.recorder.add_event(env.now, "autoscale", f"autoscaler → {servers:,} servers")


def clock(engine, ticks: int, progress=None):
    """The SimPy process that moves an engine from one SimPy instant (a control's) or one of
    `ticks` even progress ticks to the next (`engine._advance_to`), reporting progress at
    most every 0.2 s; Ctrl-C and the progress bar act between its steps."""
    env, end = engine.env, engine.duration_s
    tick_times = [end * i / ticks for i in range(1, ticks)] + [end]  # the last is `end`
    tick, wall_last = 0, time.monotonic()
    while True:
        while tick_times[tick] <= env.now and tick < ticks - 1:
            tick += 1
        target = min(env.peek(), tick_times[tick])
        engine._advance_to(target)
        if progress is not None and time.monotonic() - wall_last > 0.2:
            wall_last = time.monotonic()
            progress(target / end)
        if target >= end:
            return
        yield env.timeout(target - env.now)


def start_controls(engine) -> None:
    """Start the SimPy processes of every control the scenario has."""
    scenario = engine.scenario
    env = engine.env
    steps = planned_changes(scenario)
    if steps:
        env.process(_planned(engine, steps))
    if scenario.capacity.planner is not None:
        env.process(_planner(engine, DailyPlanner(scenario)))
    active: dict[str | None, list[Fault]] = {}
    for fault in scenario.faults:
        env.process(_fault(engine, fault, active.setdefault(fault.tier, [])))
    if scenario.capacity.autoscale is not None:
        env.process(_autoscaler(engine, scenario.capacity.autoscale))
