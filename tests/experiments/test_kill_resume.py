"""kill -9 during `sweep`, `plan` and `sensitivity`: real `outage-sim` processes killed with
SIGKILL (with their workers) as their results.csv reaches a given number of rows; the rows on
disk are whole and equal to an uninterrupted run's, and `--resume`, killed again and resumed
again, ends with the uninterrupted answer byte for byte."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.experiments.plan import plan
from sim.experiments.sensitivity import sensitivity
from sim.experiments.sweep import sweep

pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")

# About 250,000 simulated requests: a few tenths of a second a run, so rows arrive one by one;
# a retry collapse below about 52 servers, none above.
TINY = """\
[scenario]
name = "tiny"
duration = "2h"
seed = 7
bin = "1min"

[arrivals]
rate = "30/s"

[[arrivals.surge]]
at = "30min"
duration = "20min"
factor = 1.6

[service]
servers = 40
time = { dist = "exponential", mean = "1s" }

[client]
timeout = "6s"
retries = 2

[slo]
success_ratio = 0.95
latency_p99 = "8s"
min_duration = "1min"
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    return path


def _command() -> list[str]:
    script = Path(sys.executable).with_name("outage-sim")
    found = str(script) if script.exists() else shutil.which("outage-sim")
    assert found, "the outage-sim console script is not installed"
    return [found]


def _rows(path: Path) -> list[dict[str, str]]:
    """The whole rows of a results.csv (a line without its newline is not a row yet)."""
    if not path.is_file():
        return []
    text = path.read_bytes().decode("utf-8")
    return list(csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1])))


def _kill_at(args: list[str], results: Path, rows: int, timeout_s: float = 60.0) -> None:
    """Start `outage-sim ARGS` in its own process group and SIGKILL the group (the command and
    its workers) as soon as `results` holds at least `rows` whole rows."""
    child = subprocess.Popen(
        _command() + args,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while len(_rows(results)) < rows:
            assert child.poll() is None, f"ended before row {rows}: {child.stderr.read()!r}"
            assert time.monotonic() < deadline, f"no row {rows} within {timeout_s} s"
            time.sleep(0.005)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL


def _key(row: dict) -> tuple:
    return row["scenario_sha256"], row["replication"], row["seed"]


def _assert_rows_are_the_reference(results: Path, reference: Path, at_least: int) -> None:
    """Every row a killed process left is whole and equal to the uninterrupted run's row."""
    expected = {_key(row): row for row in _rows(reference)}
    left = _rows(results)
    assert len(left) >= at_least
    for row in left:
        assert row == expected[_key(row)]
    assert results.read_bytes().endswith(b"\n")  # each record whole: the kill cut none


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(_command() + args, capture_output=True, text=True, timeout=120)


def test_a_sweep_killed_three_times_resumes_to_the_uninterrupted_rows(tiny, tmp_path):
    """SIGKILL at the 1st, 3rd and 5th of 8 runs (each resume killed in turn): the rows on
    disk are always the uninterrupted rows, and the last resume writes the same files."""
    grid, reps = {"service.servers": [40, 48, 52, 56]}, 2
    reference = tmp_path / "reference"
    sweep(tiny, grid, reps, workers=1, out_dir=reference, progress=False)
    out = tmp_path / "killed"
    args = ["sweep", str(tiny), "--grid", "service.servers=40,48,52,56", "--reps", str(reps)]
    args += ["--workers", "1", "--out", str(out), "-q"]
    for kill_at, resume in ((1, []), (3, ["--resume"]), (5, ["--resume"])):
        _kill_at(args + resume, out / "results.csv", kill_at)
        _assert_rows_are_the_reference(out / "results.csv", reference / "results.csv", kill_at)
    finished = _run(args + ["--resume"])
    assert finished.returncode == 0, finished.stderr
    for name in ("results.csv", "aggregate.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_a_killed_plan_resumes_to_the_uninterrupted_answer(tiny, tmp_path):
    """SIGKILL at the 5th run of a bisection (its third probe): the runs on disk are whole
    and the uninterrupted ones, and --resume walks the same probes to the same plan.json."""
    options = dict(param="service.servers", lo=40, hi=60, reps=2, confidence=0.5)
    reference = tmp_path / "reference"
    expected = plan(tiny, **options, workers=1, out_dir=reference, progress=False)
    assert expected.value is not None and len(expected.probes) >= 4  # a real search
    out = tmp_path / "killed"
    args = ["plan", str(tiny), "--param", "service.servers", "--lo", "40", "--hi", "60"]
    args += ["--reps", "2", "--confidence", "0.5", "--workers", "1", "--out", str(out), "-q"]
    _kill_at(args, out / "results.csv", 5)
    _assert_rows_are_the_reference(out / "results.csv", reference / "results.csv", 5)
    finished = _run(args + ["--resume"])
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == f"service.servers = {expected.value}"
    answer = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    assert {k: v for k, v in answer.items() if k != "scenario"} == {
        k: v for k, v in expected.to_dict().items() if k != "scenario"
    }


def test_a_killed_sensitivity_resumes_to_the_uninterrupted_table(tiny, tmp_path):
    """SIGKILL at the 3rd of 6 runs: whole uninterrupted rows on disk, and --resume ends with
    the same results.csv and sensitivity.csv."""
    vary, reps = ["service.servers=48,56"], 2
    reference = tmp_path / "reference"
    sensitivity(tiny, vary, reps=reps, workers=1, out_dir=reference, progress=False)
    out = tmp_path / "killed"
    args = ["sensitivity", str(tiny), "--vary", vary[0], "--reps", str(reps), "--workers", "1"]
    args += ["--out", str(out), "-q"]
    _kill_at(args, out / "results.csv", 3)
    _assert_rows_are_the_reference(out / "results.csv", reference / "results.csv", 3)
    finished = _run(args + ["--resume"])
    assert finished.returncode == 0, finished.stderr
    for name in ("results.csv", "sensitivity.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
