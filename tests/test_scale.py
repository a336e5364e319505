"""Scale is honest: counts that do not divide are refused, a queue regime that moves is warned."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import REPO
from scipy import stats

import sim
from sim.analysis.warnings import MATERIAL_P_WAIT, MATERIAL_WAIT_SHARE, scale_warnings
from sim.errors import RunTooLargeError, ScenarioError
from sim.model.scenario import load_scenario, parse_scenario, whole_scales, working_scales
from sim.model.workload import Demand
from sim.run import check_size

BASE = """\
[scenario]
name = "scale-demo"
duration = "1h"
scale = {scale}

[arrivals]
rate = "500/s"

[service]
servers = 1000
time = {{ dist = "exponential", mean = "1s" }}
queue_limit = {queue_limit}
{extra}
"""


def _scenario(scale: float = 1, queue_limit: str = '"inf"', extra: str = "", **overrides):
    text = BASE.format(scale=scale, queue_limit=queue_limit, extra=extra)
    return parse_scenario(text, file="scale.toml", overrides=overrides or None)


def test_a_scale_that_divides_every_count_is_accepted() -> None:
    """1000 servers and a queue of 5000 at scale 40 are 25 and 125 simulated: whole."""
    assert _scenario(scale=40, queue_limit="5000").scenario.scale == 40


def test_servers_that_do_not_divide_are_refused_with_the_nearest_scales() -> None:
    """1000 servers at scale 3 would be 333.3: refused at scenario.scale, naming service.servers
    and the nearest scales that divide it (1000/334 and 1000/333)."""
    with pytest.raises(ScenarioError) as caught:
        _scenario(scale=3)
    error = caught.value
    assert error.key == "scenario.scale"
    assert error.line == 4
    message = str(error)
    assert "service.servers" in message and "333.3" in message
    assert "2.994" in message and "3.003" in message


def test_queue_limit_that_does_not_divide_is_refused() -> None:
    """A queue limit of 1001 places at scale 10 is not whole, though the servers are."""
    with pytest.raises(ScenarioError, match=r"service\.queue_limit"):
        _scenario(scale=10, queue_limit="1001")


def test_lifo_over_and_capacity_changes_must_divide() -> None:
    """lifo_over and every [[capacity.change]] servers are counts that must come out whole."""
    with pytest.raises(ScenarioError, match=r"service\.lifo_over"):
        _scenario(scale=10, extra="lifo_over = 15")
    change = '\n[[capacity.change]]\nat = "10min"\nservers = 1250\n'
    with pytest.raises(ScenarioError, match=r"capacity\.change\.0\.servers"):
        _scenario(scale=100, extra=change)
    assert _scenario(scale=50, extra=change).scenario.scale == 50


def test_a_scale_set_on_the_command_line_is_blamed_on_set() -> None:
    """--set scenario.scale=7 is located at --set, the place to change it."""
    with pytest.raises(ScenarioError) as caught:
        _scenario(**{"scenario.scale": 7})
    assert caught.value.file == "--set"
    assert caught.value.key == "scenario.scale"


def test_controller_bounds_need_not_divide() -> None:
    """Autoscaler bounds limit decisions the engine rounds anyway: they are not refused."""
    extra = "\n[capacity.autoscale]\nmin_servers = 3\nmax_servers = 2001\n"
    assert _scenario(scale=10, extra=extra).scenario.scale == 10


def test_working_scales_are_the_whole_fractions_of_the_common_divisor() -> None:
    """Scales that divide 1000 and 5000 are 1000/m: nearest to 3 are 1000/334 and 1000/333."""
    below, above = working_scales([1000, 5000, 0], 3.0)
    assert below == pytest.approx(1000 / 334)
    assert above == pytest.approx(1000 / 333)
    assert working_scales([1000], 40.0) == (40.0, 40.0)
    assert working_scales([12], 20.0) == (12.0, None)


# ---------------------------------------------------------------- the queue regime at scale
POOL = """\
[scenario]
name = "scale-regime"
duration = "30min"
bin = "1min"

[arrivals]
rate = "{rate}/s"

