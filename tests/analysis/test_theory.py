"""Pin sim.analysis.theory to the worked examples of the theory reference and to independent
solutions."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.analysis import theory
from sim.model.fields import ServiceTime
from sim.model.workload import service_time_draw

# ---------------------------------------------------------------- worked examples (μ = 1)


def test_mmc_ten_servers_worked_example() -> None:
    """M/M/c with c = 10, λ = 9 gives P(wait) = W_q = 0.668732 and L_q = 6.018584."""
    state = theory.mmc(9.0, 1.0, 10)
    assert round(state.p_wait, 6) == 0.668732
    assert round(state.wait_mean_s, 6) == 0.668732
    assert round(state.queue_mean, 6) == 6.018584
    assert state.utilization == pytest.approx(0.9)


def test_mmc_three_servers_worked_example() -> None:
    """M/M/c with c = 3, λ = 2 gives P(wait) = W_q = 0.444444."""
    state = theory.mmc(2.0, 1.0, 3)
    assert round(state.p_wait, 6) == 0.444444
    assert round(state.wait_mean_s, 6) == 0.444444


@pytest.mark.parametrize(("servers", "load", "expected"), [(10, 9.0, 0.167963), (5, 3.0, 0.110054)])
def test_erlang_b_worked_examples(servers: int, load: float, expected: float) -> None:
    """Erlang B matches the reference table to six decimals."""
    assert round(theory.erlang_b(servers, load), 6) == expected


def test_mm1k_worked_example() -> None:
    """M/M/1/K with λ = 0.9, K = 10 blocks with probability 0.050814."""
    assert round(theory.mm1k_blocking(0.9, 1.0, 10), 6) == 0.050814


def test_md1_worked_example() -> None:
    """M/D/1 with λ = 0.9, S = 1 s waits 4.5 s, half the M/M/1 wait."""
    assert theory.md1_wait(0.9, 1.0) == pytest.approx(4.5, abs=1e-12)
    assert theory.md1_wait(0.9, 1.0) == pytest.approx(theory.mmc(0.9, 1.0, 1).wait_mean_s / 2)


def test_mm1_overload_worked_example() -> None:
    """M/M/1 with λ = 1.5 from empty has E[Q(100)] = 51.9995."""
    assert round(theory.mm1_transient_mean_in_system(1.5, 1.0, 100.0), 4) == 51.9995


# ---------------------------------------------------------------- independent cross-checks


def _erlang_c_by_sum(servers: int, load: float) -> float:
    """Textbook Erlang C: the waiting term over the full sum of unnormalised probabilities."""
    waiting_term = load**servers / math.factorial(servers) * servers / (servers - load)
    busy_terms = sum(load**k / math.factorial(k) for k in range(servers))
    return waiting_term / (busy_terms + waiting_term)


def _mmck_generator(arrival: float, service: float, servers: int, capacity: int) -> np.ndarray:
    """Generator matrix of the M/M/c/K birth-death chain on levels 0..K."""
    generator = np.zeros((capacity + 1, capacity + 1))
    for level in range(capacity + 1):
        if level < capacity:
            generator[level, level + 1] = arrival
        if level > 0:
            generator[level, level - 1] = min(level, servers) * service
        generator[level, level] = -generator[level].sum()
    return generator


def _forward_equation_mean(
    arrival: float, service: float, servers: int, t_s: float, start: int, top: int
) -> float:
    """E[N(t)] by RK4 integration of dp/dt = pQ on levels 0..top (no matrix exponential)."""
    generator = _mmck_generator(arrival, service, servers, top)
    distribution = np.zeros(top + 1)
    distribution[start] = 1.0
    steps = 4000
    dt = t_s / steps
    for _ in range(steps):
        k1 = distribution @ generator
        k2 = (distribution + dt / 2 * k1) @ generator
        k3 = (distribution + dt / 2 * k2) @ generator
        k4 = (distribution + dt * k3) @ generator
        distribution = distribution + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    assert distribution[-1] < 1e-12, "truncation too tight for this check"
    return float(distribution @ np.arange(top + 1))


@pytest.mark.parametrize(("servers", "load"), [(1, 0.5), (3, 2.0), (10, 9.0), (25, 24.5)])
def test_erlang_c_matches_textbook_sum(servers: int, load: float) -> None:
    """Erlang C via Erlang B equals the textbook sum formula."""
    assert theory.erlang_c(servers, load) == pytest.approx(_erlang_c_by_sum(servers, load), 1e-12)


@pytest.mark.parametrize(("arrival", "service", "servers"), [(9.0, 1.0, 10), (3.0, 2.0, 2)])
def test_mmc_satisfies_littles_law(arrival: float, service: float, servers: int) -> None:
    """M/M/c means obey L_q = λW_q, L = λW and L = L_q + λ/μ."""
    state = theory.mmc(arrival, service, servers)
    assert state.queue_mean == pytest.approx(arrival * state.wait_mean_s)
    assert state.in_system_mean == pytest.approx(arrival * state.response_mean_s)
    assert state.in_system_mean == pytest.approx(state.queue_mean + arrival / service)


@pytest.mark.parametrize(
    ("arrival", "service", "servers", "capacity"),
    [(2.0, 1.0, 3, 3), (2.0, 1.0, 3, 8), (9.0, 1.0, 10, 20), (5.0, 1.0, 2, 15), (4.0, 2.0, 2, 6)],
)
def test_mmck_matches_generator_stationary_distribution(
    arrival: float, service: float, servers: int, capacity: int
) -> None:
    """M/M/c/K blocking equals π_K from solving πQ = 0, Σπ = 1 with numpy.linalg."""
    generator = _mmck_generator(arrival, service, servers, capacity)
    system = np.vstack([generator.T, np.ones(capacity + 1)])
    rhs = np.zeros(capacity + 2)
    rhs[-1] = 1.0
    stationary, *_ = np.linalg.lstsq(system, rhs, rcond=None)
    blocking = theory.mmck_blocking(arrival, service, servers, capacity)
    assert blocking == pytest.approx(stationary[-1], rel=1e-9)


@pytest.mark.parametrize(("arrival", "capacity"), [(0.5, 4), (0.9, 10), (1.0, 7), (1.7, 12)])
def test_mm1k_matches_closed_form(arrival: float, capacity: int) -> None:
    """M/M/1/K blocking equals (1 − ρ)ρ^K / (1 − ρ^{K+1}), and 1/(K+1) at ρ = 1."""
    rho = arrival  # μ = 1
    if rho == 1.0:
        closed_form = 1.0 / (capacity + 1)
    else:
        closed_form = (1 - rho) * rho**capacity / (1 - rho ** (capacity + 1))
    assert theory.mm1k_blocking(arrival, 1.0, capacity) == pytest.approx(closed_form, rel=1e-12)


@pytest.mark.parametrize(
    ("arrival", "servers", "t_s", "start", "top"),
    [(1.5, 1, 10.0, 0, 80), (0.6, 1, 5.0, 6, 60), (4.0, 3, 6.0, 0, 90), (2.0, 3, 4.0, 10, 70)],
)
def test_transient_mean_matches_forward_equations(
    arrival: float, servers: int, t_s: float, start: int, top: int
) -> None:
    """Uniformization agrees with RK4-integrated Kolmogorov forward equations."""
    expected = _forward_equation_mean(arrival, 1.0, servers, t_s, start, top)
    actual = theory.mmc_transient_mean_in_system(arrival, 1.0, servers, t_s, start)
    assert actual == pytest.approx(expected, rel=1e-8)


def test_mm1_transient_approaches_overload_asymptote() -> None:
    """For λ > μ, E[Q(t)] approaches (λ − μ)t + μ/(λ − μ) at large t."""
    asymptote = (2.0 - 1.0) * 200.0 + 1.0 / (2.0 - 1.0)
    assert theory.mm1_transient_mean_in_system(2.0, 1.0, 200.0) == pytest.approx(asymptote, 1e-9)


def test_mmc_transient_approaches_steady_state() -> None:
    """A stable M/M/c from empty settles to its steady-state mean number in system."""
    steady = theory.mmc(2.0, 1.0, 3).in_system_mean
    assert theory.mmc_transient_mean_in_system(2.0, 1.0, 3, 200.0) == pytest.approx(steady, 1e-9)


def test_transient_at_time_zero_is_start() -> None:
    """At t = 0 the mean number in system is the starting count."""
    assert theory.mm1_transient_mean_in_system(1.5, 1.0, 0.0, start=7) == 7.0


def test_overload_line_and_drain_time() -> None:
    """The fluid line is (λ − cμ)t or 0; draining takes Q/(cμ − λ′), or ∞ if cμ <= λ′."""
    assert theory.overload_queue_line(12.0, 1.0, 10, 30.0) == pytest.approx(60.0)
    assert theory.overload_queue_line(9.0, 1.0, 10, 30.0) == 0.0
    assert theory.drain_time_s(60.0, 10, 1.0, 7.0) == pytest.approx(20.0)
    assert theory.drain_time_s(60.0, 10, 1.0, 0.0) == pytest.approx(6.0)
    assert theory.drain_time_s(60.0, 10, 1.0, 10.0) == math.inf


def test_retry_formulas_match_direct_sums() -> None:
    """Expected attempts equal Σ_{k≤N} p^k; p = 1 gives N + 1 attempts and no success."""
    for p_fail in (0.0, 0.3, 0.9):
        direct = sum(p_fail**k for k in range(4))
        assert theory.retry_expected_attempts(p_fail, 3) == pytest.approx(direct)
        assert theory.retry_success_probability(p_fail, 3) == pytest.approx(1 - p_fail**4)
    assert theory.retry_expected_attempts(1.0, 3) == 4.0
    assert theory.retry_success_probability(1.0, 3) == 0.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: theory.erlang_b(0, 1.0),
        lambda: theory.erlang_b(2.5, 1.0),
        lambda: theory.erlang_b(3, -1.0),
        lambda: theory.erlang_c(3, 3.0),
        lambda: theory.mmc(10.0, 1.0, 10),
        lambda: theory.mmc(0.0, 1.0, 1),
        lambda: theory.mmc(1.0, -1.0, 2),
        lambda: theory.mmck_blocking(1.0, 1.0, 3, 2),
        lambda: theory.mm1k_blocking(1.0, 0.0, 5),
        lambda: theory.pollaczek_khinchine_wait(1.0, 1.0, 2.0),
        lambda: theory.pollaczek_khinchine_wait(0.5, 1.0, 0.5),
        lambda: theory.mg1_wait_from_cv(0.5, 1.0, -1.0),
        lambda: theory.overload_queue_line(1.0, 1.0, 1, -1.0),
        lambda: theory.mm1_transient_mean_in_system(1.0, 1.0, 5.0, start=-1),
        lambda: theory.mmc_transient_mean_in_system(1.0, 1.0, 0, 5.0),
        lambda: theory.drain_time_s(-1.0, 1, 1.0, 0.5),
        lambda: theory.retry_expected_attempts(1.5, 2),
        lambda: theory.retry_success_probability(0.5, -1),
    ],
)
def test_invalid_input_raises_value_error(call: Callable[[], object]) -> None:
    """Invalid servers, rates, capacities, probabilities and unstable loads raise ValueError."""
    with pytest.raises(ValueError):
        call()


# ---------------------------------------------------------------- properties

loads = st.floats(min_value=1e-3, max_value=200.0)
server_counts = st.integers(min_value=1, max_value=60)


@given(servers=server_counts, load=loads)
def test_erlang_b_is_a_probability_decreasing_in_servers(servers: int, load: float) -> None:
    """Erlang B lies in [0, 1] and one more server never raises blocking."""
    blocking = theory.erlang_b(servers, load)
    assert 0.0 <= blocking <= 1.0
    assert theory.erlang_b(servers + 1, load) <= blocking


@given(servers=server_counts, load=loads)
def test_mmck_at_capacity_equal_servers_is_erlang_b(servers: int, load: float) -> None:
    """M/M/c/K with K = c is the loss system, so its blocking is Erlang B."""
    blocking = theory.mmck_blocking(load, 1.0, servers, servers)
    assert blocking == pytest.approx(theory.erlang_b(servers, load), rel=1e-9, abs=1e-300)


@given(
    servers=server_counts,
    load=st.floats(min_value=1e-3, max_value=1e4),
    extra_room=st.integers(min_value=0, max_value=2000),
)
def test_mmck_blocking_is_finite_and_bounded_for_any_load(
    servers: int, load: float, extra_room: int
) -> None:
    """M/M/c/K blocking stays a probability, never NaN, for loads far above or below capacity."""
    blocking = theory.mmck_blocking(load, 1.0, servers, servers + extra_room)
    assert 0.0 <= blocking <= 1.0
    # Work conservation: accepted load λ(1 − P_block) cannot exceed the c servers' capacity.
    assert load * (1.0 - blocking) <= servers * (1 + 1e-9)


@given(servers=server_counts, utilization=st.floats(min_value=1e-3, max_value=0.999))
def test_erlang_c_at_least_erlang_b(servers: int, utilization: float) -> None:
    """P(wait) in M/M/c is at least the M/M/c/c blocking at the same load."""
    load = servers * utilization
    assert theory.erlang_c(servers, load) >= theory.erlang_b(servers, load) * (1 - 1e-12)


@given(
    arrival=st.floats(min_value=1e-3, max_value=100.0),
    utilization=st.floats(min_value=1e-3, max_value=0.99),
)
def test_pk_with_unit_cv_is_mm1_and_md1_is_half(arrival: float, utilization: float) -> None:
    """P-K with cv = 1 equals the M/M/1 wait, and a constant service time halves it."""
    service_mean_s = utilization / arrival
    mm1_wait = theory.mmc(arrival, 1.0 / service_mean_s, 1).wait_mean_s
    assert theory.mg1_wait_from_cv(arrival, service_mean_s, 1.0) == pytest.approx(mm1_wait)
    assert theory.md1_wait(arrival, service_mean_s) == pytest.approx(mm1_wait / 2)


# ---------------------------------------------------------------- finite queues, M/G/c, laws


def test_mmck_with_a_long_queue_is_mmc() -> None:
    """M/M/10/K at λ = 9 tends to Erlang C as K grows: P(wait) = W_q = 0.668732."""
    state = theory.mmck(9.0, 1.0, 10, 10 + 2000)
    assert state.blocking < 1e-12
    assert round(state.p_wait, 6) == 0.668732
    assert round(state.wait_mean_s, 6) == 0.668732
    assert round(state.queue_mean, 6) == 6.018584


def test_mmck_without_a_queue_is_erlang_b() -> None:
    """M/M/c/c: blocking is Erlang B (0.167963 for c = 10, A = 9) and nobody waits."""
    state = theory.mmck(9.0, 1.0, 10, 10)
    assert round(state.blocking, 6) == 0.167963
    assert state.p_wait == 0.0 and state.wait_mean_s == 0.0
    assert state.utilization == pytest.approx(9.0 * (1 - state.blocking) / 10)


def test_mm1k_waits_match_the_geometric_distribution() -> None:
    """M/M/1/K: p_n ∝ ρ^n, so an admitted arrival waits with P = 1 − p_0/(1 − p_K)."""
    rho, capacity = 0.9, 10
    weights = rho ** np.arange(capacity + 1)
    p = weights / weights.sum()
    state = theory.mmck(rho, 1.0, 1, capacity)
    assert state.p_wait == pytest.approx(1 - p[0] / (1 - p[-1]), rel=1e-12)
    queue_mean = float(np.clip(np.arange(capacity + 1) - 1, 0, None) @ p)
    assert state.wait_mean_s == pytest.approx(queue_mean / (rho * (1 - p[-1])), rel=1e-12)


def test_allen_cunneen_is_exact_for_one_server_and_for_exponential_service() -> None:
    """Allen–Cunneen gives P-K's 4.5 s for M/D/1 at λ = 0.9 and Erlang C for M/M/c."""
    deterministic = theory.ServiceLaw("deterministic", 1.0)
    assert theory.allen_cunneen_wait(0.9, deterministic, 1) == pytest.approx(4.5)
    exponential = theory.ServiceLaw("exponential", 1.0)
    assert theory.allen_cunneen_wait(9.0, exponential, 10) == pytest.approx(0.668732, abs=1e-6)


