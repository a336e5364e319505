"""Charts of real runs: width, time axis, legends beside the data, greyscale-safe series,
the timeline lane, user text drawn as text, and the comparison charts."""

from __future__ import annotations

import struct
from itertools import combinations

import matplotlib.dates as mdates
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.lines import Line2D

import sim
from sim.analysis.metrics import Timeseries
from sim.model.scenario import parse_scenario
from sim.report import charts

SCENARIO = """\
[scenario]
name = "chart-test"
title = "Fault with retries"
start = 2021-01-15T08:00:00Z
duration = "30min"
seed = 5
bin = "1min"

[arrivals]
rate = "6/s"

[service]
servers = 10
time = { dist = "exponential", mean = "1s" }

[[faults]]
at = "5min"
duration = "5min"
capacity_factor = 0.5

[client]
timeout = "5s"
retries = 3

[slo]
success_ratio = 0.99
latency_p99 = "10s"
min_duration = "2min"
"""
NO_START = SCENARIO.replace("start = 2021-01-15T08:00:00Z\n", "")
BUDGET = SCENARIO.replace("retries = 3", "retries = 3\nretry_budget = 0.1")


def run(text: str) -> tuple[dict, Timeseries]:
    """(summary with the report's keys, Timeseries) of a scenario text."""
    result = sim.simulate(parse_scenario(text))
    return result.summary, result.timeseries


@pytest.fixture(scope="module")
def storm():
    return run(SCENARIO)


@pytest.fixture(scope="module")
def budget():
    return run(BUDGET)


def draw(fig):
    fig.canvas.draw()
    return fig


def test_every_chart_is_a_png_of_1200_px_or_more(storm, tmp_path):
    """write_charts writes the five charts, each a PNG at least 1200 px wide."""
    written = charts.write_charts(*storm, tmp_path)
    assert [p.name for p in written] == list(charts.CHART_NAMES)
    for path in written:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 1200 and height >= 400


