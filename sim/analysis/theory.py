"""Exact queueing-theory answers the simulator is judged against.

Every function here is a closed form or an exact numerical solution (no simulation), so the
engine's estimates can be tested against them with confidence intervals; the two accepted
approximations (Allen–Cunneen's M/G/c wait, an exponential tail for the wait of those who
wait) say so in their names and docstrings. Rates are per second, times in seconds; the
formulas and worked examples are those of the project's theory reference. `ServiceLaw` is the
service-time distribution exactly as the engines draw it (its CDF and quantiles).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import integrate, optimize, stats

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


def mmck_distribution(
    arrival_rate_rps: float, service_rate_rps: float, servers: int, system_capacity: int
) -> np.ndarray:
    """Return the M/M/c/K stationary probabilities of 0..K in the system (K counts those in
    service), for any load."""
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
    weights = np.exp(log_weights - log_weights.max())
    return weights / weights.sum()


def mmck_blocking(
    arrival_rate_rps: float, service_rate_rps: float, servers: int, system_capacity: int
) -> float:
    """Return the M/M/c/K blocking probability (K counts those in service), for any load."""
    distribution = mmck_distribution(arrival_rate_rps, service_rate_rps, servers, system_capacity)
    return float(distribution[-1])


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


def allen_cunneen_wait(arrival_rate_rps: float, law: ServiceLaw, servers: int) -> float:
    """Return the Allen–Cunneen approximation of the M/G/c mean wait in queue:
    W_q(M/M/c) · (c_a² + c_s²) / 2 with Poisson arrivals (c_a² = 1); exact for exponential
    service and for one server (Pollaczek–Khinchine)."""
    mmc_wait_s = mmc(arrival_rate_rps, 1.0 / law.mean_s, servers).wait_mean_s
    return mmc_wait_s * (1.0 + law.scv) / 2.0


@dataclass(frozen=True)
class FiniteQueueState:
    """Steady state of M/M/c/K: blocking, and waits of the admitted (seconds, customers)."""

    blocking: float
    p_wait: float
    wait_mean_s: float
    queue_mean: float
    utilization: float


def mmck(
    arrival_rate_rps: float, service_rate_rps: float, servers: int, system_capacity: int
) -> FiniteQueueState:
    """Return the M/M/c/K steady state: an admitted arrival waits when it finds c or more."""
    distribution = mmck_distribution(arrival_rate_rps, service_rate_rps, servers, system_capacity)
    blocking = float(distribution[-1])
    admitted_rps = arrival_rate_rps * (1.0 - blocking)
    waiting = np.arange(len(distribution)) - servers
    queue_mean = float(np.clip(waiting, 0, None) @ distribution)
    return FiniteQueueState(
        blocking=blocking,
        p_wait=float(distribution[servers:-1].sum() / (1.0 - blocking)),
        wait_mean_s=queue_mean / admitted_rps,
        queue_mean=queue_mean,
        utilization=admitted_rps / (servers * service_rate_rps),
    )


@dataclass(frozen=True)
class ServiceLaw:
    """A service-time distribution as the engines draw it (sim/engine/des.py,
    `service_time_draw`): exponential, deterministic, lognormal or gamma with a coefficient of
    variation, or an empirical list drawn uniformly."""

    dist: str
    mean_s: float
    cv: float | None = None
    samples: tuple[float, ...] | None = None

    @classmethod
    def of(cls, spec) -> ServiceLaw:
        """The law of a scenario's `service.time` table."""
        samples = tuple(sorted(spec.samples)) if spec.samples else None
        return cls(spec.dist, spec.mean_s, spec.cv, samples)

    def slowed(self, factor: float) -> ServiceLaw:
        """The same law with every time multiplied by `factor` (a slowdown fault)."""
        samples = tuple(s * factor for s in self.samples) if self.samples else None
        return ServiceLaw(self.dist, self.mean_s * factor, self.cv, samples)

    @property
    def scv(self) -> float:
        """Squared coefficient of variation, Var[S] / E[S]²."""
        if self.dist == "empirical":
            values = np.asarray(self.samples)
            return float(values.var() / values.mean() ** 2)
        return {"exponential": 1.0, "deterministic": 0.0}.get(self.dist, (self.cv or 0.0) ** 2)

    def _frozen(self):
        return _frozen_law(self.dist, self.mean_s, self.cv)

    def cdf(self, t_s: float) -> float:
        """P(S <= t_s)."""
        if self.dist == "deterministic":
            return 1.0 if t_s >= self.mean_s else 0.0
        if self.dist == "empirical":
            return float(np.searchsorted(self.samples, t_s, side="right") / len(self.samples))
        return float(self._frozen().cdf(t_s))

    def quantile(self, q: float) -> float:
        """The least t with P(S <= t) >= q, for 0 < q <= 1."""
        if not 0.0 < q <= 1.0:
            raise ValueError(f"q must be in (0, 1], got {q!r}")
        if self.dist == "deterministic":
            return self.mean_s
        if self.dist == "empirical":
            index = max(0, math.ceil(q * len(self.samples) - 1e-9) - 1)
            return self.samples[index]
        return float(self._frozen().ppf(q))

    def discounted_up_to(self, t_s: float, rate: float) -> float:
        """E[exp(−rate·(t − S)); S <= t]: the convolution of the law with an exponential."""
        if t_s < 0:
            return 0.0
        if self.dist == "deterministic":
            return math.exp(-rate * (t_s - self.mean_s)) if t_s >= self.mean_s else 0.0
        if self.dist == "empirical":
            values = np.asarray(self.samples)
            inside = values[values <= t_s]
            return float(np.exp(-rate * (t_s - inside)).sum() / len(values))
        if self.dist == "exponential":
            mu = 1.0 / self.mean_s
            if math.isclose(rate, mu):
                return mu * t_s * math.exp(-mu * t_s)
            return mu * (math.exp(-mu * t_s) - math.exp(-rate * t_s)) / (rate - mu)
        density = self._frozen().pdf
        value, _ = integrate.quad(lambda s: density(s) * math.exp(-rate * (t_s - s)), 0.0, t_s)
        return value


