"""Reliability: absurd sizes refused at once, Ctrl-C keeps what was simulated, every output
file whole or absent, foreign files kept, and provenance that reproduces a run exactly."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import REPO

import sim
import sim.io
import sim.report.charts
import sim.report.provenance
import sim.report.writer
from sim.cli import cli
from sim.io import atomic_write
from sim.model.scenario import MAX_RATE_RPS, load_scenario, parse_scenario

SMALL = """\
[scenario]
name = "rel-small"
title = "Small, with a fault and retries"
duration = "20min"
seed = 4
bin = "1min"

[arrivals]
rate = "6/s"

[service]
servers = 8
time = { dist = "exponential", mean = "1s" }

[[faults]]
at = "5min"
duration = "3min"
capacity_factor = 0.5

[client]
timeout = "5s"
retries = 2
"""

# 20 days at 20/s: ~35M simulated requests, under the size guard and far longer than a test.
LONG = """\
[scenario]
name = "rel-long"
duration = "20d"
bin = "10min"

[arrivals]
rate = "20/s"

[service]
servers = 25
time = { dist = "exponential", mean = "1s" }
"""


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _command() -> str:
    script = Path(sys.executable).with_name("outage-sim")
    command = str(script) if script.exists() else shutil.which("outage-sim")
    assert command, "the outage-sim console script is not installed"
    return command


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp")]


# ------------------------------------------------------------------------ the size guard
def test_too_large_run_is_refused_with_estimate_and_a_scale_that_passes(write_scenario) -> None:
    """Above the size guard: exit 2 with the estimate and a scale the guard accepts."""
    # A pool of 80,000 so that scales which divide it are large enough to pass the guard.
    big = SMALL.replace('"6/s"', '"1e6/s"').replace('"20min"', '"3d"')
    path = write_scenario(big.replace("servers = 8", "servers = 80_000"))
    refused = _invoke("run", path, "--no-charts", "-q")
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    message = refused.stderr.strip()
    assert "requests" in message and "--force" in message
    estimate = float(re.search(r"about ([\d,]+) requests", message).group(1).replace(",", ""))
    assert estimate == pytest.approx(1e6 * 3 * 86400 * 2, rel=0.01)  # fresh, and each may retry
    scale = re.search(r"scenario\.scale=([\d.e+]+)", message).group(1)
    checked = _invoke("check", path, "--set", f"scenario.scale={scale}")
    assert checked.exit_code == 0 and "note:" not in checked.stdout


def test_check_notes_a_run_it_would_refuse(write_scenario) -> None:
    """check passes a valid file that is too large to run, and says what a run would need."""
    path = write_scenario(SMALL.replace('"6/s"', '"1e6/s"').replace('"20min"', '"3d"'))
    result = _invoke("check", path)
    assert result.exit_code == 0
    assert "ok (rel-small" in result.stdout and "note: `run` would refuse it" in result.stdout


@pytest.mark.parametrize("command", ["check", "run"])
def test_absurd_sizes_are_refused_at_once_by_the_real_command(command, write_scenario) -> None:
    """A rate of 1e15/s, a 1000-year run, 60 stacked 1e6x surges: exit 2, one line, no hang."""
    surges = "".join(f'\n[[arrivals.surge]]\nat = "{i}s"\nfactor = 1e6\n' for i in range(60))
    cases = {
        "rate.toml": SMALL.replace('"6/s"', '"1e15/s"'),
        "long.toml": SMALL.replace('"20min"', '"365000d"'),
        "surges.toml": SMALL.replace('"6/s"', '"1e9/s"') + surges,
    }
    for name, text in cases.items():
        path = write_scenario(text, name)
        args = [_command(), command, str(path)]
        if command == "run":
            args += ["--force", "--no-charts", "--out", str(path.parent / "out")]
        # The timeout only guards against a hang; the refusal itself comes before any work.
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (name, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert not (path.parent / "out").exists()


def test_overflowing_demand_is_refused_even_with_force(write_scenario) -> None:
    """Demand that overflows a float has no estimate: refused with --force too (it never ends)."""
    surges = "".join(f'\n[[arrivals.surge]]\nat = "{i}s"\nfactor = 1e6\n' for i in range(60))
    path = write_scenario(SMALL.replace('"6/s"', f'"{MAX_RATE_RPS:g}/s"') + surges)
    for args in (["check", path], ["run", path, "--force", "--no-charts", "-q"]):
        result = _invoke(*args)
        assert result.exit_code == 2, result.output
        assert "overflows" in result.stderr


def test_suggested_scale_is_always_one_the_scenario_accepts(write_scenario) -> None:
    """The largest allowed demand gets a suggestion that itself validates (or only --engine)."""
    text = SMALL.replace('"6/s"', f'"{MAX_RATE_RPS:g}/s"').replace('"20min"', '"900d"')
    path = write_scenario(text.replace('bin = "1min"', 'bin = "1h"'))
    message = _invoke("run", path, "-q").stderr
    found = re.search(r"scenario\.scale=([\d.e+]+)", message)
    if found is None:
        assert "--engine fluid" in message
    else:
        assert _invoke("check", path, "--set", f"scenario.scale={found.group(1)}").exit_code == 0


# ------------------------------------------------------------------------------- Ctrl-C
def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _startup_cpu_seconds(scenario: Path) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([_command(), "check", str(scenario)], capture_output=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_during_a_real_run_writes_a_whole_marked_report_and_exits_130(
    tmp_path: Path, signum: int
) -> None:
    """SIGINT (Ctrl-C) or SIGTERM mid-run: exit 130 soon after, a whole summary marked
    interrupted, a time series shorter than the full run, the charts and provenance, and no
    temporary files."""
    scenario = tmp_path / "long.toml"
    scenario.write_text(LONG, encoding="utf-8")
    out = tmp_path / "out"
    process = subprocess.Popen(
        [_command(), "run", str(scenario), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the engine runs: past the CPU that start-up alone (imports, the demand,
        # the checks) takes, measured by `check` on the same file, plus 2.5 s for what `run`
        # alone does first (the folder lock, loading the compiled kernel from its cache): a
        # signal before the engine starts has nothing simulated to write.
        engine_from = _startup_cpu_seconds(scenario) + 2.5
        deadline = time.monotonic() + 60
        while _cpu_seconds(process.pid) < engine_from and process.poll() is None:
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.05)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["interrupted"] is True
    assert 0 < summary["duration_s"] < 20 * 86400
    assert summary["requests"]["fresh"] > 0
    bins = (out / "timeseries.csv").read_text(encoding="utf-8").count("\n") - 1
    assert 0 < bins < 20 * 24 * 6  # the full run has 2,880 ten-minute bins
    assert bins == int(np.ceil(summary["duration_s"] / 600 - 1e-9))
    for name in ("queue.png", "load.png", "report.html", "scenario.toml"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "provenance.json").read_text())["interrupted"] is True
    assert _temporaries(out) == []
    assert "interrupted:" in stdout  # the headline says how far it got


def test_ctrl_c_while_drawing_charts_keeps_whole_files_and_exits_130(
    write_scenario, tmp_path: Path, monkeypatch
) -> None:
    """Ctrl-C while the third chart is drawn: exit 130; data, provenance and the charts drawn
    before it are whole; the chart being drawn is absent, not half written; no temporaries."""
    real_png = sim.report.charts.figure_png
    drawn = []

    def png_then_interrupt(fig):
        if len(drawn) == 2:
            raise KeyboardInterrupt
        drawn.append(True)
        return real_png(fig)

    monkeypatch.setattr(sim.report.charts, "figure_png", png_then_interrupt)
    out = tmp_path / "out"
    result = _invoke("run", write_scenario(SMALL), "--out", out, "-q")
    assert result.exit_code == 130
    assert json.loads((out / "summary.json").read_text())["requests"]["fresh"] > 0
    assert (out / "timeseries.csv").read_text().count("\n") == 21
    assert load_scenario(out / "scenario.toml").scenario.name == "rel-small"
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == sorted(sim.report.charts.CHART_NAMES[:2])
    for name in written:
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    assert _temporaries(out) == []


@pytest.mark.parametrize("moment", ["before the write", "before the rename"])
def test_a_signal_during_a_write_leaves_the_file_whole(tmp_path: Path, monkeypatch, moment):
    """SIGINT while a file is written takes effect after its rename: whole new file, no temp."""
    target = tmp_path / "summary.json"
    target.write_text("old", encoding="utf-8")
    new = "x" * 1_000_000
    real_fdopen, real_replace = os.fdopen, os.replace

    def fdopen_with_signal(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real_fdopen(*args, **kwargs)

    def replace_with_signal(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real_replace(*args, **kwargs)

    if moment == "before the write":
        monkeypatch.setattr(sim.io.os, "fdopen", fdopen_with_signal)
    else:
        monkeypatch.setattr(sim.io.os, "replace", replace_with_signal)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, new)
    assert target.read_text(encoding="utf-8") == new
    assert _temporaries(tmp_path) == []


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch):
    """A write that fails (disk full) leaves the previous file as it was, and no temporary."""
    target = tmp_path / "timeseries.csv"
    target.write_text("old", encoding="utf-8")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sim.io.os, "replace", full_disk)
    with pytest.raises(OSError):
        atomic_write(target, "new")
    assert target.read_text(encoding="utf-8") == "old"
    assert _temporaries(tmp_path) == []


# -------------------------------------------------------------------- the output folder
def test_an_existing_folder_keeps_the_files_the_tool_did_not_write(write_scenario, tmp_path):
    """Notes, a sub-folder and look-alike names in the output folder survive two runs."""
    out = tmp_path / "out"
    (out / "mine").mkdir(parents=True)
    foreign = {
        out / "notes.md": b"my notes",
        out / "summary.json.bak": b"{}",
        out / "queue.png.old": b"\x89PNG old",
        out / "mine" / "summary.json": b"not yours",
    }
    for path, data in foreign.items():
        path.write_bytes(data)
    before = {path: path.stat().st_mtime_ns for path in foreign}
    path = write_scenario(SMALL)
    for seed in (1, 2):
        assert _invoke("run", path, "--out", out, "--seed", seed, "-q").exit_code == 0
    for path, data in foreign.items():
        assert path.read_bytes() == data and path.stat().st_mtime_ns == before[path]
    assert json.loads((out / "summary.json").read_text())["seed"] == 2
    assert _temporaries(out) == []


# ----------------------------------------------------------------------------- provenance
def test_scenario_toml_reruns_to_the_same_hash_and_the_same_bytes(write_scenario, tmp_path):
    """scenario.toml (overrides and --seed applied) reruns to the same hash and time series."""
    path = write_scenario(SMALL)
    first, again = tmp_path / "first", tmp_path / "again"
    args = ["--set", "service.servers=7", "--set", 'client.backoff.jitter="equal"']
    ran = _invoke("run", path, "--out", first, "--seed", 9, "--no-charts", "-q", *args)
    assert ran.exit_code == 0, ran.output
    assert (
        _invoke("run", first / "scenario.toml", "--out", again, "--no-charts", "-q").exit_code == 0
    )
    one = json.loads((first / "summary.json").read_text())
    two = json.loads((again / "summary.json").read_text())
    assert one["scenario_sha256"] == two["scenario_sha256"]
    assert one["seed"] == two["seed"] == 9
    assert one["parameters"]["service"]["servers"] == 7
    assert (first / "timeseries.csv").read_bytes() == (again / "timeseries.csv").read_bytes()


def test_provenance_json_says_what_ran_where_and_when(write_scenario, tmp_path) -> None:
    """provenance.json: version, seed, hash, engine, scale, command line, library versions."""
    out = tmp_path / "out"
    assert _invoke("run", write_scenario(SMALL), "--out", out, "--no-charts", "-q").exit_code == 0
    record = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    for key in ("version", "seed", "scenario_sha256", "engine", "scale"):
        assert record[key] == summary[key], key
    assert isinstance(record["command"], list) and record["command_line"]
    assert record["python"].count(".") == 2
    assert record["numpy"] and record["simpy"]
    started = datetime.fromisoformat(record["started_at"])
    assert started.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - started).total_seconds()) < 3600
    assert record["interrupted"] is False


def test_a_replayed_csv_travels_with_the_scenario(tmp_path: Path) -> None:
    """The downloads CSV is copied beside scenario.toml: the folder reruns to the same hash."""
    folder = tmp_path / "scenarios"
    shutil.copytree(REPO / "scenarios", folder)
    source = folder / "signal-2021-01.toml"
    out = tmp_path / "report"
    short = ["--set", 'scenario.duration="1d"', "--set", "scenario.scale=20000", "--no-charts"]
    assert _invoke("run", source, "--out", out, "-q", *short).exit_code == 0
    copy = out / "data" / "signal_2021_downloads.csv"
    assert copy.read_bytes() == (folder / "data" / "signal_2021_downloads.csv").read_bytes()
    shutil.rmtree(folder)  # the report folder alone must reproduce the run
    assert _invoke("run", out / "scenario.toml", "--out", tmp_path / "again", "-q").exit_code == 0
    one = json.loads((out / "summary.json").read_text())
    two = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert one["scenario_sha256"] == two["scenario_sha256"]
    assert one["requests"] == two["requests"]


def test_a_csv_outside_the_folder_is_named_by_its_absolute_path(tmp_path: Path) -> None:
    """A CSV named through '..' is not copied out of reach: scenario.toml names it absolutely."""
    (tmp_path / "data").mkdir()
    shutil.copy(REPO / "scenarios/data/signal_2021_downloads.csv", tmp_path / "data" / "d.csv")
    (tmp_path / "s").mkdir()
    text = (REPO / "scenarios/signal-2021-01.toml").read_text(encoding="utf-8")
    text = text.replace("data/signal_2021_downloads.csv", "../data/d.csv")
    (tmp_path / "s" / "x.toml").write_text(text, encoding="utf-8")
    scenario = load_scenario(tmp_path / "s" / "x.toml", overrides={"scenario.duration": "1d"})
    sim.report.provenance.write_provenance(scenario, tmp_path / "out")
    again = load_scenario(tmp_path / "out" / "scenario.toml")
    assert again.population.downloads_csv == str((tmp_path / "data" / "d.csv").resolve())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "provenance.json",
        "scenario.toml",
    ]


def test_the_input_file_is_never_overwritten_by_its_copy(tmp_path: Path) -> None:
    """Running out/scenario.toml into out keeps the user's file, comments and all."""
    out = tmp_path / "out"
    out.mkdir()
    original = "# my comments\n" + SMALL
    (out / "scenario.toml").write_text(original, encoding="utf-8")
    result = _invoke("run", out / "scenario.toml", "--out", out, "--no-charts", "-q")
    assert result.exit_code == 0, result.output
    assert (out / "scenario.toml").read_text(encoding="utf-8") == original
    assert (out / "provenance.json").exists()


