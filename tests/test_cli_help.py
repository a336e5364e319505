"""What a newcomer reads first: `--help`, `schema`, a scenario without a name, `--engine` on
sweep and plan."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from sim.cli import cli
from sim.run import MAX_SIMULATED_REQUESTS

SMALL = """\
[scenario]
duration = "10min"
seed = 3
bin = "1min"

[arrivals]
rate = "5/s"

[service]
servers = 8
time = { dist = "exponential", mean = "1s" }
"""
# 1M/s for 20 min: 1.2 billion requests, which the DES refuses and the fluid engine runs.
HUGE = (
    SMALL.replace('rate = "5/s"', 'rate = "1000000/s"')
    .replace('duration = "10min"', 'duration = "20min"')
    .replace("servers = 8", "servers = 1200000")
)


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _first_sentence(text: str) -> str:
    return " ".join(text.split()).split(". ")[0].split(";")[0]


def test_help_lists_each_command_with_its_first_sentence_whole() -> None:
    """`outage-sim --help` names every command with its first sentence uncut (no "..."),
    and shows examples."""
    result = _invoke("--help")
    assert result.exit_code == 0
    listing = result.stdout.split("Commands:")[1].split("Examples:")[0]
    assert "..." not in listing
    flat = " ".join(listing.split())
    for name, command in cli.commands.items():
        if command.hidden:
            continue
        assert _first_sentence(command.help) in flat, name
    examples = result.stdout.split("Examples:")[1]
    assert examples.count("outage-sim ") >= 4
    assert "outage-sim run scenarios/signal-2021-01.toml" in examples


def test_force_help_states_the_real_run_size_limit() -> None:
    """The --force help of run, sweep and plan gives the limit the size check applies."""
    limit = f"{MAX_SIMULATED_REQUESTS / 1e6:.0f}M"
    for command in ("run", "sweep", "plan"):
        text = " ".join(_invoke(command, "--help").stdout.split())
        figures = re.findall(r"(\d+M) simulated requests", text)
        assert figures == [limit], (command, figures)


def test_every_key_of_the_schema_has_a_description() -> None:
    """Walk the JSON Schema: every property of every table has a non-empty description, so
    editors show one on hover."""
    schema = json.loads(_invoke("schema").stdout)
    missing = []

    def walk(node: dict, where: str) -> None:
        for key, value in (node.get("properties") or {}).items():
            if not str(value.get("description") or "").strip():
                missing.append(f"{where}.{key}")

    walk(schema, "")
    for name, definition in schema["$defs"].items():
        walk(definition, name)
    assert missing == []
    assert len(schema["$defs"]["Planner"]["properties"]) >= 9  # the walk saw the tables


def test_schema_does_not_require_a_name() -> None:
    """scenario.name is optional in the schema: the file's name stands in."""
    schema = json.loads(_invoke("schema").stdout)
    meta = schema["$defs"]["ScenarioMeta"]
    assert "name" in meta["properties"] and "name" not in meta.get("required", [])
    assert "duration" in meta["required"]


def test_a_scenario_without_a_name_takes_its_file_stem(tmp_path: Path, monkeypatch) -> None:
    """No scenario.name: `run` writes reports/<file stem>/, and scenario.toml there names it."""
    path = tmp_path / "my-service.toml"
    path.write_text(SMALL, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = _invoke("run", path.name, "--no-charts", "-q")
    assert result.exit_code == 0, result.output
    out = tmp_path / "reports" / "my-service"
    assert json.loads((out / "summary.json").read_text())["scenario"] == "my-service"
    assert 'name = "my-service"' in (out / "scenario.toml").read_text()


def test_a_file_stem_that_is_no_name_is_a_located_error(tmp_path: Path) -> None:
    """A file called 'my service.toml' without scenario.name: exit 2 naming the key."""
    path = tmp_path / "my service.toml"
    path.write_text(SMALL, encoding="utf-8")
    result = _invoke("check", path)
    assert result.exit_code == 2
    assert "scenario.name" in result.stderr and "'my service'" in result.stderr
    assert "Traceback" not in result.output


def test_sweep_and_plan_take_engine(tmp_path: Path) -> None:
    """A run too large for the DES: sweep and plan refuse it (exit 2), and run it with
    --engine fluid."""
    path = tmp_path / "huge.toml"
    path.write_text(HUGE, encoding="utf-8")
    grid = ("--grid", "service.servers=1200000,1300000", "--reps", 1, "--workers", 1, "-q")
    refused = _invoke("sweep", path, *grid, "--out", tmp_path / "s0")
    assert refused.exit_code == 2 and "--engine fluid" in refused.stderr
    swept = _invoke("sweep", path, *grid, "--out", tmp_path / "s1", "--engine", "fluid")
    assert swept.exit_code == 0, swept.output
    assert (tmp_path / "s1" / "results.csv").read_text().count("\n") == 3  # header + 2 runs
    plan = ("--param", "service.servers", "--lo", 1100000, "--hi", 1300000, "--reps", 1)
    plan += ("--workers", 1, "-q", "--out", tmp_path / "p")
    refused = _invoke("plan", path, *plan)
    assert refused.exit_code == 2
    planned = _invoke("plan", path, *plan, "--engine", "fluid")
    assert planned.exit_code == 1, planned.output  # it ran; one run a value cannot pass 0.9
    assert json.loads((tmp_path / "p" / "plan.json").read_text())["probes"]
