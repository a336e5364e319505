"""From a time series and an SLO to outages, their causes, recovery and a metastability verdict.

Which bins breach. A bin is judged on the fresh requests that first arrived in it: its
success criterion on those whose fate is decided (succeeded or finally failed), its latency
criterion on the share of its successes slower than `latency_p99` (estimated from the bin's
client p50/p95/p99, with an exponential tail between them) plus the requests still waiting at
the end of the run for longer than the target: those can only fail or succeed late, so they
count as slow. A bin breaches a criterion when its estimate misses the target AND its misses
are more than chance: a one-sided exact binomial test (scipy) rejects, at ALPHA = 0.001,
that the true miss rate is within the budget (1 - success_ratio failures, 1% slower than the
p99 target). The test is run on the bin alone and on the windows of 1, 4 and 16 min_durations
that end at it or start at it (leaving out the bins significant alone, and each half of a
window missing the budget as well, so that a sharp outage does not lend its evidence to the
noise beside it), so a sharp outage is found in its first bin, a milder one (5x the budget)
within about one min_duration and a mild chronic excess (2x) over longer windows. A bin
found by a window breaches with it even where its own small sample fell under the budget,
but a run starts and ends only on a bin that misses the budget itself, with the next (or
last) min_duration of bins missing it together (so a mild excess is one outage, not
fragments, and a window never stretches an outage into healthy bins), while a bin with two
failures out of 160 in a service failing 0.1% of the time (11x inside a 1% budget) is noise, not an
outage: the phantom outages a plain point estimate finds there. A service whose true miss
rate is inside its budget passes every window, however long; one exactly at its budget
breaches a bin at most 7 x ALPHA of the time. Counts are tested in simulated requests
(real / scale): that is the sample the run drew. The fluid
engine has no sampling noise, so there the point estimate decides alone.

A bin with fewer than half of its fresh requests judged (fates still open when the run ended)
has no verdict of its own: it keeps the verdict of the last judged bin, so a service that is
down when the run ends is never read as healthy because its last requests were still
waiting. Idle bins (no fresh request) never breach.

Outages. Breaches closer than `min_duration` merge; merged breaches lasting `min_duration` or
more are outages, and so is a breach still under way when the run ends, however short: the
service has not recovered (`ongoing`). Each outage names the criterion it breached
(`success_ratio`, `latency` or `both`) and its `cause`:
- `chronic`: under way before any trigger, and the service never met its SLO before it (it
  began in the run's first min_duration), or the baseline demand already exceeded capacity, or
  the baseline (the time before the first trigger) breached more often than not;
- `spontaneous`: began with no trigger after the service had met its SLO: a bistable baseline
  that collapses now and then on its own;
- `trigger`: began during a trigger (from the bin before its start to min_duration after its
  end) and lasted no longer than the trigger plus the time its backlog takes to drain;
- `metastable`: began with a trigger and outlived the last trigger it overlapped by more than
  the backlog's drain time at spare capacity plus min_duration: something other than the
  backlog (retries, abandoned work) keeps it down.
A trigger is a surge or a fault (from the run's timeline) or a stretch where fresh demand
reaches OVERLOAD_LOAD (95%) of capacity that begins after the run's start (demand that high
from the start is the baseline itself). The run's `metastable` is True when an outage is
metastable, None when no trigger ended inside the run or a triggered outage is still down
within its drain time (too early to tell), else False.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import numpy as np
from scipy.stats import binom

from sim.analysis.metrics import Timeseries
from sim.model.scenario import Scenario
from sim.model.units import format_duration

ALPHA = 0.001  # per test: a bin alone, and windows ending or starting at it
WINDOWS = (1, 4, 16)  # window lengths in min_durations
LATENCY_QUANTILE = 0.99  # the SLO's latency target is a p99
OVERLOAD = "fresh demand near capacity"
# Fresh demand at this share of capacity is a trigger: near it a queue's waits explode
# (M/M/c waits grow as 1/(c mu - lambda)), so a rising demand breaches the SLO before it
# crosses capacity (the reference case breaches at 98.7%, twenty minutes before it does).
OVERLOAD_LOAD = 0.95
JUDGED_SHARE = 0.5  # a bin with fewer of its fresh requests judged keeps the last verdict


def _budget_test(misses: np.ndarray, judged: np.ndarray, budget: float, window: int):
    """Per bin: are the misses more than chance above `budget`, in the bin alone or in a
    window of WINDOWS x `window` bins ending or starting at it? (one-sided exact binomial
    tests; a longer window finds a milder excess, later). Windows are tried shortest first,
    leaving out the bins a shorter one already found, and a window counts only when each of
    its halves misses the budget too: a sharp outage must not lend its evidence to the noise
    of the healthy bins around it."""
    n_bins = len(misses)
    index = np.arange(n_bins)
    whole = (
        np.concatenate([[0.0], np.cumsum(misses)]),
        np.concatenate([[0.0], np.cumsum(judged)]),
    )
    sharp = _rejects(whole, index, index + 1, budget)
    # Windows leave out the bins that are significant alone (a sharp outage), so that its
    # evidence is not lent to its neighbours; bins found only by a window stay in the longer
    # windows, since leaving out the high ones of a mild excess would bias the rest low.
    sums = (
        np.concatenate([[0.0], np.cumsum(np.where(sharp, 0.0, misses))]),
        np.concatenate([[0.0], np.cumsum(np.where(sharp, 0.0, judged))]),
    )
    significant = sharp.copy()
    for length in sorted({min(window * m, n_bins) for m in WINDOWS} - {1}):
        significant |= _rejects(sums, np.maximum(index - length + 1, 0), index + 1, budget)
        significant |= _rejects(sums, index, np.minimum(index + length, n_bins), budget)
    return significant


def _rejects(sums: tuple, first: np.ndarray, last: np.ndarray, budget: float) -> np.ndarray:
    """Per window [first, last) of bins: do its pooled misses (from cumulative `sums` of
    misses and judged requests) exceed `budget` beyond chance, in both of its halves?"""
    k_sum, n_sum = sums
    k = np.floor(k_sum[last] - k_sum[first] + 1e-9)
    n = np.maximum(np.floor(n_sum[last] - n_sum[first] + 0.5), k)
    if budget <= 0:
        return k >= 1
    with np.errstate(invalid="ignore"):
        p_value = binom.sf(k - 1, n, budget)
    middle = (first + last) // 2
    sustained = np.ones(len(first), dtype=bool)
    for a, b in ((first, middle), (middle, last)):
        sustained &= (last - first < 2) | (k_sum[b] - k_sum[a] > budget * (n_sum[b] - n_sum[a]))
    return (n > 0) & (p_value < ALPHA) & sustained


def _trimmed(significant, misses, judged, budget: float, window: int) -> np.ndarray:
    """Each run of significant bins, its ends trimmed to bins where the outage plainly is:
    a run starts at a bin that misses the budget and whose next `window` bins (one
    min_duration) miss it together, and ends at one that misses it and whose last `window`
    bins do. Inside a run every bin breaches
    with its window even where its own small sample fell under the budget (else a mild
    excess breaks into fragments); at the ends a window that borrowed the excess, or a
    healthy bin's chance misses, would stretch the outage into healthy bins."""
    n = len(significant)
    window = max(1, min(window, n))  # a min_duration longer than the run is the run
    sums = np.concatenate([[0.0], np.cumsum(misses)]), np.concatenate([[0.0], np.cumsum(judged)])
    index = np.arange(n)

    def over(first, last):
        k, j = sums[0][last] - sums[0][first], sums[1][last] - sums[1][first]
        return (j > 0) & (k > budget * j + 1e-9 * j)

    own = over(index, index + 1)
    ahead = own & over(index, np.minimum(index + window, n))
    behind = own & over(np.maximum(index - window + 1, 0), index + 1)
    out = significant.copy()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], significant.astype(int), [0]])))
    for first, end in zip(edges[::2], edges[1::2], strict=True):
        out[first:end] = False
        starts = np.flatnonzero(ahead[first:end])
        ends = np.flatnonzero(behind[first:end])
        if len(starts) and len(ends) and starts[0] <= ends[-1]:
            out[first + starts[0] : first + ends[-1] + 1] = True
    return out