@functools.cache
def _frozen_law(dist: str, mean_s: float, cv: float | None):
    """scipy's frozen distribution of a law (None for deterministic and empirical ones); built
    once per law, since freezing one costs about a millisecond and a run asks many times."""
    if dist == "exponential":
        return stats.expon(scale=mean_s)
    if dist == "lognormal":
        sigma2 = math.log1p(cv**2)
        return stats.lognorm(s=math.sqrt(sigma2), scale=mean_s * math.exp(-sigma2 / 2))
    if dist == "gamma":
        shape = 1.0 / cv**2
        return stats.gamma(a=shape, scale=mean_s / shape)
    return None


def response_tail(law: ServiceLaw, p_wait: float, wait_mean_s: float, t_s: float) -> float:
    """P(wait + service > t_s) when a share `p_wait` waits an exponential time of mean
    wait_mean_s / p_wait: exact for M/M/c (Erlang C), an approximation for other laws."""
    served_late = 1.0 - law.cdf(t_s)
    if p_wait <= 0 or wait_mean_s <= 0:
        return served_late
    rate = p_wait / wait_mean_s
    return min(1.0, served_late + p_wait * law.discounted_up_to(t_s, rate))


def response_quantile(law: ServiceLaw, p_wait: float, wait_mean_s: float, q: float) -> float:
    """The q-quantile of wait + service under `response_tail`'s model."""

    def excess(t_s: float) -> float:
        return (1.0 - response_tail(law, p_wait, wait_mean_s, t_s)) - q

    high = law.quantile(min(q, 1.0)) + (wait_mean_s / p_wait if p_wait > 0 else 0.0)
    while excess(high) < 0:
        high *= 2.0
    if law.dist in ("deterministic", "empirical"):
        # Steps in the CDF: bisect to a tolerance instead of a root that may not exist.
        low = 0.0
        while high - low > 1e-9 * max(1.0, high):
            middle = (low + high) / 2
            low, high = (middle, high) if excess(middle) < 0 else (low, middle)
        return high
    return float(optimize.brentq(excess, 0.0, high, xtol=1e-10 * max(1.0, high)))
