"""The fluid engine on a service graph: its exact answers, and its agreement with the DES.

Exact where the fluid model is exact: below capacity a tier's utilisation is its flow times
the time an attempt holds a server (its own work, plus a sync call's duration), and nothing
waits, so a route's latency is the sum of its tiers' service times (the Jackson network's
sojourn less its Erlang C waits); retries at L layers against a tier that always fails give
(N+1)^L attempts at the bottom; a continuous token bucket admits its rate plus its burst.
Against the DES on the shipped tiered scenarios, with the tolerances each test states.
"""

from __future__ import annotations

import pytest
from helpers import REPO
from test_graph import JACKSON, LAYERS, LIMITED, SYNC_PROVIDER

import sim
from sim.analysis import theory
from sim.errors import ScenarioError
from sim.model.scenario import load_scenario, parse_scenario


def _fluid(text: str, **overrides) -> dict:
    scenario = parse_scenario(text, overrides={"scenario.engine": "fluid", **overrides})
    return sim.simulate(scenario).summary


def test_an_async_chain_is_jacksons_flows_without_the_waits() -> None:
    """front carries 8/s on 10 servers, back the deep route's 4.8/s on 6: both at 0.8; the
    fluid model leaves out Erlang C's queueing, so a route's latency is its tiers' service
    times, which Jackson's sojourn exceeds by exactly the waits."""
    summary = _fluid(JACKSON.format(seed=1))
    for name in ("front", "back"):
        assert summary["tiers"][name]["utilization"] == pytest.approx(0.8, abs=2e-3)
        assert summary["tiers"][name]["wait_s"]["mean"] == 0.0
    deep = summary["routes"]["deep"]["latency_s"]["mean"]
    shallow = summary["routes"]["shallow"]["latency_s"]["mean"]
    assert deep == pytest.approx(2.0, rel=0.02) and shallow == pytest.approx(1.0, rel=0.02)
    front, back = theory.mmc(8.0, 1.0, 10), theory.mmc(4.8, 1.0, 6)
    assert deep < front.response_mean_s + back.response_mean_s
    assert summary["routes"]["deep"]["amplification"]["back"] == pytest.approx(1.0, abs=1e-3)
    assert summary["routes"]["deep"]["fresh"] / summary["requests"]["fresh"] == pytest.approx(0.6)


def test_a_sync_call_holds_the_callers_server_for_its_duration() -> None:
    """api holds each request for its own 200 ms and the provider's 300 ms: utilisation
    λ(S + d) = 0.7, and the end user's latency is S + d (no wait in the fluid model)."""
    summary = _fluid(SYNC_PROVIDER.format(seed=1))
    assert summary["tiers"]["api"]["utilization"] == pytest.approx(0.7, abs=2e-3)
    assert summary["latency_s"]["mean"] == pytest.approx(0.5, rel=0.02)
    assert summary["tiers"]["sms"]["limited"] == 0


def test_retries_at_three_layers_give_27_attempts_at_the_bottom() -> None:
    """Every layer retries twice against a tier that always fails: 3 attempts at a, 9 at b,
    27 at c per end-user request, and every request fails."""
    summary = _fluid(LAYERS.format())
    route = summary["routes"]["deep"]
    for tier, attempts in (("a", 3.0), ("b", 9.0), ("c", 27.0)):
        assert route["amplification"][tier] == pytest.approx(attempts, rel=1e-6)
    assert route["success_ratio"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("duration_s", [600, 3600])
def test_a_providers_bucket_admits_its_rate_and_its_burst(duration_s: int) -> None:
    """Offered 100/s against a limit of 50/s with a burst of 200: the bucket admits 50/s and
    its burst, and refuses the rest at once; the refused calls fail their requests."""
    summary = _fluid(LIMITED.format(duration=duration_s))
    sms = summary["tiers"]["sms"]
    admitted = sms["attempts"] - sms["limited"]
    assert 50 * duration_s <= admitted <= 50 * duration_s + 200 + 1
    route = summary["routes"]["signup"]
    assert route["success_ratio"] == pytest.approx(admitted / sms["attempts"], abs=0.01)


def test_what_the_fluid_graph_leaves_out_is_refused_with_its_key(tmp_path) -> None:
    """A LIFO tier on a graph is refused on the fluid engine (named, with its line), not
    run as if it were FIFO."""
    text = JACKSON.format(seed=1).replace(
        "[tiers.back]\nservers = 6", '[tiers.back]\ndiscipline = "lifo"\nservers = 6'
    )
    path = tmp_path / "lifo.toml"
    path.write_text(text)
    scenario = load_scenario(path, overrides={"scenario.engine": "fluid"})
    with pytest.raises(ScenarioError) as error:
        sim.simulate(scenario)
    assert error.value.key == "tiers.back.discipline"
    assert error.value.line == text.splitlines().index('discipline = "lifo"') + 1
    assert "--engine des" in str(error.value)


def _both(name: str) -> tuple[dict, dict]:
    path = REPO / "scenarios" / name
    des = sim.simulate(load_scenario(path, overrides={"scenario.engine": "des"})).summary
    fluid = sim.simulate(load_scenario(path, overrides={"scenario.engine": "fluid"})).summary
    return des, fluid


@pytest.mark.parametrize("name", ["cascade.toml", "cascade-budget.toml"])
def test_the_cascades_agree_with_the_des(name: str) -> None:
    """The shipped cascades: the same verdict (metastable, or ended with the budget), the
    success ratio within 0.02, the outage time within 20%, and each tier's attempts within
    10% and its utilisation within 0.05 of the DES's (one DES seed: its own spread between
    seeds is about 2% in attempts)."""
    des, fluid = _both(name)
    assert fluid["metastable"] == des["metastable"]
    assert fluid["success_ratio"] == pytest.approx(des["success_ratio"], abs=0.02)
    assert fluid["outage_total_s"] == pytest.approx(des["outage_total_s"], rel=0.2)
    for tier in ("api", "db"):
        mine, theirs = fluid["tiers"][tier], des["tiers"][tier]
        assert mine["attempts"] == pytest.approx(theirs["attempts"], rel=0.1)
        assert mine["utilization"] == pytest.approx(theirs["utilization"], abs=0.05)


def test_the_tiered_reference_agrees_with_the_des() -> None:
    """scenarios/signal-2021-01-tiers.toml: verification codes fail first, days before the
    messaging outage; messaging goes down on 15 January within 2 h of the DES's onset, stays
    down within 25% of its duration, and is metastable in both engines."""
    des, fluid = _both("signal-2021-01-tiers.toml")
    assert fluid["metastable"] is des["metastable"] is True

    def main(summary: dict, route: str) -> dict:
        return max(summary["routes"][route]["outages"], key=lambda o: o["duration_s"])

    ours, theirs = main(fluid, "message"), main(des, "message")
    assert abs(ours["start_s"] - theirs["start_s"]) <= 2 * 3600
    assert ours["duration_s"] == pytest.approx(theirs["duration_s"], rel=0.25)
    first_sms = fluid["routes"]["verify"]["outages"][0]["start_s"]
    assert first_sms < ours["start_s"] - 2 * 86_400
    assert abs(first_sms - des["routes"]["verify"]["outages"][0]["start_s"]) <= 12 * 3600
