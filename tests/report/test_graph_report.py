"""Reports of a service graph: graph.png, tiers.png and the "Tiers" section, and none of them
for a single pool.

The graph run is small (six simulated minutes): an api pool calls a database on one route and
an SMS provider with a tiny rate limit on the other. From the fourth minute a surge sends the
provider nearly twice its limit, so it refuses calls (limited) and the api answers those
requests with failures: the provider saturates first, the api with it, the database never.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import numpy as np
import pytest
from helpers import queue_text

import sim
from sim.analysis.metrics import Timeseries
from sim.model.scenario import parse_scenario
from sim.report import charts, text
from sim.report.writer import read_run, write_report

GRAPH = """\
[scenario]
name = "graph-report"
title = "Signup surge"
start = 2021-01-11T18:00:00Z
duration = "6min"
seed = 7
bin = "1min"

[arrivals]
rate = "10/s"

[[arrivals.surge]]
at = "3min"
duration = "3min"
factor = 3.0

[tiers.api]
servers = 40
time = { dist = "exponential", mean = "50ms" }

[tiers.db]
servers = 20
time = { dist = "exponential", mean = "20ms" }

[tiers.sms]
rate_limit = "5/s"
burst = 20
time = { dist = "deterministic", mean = "100ms" }

[[routes]]
name = "browse"
share = 0.7
calls = ["api", "db"]

[[routes]]
name = "signup"
share = 0.3
calls = ["api", "sms"]
"""


def _png_size(path) -> tuple[int, int]:
    """(width, height) of a PNG file, asserting its signature and header chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("graph")
    write_report(sim.simulate(parse_scenario(GRAPH)), out)
    return out


def test_a_graph_report_draws_the_graph_and_the_tiers(graph_run) -> None:
    """graph.png and tiers.png are written beside the five usual charts, as valid PNGs the
    width of the others; the report lists and embeds them."""
    for name in (*charts.CHART_NAMES, *charts.GRAPH_CHART_NAMES):
        width, height = _png_size(graph_run / name)
        assert width == 1300 and 200 < height < 2000, (name, width, height)
    markdown = (graph_run / "report.md").read_text()
    page = (graph_run / "report.html").read_text()
    assert "## Tiers" in markdown and "<h2>Tiers</h2>" in page
    assert "](graph.png)" in markdown and "](tiers.png)" in markdown
    assert page.count("data:image/png;base64,") == 7  # dashboard, four charts, the graph, the tiers


def test_the_tiers_section_names_every_tier_and_route_with_its_numbers(graph_run) -> None:
    """The tier table has a row per tier (the entry tier first) with its attempts and, for
    the provider, the calls its rate limit refused; the route table the success ratio."""
    summary, _ = read_run(graph_run)
    section = (graph_run / "report.md").read_text().split("## Tiers")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    rows = {line.split(" | ")[0].strip("| "): line for line in lines}
    for tier in ("api", "db", "sms"):
        assert f"{summary['tiers'][tier]['attempts']:,}" in rows[tier]
    assert list(rows)[1:4] == ["api", "db", "sms"]  # after the header, by call depth
    limited = summary["tiers"]["sms"]["limited"]
    assert limited > 0 and f"{limited:,}" in rows["sms"]
    assert f"{summary['routes']['signup']['success_ratio']:.2%}" in rows["signup"]
    assert "api 1.00× → sms" in rows["signup"]


def test_the_spread_sentence_names_the_provider_first_and_spares_the_database(graph_run) -> None:
    """The provider is refused beyond its limit from the surge's minute (18:03), its caller
    fails those requests in the same bin, the database never saturates."""
    summary, ts = read_run(graph_run)
    assert text.tier_state(ts, "sms") == ("saturated", 180.0)
    assert text.tier_state(ts, "db")[0] == "healthy"
    words = text.spread_sentence(summary, ts)
    assert words.startswith("sms saturated first (11 Jan 18:03 UTC)"), words
    assert "then api" in words and "db" not in words
    markdown = (graph_run / "report.md").read_text()
    assert words in markdown.replace("\\", "")


def _by_hand(utilization: dict[str, list[float]], failed: dict[str, list[float]]) -> Timeseries:
    n = len(next(iter(utilization.values())))
    columns = {"t_s": np.arange(n) * 60.0}
    for tier in utilization:
        columns[f"{tier}.utilization"] = np.array(utilization[tier], dtype=float)
        columns[f"{tier}.attempts"] = np.full(n, 1000.0)
        columns[f"{tier}.rejected"] = np.array(failed[tier], dtype=float)
        columns[f"{tier}.timed_out"] = np.zeros(n)
    return Timeseries(bin_s=60.0, start=datetime(2021, 1, 11, tzinfo=UTC),
                      columns=columns)  # fmt: skip


def test_the_spread_follows_the_bins_not_the_order_of_the_tiers() -> None:
    """Tiers saturate in the order of their first bad bin, whatever their place in the
    summary: the back tier reaches 95% busy in the second bin, the front tier fails over 1%
    of its attempts in the fourth; 1% exactly and 94% busy are not saturation."""
    summary = {
        "start": "2021-01-11T00:00:00+00:00",
        "bin_s": 60.0,
        "tiers": {"front": {}, "back": {}, "spare": {}},
        "routes": {"r": {"amplification": {"front": 1.0, "back": 1.0, "spare": 1.0}}},
    }
    ts = _by_hand(
        {"front": [0.5] * 5, "back": [0.5, 0.96, 0.5, 0.5, 0.5], "spare": [0.94] * 5},
        {"front": [0, 0, 0, 11, 0], "back": [0] * 5, "spare": [10] * 5},
    )
    assert text.saturation_order(summary, ts) == [("back", 60.0), ("front", 180.0)]
    assert text.tier_state(ts, "spare")[0] == "busy"
    assert text.spread_sentence(summary, ts) == (
        "back saturated first (11 Jan 00:01 UTC); then front (11 Jan 00:03 UTC)."
    )
    calm = _by_hand({"a": [0.1] * 3}, {"a": [0] * 3})
    assert text.spread_sentence({"tiers": {"a": {}}}, calm).startswith("No tier saturated")


def test_a_single_pool_report_has_no_graph_and_no_tiers_section(tmp_path) -> None:
    """One pool: the five usual charts, no graph.png or tiers.png, no "Tiers" section."""
    text_ = queue_text(rate_rps=5.0, servers=8, duration_s=300.0, bin_s=60.0)
    write_report(sim.simulate(parse_scenario(text_)), tmp_path)
    assert all((tmp_path / name).is_file() for name in charts.CHART_NAMES)
    assert not (tmp_path / "graph.png").exists() and not (tmp_path / "tiers.png").exists()
    assert "Tiers" not in (tmp_path / "report.md").read_text()
    assert "Tiers" not in (tmp_path / "report.html").read_text()
