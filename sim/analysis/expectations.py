"""What queueing theory expects of a scenario, and the warnings a run deserves before it starts.

`scenario_theory` finds the stationary parts of a scenario (a constant fresh rate into a fixed
pool: the whole run, or each steady stretch between surges, changes and faults) and gives what
theory expects there: offered load, utilisation, P(wait) and mean wait (Erlang C, Allen–Cunneen
for non-exponential service, M/M/c/K for a finite queue, Erlang B for a loss system) and the
least number of servers that meets the SLO. Where no formula applies (clients whose timeouts
and retries make the attempts non-Poisson, a pool the planner or autoscaler resizes, demand
that never holds still) it says why instead of giving a number. `compare_with_run` sets the
stationary answer beside the run's own estimate with a batch-means confidence interval.
Everything is in real units (requests per second, real servers) unless a name says simulated;
the warnings built on these models are in `scenario_warnings.py`. (A little over 400 lines:
the pool model, the stretches and the comparison share their figures' names and stay together.)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from sim.analysis import theory
from sim.analysis.theory import ServiceLaw
from sim.model.scenario import Scenario
from sim.model.units import format_duration
from sim.model.workload import Demand

# The SLO's latency target is a 99th percentile.
LATENCY_QUANTILE = 0.99
# Batch means: at least this many batches for a confidence interval, at most this many.
MIN_BATCHES, MAX_BATCHES = 10, 30
# Bins dropped at the start of a stretch before estimating its steady state (the pool starts
# empty): this share of the stretch's bins.
WARMUP_SHARE = 0.05
CONFIDENCE = 0.95
MAX_SERVERS = 10_000_000


# ------------------------------------------------------------------ one pool, steady state
@dataclass(frozen=True)
class PoolModel:
    """A pool in steady state: Poisson arrivals, `servers`, a queue of `queue_limit` places."""

    arrival_rps: float
    law: ServiceLaw
    servers: int
    queue_limit: float = math.inf
    error_rate: float = 0.0  # attempts failed fast (no server time), so thinned away

    @property
    def offered_load(self) -> float:
        """Offered load A = λ·E[S] of the attempts that reach the queue (erlangs)."""
        return self.arrival_rps * (1.0 - self.error_rate) * self.law.mean_s

    def figures(self) -> dict[str, Any]:
        """model, offered_load, utilization, p_wait, wait_mean_s, blocking (None where no
        formula holds, and then `reason`)."""
        load, servers = self.offered_load, self.servers
        admitted_rps = self.arrival_rps * (1.0 - self.error_rate)
        out: dict[str, Any] = {"offered_load": load, "blocking": None}
        exponential = self.law.dist == "exponential"
        if load <= 0:
            return {**out, "model": None, "utilization": 0.0, "p_wait": 0.0,
                    "wait_mean_s": 0.0, "reason": "nothing arrives"}  # fmt: skip
        if self.queue_limit == 0:
            blocking = theory.erlang_b(servers, load)
            # Erlang B is insensitive: it holds for any service-time law.
            model = "M/M/c/c (Erlang B)" if exponential else "M/G/c/c (Erlang B)"
            return {**out, "model": model, "utilization": load * (1 - blocking) / servers,
                    "p_wait": 0.0, "wait_mean_s": 0.0, "blocking": blocking}  # fmt: skip
        if math.isfinite(self.queue_limit):
            if not exponential:
                return {**out, "model": None, "utilization": None, "p_wait": None,
                        "wait_mean_s": None,
                        "reason": "a finite queue with non-exponential service (M/G/c/K) "
                        "has no closed form"}  # fmt: skip
            state = theory.mmck(admitted_rps, 1 / self.law.mean_s, servers,
                                servers + int(self.queue_limit))  # fmt: skip
            return {**out, "model": "M/M/c/K", "utilization": state.utilization,
                    "p_wait": state.p_wait, "wait_mean_s": state.wait_mean_s,
                    "blocking": state.blocking}  # fmt: skip
        if load >= servers:
            growth = admitted_rps - servers / self.law.mean_s
            return {**out, "model": None, "utilization": 1.0, "p_wait": None,
                    "wait_mean_s": None, "growth_rps": growth,
                    "reason": f"overloaded: offered load {load:.4g} ≥ {servers} servers, the "
                    f"queue grows by {growth:.4g}/s (no steady state)"}  # fmt: skip
        p_wait = theory.erlang_c(servers, load)
        if exponential:
            model, wait_s = "M/M/c (Erlang C)", theory.mmc(admitted_rps, 1 / self.law.mean_s,
                                                           servers).wait_mean_s  # fmt: skip
        else:
            model = "M/G/c (Allen–Cunneen approximation)"
            wait_s = theory.allen_cunneen_wait(admitted_rps, self.law, servers)
        return {**out, "model": model, "utilization": load / servers, "p_wait": p_wait,
                "wait_mean_s": wait_s}  # fmt: skip


def seconds(value_s: float) -> str:
    """A time for a message: seconds to three figures, milliseconds below one."""
    return f"{value_s:.3g}s" if value_s >= 1e-3 else f"{value_s * 1e3:.3g}ms"


def _with_servers(pool: PoolModel, servers: int) -> PoolModel:
    return PoolModel(pool.arrival_rps, pool.law, servers, pool.queue_limit, pool.error_rate)


def client_view(pool: PoolModel, timeout_s: float | None) -> tuple[float, float] | None:
    """(success ratio of fresh requests, p99 of the successes' latency) for clients that do
    not retry, or None where the pool has no steady state."""
    figures = pool.figures()
    if figures["p_wait"] is None:
        return None
    admitted = (1.0 - pool.error_rate) * (1.0 - (figures["blocking"] or 0.0))
    p_wait, wait_s = figures["p_wait"], figures["wait_mean_s"]
    in_time = 1.0
    if timeout_s is not None:
        in_time = 1.0 - theory.response_tail(pool.law, p_wait, wait_s, timeout_s)
    if in_time <= 0:
        return 0.0, math.nan
    # Successes are the responses within the timeout: their p99 is a quantile of that part.
    p99_s = theory.response_quantile(pool.law, p_wait, wait_s, LATENCY_QUANTILE * in_time)
    return admitted * in_time, p99_s


def servers_needed(
    pool: PoolModel, success_ratio: float, latency_p99_s: float | None, timeout_s: float | None
) -> int | None:
    """The least number of servers whose steady state meets both SLO targets (clients that
    do not retry), or None when no number does (the idle service already misses them)."""

    def meets(servers: int) -> bool:
        candidate = _with_servers(pool, servers)
        figures = candidate.figures()
        if figures["p_wait"] is None:
            return False
        p_wait, wait_s, law = figures["p_wait"], figures["wait_mean_s"], pool.law
        admitted = (1.0 - pool.error_rate) * (1.0 - (figures["blocking"] or 0.0))
        in_time = 1.0
        if timeout_s is not None:
            in_time = 1.0 - theory.response_tail(law, p_wait, wait_s, timeout_s)
        if admitted * in_time < success_ratio:
            return False
        if latency_p99_s is None or (timeout_s is not None and latency_p99_s >= timeout_s):
            return True  # every success answered within the timeout, so within the target
        # The successes' p99 is within the target when P(R <= target) >= 0.99·P(R <= T).
        within = 1.0 - theory.response_tail(law, p_wait, wait_s, latency_p99_s)
        return within >= LATENCY_QUANTILE * in_time

    # With servers without end nobody waits: a target the idle service misses is never met.
    in_time = pool.law.cdf(timeout_s) if timeout_s is not None else 1.0
    if (1.0 - pool.error_rate) * in_time < success_ratio or in_time <= 0:
        return None
    if latency_p99_s is not None and pool.law.quantile(LATENCY_QUANTILE * in_time) > latency_p99_s:
        return None
    low = max(1, math.floor(pool.offered_load) + 1) if pool.queue_limit != 0 else 1
    high = low
    while not meets(high):
        if high >= MAX_SERVERS:
            return None
        low, high = high + 1, min(MAX_SERVERS, 2 * high)
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if meets(middle) else (middle + 1, high)
    return high


# ------------------------------------------------------------------ stretches and theory
def _no_formula(scenario: Scenario) -> str | None:
    """Why no queueing formula describes this scenario's pool, or None when one does."""
    service, client, capacity = scenario.service, scenario.client, scenario.capacity
    if capacity.planner is not None or capacity.autoscale is not None:
        who = "planner" if capacity.planner is not None else "autoscaler"
        return f"the {who} resizes the pool from what it observes: no fixed pool to model"
    timeout_s = client.timeout if client else None
    retries = client.retries if client else 0
    fails = timeout_s is not None or math.isfinite(service.queue_limit) or service.error_rate
    if retries and (fails or any(f.error_rate for f in scenario.faults)):
        return (
            "clients retry failed attempts (after timeouts, rejections or errors), so the "
            "attempts the pool sees are not a Poisson stream: no queueing formula applies"
        )
    if service.drop_expired and timeout_s is not None:
        return "queued work whose client gave up is dropped (abandonment): not modelled"
    if service.sojourn_limit is not None:
        return "work that waited past sojourn_limit is shed: not modelled"
    return None


def _steady_demand(demand: Demand) -> list[tuple[float, float, float]]:
    """(start_s, end_s, rate) of the stretches where the fresh rate holds still."""
    left, right = demand.left, demand.right
    steady = np.isclose(left, right, rtol=1e-9, atol=1e-12)
    same_as_before = np.zeros_like(steady)
    same_as_before[1:] = steady[:-1] & np.isclose(left[1:], left[:-1], rtol=1e-9, atol=0.0)
    starts = np.flatnonzero(steady & ~same_as_before)
    continues = steady & same_as_before
    runs = []
    for first in starts:
        last = first
        while last + 1 < len(steady) and continues[last + 1]:
            last += 1
        runs.append((float(demand.t[first]), float(demand.t[last + 1]), float(left[first])))
    return runs


def _pool_timeline(scenario: Scenario) -> list[tuple[float, float, float, float, float]]:
    """(start_s, end_s, servers, slowdown, error_rate) where the planned pool and the faults
    hold still."""
    duration_s = scenario.scenario.duration
    marks = {0.0, duration_s}
    marks |= {c.at for c in scenario.capacity.change}
    for fault in scenario.faults:
        marks |= {fault.at, fault.at + fault.duration}
    times = sorted(t for t in marks if 0 <= t <= duration_s)
    changes = sorted(scenario.capacity.change, key=lambda c: c.at)
    out = []
    for start_s, end_s in zip(times[:-1], times[1:], strict=True):
        servers = float(scenario.service.servers)
        for change in changes:
            if change.at <= start_s:
                servers = float(change.servers)
        factor = slowdown = ok = 1.0
        for fault in scenario.faults:
            if fault.at <= start_s < fault.at + fault.duration:
                factor *= fault.capacity_factor
                slowdown *= fault.slowdown
                ok *= 1 - fault.error_rate
        error_rate = 1 - (1 - scenario.service.error_rate) * ok
        out.append((start_s, end_s, round(servers * factor), slowdown, error_rate))
    return out


def _stretch(scenario: Scenario, start_s, end_s, rate_rps, servers, slowdown, error_rate):
    service, slo, client = scenario.service, scenario.slo, scenario.client
    law = ServiceLaw.of(service.time)
    law = law.slowed(slowdown) if slowdown != 1 else law
    row: dict[str, Any] = {"start_s": start_s, "end_s": end_s, "arrival_rps": rate_rps,
                           "servers": servers}  # fmt: skip
    if servers < 1:
        return {**row, "model": None, "offered_load": rate_rps * law.mean_s,
                "utilization": None, "p_wait": None, "wait_mean_s": None, "blocking": None,
                "servers_needed": None, "reason": "no servers"}  # fmt: skip
    pool = PoolModel(rate_rps, law, int(servers), service.queue_limit, error_rate)
    row.update(pool.figures())
    timeout_s = client.timeout if client else None
    row["servers_needed"] = None
    view = client_view(pool, timeout_s) if row["model"] else None
    if view is not None:
        row["success_ratio"], row["latency_p99_s"] = view[0], _finite(view[1])
    if service.discipline == "lifo" or service.lifo_over is not None:
        # Means and P(wait) hold for any order of service; the response time's p99 does not.
        row["latency_p99_s"] = None
        row["note"] = "LIFO service: the p99 and servers_needed are not given"
    elif slowdown == 1 and error_rate == service.error_rate:
        needed_pool = PoolModel(rate_rps, law, 1, service.queue_limit, error_rate)
        row["servers_needed"] = servers_needed(needed_pool, slo.success_ratio,
                                               slo.latency_p99, timeout_s)  # fmt: skip
    return row


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def scenario_theory(scenario: Scenario, demand: Demand) -> dict[str, Any]:
    """summary.json's `theory`: the stationary parts of a scenario and what theory expects
    there (see /tmp contracts: applies, reason, model, top-level figures when stationary as
    a whole, stretches, compare)."""
    out: dict[str, Any] = {"applies": False, "reason": "", "model": None, "stretches": [],
                           "compare": []}  # fmt: skip
    why_not = _no_formula(scenario)
    if why_not:
        out["reason"] = why_not
        return out
    steady = _steady_demand(demand)
    if not steady:
        out["reason"] = "the fresh rate never holds still (a daily cycle, ramps or growth)"
        return out
    stretches = []
    for start_s, end_s, servers, slowdown, error_rate in _pool_timeline(scenario):
        for d0, d1, rate_rps in steady:
            low, high = max(start_s, d0), min(end_s, d1)
            if high > low:
                stretches.append(_stretch(scenario, low, high, rate_rps, servers, slowdown,
                                          error_rate))  # fmt: skip
    out["stretches"] = stretches
    modelled = [s for s in stretches if s["model"]]
    models = sorted({s["model"] for s in modelled})
    out["applies"] = bool(modelled)
    out["model"] = models[0] if len(models) == 1 else ("several" if models else None)
    duration_s = scenario.scenario.duration
    whole = (
        len(stretches) == 1
        and stretches[0]["start_s"] == 0
        and (stretches[0]["end_s"] >= duration_s)
    )
    if whole:
        only = stretches[0]
        for key in ("offered_load", "utilization", "p_wait", "wait_mean_s", "blocking",
                    "servers_needed", "success_ratio", "latency_p99_s", "growth_rps"):  # fmt: skip
            if key in only:
                out[key] = only[key]
        out["reason"] = only.get("reason") or (
            f"constant fresh rate {only['arrival_rps']:.4g}/s into a fixed pool of "
            f"{only['servers']:,} servers: {only['model']}"
        )
        out["applies"] = only["model"] is not None
    else:
        skipped = sum(e - s for s, e, _ in steady) < duration_s - 1e-9
        out["reason"] = (
            f"{len(stretches)} steady stretches between surges, capacity changes and faults"
            + ("; ramps and other moving demand have no stretch" if skipped else "")
        )
    return _plain(out)


def _plain(value: Any) -> Any:
    """JSON-ready: numpy numbers as Python ones, NaN and infinities as None."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


# ------------------------------------------------------------------ theory beside the run
def batch_means_interval(
    values: np.ndarray, weights: np.ndarray | None = None
) -> tuple[float, float, float] | None:
    """(estimate, low, high): a ratio of sums over consecutive batches of bins with a
    Student t interval across batches, or None with fewer than MIN_BATCHES batches."""
    values = np.asarray(values, dtype=float)
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=float)
    n_batches = min(MAX_BATCHES, len(values) // 2)
    if n_batches < MIN_BATCHES:
        return None
    size = len(values) // n_batches
    numerators = values[: size * n_batches].reshape(n_batches, size).sum(axis=1)
    denominators = weights[: size * n_batches].reshape(n_batches, size).sum(axis=1)
    if np.any(denominators <= 0):
        return None
    means = numerators / denominators
    estimate = float(means.mean())
    sem = means.std(ddof=1) / math.sqrt(n_batches)  # scipy's stats.sem, without its wrapper
    half = float(_t_quantile(n_batches - 1) * sem)
    return estimate, estimate - half, estimate + half


@functools.cache
def _t_quantile(df: int) -> float:
    """Student t's two-sided CONFIDENCE quantile (scipy's ppf costs more than the batches)."""
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))


def compare_with_run(scenario: Scenario, theory_out: dict, recorder) -> list[dict]:
    """Rows of theory beside the run, for a scenario stationary as a whole: the theory of
    the simulated pool (servers / scale) against batch means of the run's bins, past a
    warm-up, with a 95% confidence interval; `agrees` when theory lies inside it."""
    stretches = theory_out.get("stretches") or []
    if len(stretches) != 1 or not theory_out.get("applies"):
        return []
    only = stretches[0]
    scale = scenario.scenario.scale
    service = scenario.service
    simulated_servers = round(only["servers"] / scale)
    queue_limit = service.queue_limit / scale if math.isfinite(service.queue_limit) else math.inf
    figures = PoolModel(only["arrival_rps"] / scale, ServiceLaw.of(service.time),
                        simulated_servers, queue_limit, service.error_rate).figures()  # fmt: skip
    if figures["p_wait"] is None:
        return []
    n = recorder.closed_bins
    first = math.ceil(WARMUP_SHARE * n)
    window = slice(first, n)
    busy = np.asarray(recorder.busy_area[window], dtype=float)
    server = np.asarray(recorder.server_area[window], dtype=float)
    queue = np.asarray(recorder.queue_area[window], dtype=float)
    widths = np.full(len(queue), recorder.bin_s)
    started = np.asarray(recorder.attempts[window], dtype=float) - np.asarray(
        recorder.rejected[window], dtype=float
    )
    rows = []
    pool = f"{simulated_servers:,} simulated servers"
    candidates = [
        ("utilization", "utilisation", figures["utilization"], busy, server),
        ("queue_mean", f"mean queue ({pool})", figures["wait_mean_s"] *
         only["arrival_rps"] / scale * (1 - service.error_rate) * (1 - (figures["blocking"] or 0)),
         queue, widths),
        # Little's law: the time-average queue over the rate that entered it is the mean wait.
        ("wait_mean_s", f"mean wait ({pool}; Little's law)", figures["wait_mean_s"], queue,
         started),
    ]  # fmt: skip
    if (only.get("success_ratio") or 1.0) < 1.0:  # a ratio of exactly 1 has nothing to test
        ok = np.asarray(recorder.fresh_ok[window], dtype=float)
        decided = ok + np.asarray(recorder.fresh_failed[window], dtype=float)
        candidates.append(("success_ratio", "success ratio", only["success_ratio"], ok, decided))
    for figure, label, expected, values, weights in candidates:
        interval = batch_means_interval(values, weights)
        if interval is None:
            continue
        estimate, low, high = interval
        slack = 1e-9 * max(1.0, abs(expected))
        rows.append({"figure": figure, "label": label, "theory": expected,
                     "simulated": estimate, "ci_low": low, "ci_high": high,
                     # Rounding slack: a deterministic (fluid) run has an interval of 0 width.
                     "agrees": bool(low - slack <= expected <= high + slack),
                     "model": figures["model"]})  # fmt: skip
    return _plain(rows)


def describe_theory(theory_out: dict) -> list[str]:
    """Lines for `check`: what theory expects, or why it says nothing."""
    if not theory_out.get("applies"):
        return [f"theory: no formula applies: {theory_out.get('reason', '')}"]
    lines = [f"theory: {theory_out['reason']}"]
    for row in theory_out["stretches"]:
        start = format_duration(row["start_s"]) if row["start_s"] else "0"
        span = f"{start}–{format_duration(row['end_s'])}"
        head = f"  {span}: {row['arrival_rps']:.4g}/s, {row['servers']:,} servers"
        if row["model"] is None:
            lines.append(f"{head}: {row.get('reason', 'no formula')}")
            continue
        parts = [row["model"], f"offered load {row['offered_load']:.4g}",
                 f"utilisation {row['utilization']:.3f}", f"P(wait) {row['p_wait']:.4f}",
                 f"mean wait {seconds(row['wait_mean_s'])}"]  # fmt: skip
        if row.get("blocking") is not None:
            parts.append(f"blocking {row['blocking']:.4g}")
        if row.get("success_ratio") is not None:
            parts.append(f"success {row['success_ratio']:.4f}")
        needed = row.get("servers_needed")
        parts.append(
            f"servers needed for the SLO {needed:,}" if needed is not None
            else "no number of servers meets the SLO" if "note" not in row else row["note"]
        )  # fmt: skip
        lines.append(f"{head}: " + ", ".join(parts))
    return lines
