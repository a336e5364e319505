"""The fluid engine's answer does not depend on the reporting bin (issue 10, item 7).

The bin is a reporting resolution: the fluid engine steps on a grid of its own (set by the
client timeout) and only cuts a step at a bin edge, so totals over a run agree across bin sizes
up to what the bin explains (where an outage's edges fall, and the requests still undecided in
the last bin), and a multi-slot quiet step gives what slot-by-slot stepping gives.
"""

from __future__ import annotations

import pytest

import sim
import sim.engine.fluid as fluid
from sim.analysis.metrics import Recorder
from sim.engine.fluid import FluidEngine, slot_length
from sim.model.scenario import parse_scenario
from sim.model.workload import Demand

# The issue's case: 100 servers at 88/s, exp(1 s), 4 s timeout, 2 retries, 4 h.
ISSUE_CASE = """\
[scenario]
name = "bins"
duration = "4h"
bin = "{bin}"
engine = "fluid"

[arrivals]
rate = "88/s"
{surge}
[service]
servers = 100
time = {{ dist = "exponential", mean = "1s" }}

[client]
timeout = "4s"
retries = 2
"""
BINS = ("1s", "10s", "60s", "300s", "900s")
# Totals over 4 h differ across bins only by the fates of requests still open at the end (a
# request lives at most 3 timeouts plus backoff, ~13 s of 14,400 s) and by the one slot a bin
# edge splits: 1e-3 of a total is far above both and far below the issue's failure (2.96x).
TOTAL_REL = 1e-3


def _run(bin_: str, surge: str = "") -> dict:
    return sim.simulate(parse_scenario(ISSUE_CASE.format(bin=bin_, surge=surge))).summary


def _success_ratio(summary: dict) -> float:
    requests = summary["requests"]
    return requests["succeeded"] / requests["fresh"]


def test_issue_case_has_no_outage_at_any_bin() -> None:
    """88% load with 2 retries is healthy in the DES at any bin; the fluid engine agrees at
    bins from 1 s to 15 min, with the same amplification and success ratio at each."""
    summaries = {b: _run(b) for b in BINS}
    reference = summaries["60s"]
    for bin_, summary in summaries.items():
        assert summary["outages"] == [], bin_
        assert summary["amplification"] == pytest.approx(reference["amplification"], rel=TOTAL_REL)
        assert _success_ratio(summary) == pytest.approx(_success_ratio(reference), rel=TOTAL_REL)
        assert summary["queue"]["max"] == pytest.approx(0.0, abs=1e-6), bin_


def test_outage_found_alike_at_every_bin() -> None:
    """A surge to 130/s for 20 min makes an outage; its start and length agree across bins to
    within the coarsest bin (start) and two of them (length: each edge moves by a bin)."""
    surge = '\n[[arrivals.surge]]\nat = "1h"\nduration = "20min"\nrate = "130/s"\n'
    bins = ("10s", "60s", "300s")
    summaries = {b: _run(b, surge) for b in bins}
    coarsest = 300.0
    reference = summaries["10s"]
    assert reference["outages"], "the surge must make an outage"
    for bin_, summary in summaries.items():
        assert summary["outages"], bin_
        assert abs(summary["first_outage_start_s"] - reference["first_outage_start_s"]) <= coarsest
        assert abs(summary["outage_total_s"] - reference["outage_total_s"]) <= 2 * coarsest
        assert summary["amplification"] == pytest.approx(reference["amplification"], rel=0.01)


def test_slot_length_ignores_the_bin() -> None:
    """The stepping grid comes from the timeout alone: at most 2 s, six or more slots per
    timeout, the timeout half a slot past a whole number of slots."""
    for timeout_s in (0.5, 1.0, 4.0, 7.0, 10.0, 30.0):
        dt = slot_length(timeout_s)
        assert dt <= min(2.0, timeout_s / 6) + 1e-12
        assert (timeout_s / dt) % 1.0 == pytest.approx(0.5, abs=1e-9)


@pytest.mark.parametrize("bin_", ["7s", "60s", "1h"])
def test_quiet_steps_equal_slot_by_slot_stepping(bin_: str, monkeypatch) -> None:
    """A multi-slot quiet step gives the counts that stepping slot by slot gives."""
    scenario = parse_scenario(ISSUE_CASE.format(bin=bin_, surge=""))
    scenario = scenario.model_copy(
        update={"scenario": scenario.scenario.model_copy(update={"duration": 1800.0})}
    )

    def counts(max_quiet: int) -> tuple[Recorder, int]:
        monkeypatch.setattr(fluid, "MAX_QUIET_SLOTS", max_quiet)
        n_bins = -(-1800 // int(scenario.scenario.bin))
        recorder = Recorder(n_bins, scenario.scenario.bin, 1.0)
        engine = FluidEngine(scenario, Demand(scenario), recorder)
        engine.run()
        return recorder, engine.simulated_events()

    quiet, quiet_steps = counts(fluid.MAX_QUIET_SLOTS)
    single, single_steps = counts(1)
    assert quiet_steps < single_steps / 2  # the quiet path is really taken
    for name in ("fresh", "attempts", "retries", "succeeded", "timed_out", "fresh_ok"):
        assert sum(getattr(quiet, name)) == pytest.approx(sum(getattr(single, name)), rel=1e-9)
        assert getattr(quiet, name) == pytest.approx(getattr(single, name), rel=1e-9, abs=1e-9)
