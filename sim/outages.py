"""From a time series and an SLO to outages, onset, recovery and a metastability verdict.

A bin breaches the SLO when its success ratio or its p99 latency misses the target. The
success ratio of a bin is the share of the fresh requests that arrived in it which succeeded
(on any attempt), among those whose fate was decided by the end of the run: counting by
arrival, not by completion, keeps the ratio free of the lag noise that would otherwise make
healthy bins breach a 99% target. Without a client timeout nothing fails, so slowness shows in
the latency target only. Breaches closer than `min_duration` are merged; merged breaches lasting
`min_duration` or more are outages. A trigger is a surge or a fault that ends, or a stretch
where fresh demand alone exceeds capacity. A run is metastable when an outage outlives the last
trigger's end by more than the backlog would take to drain at the spare capacity after it (plus
`min_duration` of slack): something else than the backlog (retries, wasted work) keeps it down.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import numpy as np

from sim.metrics import Timeseries
from sim.scenario import Scenario
from sim.units import format_duration


def breached_bins(scenario: Scenario, ts: Timeseries) -> np.ndarray:
    """Boolean per bin: does the bin miss the SLO?"""
    slo = scenario.slo
    breach = np.nan_to_num(ts["success_ratio"], nan=1.0) < slo.success_ratio
    if slo.latency_p99 is not None:
        p99 = ts["latency_p99"]
        breach |= np.nan_to_num(p99, nan=0.0) > slo.latency_p99
    return breach


def outage_windows(
    breach: np.ndarray, bin_s: float, min_duration_s: float
) -> list[tuple[int, int]]:
    """(first_bin, end_bin) of merged breach runs lasting at least min_duration."""
    runs: list[list[int]] = []
    index = np.flatnonzero(breach)
    for i in index:
        if runs and (i - runs[-1][1]) * bin_s < min_duration_s:
            runs[-1][1] = i + 1
        elif runs and i == runs[-1][1]:
            runs[-1][1] = i + 1
        else:
            runs.append([int(i), int(i) + 1])
    return [(a, b) for a, b in runs if (b - a) * bin_s >= min_duration_s - 1e-9]


def trigger_ends(scenario: Scenario, ts: Timeseries, events: list[dict]) -> list[float]:
    """Times where a trigger ended inside the run: a surge or a fault (from the run's
    timeline of events), or a stretch of fresh demand above capacity."""
    duration = float(ts["t_s"][-1] + ts.bin_s) if len(ts) else 0.0
    ends = [e["t_s"] for e in events if e["kind"] in ("fault_end", "surge_end")]
    over = ts["demand_rps"] > ts["capacity_rps"]
    for i in np.flatnonzero(over[:-1] & ~over[1:]):
        ends.append(float(ts["t_s"][i + 1]))
    return sorted(t for t in ends if 0 < t < duration)


def analyse_outages(scenario: Scenario, ts: Timeseries, events: list[dict]) -> dict[str, Any]:
    """The outage part of summary.json: windows, totals, recovery and the metastable verdict."""
    bin_s = ts.bin_s
    n = len(ts)
    run_end = float(ts["t_s"][-1] + bin_s) if n else 0.0
    breach = breached_bins(scenario, ts)
    windows = outage_windows(breach, bin_s, scenario.slo.min_duration)
    outages = []
    for first, end in windows:
        start_s, end_s = float(first * bin_s), float(min(end * bin_s, run_end))
        fresh = ts["fresh"][first:end].sum()
        decided = ts["fresh_ok"][first:end].sum() + ts["fresh_failed"][first:end].sum()
        outages.append(
            {
                "start_s": start_s,
                "end_s": end_s,
                "start": _iso(ts, start_s),
                "end": _iso(ts, end_s),
                "duration_s": end_s - start_s,
                "peak_queue": float(ts["queue"][first:end].max()),
                "ongoing": bool(end >= n),
                "amplification": float(ts["attempts"][first:end].sum() / fresh) if fresh else None,
                "success_ratio": float(ts["fresh_ok"][first:end].sum() / decided)
                if decided
                else None,
            }
        )
    verdict = metastability(scenario, ts, events, outages)
    return {
        "outages": outages,
        "outage_total_s": float(sum(o["duration_s"] for o in outages)),
        "first_outage_start_s": outages[0]["start_s"] if outages else None,
        "first_outage_start": outages[0]["start"] if outages else None,
        "recovered": not (outages and outages[-1]["ongoing"]),
        "breached_bins": int(breach.sum()),
        **verdict,
    }


def metastability(scenario, ts: Timeseries, events: list[dict], outages: list[dict]) -> dict:
    """`metastable` (bool or None) and `metastable_reason` in words."""
    ends = trigger_ends(scenario, ts, events)
    if not ends:
        return {
            "metastable": None,
            "metastable_reason": "no trigger (surge, fault or overload) "
            "ended inside the run, so persistence cannot be judged",
        }
    last = ends[-1]
    lasting = [
        o for o in outages if o["start_s"] <= last + scenario.slo.min_duration and o["end_s"] > last
    ]
    if not lasting:
        return {
            "metastable": False,
            "metastable_reason": "no outage outlived the last trigger "
            f"(ended at {_when(ts, last)})",
        }
    outage = lasting[-1]
    i = min(int(last // ts.bin_s), len(ts) - 1)
    backlog = float(ts["queue"][max(i - 1, 0)])
    drain_s = drain_time_s(ts, i, backlog)
    outlived_s = outage["end_s"] - last
    allowed_s = drain_s + scenario.slo.min_duration
    if outage["ongoing"] and outlived_s <= allowed_s:
        return {
            "metastable": None,
            "metastable_reason": (
                f"the service was still down when the run ended, {format_duration(outlived_s)} "
                f"after the last trigger ({_when(ts, last)}), but its backlog of {backlog:,.0f} "
                f"needs {format_duration(drain_s)} to drain: too early to tell; run longer"
            ),
        }
    if outlived_s <= allowed_s:
        return {
            "metastable": False,
            "metastable_reason": (
                f"the outage ended {format_duration(outlived_s)} after the last trigger "
                f"({_when(ts, last)}), within the {format_duration(drain_s)} its backlog of "
                f"{backlog:,.0f} needed to drain"
            ),
        }
    amplification = outage["amplification"]
    cause = (
        f"retries kept offered load at {amplification:.1f}× the fresh demand"
        if amplification and amplification > 1.05
        else "work the server kept doing for clients that had left kept it down"
    )
    still = (
        "is still down at the end of the run"
        if outage["ongoing"]
        else (f"stayed down {format_duration(outlived_s)}")
    )
    return {
        "metastable": True,
        "metastable_reason": (
            f"after the last trigger ended ({_when(ts, last)}) the service {still}, while the "
            f"backlog of {backlog:,.0f} would drain in {format_duration(drain_s)} at spare "
            f"capacity: {cause}"
        ),
    }


def drain_time_s(ts: Timeseries, first_bin: int, backlog: float) -> float:
    """How long `backlog` takes to drain from bin `first_bin` on, at the spare capacity of each
    bin (capacity minus fresh demand, as it changes: capacity added later counts), or inf
    if the run ends first. Right at the end of an overload the spare capacity is near zero,
    so a drain time from that instant alone would call every outage a backlog."""
    spare = np.maximum(ts["capacity_rps"][first_bin:] - ts["demand_rps"][first_bin:], 0.0)
    drained = np.cumsum(spare * ts.bin_s)
    index = int(np.searchsorted(drained, backlog))
    if index >= len(drained):
        return math.inf
    before = drained[index - 1] if index else 0.0
    return (index + (backlog - before) / (spare[index] * ts.bin_s)) * ts.bin_s


def _iso(ts: Timeseries, t_s: float) -> str | None:
    return (ts.start + timedelta(seconds=t_s)).isoformat() if ts.start is not None else None


def _when(ts: Timeseries, t_s: float) -> str:
    if ts.start is None:
        return f"t = {format_duration(t_s)}"
    return (ts.start + timedelta(seconds=t_s)).strftime("%d %b %H:%M UTC")
