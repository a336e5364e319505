"""simulate(scenario) -> Result: pick the engine, run it, analyse the outages.

No files are written here; `report.write_report` does that.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim import __version__
from sim.analysis.expectations import compare_with_run, scenario_theory
from sim.analysis.metrics import Recorder, Timeseries
from sim.analysis.outages import analyse_outages
from sim.analysis.warnings import scenario_warnings
from sim.engine.des import DesEngine
from sim.engine.fluid import FluidEngine
from sim.engine.fluid_graph import FluidGraphEngine, unsupported
from sim.engine.kernel_store import percentile_rows
from sim.errors import RunTooLargeError, ScenarioError
from sim.model.fields import MAX_SCALE
from sim.model.parameters import scenario_parameters, scenario_slo
from sim.model.scenario import Scenario, locate_key, scaled_counts, working_scales
from sim.model.units import format_duration
from sim.model.workload import Demand

# About a minute of the compiled kernel (about 6M attempts a second on the reference scenario,
# measured on 2 cores).
MAX_SIMULATED_REQUESTS = 400_000_000


@dataclass
class Result:
    """What a run produced: the summary dict (summary.json) and the per-bin time series."""

    scenario: Scenario
    summary: dict[str, Any]
    timeseries: Timeseries
    extra: dict[str, Any] = field(default_factory=dict)


def estimate_requests(scenario: Scenario, demand: Demand | None = None) -> float:
    """Expected simulated attempts of a DES run: fresh requests and one retry each (a heavy
    retry storm can make more). Demand that overflows is refused (RunTooLargeError): its run
    could never end."""
    demand = demand or Demand(scenario)
    with np.errstate(over="ignore", invalid="ignore"):
        fresh = demand.expected_total() / scenario.scenario.scale
    if not math.isfinite(fresh):
        raise RunTooLargeError(
            "the demand overflows (rates, surge factors and users multiply to more than a "
            "number can hold); check arrivals, surges and population"
        )
    retries = scenario.client.retries if scenario.client else 0
    return fresh * (1 + min(retries, 1))


def check_runnable(scenario: Scenario) -> None:
    """Refuse, on the fluid engine, a service graph using what its fluid model leaves out
    (`fluid_graph.unsupported`: LIFO, `lifo_over`, `sojourn_limit`, throttling at a call):
    approximating them silently would answer a different question. The first such key is
    located in the file."""
    if not scenario.has_graph or scenario.scenario.engine == "des":
        return
    missing = unsupported(scenario)
    if not missing:
        return
    path = scenario.path
    text = path.read_text(encoding="utf-8") if path is not None and path.is_file() else ""
    keys = tuple(missing[0].split("."))
    line = None
    while text and keys and line is None:
        line = locate_key(text, keys)
        keys = keys[:-1]
    raise ScenarioError(
        f"the fluid engine does not model {', '.join(missing)} on a service graph: "
        "use the DES (--engine des)",
        file=path if path is not None else "<scenario>",
        key=missing[0],
        line=line,
    )


def check_size(scenario: Scenario, demand: Demand | None = None, force: bool = False) -> float:
    """Refuse (RunTooLargeError) a DES run estimated above MAX_SIMULATED_REQUESTS, unless forced."""
    estimate = estimate_requests(scenario, demand)
    if scenario.scenario.engine == "des" and estimate > MAX_SIMULATED_REQUESTS and not force:
        needed = scenario.scenario.scale * math.ceil(estimate / (MAX_SIMULATED_REQUESTS / 2))
        suggested = _suggested_scale([c for _, c in scaled_counts(scenario)], needed)
        remedy = (
            f"use --set scenario.scale={suggested:.12g}, --engine fluid, or --force"
            if suggested is not None and suggested <= MAX_SCALE
            else "use --engine fluid or --force (no scale that divides the pool is large enough)"
        )
        raise RunTooLargeError(
            f"this run would simulate about {estimate:,.0f} requests (limit "
            f"{MAX_SIMULATED_REQUESTS:,}); {remedy}"
        )
    return estimate


def _suggested_scale(counts: list[float], needed: float) -> float | None:
    """A scale at or above `needed` that divides every count (any other is refused): a
    whole one when one lies within twice `needed`, else the least that works."""
    _, least = working_scales(counts, needed)
    if least is None or least == int(least):
        return least
    divisor = math.gcd(*(int(c) for c in counts if c > 0))
    for parts in range(math.floor(divisor / needed), 0, -1)[:10_000]:
        if divisor % parts == 0:
            whole = divisor // parts
            return float(whole) if whole <= 2 * needed else least
    return least


def simulate(
    scenario: Scenario, *, progress=None, force: bool = True, demand: Demand | None = None
) -> Result:
    """Run a scenario with its engine and return the Result (nothing is written); `demand`,
    when the caller has built it already, saves building it again."""
    wall_start = time.perf_counter()
    check_runnable(scenario)
    demand = demand or Demand(scenario)
    check_size(scenario, demand, force=force)
    meta = scenario.scenario
    n_bins = max(1, math.ceil(meta.duration / meta.bin - 1e-9))
    recorder = Recorder(n_bins, meta.bin, meta.scale, percentiles=percentile_rows)
    if meta.engine == "fluid" and (scenario.has_graph or not unsupported(scenario)):
        engine = FluidGraphEngine(scenario, demand, recorder)
    elif meta.engine == "fluid":
        # One pool with LIFO, `lifo_over`, `sojourn_limit` or throttling: the cohort engine.
        engine = FluidEngine(scenario, demand, recorder)
    else:
        engine = DesEngine(scenario, demand, recorder)
    end_s = engine.run(progress)
    mean_s = scenario.service.time.mean_s
    timeseries = recorder.timeseries(demand.bin_means(meta.bin, n_bins), mean_s, meta.start)
    if scenario.has_graph:
        # What the service can serve is its bottleneck's share, not the entry tier's pool.
        timeseries.columns["capacity_rps"] = engine.service_capacity_rps()
    wall = time.perf_counter() - wall_start
    summary = build_summary(scenario, recorder, timeseries, engine, end_s, wall, demand)
    if scenario.has_graph:
        timeseries.columns.update(engine.tier_columns())
        summary.update(engine.graph_summary())
        for r, route in enumerate(scenario.route_specs):
            counts = engine.route_counts(r)
            counts["capacity_rps"] = engine.route_capacity_rps(r)
            summary["routes"][route.name].update(
                route_outages(scenario, timeseries, summary["timeline"], counts)
            )
        if summary["metastable"]:
            summary["metastable_reason"] += "; " + sustaining_layer(scenario, summary)
    return Result(scenario=scenario, summary=summary, timeseries=timeseries)


def sustaining_layer(scenario: Scenario, summary: dict) -> str:
    """Which callers' retries sustain a graph's outage: per call of each route, the attempts
    the callee received per attempt of its caller (per fresh request for the end users'
    call), over the whole run; the call that adds the most attempts (its excess over one
    per caller attempt, times the caller's attempts) multiplies load the most, so a small
    route retrying hard does not outweigh a large one."""
    layers = []
    for route in scenario.route_specs:
        entry = summary["routes"][route.name]
        amplification, fresh = entry["amplification"], entry["fresh"]
        caller, before = "end users", 1.0
        for call in route.calls:
            after = amplification.get(call.tier)
            if after is None or not before:
                break
            added = (after - before) * fresh
            layers.append((added, after / before, f"{caller} → {call.tier}", route.name))
            caller, before = call.tier, after
    if not layers:
        return "no layer's retries could be measured"
    words = ", ".join(f"{name} ({route}) {ratio:.2f}×" for _, ratio, name, route in layers)
    _, _, name, route = max(layers)
    return (
        f"attempts per caller attempt: {words}; the retries of {name} ({route}) multiply "
        "load the most"
    )


def route_outages(scenario: Scenario, ts: Timeseries, timeline: list, counts: dict) -> dict:
    """One route's outages and metastability, judged as the service's are but on the route's
    own requests: its fresh requests and their fates, its attempts and its demand, against
    its part of each tier's capacity (`counts["capacity_rps"]`) and its share of the
    backlog. The kernel
    keeps no per-bin latency percentiles of a route, so a route is judged on its success
    ratio (and on requests still waiting at the end of the run), not on its latency."""
    columns = dict(ts.columns)
    columns.update(counts)
    # The route's part of the expected demand and of the backlog: its share of the bin's
    # fresh requests, the share its capacity (from the engine) takes of each tier it calls.
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(ts["fresh"] > 0, counts["fresh"] / ts["fresh"], np.nan)
    share = np.nan_to_num(share, nan=float(np.nanmean(share)) if np.isfinite(share).any() else 1.0)
    columns["demand_rps"] = ts["demand_rps"] * share
    columns["queue"] = ts["queue"] * share
    for name in ("latency_p50", "latency_p95", "latency_p99"):
        columns[name] = np.full(len(ts), np.nan)
    judged = analyse_outages(scenario, Timeseries(ts.bin_s, ts.start, columns), timeline)
    keys = ("outage_total_s", "first_outage_start", "recovered", "metastable")
    outages = [
        {k: o[k] for k in ("start", "end", "start_s", "end_s", "duration_s", "criterion", "cause")}
        for o in judged["outages"]
    ]
    return {**{k: judged[k] for k in keys}, "outages": outages}


def build_summary(
    scenario, recorder, timeseries, engine, end_s: float, wall_s: float, demand=None
) -> dict:
    """The summary.json dict (DESIGN.md 'Outputs')."""
    demand = demand or Demand(scenario)
    meta = scenario.scenario
    scale = meta.scale
    totals = {name: float(sum(getattr(recorder, name))) * scale for name in (
        "fresh", "attempts", "retries", "succeeded", "timed_out", "rejected", "dropped",
        "throttled")}  # fmt: skip
    requests = {k: _count(v) for k, v in totals.items()}
    busy_area = sum(recorder.busy_area[: recorder.closed_bins])
    server_area = sum(recorder.server_area[: recorder.closed_bins])
    started = recorder.started
    wait = {
        "mean": recorder.wait_sum / started if started else math.nan,
        "p_wait": recorder.waited / started if started else math.nan,
    }
    queue_col = timeseries["queue"]
    queue_area = sum(recorder.queue_area[: recorder.closed_bins])
    queue = {
        "mean": queue_area / end_s * scale if end_s > 0 else 0.0,
        "max": float(queue_col.max()) if len(queue_col) else 0.0,
        "final": float(queue_col[-1]) if len(queue_col) else 0.0,
    }
    summary: dict[str, Any] = {
        "scenario": meta.name,
        "title": meta.title or meta.name,
        "seed": meta.seed,
        "engine": meta.engine,
        "scale": scale,
        "version": __version__,
        "scenario_sha256": scenario.sha256,
        "duration_s": end_s,
        "start": meta.start.isoformat() if meta.start else None,
        "description": meta.description,
        "bin_s": meta.bin,
        "slo": scenario_slo(scenario),
        "parameters": scenario_parameters(scenario),
        "requests": requests,
        "amplification": totals["attempts"] / totals["fresh"] if totals["fresh"] else math.nan,
        "success_ratio": totals["succeeded"] / totals["fresh"] if totals["fresh"] else math.nan,
        "latency_s": recorder.latency_summary(),
        "server_latency_s": recorder.server_latency_summary(),
        "wait_s": wait,
        "utilization": min(busy_area / server_area, 1.0) if server_area > 0 else math.nan,
        "queue": queue,
    }
    timeline = sorted(recorder.events + _surge_events(scenario), key=lambda e: e["t_s"])
    summary.update(analyse_outages(scenario, timeseries, timeline))
    summary["timeline"] = timeline
    summary["warnings"] = scenario_warnings(scenario, demand)
    expected = scenario_theory(scenario, demand)
    expected["compare"] = compare_with_run(scenario, expected, recorder)
    summary["theory"] = expected
    summary["interrupted"] = bool(getattr(engine, "interrupted", False))
    summary["wall_time_s"] = wall_s
    summary["events"] = engine.simulated_events()
    summary["simulated_per_s"] = totals["attempts"] / scale / wall_s if wall_s > 0 else math.nan
    return summary


def _count(value: float) -> int:
    # Whole requests: the fluid engine's expected values and fractional scales round here.
    return int(round(value))


def _surge_events(scenario: Scenario) -> list[dict]:
    events = []
    surges = list(scenario.arrivals.surge)
    if scenario.population is not None:
        surges += scenario.population.surge
    for surge in surges:
        what = f"×{surge.factor:g}" if surge.factor is not None else f"{surge.rate:g}/s"
        label = f"surge {what}"
        if surge.duration is not None:
            label += f" for {format_duration(surge.duration)}"
        events.append({"t_s": surge.at, "kind": "surge", "label": label})
        if surge.duration is not None:
            events.append(
                {"t_s": surge.at + surge.duration, "kind": "surge_end", "label": "surge ends"}
            )
    return events