def test_mm1_response_time_is_exponential() -> None:
    """In M/M/1 the time in system is exponential with rate μ − λ: P(R > t) = e^{−(μ−λ)t}."""
    law = theory.ServiceLaw("exponential", 1.0)
    state = theory.mmc(0.8, 1.0, 1)
    for t_s in (0.1, 1.0, 5.0, 20.0):
        tail = theory.response_tail(law, state.p_wait, state.wait_mean_s, t_s)
        assert tail == pytest.approx(math.exp(-0.2 * t_s), rel=1e-9)
    p99 = theory.response_quantile(law, state.p_wait, state.wait_mean_s, 0.99)
    assert p99 == pytest.approx(math.log(100) / 0.2, rel=1e-8)


@pytest.mark.parametrize(
    ("dist", "cv"), [("exponential", None), ("lognormal", 0.5), ("gamma", 2.0), ("lognormal", 3.0)]
)
def test_service_law_matches_the_engines_draws(dist: str, cv: float | None) -> None:
    """The law's p99 and CDF agree with 200,000 draws of the engine's sampler, within the
    draws' own binomial 99.9% band."""
    spec = ServiceTime(dist=dist, mean=2.0, cv=cv)
    law = theory.ServiceLaw.of(spec)
    draws = service_time_draw(spec, np.random.default_rng(7))(200_000)
    p99 = law.quantile(0.99)
    share_below = float((draws <= p99).mean())
    band = 3.3 * math.sqrt(0.99 * 0.01 / len(draws))
    assert abs(share_below - 0.99) < band
    assert law.mean_s == pytest.approx(2.0)
    assert law.scv == pytest.approx(1.0 if cv is None else cv**2)


