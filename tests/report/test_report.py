"""Reports on real runs: summary.json additions, re-rendering, HTML and Markdown, comparisons.

Two small runs (about a second of simulation each) stand for a postmortem's before and after:
a fault halves capacity while clients retry (a retry storm that outlives the fault), and the
same with a retry budget (the service recovers).
"""

from __future__ import annotations

import base64
import json
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

import sim
from sim.cli import cli
from sim.model.scenario import parse_scenario
from sim.report.pages import markdown_report
from sim.report.writer import (
    read_run,
    read_timeseries,
    render_report,
    timeseries_csv,
    write_comparison,
)

STORM = """\
[scenario]
name = "storm"
title = "Fault with retries"
description = "A fault halves capacity for 10 minutes; clients time out and retry."
start = 2021-01-15T08:00:00Z
duration = "1h"
seed = 3
bin = "1min"

[arrivals]
rate = "6/s"

[service]
servers = 10
time = { dist = "exponential", mean = "1s" }

[[faults]]
at = "10min"
duration = "10min"
capacity_factor = 0.5

[client]
timeout = "5s"
retries = 3
backoff = { base = "100ms", cap = "5s", jitter = "full" }

[slo]
success_ratio = 0.99
latency_p99 = "10s"
min_duration = "2min"
"""
BUDGET = STORM.replace('name = "storm"', 'name = "budget"').replace(
    "retries = 3", "retries = 3\nretry_budget = 0.1"
)
HOSTILE_TITLE = '<script>alert(1)</script> "quoted" & $x^2$ | pipe'
HOSTILE_DESCRIPTION = "<img src=x onerror=alert(2)>\n\n**bold** <script>alert(3)</script>"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse_html(text: str) -> Tags:
    parser = Tags()
    parser.feed(text)
    return parser


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The storm run written by `outage-sim run`, the budget run by sim.write_report."""
    root = tmp_path_factory.mktemp("runs")
    scenario_file = root / "storm.toml"
    scenario_file.write_text(STORM, encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["run", str(scenario_file), "--out", str(root / "storm"), "-q"]
    )
    assert result.exit_code == 0, result.output
    budget = sim.simulate(parse_scenario(BUDGET))
    sim.write_report(budget, root / "budget")
    return {"storm": root / "storm", "budget": root / "budget", "root": root}


def test_summary_holds_slo_parameters_and_description(runs):
    """summary.json carries the SLO, the key parameters and the description of the scenario."""
    summary = json.loads((runs["storm"] / "summary.json").read_text())
    scenario = parse_scenario(STORM)
    assert summary["slo"] == {"success_ratio": 0.99, "latency_p99_s": 10.0, "min_duration_s": 120.0}
    assert summary["description"] == scenario.scenario.description
    assert summary["bin_s"] == 60.0
    parameters = summary["parameters"]
    assert parameters["service"]["servers"] == 10
    assert parameters["service"]["queue_limit"] is None  # unbounded, JSON-safe
    assert parameters["client"]["timeout_s"] == 5.0 and parameters["client"]["retries"] == 3
    assert parameters["faults"] == [
        {"at_s": 600.0, "duration_s": 600.0, "capacity_factor": 0.5, "slowdown": 1.0,
         "error_rate": 0.0}
    ]  # fmt: skip


def test_timeseries_csv_reads_back_to_the_same_file(runs):
    """read_timeseries inverts timeseries_csv: writing what was read gives the same bytes."""
    path = runs["storm"] / "timeseries.csv"
    summary, ts = read_run(runs["storm"])
    assert timeseries_csv(ts) == path.read_text(encoding="utf-8")
    assert ts.bin_s == 60.0 and ts.start.isoformat() == summary["start"]
    assert len(ts) == 60 and ts["queue"].max() == summary["queue"]["max"]


def test_timeseries_csv_matches_the_run_in_memory(tmp_path):
    """Columns read back equal the simulated Timeseries to the 6 digits the CSV keeps."""
    result = sim.simulate(parse_scenario(STORM.replace('"1h"', '"20min"')))
    (tmp_path / "ts.csv").write_text(timeseries_csv(result.timeseries))
    back = read_timeseries(tmp_path / "ts.csv")
    for column in ("queue", "attempts", "offered_rps", "utilization", "latency_p99"):
        original, read = result.timeseries[column], back[column]
        for a, b in zip(original, read, strict=True):
            assert (a != a and b != b) or abs(a - b) <= 1e-5 * max(abs(a), 1e-9)


def test_run_writes_every_file_whole_and_readable(runs):
    """A run folder holds the data, five charts of 1200+ px and both reports, no temp files."""
    names = sorted(p.name for p in runs["storm"].iterdir())
    assert names == sorted(
        ["summary.json", "timeseries.csv", "queue.png", "load.png", "latency.png",
         "outcomes.png", "dashboard.png", "report.html", "report.md", "scenario.toml",
         "provenance.json"]
    )  # fmt: skip
    for name in names:
        path = runs["storm"] / name
        assert path.stat().st_mode & 0o044, f"{name} is private to its owner"
        if name.endswith(".png"):
            assert png_size(path.read_bytes())[0] >= 1200


def test_report_command_redraws_the_same_files(runs):
    """`outage-sim report DIR` rebuilds deleted charts and reports, byte for byte."""
    folder = runs["storm"]
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix != ".json"}
    for name in ("queue.png", "dashboard.png", "report.html", "report.md"):
        (folder / name).unlink()
    result = CliRunner().invoke(cli, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix != ".json"}
    assert after.keys() == before.keys()
    for name in before:
        assert after[name] == before[name], f"{name} differs after re-rendering"


def test_report_command_refuses_a_folder_that_is_not_a_run(tmp_path):
    """`report` on a folder without summary.json exits 2 with one message, no traceback."""
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a run folder (no summary.json)" in result.output
    assert "Traceback" not in result.output


def test_html_is_self_contained(runs):
    """report.html fetches nothing: no scripts, links or remote sources; charts inlined."""
    text = (runs["storm"] / "report.html").read_text(encoding="utf-8")
    page = parse_html(text)
    tags = [tag for tag, _ in page.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", text)
    assert "url(" not in text  # no CSS fetches either
    csp = [a["content"] for t, a in page.tags if t == "meta" and "content" in a]
    assert any("default-src 'none'" in c for c in csp)
    images = [a["src"] for t, a in page.tags if t == "img"]
    assert len(images) == 5  # the dashboard and the four charts
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert png_size(base64.b64decode(src.split(",", 1)[1]))[0] >= 1200


def test_html_headline_tells_when_how_long_and_why_first(runs):
    """The headline (before any chart or table) gives the onset, duration, and the verdict."""
    summary = json.loads((runs["storm"] / "summary.json").read_text())
    text = (runs["storm"] / "report.html").read_text(encoding="utf-8")
    outage = summary["outages"][0]
    headline = text[text.index('<section class="headline') : text.index("</section>")]
    assert text.index('<section class="headline') < text.index("<table")
    assert text.index('<section class="headline') < text.index("<figure")
    onset = outage["start"][11:16] + " UTC"  # HH:MM of the ISO timestamp
    assert onset in headline
    assert "Lasted" in headline and "Peak queue" in headline and "Requests failed" in headline
    verdict = {True: "yes", False: "no"}.get(summary["metastable"], "cannot tell")
    assert f"Metastable: {verdict}." in headline
    reason = summary["metastable_reason"]
    assert reason[1:40] in headline.replace("&#x27;", "'")


def test_markdown_links_only_to_files_that_exist(runs):
    """Every image or link in report.md names a file in the run folder."""
    text = (runs["storm"] / "report.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)]+)\)", text)
    assert len(targets) == 5
    for target in targets:
        assert (runs["storm"] / target).is_file(), target
    summary, _ = read_run(runs["storm"])
    assert "](latency.png)" not in markdown_report(summary, ["queue.png", "load.png"])


def test_charts_off_writes_the_data_only(tmp_path):
    """write_report(charts=False) writes the data and its provenance, no chart or report."""
    result = sim.simulate(parse_scenario(STORM.replace('"1h"', '"5min"')))
    sim.write_report(result, tmp_path, charts=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "provenance.json", "scenario.toml", "summary.json", "timeseries.csv"
    ]  # fmt: skip


def test_hostile_scenario_text_shows_as_text(tmp_path):
    """HTML, script and mathtext in the title and description are escaped everywhere."""
    text = (
        STORM.replace('"1h"', '"15min"')
        .replace('title = "Fault with retries"', f"title = {json.dumps(HOSTILE_TITLE)}")
        .replace(
            'description = "A fault halves capacity for 10 minutes; clients time out and retry."',
            f"description = {json.dumps(HOSTILE_DESCRIPTION)}",
        )
    )
    sim.write_report(sim.simulate(parse_scenario(text)), tmp_path)
    page_text = (tmp_path / "report.html").read_text(encoding="utf-8")
    page = parse_html(page_text)
    assert "script" not in [tag for tag, _ in page.tags]
    assert [t for t, _ in page.tags if t == "img"] == ["img"] * 5  # the charts, nothing injected
    assert all(not k.startswith("on") for _, attrs in page.tags for k in attrs)
    shown = "".join(page.text)
    assert HOSTILE_TITLE in shown and "<script>alert(3)</script>" in shown
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "<script" not in markdown and "<img" not in markdown
    assert "&lt;script&gt;" in markdown


def test_no_outage_headline(tmp_path):
    """A run that keeps its SLO says so in its headline, with the SLO in words."""
    text = (
        STORM.replace("[[faults]]", "[[faults]]\nerror_rate = 0.0")
        .replace("capacity_factor = 0.5", "capacity_factor = 1.0")
        .replace('"1h"', '"10min"')
        .replace('latency_p99 = "10s"', 'latency_p99 = "60s"')
    )
    result = sim.simulate(parse_scenario(text))
    assert result.summary["outages"] == []
    sim.write_report(result, tmp_path)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert '<section class="headline">' in html  # not marked as bad
    assert (
        "No outage: the SLO (≥ 99.0% of fresh requests succeed and p99 ≤ 1min, per 1min bin)"
        in html
    )


def test_old_summary_without_report_keys_still_renders(runs, tmp_path):
    """A summary.json written before `parameters`, `slo` and `bin_s` existed still renders."""
    for name in ("summary.json", "timeseries.csv"):
        (tmp_path / name).write_bytes((runs["budget"] / name).read_bytes())
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("parameters", "slo", "bin_s", "description"):
        summary.pop(key)
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    written = render_report(tmp_path)
    assert {p.name for p in written} >= {"report.html", "report.md", "dashboard.png"}
    assert "Key parameters" not in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_compare_command_on_two_runs(runs):
    """`compare A B` writes overlaid charts and a table whose numbers are the runs' own."""
    out = runs["root"] / "cmp"
    result = CliRunner().invoke(
        cli, ["compare", str(runs["storm"]), str(runs["budget"]), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    for name in ("compare_queue.png", "compare_load.png"):
        assert png_size((out / name).read_bytes())[0] >= 1200
    a = json.loads((runs["storm"] / "summary.json").read_text())
    b = json.loads((runs["budget"] / "summary.json").read_text())
    markdown = (out / "compare.md").read_text(encoding="utf-8")
    row = next(line for line in markdown.splitlines() if line.startswith("| amplification"))
    assert f"{a['amplification']:.2f}×" in row and f"{b['amplification']:.2f}×" in row
    assert "client.retry\\_budget | – | 0.1 |" in markdown
    assert "What differs: client.retry\\_budget: – → 0.1; scenario: storm → budget." in markdown
    for target in re.findall(r"\]\(([^)]+)\)", markdown):
        assert (out / target).is_file()
    page = parse_html((out / "compare.html").read_text(encoding="utf-8"))
    assert "script" not in [t for t, _ in page.tags]


def test_compare_a_run_with_itself(runs, tmp_path):
    """Comparing a run with itself finds no difference in any measure or setting."""
    write_comparison(runs["budget"], runs["budget"], tmp_path)
    markdown = (tmp_path / "compare.md").read_text(encoding="utf-8")
    table = markdown.split("## Differences")[1].split("##")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    changes = [row.rsplit("|", 2)[-2].strip() for row in rows]
    assert changes and all(c in ("same", "") for c in changes), changes
    assert "Both runs have the same settings." in markdown


def test_report_command_refuses_a_damaged_timeseries(runs, tmp_path):
    """A timeseries.csv with a cut row is refused with exit 2 and a message naming the file."""
    (tmp_path / "summary.json").write_bytes((runs["budget"] / "summary.json").read_bytes())
    lines = (runs["budget"] / "timeseries.csv").read_text().splitlines()
    lines[5] = ",".join(lines[5].split(",")[:4])
    (tmp_path / "timeseries.csv").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "timeseries.csv: rows do not all have the" in result.output
    assert not (tmp_path / "report.html").exists()


def test_replication_bands_are_drawn_and_never_stale(tmp_path):
    """`run --reps 3` writes bands.csv and the charts read it; a later plain run in the same
    folder ignores the leftover bands (they belong to another run)."""
    scenario_file = tmp_path / "storm.toml"
    scenario_file.write_text(STORM, encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(scenario_file), "--out", str(out), "--reps", "3"])
    assert result.exit_code == 0, result.output
    summary, ts = read_run(out)
    assert summary["replications"]["reps"] == 3
    assert {"queue_q05", "queue_median", "queue_q95", "latency_p99_q95"} <= set(ts.columns)
    assert (ts["queue_q05"] <= ts["queue_q95"]).all()
    result = CliRunner().invoke(cli, ["run", str(scenario_file), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert (out / "bands.csv").is_file()  # a file this run did not write is left alone
    assert "queue_q05" not in read_run(out)[1].columns
