"""A committed report stays put: running the same command again rewrites every file byte for
byte, except when it ran (provenance's start time, summary.json's wall time), and no output
names a folder of the machine that made it."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sim.cli import cli

SCENARIO = """\
[scenario]
name = "repro"
title = "A fault with retries"
start = 2021-01-15T08:00:00Z
duration = "3h"
seed = 4
bin = "1min"

[population]
initial_users = 20000
downloads_csv = "data/downloads.csv"
requests_per_user = "25/day"

[service]
servers = 10
time = { dist = "exponential", mean = "1s" }
queue_limit = 500

[[faults]]
at = "1h"
duration = "15min"
capacity_factor = 0.5

[client]
timeout = "5s"
retries = 2

[slo]
success_ratio = 0.99
"""
CSV = "date,downloads\n2021-01-14,0\n2021-01-15,1000\n2021-01-16,0\n"
# What may change from one run to the next: when it ran and how long it took.
VARYING = {"provenance.json": {"started_at"}, "summary.json": {"wall_time_s", "simulated_per_s"}}


def _run(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["run", *args, "-q"])
    assert result.exit_code == 0, result.output


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_second_run_rewrites_the_report_byte_for_byte(tmp_path, monkeypatch) -> None:
    """The README's kind of command, twice, from the working folder: every file is the same
    bytes, apart from the start time and the wall time; the command is recorded as typed."""
    (tmp_path / "scenarios" / "data").mkdir(parents=True)
    (tmp_path / "scenarios" / "repro.toml").write_text(SCENARIO, encoding="utf-8")
    (tmp_path / "scenarios" / "data" / "downloads.csv").write_text(CSV, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["outage-sim", "run", "scenarios/repro.toml", "-q"])
    _run(["scenarios/repro.toml"])
    first = _files(tmp_path / "reports" / "repro")
    _run(["scenarios/repro.toml"])
    second = _files(tmp_path / "reports" / "repro")
    assert sorted(first) == sorted(second)
    assert "report.html" in first and "data/downloads.csv" in first
    for name in first:
        if name in VARYING:
            a, b = json.loads(first[name]), json.loads(second[name])
            for key in VARYING[name]:
                a.pop(key, None), b.pop(key, None)
            assert a == b, name
        else:
            assert first[name] == second[name], name
    provenance = json.loads(first["provenance.json"])
    assert provenance["scenario_file"] == "scenarios/repro.toml"
    assert provenance["command"] == ["outage-sim", "run", "scenarios/repro.toml", "-q"]


def test_no_output_names_a_folder_of_the_machine(tmp_path, monkeypatch) -> None:
    """Given absolute paths inside the working folder, the outputs still name them relative
    to it: no file of the report holds the working folder's absolute path."""
    (tmp_path / "s" / "data").mkdir(parents=True)
    (tmp_path / "s" / "repro.toml").write_text(SCENARIO, encoding="utf-8")
    (tmp_path / "s" / "data" / "downloads.csv").write_text(CSV, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["/opt/bin/outage-sim", "run", str(tmp_path / "s/repro.toml")])
    _run([str(tmp_path / "s" / "repro.toml"), "--out", str(tmp_path / "out")])
    files = _files(tmp_path / "out")
    assert len(files) >= 10
    for name, data in files.items():
        assert str(tmp_path).encode() not in data, name
        assert b"/opt/bin" not in data, name
    provenance = json.loads(files["provenance.json"])
    assert provenance["scenario_file"] == "s/repro.toml"
    assert provenance["command"] == ["outage-sim", "run", "s/repro.toml"]
    assert "Run it again: outage-sim run out/scenario.toml" in files["scenario.toml"].decode()