def share_slower(target_s: float, p50, p95, p99) -> np.ndarray:
    """Per bin: the share of latencies above `target_s`, interpolated through the bin's
    percentiles with an exponential tail (log share linear in latency; beyond p99 the p95-p99
    slope goes on). NaN where the bin has no latency."""
    p50, p95, p99 = (np.asarray(p, dtype=float) for p in (p50, p95, p99))
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.where(
            target_s >= p95,
            np.log(0.05) + (np.log(0.01) - np.log(0.05)) * (target_s - p95) / (p99 - p95),
            np.log(0.5) + (np.log(0.05) - np.log(0.5)) * (target_s - p50) / (p95 - p50),
        )
        share = np.where(target_s < p50, 1.0 - 0.5 * target_s / p50, np.exp(tail))
    # Ties (p99 == p95) make the slope infinite: the share is then 5% or nothing.
    share = np.where((target_s >= p95) & (p99 <= p95), np.where(target_s < p99, 0.05, 0.0), share)
    share = np.where((target_s < p95) & (target_s >= p50) & (p95 <= p50), 0.5, share)
    return np.clip(share, 0.0, 1.0)


def bin_verdicts(scenario: Scenario, ts: Timeseries) -> dict[str, np.ndarray]:
    """Per bin, booleans: `success` and `latency` (the criterion breached), `breach` (either),
    `carried` (no verdict of its own: the last judged bin's verdict)."""
    slo, meta = scenario.slo, scenario.scenario
    n_bins = len(ts)
    fresh, ok, failed = (
        np.asarray(ts[c], dtype=float) for c in ("fresh", "fresh_ok", "fresh_failed")
    )
    pending = np.maximum(fresh - ok - failed, 0.0)
    run_end = n_bins * ts.bin_s
    late = np.zeros(n_bins)
    slow = np.zeros(n_bins)
    if slo.latency_p99 is not None:
        # Requests of the bin that arrived within the target of the run's end cannot be late
        # yet; the pending ones are taken to be those youngest ones first.
        young = np.clip(ts["t_s"] + ts.bin_s - (run_end - slo.latency_p99), 0.0, ts.bin_s)
        late = np.maximum(pending - fresh * young / ts.bin_s, 0.0)
        share = share_slower(
            slo.latency_p99, ts["latency_p50"], ts["latency_p95"], ts["latency_p99"]
        )
        slow = np.nan_to_num(share, nan=0.0) * ok
    # Simulated requests are the sample; the fluid engine's expected values have no noise.
    per_sample = meta.scale if meta.engine == "des" else None
    window = max(1, int(round(slo.min_duration / ts.bin_s)))

    def judge(misses, judged, budget):
        point = misses > budget * judged + 1e-9 * judged
        if per_sample is None or not n_bins:
            return point
        misses, judged = misses / per_sample, judged / per_sample
        significant = _budget_test(misses, judged, budget, window)
        return _trimmed(significant, misses, judged, budget, window)

    success = judge(failed, ok + failed, 1.0 - slo.success_ratio)
    latency = np.zeros(n_bins, dtype=bool)
    if slo.latency_p99 is not None:
        latency = judge(slow + late, ok + late, 1.0 - LATENCY_QUANTILE)
    judged = (fresh > 0) & (ok + failed + late >= JUDGED_SHARE * fresh)
    carried = (fresh > 0) & ~judged
    for i in np.flatnonzero(carried):
        if i:
            success[i], latency[i] = success[i - 1], latency[i - 1]
    return {"success": success, "latency": latency, "breach": success | latency, "carried": carried}


