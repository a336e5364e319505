"""What a newcomer reads in a report and at the CLI: the queue limit, outage close-ups, the
trigger in words and in the timeline, the planner's growth cap, one wording of the headline
in the CLI and the report, the progress bar, and a report that two runs write byte for byte."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import sim
from sim import cli as cli_module
from sim.cli import cli
from sim.model.scenario import parse_scenario
from sim.model.workload import Demand
from sim.report import charts
from sim.report.compare import _change
from sim.report.text import headline, seconds, timeline_rows
from sim.report.writer import read_run, report_view

# Capacity drops below demand for an hour (an overload trigger, no event of its own kind),
# the queue fills to its limit, clients retry; capacity comes back and then grows.
DIP = """\
[scenario]
name = "dip"
title = "A capacity dip"
start = 2021-03-01T00:00:00Z
duration = "8h"
seed = 2
bin = "5min"

[arrivals]
rate = "6/s"

[service]
servers = 10
time = { dist = "exponential", mean = "1s" }
queue_limit = 150
drop_expired = true

[[capacity.change]]
at = "2h"
servers = 4

[[capacity.change]]
at = "3h"
servers = 10

[[capacity.change]]
at = "270min"
servers = 12

[client]
timeout = "10s"
retries = 2
backoff = { base = "1s", cap = "10s", jitter = "full" }

[slo]
success_ratio = 0.99
min_duration = "10min"
"""

# Demand quadruples on day 2; a planner that may add only 50% a day cannot follow.
PLANNER = """\
[scenario]
name = "planner-cap"
duration = "3d"
bin = "10min"
engine = "fluid"

[arrivals]
rate = "100/s"

[[arrivals.surge]]
at = "1d"
factor = 4

[service]
servers = 130
time = { dist = "exponential", mean = "1s" }