def test_empirical_and_deterministic_laws_step() -> None:
    """An empirical law is the samples' step CDF; a deterministic one jumps at its mean."""
    law = theory.ServiceLaw("empirical", 2.5, samples=(1.0, 2.0, 3.0, 4.0))
    assert law.cdf(2.0) == 0.5 and law.cdf(1.99) == 0.25
    assert law.quantile(0.5) == 2.0 and law.quantile(0.51) == 3.0 and law.quantile(1.0) == 4.0
    fixed = theory.ServiceLaw("deterministic", 1.5)
    assert fixed.cdf(1.49) == 0.0 and fixed.cdf(1.5) == 1.0 and fixed.quantile(0.99) == 1.5


def test_discounted_convolution_by_quadrature_matches_monte_carlo() -> None:
    """E[e^{−r(t−S)}; S ≤ t] by quadrature agrees with 400,000 lognormal draws (4 sd)."""
    law = theory.ServiceLaw("lognormal", 1.0, cv=0.8)
    rng = np.random.default_rng(3)
    sigma2 = math.log1p(0.8**2)
    draws = rng.lognormal(-sigma2 / 2, math.sqrt(sigma2), 400_000)
    values = np.where(draws <= 2.0, np.exp(-0.7 * (2.0 - draws)), 0.0)
    sd = values.std() / math.sqrt(len(values))
    assert abs(law.discounted_up_to(2.0, 0.7) - values.mean()) < 4 * sd