def outage_windows(
    breach: np.ndarray, bin_s: float, min_duration_s: float
) -> list[tuple[int, int]]:
    """(first_bin, end_bin) of merged breach runs lasting at least min_duration, and of the
    run still under way at the last bin, however short (the service is down at the end)."""
    runs: list[list[int]] = []
    for i in np.flatnonzero(breach):
        if runs and ((i - runs[-1][1]) * bin_s < min_duration_s or i == runs[-1][1]):
            runs[-1][1] = int(i) + 1
        else:
            runs.append([int(i), int(i) + 1])
    n_bins = len(breach)
    return [(a, b) for a, b in runs if (b - a) * bin_s >= min_duration_s - 1e-9 or b == n_bins]


def trigger_spans(ts: Timeseries, events: list[dict]) -> list[tuple[float, float | None, str]]:
    """(start_s, end_s or None when it lasts past the run, label) of every trigger: surges and
    faults from the run's timeline (but not one in force for the whole run: that is the run's
    baseline, e.g. another download series), and stretches of fresh demand at OVERLOAD_LOAD of
    capacity or more that begin after the run's start."""
    run_end = len(ts) * ts.bin_s
    spans: list[tuple[float, float | None, str]] = []
    for kind in ("fault", "surge"):
        starts = sorted((e["t_s"], e["label"]) for e in events if e["kind"] == kind)
        ends = sorted(e["t_s"] for e in events if e["kind"] == f"{kind}_end")
        for start_s, label in starts:
            later = [t for t in ends if t >= start_s]
            end_s = later[0] if later else None
            if end_s is not None:
                ends.remove(end_s)
            lasts = end_s is None or end_s >= run_end
            if start_s <= 0 and lasts:
                continue  # in force for the whole run: the run's baseline, it tips nothing
            spans.append((start_s, None if lasts else end_s, label))
    over = np.asarray(ts["demand_rps"] >= OVERLOAD_LOAD * ts["capacity_rps"])
    edges = np.flatnonzero(np.diff(np.concatenate([[0], over.astype(int), [0]])))
    for first, end in zip(edges[::2], edges[1::2], strict=True):
        if first > 0:
            end_s = float(end * ts.bin_s)
            spans.append(
                (
                    float(first * ts.bin_s),
                    end_s if end_s < run_end else None,
                    OVERLOAD,
                )
            )
    # At a tie the named trigger (fault, surge) sorts last: it is the one that tipped.
    inside = (s for s in spans if s[0] < run_end)
    return sorted(inside, key=lambda s: (s[0], s[2] != OVERLOAD))


