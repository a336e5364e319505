"""The `outage-sim` command: exit codes, one located message for bad input, no tracebacks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import REPO

from sim import __version__
from sim.analysis import theory
from sim.cli import cli

GOOD = """\
[scenario]
name = "cli-small"
duration = "10min"
seed = 3
bin = "1min"

[arrivals]
rate = "5/s"

[service]
servers = 8
time = { dist = "exponential", mean = "1s" }

[slo]
success_ratio = 0.99
"""


def _invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _assert_one_message(result, *fragments: str) -> str:
    """Exit 2; stdout empty; stderr is one 'outage-sim: error:' line holding every fragment."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("outage-sim: error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _line_of(text: str, fragment: str) -> int:
    numbers = [n for n, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(numbers) == 1, (fragment, numbers)
    return numbers[0]


BAD_CASES = {
    # case: (old, new, key, extra fragment in the message)
    "unknown-key": ("seed = 3", "sed = 3", "scenario.sed", "did you mean 'seed'"),
    "unknown-section": ('[slo]', '[sla]', "sla", "unknown key 'sla'"),
    "misspelt-distribution": (
        'dist = "exponential"', 'dist = "exponentail"', "service.time.dist",
        "did you mean 'exponential'",
    ),
    "wrong-duration-unit": ('mean = "1s"', 'mean = "1 parsec"', "service.time.mean", "parsec"),
    "wrong-rate-unit": ('rate = "5/s"', 'rate = "5/fortnight"', "arrivals.rate", "fortnight"),
    "rate-without-unit": ('rate = "5/s"', 'rate = "5"', "arrivals.rate", "expected a rate"),
    "negative-servers": ("servers = 8", "servers = -3", "service.servers", "-3"),
    "zero-servers": ("servers = 8", "servers = 0", "service.servers", "greater than or equal"),
    "servers-not-a-number": ("servers = 8", 'servers = "many"', "service.servers", "'many'"),
    "ratio-out-of-range": (
        "success_ratio = 0.99", "success_ratio = 99", "slo.success_ratio", "less than or equal",
    ),
    "negative-servers-in-a-change": (
        "[slo]", '[[capacity.change]]\nat = "5min"\nservers = -2\n\n[slo]',
        "capacity.change.0.servers", "-2",
    ),
    "timestamp-without-start": (
        "[slo]", "[[faults]]\nat = 2021-01-15T10:00:00Z\nduration = \"1min\"\n\n[slo]",
        "faults.0.at", "scenario.start",
    ),
}  # fmt: skip


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_scenario_exits_2_naming_file_key_and_line(case, command, write_scenario, tmp_path):
    """A bad value or key exits 2 with one message naming the file, the key and its line."""
    old, new, key, fragment = BAD_CASES[case]
    assert old in GOOD
    text = GOOD.replace(old, new)
    path = write_scenario(text, "bad.toml")
    args = [command, path] + (["--out", tmp_path / "out"] if command == "run" else [])
    # The line of the offending key: the changed line that holds the key's last part.
    last = key.rsplit(".", 1)[-1]
    line = _line_of(text, next(p for p in new.splitlines() if p.lstrip("[").startswith(last)))
    message = _assert_one_message(_invoke(*args), f"{path}:{line}:", f"[{key}]", fragment)
    assert not (tmp_path / "out").exists()  # nothing written for a bad scenario
    assert message


def test_toml_syntax_error_exits_2_with_its_line(write_scenario) -> None:
    """Invalid TOML exits 2 with the file and the line of the syntax error."""
    text = GOOD.replace('rate = "5/s"', 'rate = "5/s')
    path = write_scenario(text, "syntax.toml")
    _assert_one_message(_invoke("check", path), f"{path}:{_line_of(text, 'rate =')}:", "TOML")


def test_missing_file_exits_2(tmp_path: Path) -> None:
    """A scenario file that does not exist exits 2 with its name, not a traceback."""
    path = tmp_path / "nowhere.toml"
    _assert_one_message(_invoke("run", path), str(path), "no such scenario file")


def test_folder_instead_of_file_exits_2(tmp_path: Path) -> None:
    """A folder given as the scenario exits 2 (click's own usage error is fine)."""
    result = _invoke("check", tmp_path)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("assignment", "fragments"),
    [
        ("service.servers", ["--set", "KEY=VALUE"]),
        ("service.servers=abc", ["--set", "[service.servers]", "'abc'"]),
        ("service.servers=-2", ["--set", "[service.servers]"]),
        ("service.srvers=9", ["--set", "[service.srvers]", "did you mean 'servers'"]),
        ("scenario.seed.x=1", ["--set", "scenario.seed is a value, not a table"]),
        ('service.time.dist="gama"', ["--set", "[service.time.dist]", "did you mean 'gamma'"]),
    ],
)
def test_bad_set_exits_2_naming_the_override(assignment, fragments, write_scenario) -> None:
    """A bad --set exits 2 with one message blaming --set and its key."""
    path = write_scenario(GOOD)
    _assert_one_message(_invoke("check", path, "--set", assignment), *fragments)