def test_python_api_reports_carry_provenance_too(tmp_path: Path) -> None:
    """sim.write_report writes scenario.toml and provenance.json, as `outage-sim run` does."""
    scenario = parse_scenario(SMALL, overrides={"scenario.seed": 21})
    sim.write_report(sim.simulate(scenario), tmp_path, charts=False)
    assert parse_scenario((tmp_path / "scenario.toml").read_text()).sha256 == scenario.sha256
    assert json.loads((tmp_path / "provenance.json").read_text())["seed"] == 21


# ------------------------------------------------------------------------ hostile files
class _TooSlow(BaseException):
    """Raised by the alarm: the call hung (BaseException, so nothing on the way catches it)."""


def _within(seconds: int, call):
    """call() or a test failure after `seconds` (a guard against hangs, not a speed test)."""

    def alarm(signum, frame):
        raise _TooSlow

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        return call()
    except _TooSlow:
        pytest.fail(f"no answer within {seconds} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_devices_fifos_and_huge_files_are_refused_without_reading_them(tmp_path) -> None:
    """/dev/zero, a FIFO nobody writes to and a 20 MB file: exit 2 at once, never a hang."""
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"# " + b"x" * 20_000_000)
    cases = [fifo, huge] + [Path("/dev/zero")] * Path("/dev/zero").exists()
    for path in cases:
        result = _within(20, lambda p=path: _invoke("check", p))
        assert result.exit_code == 2, (path, result.output)
        assert str(path) in result.stderr and "Traceback" not in result.output


