"""Warnings a run deserves before it starts: SLOs no load can meet, and a scale that moves
the queue regime.

`idle_slo_warnings` tells of SLO targets the service misses even idle (no queue at all), from
the service-time law exactly as the engines draw it; `scale_warnings` of a `scale` at which the
simulated pool's Erlang C P(wait) or mean wait, at the scenario's peak utilisation, differs
materially from the real pool's. `check` prints them, `run` prints them on stderr, and
summary.json keeps them under `warnings` (one line each).
"""

from __future__ import annotations

from sim.analysis.expectations import LATENCY_QUANTILE, PoolModel, seconds
from sim.analysis.theory import ServiceLaw
from sim.model.scenario import Scenario
from sim.model.units import format_duration
from sim.model.workload import Demand

# A pool queues "materially differently" when P(wait) moves by more than this much ...
MATERIAL_P_WAIT = 0.05
# ... or its mean wait moves by more than this share of the mean service time.
MATERIAL_WAIT_SHARE = 0.05


# ------------------------------------------------------------------ idle SLO warnings
def idle_slo_warnings(scenario: Scenario) -> list[str]:
    """SLO targets the service misses with no queue at all, with the figures.

    With no queue a request's latency is at least its last attempt's service time S, and
    that attempt finished within the timeout T: among successes P(latency <= x) <= F(x)/F(T),
    so their p99 is at least F⁻¹(0.99·F(T)); without errors, budget or throttling, a success
    after a timed-out attempt takes T or more, which makes the bound F⁻¹(0.99·P(success)) or
    T. An attempt succeeds idle with probability (1 − error_rate)·F(T), so with N retries at
    most 1 − (1 − p)^(N+1) of requests succeed (a budget or throttling can only lower it).
    """
    slo, client = scenario.slo, scenario.client
    law = ServiceLaw.of(scenario.service.time)
    timeout_s = client.timeout if client else None
    retries = client.retries if client else 0
    error_rate = scenario.service.error_rate
    in_time = law.cdf(timeout_s) if timeout_s is not None else 1.0
    attempt_ok = (1.0 - error_rate) * in_time
    success_max = 1.0 - (1.0 - attempt_ok) ** (retries + 1)
    service = _describe_law(law)
    own_p99_s = law.quantile(LATENCY_QUANTILE)
    warnings = []
    if success_max < slo.success_ratio:
        why = []
        if timeout_s is not None and in_time < 1:
            why.append(
                f"the {format_duration(timeout_s)} client timeout is under the service's own "
                f"p99 of {seconds(own_p99_s)}, so an idle attempt finishes in time with "
                f"probability {in_time:.4g}"
            )
        if error_rate:
            why.append(f"service.error_rate fails {error_rate:.4g} of attempts")
        rescue = f", and even with {retries} retries" if retries else ", so"
        warnings.append(
            f"slo.success_ratio = {slo.success_ratio:g} cannot be met even by an idle service"
            f" ({service}): {'; '.join(why)}{rescue} at most {success_max:.4g} of requests "
            "succeed"
        )
    if slo.latency_p99 is not None and in_time > 0:
        bound_s = law.quantile(LATENCY_QUANTILE * in_time)
        simple = error_rate == 0 and not (client and (client.retry_budget or client.throttle_k))
        if timeout_s is not None and retries and simple:
            # (success_max rounds to 0 when an attempt almost never finishes in time)
            if 0 < LATENCY_QUANTILE * success_max < in_time:
                bound_s = max(bound_s, law.quantile(LATENCY_QUANTILE * success_max))
            else:
                bound_s = max(bound_s, timeout_s)
        if slo.latency_p99 < bound_s:
            given = f" with a {format_duration(timeout_s)} timeout" if timeout_s else ""
            warnings.append(
                f"slo.latency_p99 = {format_duration(slo.latency_p99)} is below the idle "
                f"service's own p99 of {seconds(bound_s)}{given} ({service}): no number of "
                "servers meets it"
            )
    return warnings