[service]
servers = {servers}
time = {{ dist = "exponential", mean = "1s" }}
"""


def _pool(servers: int, rate: float, scale: float, seed: int = 1):
    text = POOL.format(servers=servers, rate=rate)
    return parse_scenario(text, overrides={"scenario.scale": scale, "scenario.seed": seed})


def test_scale_that_changes_the_queue_is_warned_with_the_figures() -> None:
    """M/M/100 at 92% run as 10 servers: P(wait) 0.73 against the real 0.31, told."""
    scenario = _pool(100, 92, 10)
    (warning,) = scale_warnings(scenario, Demand(scenario))
    assert "10 servers" in warning and "P(wait)=0.73" in warning
    assert "real pool of 100" in warning and "0.31" in warning and "0.92" in warning


def test_scale_that_keeps_the_queue_is_silent() -> None:
    """M/M/200 at 50% run as 50 servers: both pools almost never wait, no warning."""
    scenario = _pool(200, 100, 4)
    assert scale_warnings(scenario, Demand(scenario)) == []
    assert scale_warnings(_pool(100, 92, 1), Demand(_pool(100, 92, 1))) == []


def test_planner_pool_is_judged_at_its_target_utilisation() -> None:
    """The reference scenario (a planner sizing for 80%) is warned at scale 2000 and not at
    its committed scale, where its simulated pool queues as the real one does."""
    path = REPO / "scenarios" / "signal-2021-01.toml"
    coarse = load_scenario(path, overrides={"scenario.scale": 2000})
    (warning,) = scale_warnings(coarse, Demand(coarse))
    assert "scale 2000" in warning and "planner" in warning
    committed = load_scenario(path)
    assert scale_warnings(committed, Demand(committed)) == []


def _replications(servers: int, rate: float, scale: float, reps: int) -> dict[str, np.ndarray]:
    figures: dict[str, list[float]] = {"wait": [], "p_wait": [], "latency": [], "util": []}
    for seed in range(1, reps + 1):
        summary = sim.simulate(_pool(servers, rate, scale, seed)).summary
        figures["wait"].append(summary["wait_s"]["mean"])
        figures["p_wait"].append(summary["wait_s"]["p_wait"])
        figures["latency"].append(summary["latency_s"]["mean"])
        figures["util"].append(summary["utilization"])
    return {name: np.asarray(values) for name, values in figures.items()}


def _difference_interval(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float]:
    """Welch's interval for mean(a) − mean(b), from the replications themselves."""
    result = stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(confidence)
    return interval.low, interval.high


def test_des_at_a_silent_scale_agrees_with_scale_one() -> None:
    """Where the warning is silent (M/M/200 at 75%, scale 4: 50 servers wait with P 0.034,
    200 with 0.0001), the DES at scale 4 agrees with scale 1 within the warning's margins:
    Welch intervals over 5 and 20 replications (98.75%, Bonferroni over four figures) lie
    inside ±MATERIAL_P_WAIT for P(wait) and ±MATERIAL_WAIT_SHARE·E[S] for the mean wait,
    and hold 0 for client latency and utilisation."""
    scenario = _pool(200, 150, 4)
    assert scale_warnings(scenario, Demand(scenario)) == []
    one, four = _replications(200, 150, 1, 5), _replications(200, 150, 4, 20)
    margins = {"p_wait": MATERIAL_P_WAIT, "wait": MATERIAL_WAIT_SHARE * 1.0}
    for name in one:
        low, high = _difference_interval(four[name], one[name], 1 - 0.05 / 4)
        margin = margins.get(name, 0.0)
        if margin:
            assert -margin <= low and high <= margin, (name, low, high)
        else:
            assert low <= 0 <= high, (name, low, high)
    assert four["p_wait"].mean() > 0.01  # the case is not trivial: the small pool does wait


def test_des_at_a_warned_scale_differs_from_scale_one() -> None:
    """Where the warning fires (M/M/100 at 92%, scale 10), the DES waits far longer at
    scale 10 than at scale 1: the Welch interval of the difference lies above 0."""
    one, ten = _replications(100, 92, 1, 4), _replications(100, 92, 10, 4)
    low, _ = _difference_interval(ten["wait"], one["wait"], 0.99)
    assert low > 0


def test_the_size_guard_suggests_a_scale_that_divides_the_pool() -> None:
    """Too large a run is refused with a scale the scenario accepts: whole (500 for 80,000
    servers, the least divisor above the 432 that halves the guard) when one is near; none at
    all when the pool is too small to divide."""
    text = POOL.format(servers=80_000, rate=1e6).replace('"30min"', '"1d"')
    with pytest.raises(RunTooLargeError, match=r"scenario\.scale=500,") as caught:
        check_size(parse_scenario(text))
    scale = float(re.search(r"scenario\.scale=([\d.]+)", str(caught.value)).group(1))
    assert parse_scenario(text, overrides={"scenario.scale": scale}).scenario.scale == scale
    small = POOL.format(servers=8, rate=1e6).replace('"30min"', '"1d"')
    with pytest.raises(RunTooLargeError, match="no scale that divides the pool") as caught:
        check_size(parse_scenario(small))
    assert "--force" in str(caught.value)


def test_whole_scales_are_the_divisors_around_the_scale() -> None:
    """Around 3000 the whole scales dividing 20,000 servers and 1,000,000 places are 2500
    and 4000; the refusal names them beside the exact 20000/7 and 20000/6."""
    assert whole_scales([20_000, 1_000_000], 3000) == [2500.0, 4000.0]
    assert whole_scales([7], 3) == [1.0, 7.0]
    with pytest.raises(
        ScenarioError, match=r"2857\.142857 and 3333\.333333 \(whole: 2500 and 4000\)"
    ):
        load_scenario(
            REPO / "scenarios" / "signal-2021-01.toml", overrides={"scenario.scale": 3000}
        )
    accepted = load_scenario(
        REPO / "scenarios" / "signal-2021-01.toml", overrides={"scenario.scale": 2857.142857}
    )
    assert accepted.scenario.scale == 2857.142857
