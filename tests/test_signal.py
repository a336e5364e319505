"""The reference case: Signal, January 2021, reproduced from demand against planned capacity.

History (scenarios/signal-2021-01.toml cites the sources): no outage before the surge peaked;
the outage began on Fri 15 Jan 2021 at about 14:30-15:00 UTC and service came back late on
Sat 16 Jan, US time (the early hours of Sun 17 Jan UTC), more than 24 hours later. The
counterfactuals pin that the outage comes from the surge and the capacity plan, not from
anything placed at the known time.
"""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime

import pytest
from conftest import REPO

import sim
from sim.report import summary_json
from sim.scenario import load_scenario, validate_scenario

SCENARIO = REPO / "scenarios" / "signal-2021-01.toml"
COMMITTED = REPO / "reports" / "signal-2021-01" / "summary.json"
RUN_DEPENDENT = ("wall_time_s", "simulated_per_s")


def _utc(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(UTC)


@pytest.fixture(scope="module")
def reference() -> sim.Result:
    """One run of the reference scenario, shared by the tests of this module (~1 min)."""
    return sim.simulate(load_scenario(SCENARIO))


def test_no_outage_before_14_january(reference: sim.Result) -> None:
    """Before the surge outgrows the plan, the service meets its SLO."""
    for outage in reference.summary["outages"]:
        assert _utc(outage["start"]) >= datetime(2021, 1, 14, tzinfo=UTC)


def test_outage_begins_on_15_january_in_the_afternoon(reference: sim.Result) -> None:
    """The first outage starts on 15 Jan between 12:00 and 18:00 UTC (history: ~14:30-15:00)."""
    start = _utc(reference.summary["first_outage_start"])
    assert datetime(2021, 1, 15, 12, tzinfo=UTC) <= start <= datetime(2021, 1, 15, 18, tzinfo=UTC)


def test_service_returns_about_a_day_later(reference: sim.Result) -> None:
    """The outage lasts more than 24 h and ends late on 16 Jan US time (16 Jan 18:00 to
    17 Jan 09:00 UTC); then the service stays up."""
    summary = reference.summary
    main = max(summary["outages"], key=lambda o: o["duration_s"])
    assert main["duration_s"] > 24 * 3600
    end = _utc(main["end"])
    assert datetime(2021, 1, 16, 18, tzinfo=UTC) <= end <= datetime(2021, 1, 17, 9, tzinfo=UTC)
    assert summary["recovered"] is True
    assert summary["outages"][-1] is main


def test_retries_sustain_the_outage(reference: sim.Result) -> None:
    """Offered load during the outage is several times the fresh demand: metastable."""
    summary = reference.summary
    main = max(summary["outages"], key=lambda o: o["duration_s"])
    assert main["amplification"] > 3
    assert summary["metastable"] is True


def test_committed_report_is_reproduced(reference: sim.Result) -> None:
    """A fresh run gives the committed reports/signal-2021-01/summary.json (wall time aside)."""
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    fresh = json.loads(summary_json(reference.summary))
    for key in RUN_DEPENDENT:
        committed.pop(key, None)
        fresh.pop(key, None)
    assert fresh == committed


def _variant(edit) -> sim.Scenario:
    raw = tomllib.loads(SCENARIO.read_text(encoding="utf-8"))
    edit(raw)
    return validate_scenario(raw, file=SCENARIO)


def test_without_the_surge_there_is_no_outage() -> None:
    """Downloads held at the 2020 average (50,000 a day): no outage."""

    def no_surge(raw: dict) -> None:
        population = raw["population"]
        del population["downloads_csv"]
        population["downloads"] = "50000/day"
        raw["scenario"]["start"] = datetime(2021, 1, 8, tzinfo=UTC)
        raw["scenario"]["duration"] = "9d"  # 8-17 Jan: the outage window and its run-up

    summary = sim.simulate(_variant(no_surge)).summary
    assert summary["outages"] == []
    assert summary["requests"]["retries"] < 1e-4 * summary["requests"]["fresh"]


def test_with_enough_capacity_there_is_no_outage() -> None:
    """A planner allowed to triple capacity a day, sizing for 60%, keeps up with the surge."""

    def generous(raw: dict) -> None:
        raw["capacity"]["planner"]["max_growth"] = 3.0
        raw["capacity"]["planner"]["target_utilization"] = 0.6
        raw["scenario"]["start"] = datetime(2021, 1, 8, tzinfo=UTC)
        raw["scenario"]["duration"] = "10d"

    summary = sim.simulate(_variant(generous)).summary
    assert summary["outage_total_s"] < 3600
    assert summary["metastable"] in (False, None)