def analyse_outages(scenario: Scenario, ts: Timeseries, events: list[dict]) -> dict[str, Any]:
    """The outage part of summary.json: windows with their criterion and cause, totals,
    recovery and the metastable verdict."""
    bin_s, n_bins = ts.bin_s, len(ts)
    run_end = n_bins * bin_s
    verdicts = bin_verdicts(scenario, ts)
    windows = outage_windows(verdicts["breach"], bin_s, scenario.slo.min_duration)
    spans = trigger_spans(ts, events)
    outages = []
    for first, end in windows:
        start_s, end_s = float(first * bin_s), float(min(end * bin_s, run_end))
        fresh = ts["fresh"][first:end].sum()
        decided = ts["fresh_ok"][first:end].sum() + ts["fresh_failed"][first:end].sum()
        by_success = bool(verdicts["success"][first:end].any())
        by_latency = bool(verdicts["latency"][first:end].any())
        outages.append(
            {
                "start_s": start_s,
                "end_s": end_s,
                "start": _iso(ts, start_s),
                "end": _iso(ts, end_s),
                "duration_s": end_s - start_s,
                "peak_queue": float(ts["queue"][first:end].max()),
                "ongoing": bool(end >= n_bins),
                "criterion": "both"
                if by_success and by_latency
                else ("latency" if by_latency else "success_ratio"),
                "amplification": float(ts["attempts"][first:end].sum() / fresh) if fresh else None,
                "success_ratio": float(ts["fresh_ok"][first:end].sum() / decided)
                if decided
                else None,
            }
        )
    for outage in outages:
        outage.update(outage_cause(scenario, ts, spans, outage, verdicts["breach"]))
    return {
        "outages": outages,
        "outage_total_s": float(sum(o["duration_s"] for o in outages)),
        "first_outage_start_s": outages[0]["start_s"] if outages else None,
        "first_outage_start": outages[0]["start"] if outages else None,
        "recovered": not (outages and outages[-1]["ongoing"]),
        "breached_bins": int(verdicts["breach"].sum()),
        **metastability(ts, spans, outages),
    }