def test_bad_csv_row_exits_2_naming_the_csv_line(write_scenario, tmp_path: Path) -> None:
    """A bad row of a downloads CSV exits 2 naming the CSV and the row's line."""
    (tmp_path / "d.csv").write_text("date,downloads\n2021-01-01,100\n2021-01-02,oops\n")
    text = GOOD.replace('duration = "10min"', 'duration = "10min"\nstart = 2021-01-01T00:00:00Z')
    text = text.replace('rate = "5/s"', 'rate = "5/s"\n\n[population]\ndownloads_csv = "d.csv"')
    path = write_scenario(text)
    _assert_one_message(_invoke("check", path), f"{tmp_path / 'd.csv'}:3:", "oops")


def test_run_too_large_exits_2_with_a_suggested_scale(write_scenario) -> None:
    """A run estimated above 200M simulated requests is refused with a suggested scale."""
    path = write_scenario(GOOD.replace('rate = "5/s"', 'rate = "2000/s"').replace("10min", "3d"))
    _assert_one_message(_invoke("run", path), "scenario.scale=", "--force")


def test_real_command_reports_a_bad_scenario_without_traceback(write_scenario) -> None:
    """The installed console script exits 2 with the located message on stderr."""
    script = Path(sys.executable).with_name("outage-sim")
    command = str(script) if script.exists() else shutil.which("outage-sim")
    assert command, "the outage-sim console script is not installed"
    text = GOOD.replace("servers = 8", "servers = 0")
    path = write_scenario(text, "zero.toml")
    completed = subprocess.run(
        [command, "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    line = _line_of(text, "servers = 0")
    assert lines[0].startswith(f"outage-sim: error: {path}:{line}: [service.servers] ")
    assert "Traceback" not in completed.stderr


# ------------------------------------------------------------------------- commands that work


@pytest.mark.parametrize("path", sorted((REPO / "scenarios").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_scenarios_pass_check(path: Path) -> None:
    """Every scenarios/*.toml validates with `outage-sim check`."""
    result = _invoke("check", path)
    assert result.exit_code == 0, result.output
    assert f"{path}: ok" in result.stdout


def test_check_prints_the_size_estimate(write_scenario) -> None:
    """check names the scenario and estimates the simulated requests (5/s for 10 min)."""
    result = _invoke("check", write_scenario(GOOD))
    assert result.exit_code == 0
    assert "cli-small" in result.stdout and "about 3,000 simulated requests" in result.stdout


def test_check_warns_of_an_slo_the_idle_service_misses(write_scenario) -> None:
    """check prints the impossible latency target with the idle p99 (exp(1 s): 4.61 s)."""
    result = _invoke("check", write_scenario(GOOD), "--set", 'slo.latency_p99="4s"')
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert "slo.latency_p99 = 4s" in warning and "4.61s" in warning


def test_check_prints_what_theory_expects(write_scenario) -> None:
    """check prints Erlang C for a constant rate into a fixed pool (M/M/8 at λ = 5)."""
    result = _invoke("check", write_scenario(GOOD))
    expected = theory.mmc(5.0, 1.0, 8)
    assert "M/M/c (Erlang C)" in result.stdout
    assert f"P(wait) {expected.p_wait:.4f}" in result.stdout
    assert "servers needed for the SLO" in result.stdout


def test_check_says_when_no_formula_applies(write_scenario) -> None:
    """With retrying clients behind a timeout, check says no formula applies, with no number."""
    text = GOOD + '\n[client]\ntimeout = "3s"\nretries = 2\n'
    result = _invoke("check", write_scenario(text))
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("theory:")]
    assert "no formula applies" in line and "Poisson" in line
    assert "P(wait)" not in result.stdout


def test_run_warns_on_stderr_and_in_the_summary(write_scenario, tmp_path: Path) -> None:
    """run prints each warning on stderr (also with -q) and keeps it in summary.json."""
    out = tmp_path / "out"
    path = write_scenario(GOOD)
    result = _invoke("run", path, "--out", out, "-q", "--no-charts", "--set",
                     'slo.latency_p99="4s"')  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("outage-sim: warning: slo.latency_p99 = 4s")
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["warnings"]) == 1 and "4.61s" in summary["warnings"][0]
    assert summary["theory"]["model"] == "M/M/c (Erlang C)"
    assert set(summary["server_latency_s"]) == {"mean", "p50", "p95", "p99", "max"}


def test_run_refuses_a_scale_that_does_not_divide_the_pool(write_scenario) -> None:
    """--set scenario.scale=3 with 8 servers: exit 2, one message naming the key and the
    nearest scales that work (8/3 → 2.667 and 4)."""
    result = _invoke("run", write_scenario(GOOD), "--set", "scenario.scale=3")
    _assert_one_message(result, "--set", "scenario.scale", "service.servers", "2.667", "4")


def test_schema_prints_json_schema() -> None:
    """schema prints the JSON Schema of scenario files as strict JSON (no Infinity/NaN)."""
    result = _invoke("schema")
    assert result.exit_code == 0

    def not_json(token: str):
        raise ValueError(f"{token} is not JSON")

    schema = json.loads(result.stdout, parse_constant=not_json)
    assert schema["title"] == "outage-sim scenario"
    assert "service" in schema["properties"]


def test_version() -> None:
    """--version prints the package version."""
    result = _invoke("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


def test_run_writes_the_outputs_with_overrides(write_scenario, tmp_path: Path) -> None:
    """run writes summary.json, timeseries.csv and queue.png; --seed and --set apply."""
    out = tmp_path / "out"
    result = _invoke(
        "run", write_scenario(GOOD), "--out", out, "--seed", 11, "--set", "service.servers=9"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 11
    assert summary["scenario"] == "cli-small"
    assert (out / "timeseries.csv").read_text().count("\n") == 11  # header + 10 bins
    assert (out / "queue.png").stat().st_size > 0
    assert "cli-small" in result.stdout and str(out) in result.stdout


def test_run_quiet_prints_nothing(write_scenario, tmp_path: Path) -> None:
    """--quiet: no summary on stdout, no progress on stderr."""
    result = _invoke("run", write_scenario(GOOD), "--out", tmp_path / "o", "-q", "--no-charts")
    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == ""
    assert (tmp_path / "o" / "summary.json").exists()
    assert not (tmp_path / "o" / "queue.png").exists()


def test_unexpected_error_exits_1_with_traceback_only_under_debug(
    write_scenario, tmp_path: Path, monkeypatch
) -> None:
    """A bug exits 1 with a one-line message and a --debug hint; --debug adds the traceback."""
    import sim.run

    def broken(*args, **kwargs):
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(sim.run, "simulate", broken)
    path = write_scenario(GOOD)
    plain = _invoke("run", path, "--out", tmp_path / "o", "--no-charts")
    assert plain.exit_code == 1
    assert "RuntimeError: engine exploded" in plain.stderr
    assert "--debug" in plain.stderr and "Traceback" not in plain.output
    debug = _invoke("run", path, "--out", tmp_path / "o", "--no-charts", "--debug")
    assert debug.exit_code == 1
    assert "Traceback" in debug.stderr


def test_interrupted_run_writes_what_it_has_and_exits_130(
    write_scenario, tmp_path: Path, monkeypatch
) -> None:
    """Ctrl-C during a run: the partial report is written, marked interrupted, exit 130."""
    from sim.engine import des

    real_advance = des.advance
    calls = {"n": 0}

    def advance_then_interrupt(k, until_s):
        calls["n"] += 1
        if calls["n"] == 5:  # the run takes 20 ticks
            raise KeyboardInterrupt
        return real_advance(k, until_s)

    monkeypatch.setattr(des, "advance", advance_then_interrupt)
    monkeypatch.setattr(des, "TICK_REQUESTS", 5 * 600 / 19.5)  # 3,000 requests in 20 ticks
    out = tmp_path / "o"
    result = _invoke("run", write_scenario(GOOD), "--out", out, "--no-charts", "-q")
    assert result.exit_code == 130
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert 0 < summary["duration_s"] < 600


GRAPH_TEXT = """\
[scenario]
name = "graph"
duration = "1h"

[arrivals]
rate = "5/s"

[tiers.api]
servers = 4
time = { dist = "exponential", mean = "100ms" }

[tiers.db]
servers = 2
time = { dist = "exponential", mean = "50ms" }

[[routes]]
name = "read"
share = 1
calls = ["api", "db"]
"""


def test_a_service_graph_runs_on_both_engines_and_what_fluid_leaves_out_is_refused(
    tmp_path,
) -> None:
    """Both engines run a graph and write its per-tier and per-route columns and summary; a
    graph using what the fluid model leaves out (a LIFO tier) is refused there, not run as
    if it were FIFO: `run --engine fluid` exits 2 naming the file, the key and its line,
    with no traceback, and writes nothing."""
    path = tmp_path / "graph.toml"
    path.write_text(GRAPH_TEXT)
    for engine in ("des", "fluid"):
        out = tmp_path / engine
        result = _invoke("run", path, "--out", out, "--no-charts", "-q", "--engine", engine)
        assert result.exit_code == 0, result.output
        header = (out / "timeseries.csv").read_text().splitlines()[0].split(",")
        assert header[:3] == ["t_s", "time", "fresh"]
        for column in ("api.queue", "api.utilization", "db.timed_out", "read.success_ratio"):
            assert column in header
        summary = json.loads((out / "summary.json").read_text())
        assert set(summary["tiers"]) == {"api", "db"} and set(summary["routes"]) == {"read"}
        assert summary["routes"]["read"]["success_ratio"] == 1.0
    lifo = tmp_path / "lifo.toml"
    text = GRAPH_TEXT.replace("[tiers.db]\n", '[tiers.db]\ndiscipline = "lifo"\n')
    lifo.write_text(text)
    out = tmp_path / "refused"
    result = _invoke("run", lifo, "--out", out, "--engine", "fluid")
    assert result.exit_code == 2, result.output
    line = text.splitlines().index('discipline = "lifo"') + 1
    assert f"{lifo}:{line}: [tiers.db.discipline]" in result.output
    assert "--engine des" in result.output and "Traceback" not in result.output
    assert not out.exists()
