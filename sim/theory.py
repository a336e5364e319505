"""Exact queueing-theory answers the simulator is judged against.

Every function here is a closed form or an exact numerical solution (no simulation), so the
engine's estimates can be tested against them with confidence intervals. Rates are per second,
times in seconds; the formulas and worked examples are those of the project's theory reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Probability mass we allow to fall outside a truncated state space or Poisson sum.
_TAIL_MASS = 1e-12
# Standard deviations (plus a fixed margin for small means) that put a Poisson tail below
# _TAIL_MASS with a wide safety factor.
_TAIL_SIGMAS = 12.0
_TAIL_MARGIN = 40


def _check_count(name: str, value: int, minimum: int) -> int:
    """Return `value` as an int, or raise ValueError unless it is a whole number >= minimum."""
    whole = not isinstance(value, bool) and math.isfinite(value) and int(value) == value
    if not whole or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_servers(servers: int) -> int:
    return _check_count("servers", servers, 1)


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_non_negative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def erlang_b(servers: int, offered_load: float) -> float:
    """Return the M/M/c/c blocking probability for `servers` and offered load A = λ/μ."""
    _check_non_negative("offered_load", offered_load)
    blocking = 1.0
    for k in range(1, _check_servers(servers) + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    return blocking


def erlang_c(servers: int, offered_load: float) -> float:
    """Return P(wait > 0) in M/M/c; the load must be below the number of servers."""
    _check_servers(servers)
    _check_non_negative("offered_load", offered_load)
    if offered_load >= servers:
        raise ValueError(
            f"offered_load {offered_load} >= servers {servers}: M/M/c has no steady state"
        )
    blocking = erlang_b(servers, offered_load)
    utilization = offered_load / servers
    return blocking / (1.0 - utilization * (1.0 - blocking))


@dataclass(frozen=True)
class MMcSteadyState:
    """Steady-state means of an M/M/c queue (times in seconds, counts in customers)."""

    p_wait: float
    wait_mean_s: float
    response_mean_s: float
    queue_mean: float
    in_system_mean: float
    utilization: float


def mmc(arrival_rate_rps: float, service_rate_rps: float, servers: int) -> MMcSteadyState:
    """Return the steady state of an M/M/c queue; raises ValueError if λ >= cμ."""
    _check_positive("arrival_rate_rps", arrival_rate_rps)
    _check_positive("service_rate_rps", service_rate_rps)
    _check_servers(servers)
    p_wait = erlang_c(servers, arrival_rate_rps / service_rate_rps)
    wait_mean_s = p_wait / (servers * service_rate_rps - arrival_rate_rps)
    response_mean_s = wait_mean_s + 1.0 / service_rate_rps
    return MMcSteadyState(
        p_wait=p_wait,
        wait_mean_s=wait_mean_s,
        response_mean_s=response_mean_s,
        queue_mean=arrival_rate_rps * wait_mean_s,
        in_system_mean=arrival_rate_rps * response_mean_s,
        utilization=arrival_rate_rps / (servers * service_rate_rps),
    )


def mmck_blocking(
    arrival_rate_rps: float, service_rate_rps: float, servers: int, system_capacity: int
) -> float:
    """Return the M/M/c/K blocking probability (K counts those in service), for any load."""
    _check_positive("arrival_rate_rps", arrival_rate_rps)
    _check_positive("service_rate_rps", service_rate_rps)
    servers = _check_servers(servers)
    system_capacity = _check_count("system_capacity", system_capacity, servers)
    levels = np.arange(system_capacity + 1, dtype=float)
    # Weight of level n is A^n/n! up to c; past c each extra customer waits, adding A/c.
    log_factorials = np.concatenate(([0.0], np.cumsum(np.log(levels[1 : servers + 1]))))
    log_weights = levels * math.log(arrival_rate_rps / service_rate_rps)
    log_weights[: servers + 1] -= log_factorials
    waiting = levels[servers + 1 :] - servers
    log_weights[servers + 1 :] -= log_factorials[-1] + waiting * math.log(servers)
    # Normalise in log space so huge or tiny loads neither overflow nor underflow.
    peak = log_weights.max()
    return float(math.exp(log_weights[-1] - peak) / np.exp(log_weights - peak).sum())


def mm1k_blocking(arrival_rate_rps: float, service_rate_rps: float, system_capacity: int) -> float:
    """Return the M/M/1/K blocking probability (1 − ρ)ρ^K / (1 − ρ^{K+1}), 1/(K+1) at ρ = 1."""
    return mmck_blocking(arrival_rate_rps, service_rate_rps, 1, system_capacity)


def pollaczek_khinchine_wait(
    arrival_rate_rps: float, service_mean_s: float, service_second_moment_s2: float
) -> float:
    """Return the M/G/1 mean wait in queue λE[S²] / (2(1 − ρ)); raises ValueError if ρ >= 1."""
    _check_positive("arrival_rate_rps", arrival_rate_rps)
    _check_positive("service_mean_s", service_mean_s)
    _check_positive("service_second_moment_s2", service_second_moment_s2)
    # E[S²] >= E[S]² always; a smaller value means the caller passed a variance or a typo.
    if service_second_moment_s2 < service_mean_s**2 * (1.0 - 1e-12):
        raise ValueError(
            f"service_second_moment_s2 {service_second_moment_s2} < service_mean_s² "
            f"{service_mean_s**2}: not a second moment"
        )
    utilization = arrival_rate_rps * service_mean_s
    if utilization >= 1.0:
        raise ValueError(f"utilization {utilization} >= 1: M/G/1 has no steady state")
    return arrival_rate_rps * service_second_moment_s2 / (2.0 * (1.0 - utilization))


def md1_wait(arrival_rate_rps: float, service_s: float) -> float:
    """Return the M/D/1 mean wait in queue for a constant service time."""
    return pollaczek_khinchine_wait(arrival_rate_rps, service_s, service_s**2)


def mg1_wait_from_cv(arrival_rate_rps: float, service_mean_s: float, cv: float) -> float:
    """Return the M/G/1 mean wait for a service time with coefficient of variation `cv`."""
    _check_non_negative("cv", cv)
    second_moment_s2 = service_mean_s**2 * (1.0 + cv**2)
    return pollaczek_khinchine_wait(arrival_rate_rps, service_mean_s, second_moment_s2)


def overload_queue_line(
    arrival_rate_rps: float, service_rate_rps: float, servers: int, t_s: float
) -> float:
    """Return the fluid approximation max(0, (λ − cμ)·t) of the queue after `t_s` seconds."""
    _check_positive("arrival_rate_rps", arrival_rate_rps)
    _check_positive("service_rate_rps", service_rate_rps)
    _check_servers(servers)
    _check_non_negative("t_s", t_s)
    return max(0.0, (arrival_rate_rps - servers * service_rate_rps) * t_s)


def _poisson_cutoff(mean: float) -> int:
    """Return a count beyond which a Poisson(mean) variable has mass well below _TAIL_MASS."""
    return math.ceil(mean + _TAIL_SIGMAS * math.sqrt(mean) + _TAIL_MARGIN)


def mmc_transient_mean_in_system(
    arrival_rate_rps: float, service_rate_rps: float, servers: int, t_s: float, start: int = 0
) -> float:
    """Return the exact mean number in system at t_s of an M/M/c starting with `start` customers."""
    _check_positive("arrival_rate_rps", arrival_rate_rps)
    _check_positive("service_rate_rps", service_rate_rps)
    _check_servers(servers)
    _check_non_negative("t_s", t_s)
    start = _check_count("start", start, 0)
    if t_s == 0:
        return float(start)
    # Uniformization: jumps of a rate-Λ Poisson clock drive the chain P = I + Q/Λ.
    uniform_rate = arrival_rate_rps + servers * service_rate_rps
    # The level can exceed `start` only by the number of arrivals, Poisson(λt).
    top = start + _poisson_cutoff(arrival_rate_rps * t_s)
    levels = np.arange(top + 1, dtype=float)
    up = np.full(top + 1, arrival_rate_rps / uniform_rate)
    up[-1] = 0.0  # reflecting cap; the mass that would reach it is below _TAIL_MASS
    down = np.minimum(levels, servers) * service_rate_rps / uniform_rate
    stay = 1.0 - up - down

    mean_jumps = uniform_rate * t_s
    jumps = np.arange(_poisson_cutoff(mean_jumps) + 1, dtype=float)
    log_jump_factorials = np.concatenate(([0.0], np.cumsum(np.log(jumps[1:]))))
    # Poisson weights in log space: e^{-Λt} alone underflows once Λt exceeds ~745.
    jump_weights = np.exp(-mean_jumps + jumps * math.log(mean_jumps) - log_jump_factorials)

    distribution = np.zeros(top + 1)
    distribution[start] = 1.0
    mean_in_system = 0.0
    for weight in jump_weights:
        mean_in_system += weight * float(distribution @ levels)
        moving_up = distribution * up
        moving_down = distribution * down
        distribution = distribution * stay
        distribution[1:] += moving_up[:-1]
        distribution[:-1] += moving_down[1:]
    return mean_in_system


def mm1_transient_mean_in_system(
    arrival_rate_rps: float, service_rate_rps: float, t_s: float, start: int = 0
) -> float:
    """Return the exact mean number in system at t_s of an M/M/1 starting with `start` customers."""
    return mmc_transient_mean_in_system(arrival_rate_rps, service_rate_rps, 1, t_s, start)


def drain_time_s(
    backlog: float, servers: int, service_rate_rps: float, arrival_rate_rps: float
) -> float:
    """Return the time backlog / (cμ − λ′) to clear a backlog, or math.inf if cμ <= λ′."""
    _check_non_negative("backlog", backlog)
    _check_servers(servers)
    _check_positive("service_rate_rps", service_rate_rps)
    # λ′ = 0 is allowed: the load may fall away entirely while the backlog drains.
    _check_non_negative("arrival_rate_rps", arrival_rate_rps)
    spare_rps = servers * service_rate_rps - arrival_rate_rps
    if spare_rps <= 0:
        return math.inf
    return backlog / spare_rps


def _check_retry_args(p_fail: float, retries: int) -> None:
    if not (0.0 <= p_fail <= 1.0):
        raise ValueError(f"p_fail must be in [0, 1], got {p_fail!r}")
    _check_count("retries", retries, 0)


def retry_expected_attempts(p_fail: float, retries: int) -> float:
    """Return the mean attempts per request (1 − p^{N+1}) / (1 − p), or N + 1 when p = 1."""
    _check_retry_args(p_fail, retries)
    if p_fail == 1.0:
        return float(retries + 1)
    return (1.0 - p_fail ** (retries + 1)) / (1.0 - p_fail)


def retry_success_probability(p_fail: float, retries: int) -> float:
    """Return the probability 1 − p^{N+1} that one of the N + 1 attempts succeeds."""
    _check_retry_args(p_fail, retries)
    return 1.0 - p_fail ** (retries + 1)