def test_time_axis_shows_dates_when_the_run_has_a_start(storm):
    """With scenario.start the x axis is UTC dates spanning the run; the ticks read as times."""
    fig = draw(charts.queue_figure(*storm))
    ax = fig.axes[1]
    assert ax.get_xlabel() == "time (UTC)"
    assert isinstance(ax.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    start, end = (mdates.num2date(x) for x in ax.get_xlim())
    assert start.isoformat() == "2021-01-15T08:00:00+00:00"
    assert end.isoformat() == "2021-01-15T08:30:00+00:00"
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert "08:10" in labels


def test_time_axis_counts_from_the_start_without_one():
    """Without scenario.start the x axis is time since start, in a unit fit for the span."""
    fig = draw(charts.load_figure(*run(NO_START)))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "time since start (minutes)"
    assert ax.get_xlim() == (0.0, 30.0)


@pytest.mark.parametrize("maker", ["queue", "load", "latency", "outcomes", "dashboard"])
def test_legends_sit_beside_the_plot(storm, maker):
    """No legend overlaps any plotting area of its figure."""
    fig = draw(getattr(charts, f"{maker}_figure")(*storm))
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            area = ax.get_window_extent(renderer)
            overlap_x = min(box.x1, area.x1) - max(box.x0, area.x0)
            overlap_y = min(box.y1, area.y1) - max(box.y0, area.y0)
            assert overlap_x <= 0 or overlap_y <= 0, f"{maker}: legend over a plot"


def _grey(colour, alpha=None) -> float:
    """Luminance of a colour blended over white, as a greyscale printer would show it."""
    r, g, b, a = to_rgba(colour)
    a = a if alpha is None else alpha
    r, g, b = (a * c + (1 - a) for c in (r, g, b))
    return 0.299 * r + 0.587 * g + 0.114 * b


def _signature(handle):
    if isinstance(handle, Line2D):
        return ("line", handle.get_linestyle(), round(handle.get_linewidth(), 1),
                handle.get_marker())  # fmt: skip
    face = handle.get_facecolor()
    face = face[0] if np.ndim(face) == 2 else face
    return ("patch", handle.get_hatch() or "", round(_grey(face, handle.get_alpha()), 1))


@pytest.mark.parametrize("maker", ["queue", "load", "latency", "outcomes"])
def test_series_differ_by_more_than_colour(storm, maker):
    """Every legend entry differs from the others in line style, width, marker, hatch or
    grey level, so a greyscale print still tells the series apart."""
    fig = getattr(charts, f"{maker}_figure")(*storm)
    ax = next(ax for ax in fig.axes if ax.get_legend())
    handles, labels = ax.get_legend_handles_labels()
    signatures = [_signature(h) for h in handles]
    for (a, la), (b, lb) in combinations(zip(signatures, labels, strict=True), 2):
        assert a != b, f"{maker}: {la!r} and {lb!r} differ by colour only"


def test_outages_are_shaded_and_labelled_in_the_lane(storm):
    """Each outage gets a labelled bar in the timeline lane and a shaded span on the plot."""
    summary, ts = storm
    assert summary["outages"], "the fault with retries should cause an outage"
    fig = draw(charts.queue_figure(summary, ts))
    lane, ax = fig.axes[0], fig.axes[1]
    labels = [t.get_text().strip() for t in lane.texts if "outage" in t.get_text()]
    assert len(labels) == len(summary["outages"])
    assert labels[0].startswith("outage 1: ")
    spans = [p for p in ax.patches if p.get_label() == "outage (SLO breached)"]
    assert len(spans) == 1  # the first span carries the legend label
    assert any("fault: 50% capacity" in t.get_text() for t in lane.texts)


def test_lane_labels_never_overlap(storm):
    """Crowded events go to other rows or are counted as hidden, never drawn over each other."""
    summary, ts = storm
    crowded = dict(summary)
    crowded["timeline"] = [
        {"t_s": 60.0 * i, "kind": "capacity", "label": f"planner: {i} → {i + 1} servers"}
        for i in range(1, 25)
    ]
    fig = draw(charts.queue_figure(crowded, ts))
    renderer = fig.canvas.get_renderer()
    lane = fig.axes[0]
    boxes = [t.get_window_extent(renderer) for t in lane.texts if "servers" in t.get_text()]
    assert 3 <= len(boxes) < 24
    for a, b in combinations(boxes, 2):
        assert not a.overlaps(b)
    hidden = 24 - len(boxes)
    assert any(t.get_text() == f"+{hidden} more events: see the report's timeline"
               for t in lane.texts)  # fmt: skip


def test_scenario_text_is_not_read_as_mathtext(storm):
    """A title with dollar signs is drawn as written (no mathtext parsing, no crash)."""
    summary, ts = storm
    titled = dict(summary, title="$x^2$ costs $5 <b>")
    fig = charts.queue_figure(titled, ts)
    assert fig._suptitle.get_text() == "$x^2$ costs $5 <b>: queue length (at each bin's end)"
    assert charts.figure_png(fig)[:4] == b"\x89PNG"


def test_latency_chart_draws_the_slo_and_the_timeout(storm):
    """The latency chart has horizontal lines at the SLO's p99 target and the client timeout."""
    fig = charts.latency_figure(*storm)
    ax = fig.axes[0]
    levels = {
        line.get_label(): line.get_ydata()[0]
        for line in ax.get_lines()
        if len(set(line.get_ydata())) == 1
    }
    assert levels["SLO p99 ≤ 10 s"] == 10.0
    assert levels["client timeout 5 s"] == 5.0
    assert ax.get_yscale() == "log"


def test_compare_queue_switches_to_log_scale_for_unlike_runs(storm, budget):
    """Overlaid queues use a log scale when one run's peak dwarfs the other's, else linear."""
    assert storm[0]["queue"]["max"] > 20 * max(budget[0]["queue"]["max"], 1)
    unlike = charts.compare_queue_figure([("A", *storm), ("B", *budget)])
    assert unlike.axes[1].get_yscale() == "symlog"
    alike = charts.compare_queue_figure([("A", *budget), ("B", *budget)])
    assert alike.axes[1].get_yscale() == "linear"
    lane_labels = [t.get_text() for t in unlike.axes[0].texts]
    assert lane_labels == ["A outages ", "B outages "]


def test_tick_formats_read_like_a_person_writes():
    """Counts read 950, 12k, 1.5M; latency ticks 1 ms, 10 s, 10 min, 1 h."""
    assert [charts.human(v) for v in (950, 12_000, 1_500_000, 0.5)] == ["950", "12k", "1.5M", "0.5"]
    ticks = [charts._seconds_tick(v) for v in (0.001, 10, 600, 3600)]
    assert ticks == ["1 ms", "10 s", "10 min", "1 h"]


def test_a_run_without_bins_draws_no_chart(tmp_path):
    """A run interrupted before its first bin closed writes no chart rather than failing."""
    empty = Timeseries(bin_s=60.0, columns={"t_s": np.array([])})
    assert charts.write_charts({"outages": []}, empty, tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_latency_chart_tells_what_clients_see_from_server_time(storm):
    """The latency chart draws the clients' and the server's percentiles from their own
    columns, and its legend names each view so one is never read as the other."""
    summary, ts = storm
    ax = charts.latency_figure(summary, ts).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    client = lines["what clients see: p99\n(first send to success,\nretries included)"]
    server = lines["server time in system: p99\n(abandoned work included)"]
    assert np.array_equal(client.get_ydata()[:-1], ts["latency_p99"], equal_nan=True)
    assert np.array_equal(server.get_ydata()[:-1], ts["server_latency_p99"], equal_nan=True)
    assert "what clients see: p50" in lines and "server time in system: p50" in lines
    # The storm's abandoned work: the server's p99 climbs to minutes; no client waited that.
    assert np.nanmax(ts["server_latency_p99"]) > 10 * np.nanmax(ts["latency_p99"])