def _describe_law(law: ServiceLaw) -> str:
    if law.dist == "empirical":
        return f"empirical service of {len(law.samples)} samples, mean {seconds(law.mean_s)}"
    cv = f", cv {law.cv:g}" if law.dist in ("lognormal", "gamma") else ""
    return f"{law.dist} service, mean {seconds(law.mean_s)}{cv}"


# ------------------------------------------------------------------ scale warnings
def _pool_states(scenario: Scenario, demand: Demand) -> list[tuple[str, float, float]]:
    """(what, peak fresh rate, real servers) at each planned state of the pool; a planner or
    an autoscaler is taken at the servers its target utilisation asks for at peak demand."""
    meta, service = scenario.scenario, scenario.service
    law_mean_s = service.time.mean_s
    peak_rps = demand.peak(0.0, meta.duration)
    controller = scenario.capacity.planner or scenario.capacity.autoscale
    if controller is not None:
        autoscale = scenario.capacity.autoscale
        if scenario.capacity.planner is not None:
            target, who = scenario.capacity.planner.target_utilization, "the planner"
        elif autoscale.metric == "utilization":
            target, who = autoscale.target, "the autoscaler"
        else:
            return []
        servers = peak_rps * law_mean_s / target
        servers = min(max(servers, controller.min_servers), controller.max_servers)
        return [(f"{who}'s pool at peak demand", peak_rps, servers)]
    times = sorted({0.0, *(c.at for c in scenario.capacity.change if 0 <= c.at < meta.duration)})
    states, servers = [], float(service.servers)
    changes = sorted(scenario.capacity.change, key=lambda c: c.at)
    for start_s, end_s in zip(times, [*times[1:], meta.duration], strict=True):
        for change in changes:
            if change.at <= start_s:
                servers = float(change.servers)
        if servers > 0:
            what = f"from {format_duration(start_s)}" if start_s else "the planned pool"
            states.append((what, demand.peak(start_s, end_s), servers))
    return states


def scale_warnings(scenario: Scenario, demand: Demand) -> list[str]:
    """A warning when, at the run's scale, the simulated pool's Erlang C P(wait) or mean wait
    at its peak utilisation differs materially from the real pool's (faults aside)."""
    scale = scenario.scenario.scale
    if scale == 1:
        return []
    law = ServiceLaw.of(scenario.service.time)
    worst: tuple[float, str] | None = None
    for what, peak_rps, real_servers in _pool_states(scenario, demand):
        simulated = max(1, round(real_servers / scale))
        real = max(1, round(real_servers))
        utilization = peak_rps * law.mean_s / real
        if not 0 < utilization < 1 or peak_rps / scale * law.mean_s >= simulated:
            continue  # overloaded: both pools queue without bound
        sim_pool = PoolModel(peak_rps / scale, law, simulated).figures()
        real_pool = PoolModel(peak_rps, law, real).figures()
        gap = abs(sim_pool["p_wait"] - real_pool["p_wait"])
        wait_gap_s = abs(sim_pool["wait_mean_s"] - real_pool["wait_mean_s"])
        if gap <= MATERIAL_P_WAIT and wait_gap_s <= MATERIAL_WAIT_SHARE * law.mean_s:
            continue
        more = "more" if sim_pool["p_wait"] > real_pool["p_wait"] else "less"
        remedy = "lower scenario.scale" if scale > 1 else "use scenario.scale = 1"
        text = (
            f"at scale {scale:g} the simulated pool of {simulated:,} servers waits "
            f"P(wait)={sim_pool['p_wait']:.2f} (mean wait {seconds(sim_pool['wait_mean_s'])})"
            f" at the peak utilisation {utilization:.2f} ({what}), the real pool of "
            f"{real:,} waits {real_pool['p_wait']:.2f} (mean wait "
            f"{seconds(real_pool['wait_mean_s'])}): the run queues {more} than the real "
            f"service would; {remedy}"
        )
        if worst is None or gap > worst[0]:
            worst = (gap, text)
    return [worst[1]] if worst else []


def scenario_warnings(scenario: Scenario, demand: Demand) -> list[str]:
    """Every warning about a scenario that a run should print (one line each)."""
    return idle_slo_warnings(scenario) + scale_warnings(scenario, demand)
