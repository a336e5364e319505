"""Scale is honest: counts that do not divide are refused, a queue regime that moves is warned."""

from __future__ import annotations

import pytest

from sim.errors import ScenarioError
from sim.scenario import parse_scenario, working_scales

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
