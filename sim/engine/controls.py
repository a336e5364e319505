"""Rare controls beside the request path: capacity schedule, daily planner, autoscaler, faults.

Each is an ordinary SimPy process acting on an engine through three calls:
`set_planned_servers(real_servers)`, `set_fault(capacity_factor, slowdown, error_rate)` and
`observe()`. Adding a control is a generator function here and a line in `start_controls`.

The planner's decisions depend only on demand (what operators saw in the last days), so
`capacity_plan` computes them as a plain function that the fluid engine shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.scenario import Autoscale, Fault, Scenario
from sim.workload import DAY_S, Demand


@dataclass(frozen=True)
class CapacityStep:
    """A planned change: from `t_s` on, `servers` (real units); `label` says why."""

    t_s: float
    servers: int
    label: str


def capacity_plan(scenario: Scenario, demand: Demand) -> list[CapacityStep]:
    """The planned capacity changes of a run: `[[capacity.change]]` plus the daily planner.

    At each daily review the planner takes the peak demand of the last 24 h, extrapolates the
    day-on-day growth over the lead time and the day the servers will serve ("trend"), adds
    headroom and sizes for the target utilisation; new servers arrive after the lead time,
    limited to `max_growth` times the servers planned so far.
    """
    steps = [
        CapacityStep(c.at, c.servers, f"capacity → {c.servers:,} servers")
        for c in scenario.capacity.change
    ]
    planner = scenario.capacity.planner
    if planner is not None:
        mean_s = scenario.service.time.mean_s
        start = scenario.scenario.start
        clock0 = start.hour * 3600 + start.minute * 60 + start.second if start else 0.0
        review = (planner.review_at - clock0) % DAY_S
        servers = scenario.service.servers
        changes = sorted(steps, key=lambda s: s.t_s)
        while review < scenario.scenario.duration:
            for change in changes:
                if change.t_s <= review:
                    servers = max(servers, change.servers)
            last = demand.peak(max(0.0, review - DAY_S), review)
            growth = 1.0
            if planner.forecast == "trend" and review >= DAY_S:
                previous = demand.peak(max(0.0, review - 2 * DAY_S), review - DAY_S)
                growth = max(1.0, last / previous) if previous > 0 else 1.0
            horizon_days = (planner.lead_time + DAY_S) / DAY_S
            forecast_rps = last * growth**horizon_days
            needed = math.ceil(
                forecast_rps * mean_s * planner.headroom / planner.target_utilization
            )
            target = min(needed, math.floor(servers * planner.max_growth), planner.max_servers)
            target = max(target, planner.min_servers)
            if target > servers:
                steps.append(
                    CapacityStep(
                        review + planner.lead_time,
                        target,
                        f"planner: {servers:,} → {target:,} servers "
                        f"(forecast peak {forecast_rps:,.0f}/s)",
                    )
                )
                servers = target
            review += DAY_S
    return sorted(steps, key=lambda s: s.t_s)


def autoscale_target(spec: Autoscale, servers: float, busy: float, queue: float) -> int:
    """Servers an autoscaler asks for, from utilisation (and queue, for metric "queue")."""
    if servers <= 0:
        return spec.min_servers
    if spec.metric == "utilization":
        desired = servers * (busy / servers) / spec.target
    else:
        desired = busy / 0.9 + queue / spec.target
    desired = min(desired, servers * spec.max_step)
    return int(min(spec.max_servers, max(spec.min_servers, math.ceil(desired - 1e-9))))


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
        engine.set_planned_servers(step.servers)
        engine.recorder.add_event(env.now, "capacity", step.label)


def _fault(engine, fault: Fault, active: list[Fault]):
    env = engine.env
    yield env.timeout(fault.at)
    active.append(fault)
    engine.set_fault(*combine_faults(active))
    engine.recorder.add_event(env.now, "fault", _fault_label(fault))
    yield env.timeout(fault.duration)
    active.remove(fault)
    engine.set_fault(*combine_faults(active))
    engine.recorder.add_event(env.now, "fault_end", "fault ends")
    engine.controls_steps += 2


def _fault_label(fault: Fault) -> str:
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
    target = engine.observe()["servers"]
    last_action = -math.inf
    while True:
        yield env.timeout(spec.interval)
        engine.controls_steps += 1
        state = engine.observe()
        desired = autoscale_target(spec, state["servers"], state["busy"], state["queue"])
        if desired == target or env.now - last_action < spec.cooldown:
            continue
        if desired < target and state["queue"] > 0:
            continue
        last_action, target = env.now, desired
        env.process(_provision(engine, desired, spec.delay if desired > state["servers"] else 0.0))


def _provision(engine, servers: int, delay_s: float):
    env = engine.env
    if delay_s > 0:
        yield env.timeout(delay_s)
    engine.set_planned_servers(servers)
    engine.recorder.add_event(env.now, "autoscale", f"autoscaler → {servers:,} servers")


def start_controls(engine) -> None:
    """Start the SimPy processes of every control the scenario has."""
    scenario = engine.scenario
    env = engine.env
    steps = capacity_plan(scenario, engine.demand)
    if steps:
        env.process(_planned(engine, steps))
    active: list[Fault] = []
    for fault in scenario.faults:
        env.process(_fault(engine, fault, active))
    if scenario.capacity.autoscale is not None:
        env.process(_autoscaler(engine, scenario.capacity.autoscale))