def outage_cause(
    scenario: Scenario, ts: Timeseries, spans: list, outage: dict, breach: np.ndarray
) -> dict[str, Any]:
    """`cause`, `trigger` (the trigger's label or None), `why` (in words) and, for a triggered
    outage, `verdict` (True metastable, False ended with its backlog, None too early)."""
    bin_s, min_s = ts.bin_s, scenario.slo.min_duration
    start_s, end_s = outage["start_s"], outage["end_s"]
    # Requests of the bin before a trigger were still in flight when it struck.
    tipping = [
        s
        for s in spans
        if s[0] - bin_s <= start_s + 1e-9 and (s[1] is None or start_s <= s[1] + min_s)
    ]
    if not tipping:
        return _untriggered(scenario, ts, spans, outage, breach)
    overlapping = [s for s in spans if s[0] < end_s and (s[1] is None or s[1] >= tipping[0][0])]
    label = tipping[-1][2]
    began = f"began with the trigger ({label}, {_when(ts, tipping[-1][0])})"
    if any(s[1] is None for s in overlapping):
        return {
            "cause": "trigger",
            "trigger": label,
            "verdict": None,
            "why": f"{began}, which lasted to the end of the run",
        }
    last = max(s[1] for s in overlapping)
    if end_s <= last:
        return {
            "cause": "trigger",
            "trigger": label,
            "verdict": False,
            "why": f"{began} and ended before the trigger did ({_when(ts, last)})",
        }
    i = min(int(last // bin_s), len(ts) - 1)
    backlog = float(ts["queue"][max(i - 1, 0)])
    drain_s = drain_time_s(ts, i, backlog)
    outlived_s = end_s - last
    needed = f"its backlog of {backlog:,.0f} needs {format_duration(drain_s)} to drain"
    ended = f"the last trigger ended ({_when(ts, last)})"
    if outlived_s <= drain_s + min_s:
        if outage["ongoing"]:
            why = (
                f"{began}; still down {format_duration(outlived_s)} after {ended}, but "
                f"{needed}: too early to tell whether it is metastable; run longer"
            )
            return {"cause": "trigger", "trigger": label, "verdict": None, "why": why}
        why = (
            f"{began} and ended {format_duration(outlived_s)} after {ended}, within the "
            f"{format_duration(drain_s)} its backlog of {backlog:,.0f} needed to drain"
        )
        return {"cause": "trigger", "trigger": label, "verdict": False, "why": why}
    amplification = outage["amplification"]
    kept = (
        f"retries kept offered load at {amplification:.1f}× the fresh demand"
        if amplification and amplification > 1.05
        else "work the server kept doing for clients that had left kept it down"
    )
    still = (
        "is still down at the end of the run"
        if outage["ongoing"]
        else f"stayed down {format_duration(outlived_s)}"
    )
    why = (
        f"{began}; after {ended} the service {still}, while the backlog of {backlog:,.0f} "
        f"would drain in {format_duration(drain_s)} at spare capacity: {kept}"
    )
    return {"cause": "metastable", "trigger": label, "verdict": True, "why": why}


def _untriggered(scenario, ts: Timeseries, spans: list, outage: dict, breach) -> dict[str, Any]:
    """Cause of an outage that no trigger tipped: chronic or spontaneous."""
    bin_s, min_s = ts.bin_s, scenario.slo.min_duration
    start_s = outage["start_s"]
    first = int(start_s // bin_s)
    over = np.asarray(ts["demand_rps"] >= OVERLOAD_LOAD * ts["capacity_rps"])
    # The baseline: the bins before the first trigger (all of them when there is none).
    baseline = breach[: max(int(spans[0][0] // bin_s) - 1, 0)] if spans else breach
    before = "before any trigger" if spans else "with no trigger in the run"
    if over[: first + 1].all():
        why = (
            f"chronic: fresh demand was {OVERLOAD_LOAD:.0%} of capacity or more from the start "
            f"of the run, {before} (the baseline is overloaded)"
        )
    elif start_s <= min_s + bin_s:
        why = f"chronic: the service missed its SLO from the start of the run, {before}"
    elif len(baseline) and baseline.mean() > 0.5:
        why = (
            f"chronic: before any trigger the service missed its SLO {baseline.mean():.0%} of "
            "the time"
        )
    else:
        why = (
            f"spontaneous: it began {before}, after the service had met its SLO: the "
            "baseline collapses on its own now and then (bistable)"
        )
        return {"cause": "spontaneous", "trigger": None, "verdict": None, "why": why}
    return {"cause": "chronic", "trigger": None, "verdict": None, "why": why}


def metastability(ts: Timeseries, spans: list, outages: list[dict]) -> dict[str, Any]:
    """The run's `metastable` (bool or None) and `metastable_reason` in words: True when a
    triggered outage outlived its trigger; None when one is too early to judge or no trigger
    ended inside the run; else False (chronic and spontaneous outages are not metastable)."""
    triggered = [o for o in outages if o["cause"] in ("trigger", "metastable")]
    for verdict in (True, None, False):
        chosen = [o for o in triggered if o["verdict"] is verdict]
        if chosen:
            main = max(chosen, key=lambda o: o["duration_s"])
            return {"metastable": verdict, "metastable_reason": main["why"]}
    ended = [s[1] for s in spans if s[1] is not None]
    untriggered = [o for o in outages if o["cause"] in ("chronic", "spontaneous")]
    if untriggered:
        main = untriggered[0]
        reason = (
            f"not a metastable failure: the outage from {_when(ts, main['start_s'])} is "
            f"{main['why']}"
        )
        return {"metastable": False if ended else None, "metastable_reason": reason}
    if not ended:
        return {
            "metastable": None,
            "metastable_reason": "no trigger (surge, fault or overload) "
            "ended inside the run, so persistence cannot be judged",
        }
    return {
        "metastable": False,
        "metastable_reason": f"no outage outlived the last trigger (ended {_when(ts, max(ended))})",
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