def test_long_lines_and_deep_nesting_are_answered_in_linear_time() -> None:
    """A line of 300k spaces, a 300k-space value and arrays nested 100k deep: located errors."""
    bad = SMALL.replace("servers = 8", "servers = 0")
    texts = {
        "spaces": " " * 300_000 + "\n" + bad,
        "key": bad.replace("servers = 0", "servers" + " \t" * 150_000 + "= 0"),
        "value": bad.replace('mean = "1s"', 'mean = "1' + " " * 300_000 + 's!"'),
        "nested": "a = " + "[" * 100_000 + "]" * 100_000 + "\n" + bad,
    }
    for name, text in texts.items():
        with pytest.raises(sim.ScenarioError) as info:
            _within(20, lambda t=text, n=name: parse_scenario(t, file=f"{n}.toml"))
        assert info.value.line is not None and info.value.file == f"{name}.toml", name


def test_an_output_folder_under_a_file_is_refused_before_the_run(write_scenario, tmp_path):
    """--out below a plain file: exit 2 naming it, before any simulating (nothing is lost)."""
    (tmp_path / "afile").write_text("x")
    result = _invoke("run", write_scenario(SMALL), "--out", tmp_path / "afile" / "out")
    assert result.exit_code == 2
    assert "is a file, not a folder" in result.stderr and "Traceback" not in result.output
