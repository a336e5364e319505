"""The key parameters of a scenario, JSON-ready with units in the names (seconds, per second).

`summary.json` carries them (with the SLO), so a report can be redrawn from the output folder
alone, and a reader of the summary sees what was run without the scenario file.
"""

from __future__ import annotations

import math
from typing import Any


def _surge(surge) -> dict:
    return {
        "at_s": surge.at,
        "duration_s": surge.duration,
        "factor": surge.factor,
        "rate_rps": surge.rate,
        "ramp_s": surge.ramp,
    }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def scenario_parameters(scenario) -> dict[str, Any]:
    """The key parameters of a Scenario, JSON-ready with units in the names (seconds, /s)."""
    meta, service, time = scenario.scenario, scenario.service, scenario.service.time
    arrivals = scenario.arrivals
    client = scenario.client
    return {
        "duration_s": meta.duration,
        "bin_s": meta.bin,
        "arrivals": {
            "rate_rps": arrivals.rate,
            "diurnal": (
                {"amplitude": arrivals.diurnal.amplitude, "peak_s": arrivals.diurnal.peak}
                if arrivals.diurnal
                else None
            ),
            "surges": [_surge(s) for s in arrivals.surge],
        },
        "population": (
            {
                **scenario.population.model_dump(mode="json", exclude={"surge"}),
                "surges": [_surge(s) for s in scenario.population.surge],
            }
            if scenario.population
            else None
        ),
        "service": {
            "servers": service.servers,
            "time": {
                "dist": time.dist,
                "mean_s": time.mean_s,
                "cv": time.cv,
                "samples": len(time.samples) if time.samples else None,
            },
            "queue_limit": _finite_or_none(service.queue_limit),
            "discipline": service.discipline,
            "drop_expired": service.drop_expired,
            "error_rate": service.error_rate,
            "lifo_over": service.lifo_over,
            "sojourn_limit_s": service.sojourn_limit,
        },
        "capacity": {
            "changes": [{"at_s": c.at, "servers": c.servers} for c in scenario.capacity.change],
            "planner": (
                scenario.capacity.planner.model_dump(mode="json")
                if scenario.capacity.planner
                else None
            ),
            "autoscale": (
                scenario.capacity.autoscale.model_dump(mode="json")
                if scenario.capacity.autoscale
                else None
            ),
        },
        "faults": [
            {
                "at_s": f.at,
                "duration_s": f.duration,
                "capacity_factor": f.capacity_factor,
                "slowdown": f.slowdown,
                "error_rate": f.error_rate,
            }
            for f in scenario.faults
        ],
        "client": (
            {
                "timeout_s": client.timeout,
                "retries": client.retries,
                "backoff": {
                    "base_s": client.backoff.base,
                    "cap_s": client.backoff.cap,
                    "multiplier": client.backoff.multiplier,
                    "jitter": client.backoff.jitter,
                },
                "retry_budget": client.retry_budget,
                "throttle_k": client.throttle_k,
            }
            if client
            else None
        ),
    }


def scenario_slo(scenario) -> dict[str, float | None]:
    """The SLO of a Scenario: per-bin success ratio and p99 targets, least outage length."""
    slo = scenario.slo
    return {
        "success_ratio": slo.success_ratio,
        "latency_p99_s": slo.latency_p99,
        "min_duration_s": slo.min_duration,
    }