[capacity.planner]
review_at = "12:00"
lead_time = "1h"
max_growth = 1.5
"""


@pytest.fixture(scope="module")
def dip(tmp_path_factory) -> Path:
    """The DIP scenario run by the CLI; its folder."""
    root = tmp_path_factory.mktemp("dip")
    (root / "dip.toml").write_text(DIP, encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(root / "dip.toml"), "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    (root / "stdout.txt").write_text(result.stdout, encoding="utf-8")
    return root


def _legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_the_queue_chart_marks_the_limit_and_the_card_says_full(dip) -> None:
    """The queue reached its limit: the queue chart draws the limit as a line named in the
    legend, the panel says the queue is sampled at each bin's end, and the peak queue card
    says the queue was full."""
    summary, ts = read_run(dip / "out")
    assert summary["queue"]["max"] == 150
    fig = charts.queue_figure(report_view(summary, ts), ts)
    ax = fig.axes[1]
    limits = [line for line in ax.get_lines() if list(line.get_ydata()) == [150, 150]]
    assert len(limits) == 1
    texts = _legend_texts(ax)
    assert any(t.startswith("queue limit 150") for t in texts)
    assert any("bin's end" in t for t in texts)
    cards = {label: (value, note) for label, value, note in headline(summary)["cards"]}
    assert cards["Peak queue"] == ("150", "queue full: limit 150")


def test_a_queue_far_below_its_limit_draws_no_limit_line(dip) -> None:
    """A limit the queue never came near is not drawn (it would flatten the chart)."""
    summary, ts = read_run(dip / "out")
    roomy = json.loads(json.dumps(summary))
    roomy["parameters"]["service"]["queue_limit"] = 1e9
    ax = charts.queue_figure(roomy, ts).axes[1]
    assert not any(t.startswith("queue limit") for t in _legend_texts(ax))
    assert headline(roomy)["cards"][2][2] == "requests waiting; limit 1 billion"


@pytest.mark.parametrize("name", ["queue", "load", "latency", "outcomes"])
def test_every_chart_names_the_capacity_change_lines(dip, name) -> None:
    """Each chart that draws capacity-change lines names them in its legend."""
    summary, ts = read_run(dip / "out")
    fig = charts.panel_figure(name, report_view(summary, ts), ts)
    assert "capacity change" in _legend_texts(fig.axes[-1])


def test_a_long_outage_gets_a_close_up_in_both_pages(dip) -> None:
    """The outage is a thin strip of the 8 h axis: outage-1.png shows it with an hour or
    more either side, and report.html and report.md show that chart after the outage table."""
    summary, ts = read_run(dip / "out")
    (outage,) = summary["outages"]
    assert (dip / "out" / "outage-1.png").is_file()
    fig = charts.closeup_figure(report_view(summary, ts), ts, 0)
    low, high = fig.axes[-1].get_xlim()
    x = charts._Axis(ts).x
    assert low <= x(outage["start_s"] - 3600) + 1e-9 and high >= x(outage["end_s"] + 3600) - 1e-9
    assert high - low < x(summary["duration_s"]) - x(0) - 1e-9  # a part of the run, not all
    html = (dip / "out" / "report.html").read_text(encoding="utf-8")
    md = (dip / "out" / "report.md").read_text(encoding="utf-8")
    assert html.index("Outage 1 close up") > html.index("<h2>Outages</h2>")
    assert html.index("Outage 1 close up") < html.index("<h2>Charts</h2>")
    assert "![Outage 1 close up](outage-1.png)" in md


def test_an_outage_filling_most_of_the_run_gets_no_close_up(dip) -> None:
    """A close-up that would show more than half the run adds nothing: none is drawn."""
    summary, ts = read_run(dip / "out")
    wide = dict(summary, outages=[dict(summary["outages"][0], start_s=600.0, end_s=40000.0)])
    wide["outages"][0]["duration_s"] = 39400.0
    assert charts.closeup_outages(wide, ts) == []
    assert charts.closeup_outages(summary, ts) == [0]


def test_the_trigger_is_said_in_words_and_shown_in_the_timeline(dip) -> None:
    """The overload that tipped the outage: the headline says when fresh demand reached 95%
    of capacity and when it fell back below, and what a trigger is; the timeline has both
    moments; the html, the markdown and the CLI say the same."""
    summary, ts = read_run(dip / "out")
    view = report_view(summary, ts)
    words = headline(view)["trigger"]
    assert re.search(
        r"Fresh demand reached 95% of capacity at 1 Mar 02:00 UTC and fell back below it at "
        r"1 Mar 03:00 UTC",
        words,
    ), words
    assert "a trigger is a surge, a fault, or fresh demand at 95% of capacity" in words.lower()
    rows = {event for _, event in timeline_rows(view)}
    assert "trigger: fresh demand reached 95% of capacity" in rows
    assert "trigger ended: fresh demand fell back below 95% of capacity" in rows
    md = (dip / "out" / "report.md").read_text(encoding="utf-8")
    assert "Trigger: Fresh demand reached 95% of capacity at 1 Mar 02:00 UTC" in md
    assert "fell back below it at 1 Mar 03:00 UTC" in (dip / "stdout.txt").read_text()
    assert "<strong>Trigger:</strong> Fresh demand reached" in (
        dip / "out" / "report.html"
    ).read_text(encoding="utf-8")


def test_the_cli_and_the_report_give_one_amplification_headline(dip) -> None:
    """The CLI prints the report's amplification card in the report's words."""
    md = (dip / "out" / "report.md").read_text(encoding="utf-8")
    line = next(line for line in md.splitlines() if line.startswith("- Amplification: "))
    value, note = re.fullmatch(r"- Amplification: \*\*(.+)\*\* \((.+)\)", line).groups()
    assert "attempts per fresh request in the outage" in note
    stdout = (dip / "stdout.txt").read_text(encoding="utf-8")
    assert f"  Amplification: {value} ({note})" in stdout.splitlines()


def test_a_planner_held_back_by_its_growth_cap_says_so() -> None:
    """Demand quadruples; the planner adds the 50% it may: the event says what the forecast
    needed and that the cap applied; the chart lane marks it capped."""
    result = sim.simulate(parse_scenario(PLANNER))
    labels = [e["label"] for e in result.summary["timeline"] if e["kind"] == "capacity"]
    capped = [label for label in labels if "+50% cap applied" in label]
    assert capped, labels
    first = capped[0]
    needs = int(re.search(r"needs ([\d,]+)", first).group(1).replace(",", ""))
    after = int(re.search(r"→ ([\d,]+) servers", first).group(1).replace(",", ""))
    assert needs > after == 195  # floor(130 × 1.5)
    event = next(e for e in result.summary["timeline"] if e["label"] == first)
    assert charts._lane_text(event) == "→ 195 servers (capped)"


def test_zero_reads_none_and_tiny_ratios_read_as_a_share() -> None:
    """No '0ms' where there is nothing (no wait, no time in outage), and a change to a
    millionth reads as a share of A, not as '1/714,661 of A'."""
    assert seconds(0) == "none" and seconds(0.0) == "none"
    assert seconds(0.0004) == "0.4ms"
    assert seconds(123900) == "34.4h"
    assert _change(123900.0, 0.0, "seconds") == "-34.4h (-100%)"
    text = _change(714661.0, 1.0, "count")
    assert "1/" not in text and "0.00014% of A" in text


def test_the_progress_bar_follows_expected_requests_not_time() -> None:
    """With a tenfold surge in the last tenth of the run, 90% of the time is about 47% of
    the work: the bar shows that share."""
    text = """\
[scenario]
name = "late"
duration = "10h"
[arrivals]
rate = "1/s"
[[arrivals.surge]]
at = "9h"
factor = 10
[service]
servers = 20
time = { dist = "exponential", mean = "1s" }
"""
    scenario = parse_scenario(text)
    bar = cli_module._Progress(Demand(scenario), scenario.scenario.duration, io.StringIO())
    assert bar.work_share(0.9) == pytest.approx(0.9 / (0.9 + 0.1 * 10), abs=1e-3)
    assert bar.work_share(1.0) == pytest.approx(1.0)
    assert bar.work_share(0.0) == 0.0
    bar(0.9)
    assert bar.bar.n == pytest.approx(47.4, abs=0.1)
    bar.close()


def test_the_bar_is_cleared_before_the_headline(dip, monkeypatch, tmp_path) -> None:
    """`run` closes its progress bar before it prints anything else."""
    log: list[str] = []

    class Bar:
        def __call__(self, share: float) -> None:
            log.append("progress")

        def close(self) -> None:
            log.append("closed")

    monkeypatch.setattr(cli_module, "_progress_bar", lambda *_: Bar())
    headline_text = cli_module._headline
    monkeypatch.setattr(
        cli_module, "_headline", lambda *a: log.append("headline") or headline_text(*a)
    )
    result = CliRunner().invoke(
        cli, ["run", str(dip / "dip.toml"), "--out", str(tmp_path / "o"), "--no-charts"]
    )
    assert result.exit_code == 0, result.output
    assert log.index("closed") < log.index("headline")
