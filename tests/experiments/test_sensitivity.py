"""Pin sim.experiments.sensitivity, verdicts and morris: ranges checked and located, verdicts
from paired intervals, the same seed giving the same table, interrupted analyses kept."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sim.cli import cli
from sim.errors import ScenarioError, UsageError
from sim.experiments import morris as mo
from sim.experiments import sensitivity as se
from sim.experiments import sweep as sw
from sim.model.scenario import load_scenario

# A short surge over 12 servers with retrying clients: an outage at the baseline. 16 servers
# hold the surge (the outage goes); a queue limit far above any queue changes nothing.
SURGE = """\
[scenario]
name = "surge"
title = "a short surge"
duration = "10min"
bin = "30s"
seed = 11

[arrivals]
rate = "8/s"

[[arrivals.surge]]
at = "3min"
duration = "2min"
factor = 1.7

[service]
servers = 12
time = { dist = "exponential", mean = "1s" }

[client]
timeout = "5s"
retries = 2

[slo]
success_ratio = 0.95
latency_p99 = "8s"
min_duration = "1min"

[[sensitivity]]
key = "service.servers"
low = 11
high = 16
why = "the pool"

[[sensitivity]]
key = "service.queue_limit"
low = 100_000
high = 200_000
why = "never reached"
"""
REPS = 2


@pytest.fixture(scope="module")
def scenario_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sensitivity") / "surge.toml"
    path.write_text(SURGE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def analysed(scenario_path, tmp_path_factory) -> tuple[se.Analysis, Path]:
    out = tmp_path_factory.mktemp("analysis")
    analysis = se.sensitivity(scenario_path, reps=REPS, workers=1, out_dir=out, progress=False)
    return analysis, out


def _csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------ verdicts


def test_a_key_without_effect_is_reported_as_such(analysed) -> None:
    """A queue limit no queue reaches gives the baseline's runs exactly: no effect within noise."""
    analysis, _ = analysed
    assert analysis.engine == "des" and analysis.reps == REPS
    assert analysis.verdicts["service.queue_limit"] == {
        "verdict": se.NO_EFFECT,
        "low": "holds",
        "high": "holds",
    }


def test_a_key_that_removes_the_outage_changes_the_conclusion(analysed) -> None:
    """16 servers hold the surge: the outage is gone at the high end, beyond noise."""
    analysis, _ = analysed
    assert analysis.baseline["outage_share"] == 1.0
    verdict = analysis.verdicts["service.servers"]
    assert verdict["verdict"] == se.CHANGES
    assert verdict["high"] == "breaks"
    high = next(
        r for r in analysis.levels if r["key"] == "service.servers" and r["level"] == "high"
    )
    assert high["outage_share"] == 0.0 and high["reason"] == "no outage"


def test_outputs_have_a_row_per_key_and_level_and_a_chart(analysed) -> None:
    """sensitivity.csv: the baseline and each key at low and high, with intervals; the pages
    name every verdict; tornado.png is a PNG."""
    _, out = analysed
    rows = _csv(out / "sensitivity.csv")
    assert [(r["key"], r["level"]) for r in rows] == [
        ("baseline", "baseline"),
        ("service.servers", "low"),
        ("service.servers", "high"),
        ("service.queue_limit", "low"),
        ("service.queue_limit", "high"),
    ]
    assert {"outage_total_s_ci_low", "failed_share_mean", "outage_total_s_diff"} <= set(rows[1])
    assert len(_csv(out / "results.csv")) == 5 * REPS
    assert (out / "tornado.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "sensitivity.md").read_text(encoding="utf-8")
    assert "service.servers: changes the conclusion" in page
    assert "service.queue\\_limit: no effect within noise" in page
    assert "<script" not in (out / "sensitivity.html").read_text(encoding="utf-8")


def test_the_same_seed_gives_the_same_sensitivity_csv(scenario_path, analysed, tmp_path) -> None:
    """A second analysis (two workers this time) writes sensitivity.csv byte for byte."""
    _, out = analysed
    se.sensitivity(scenario_path, reps=REPS, workers=2, out_dir=tmp_path, progress=False)
    assert (tmp_path / "sensitivity.csv").read_bytes() == (out / "sensitivity.csv").read_bytes()


def _row(level: str, replication: int, outage_s: float, onset_s=None, key="k") -> dict:
    figures = dict.fromkeys(sw.FIGURES, 0.0) | {"success_ratio": 0.9, "metastable": None}
    figures |= {"outage_total_s": outage_s, "first_outage_start_s": onset_s}
    point = {"key": se.BASELINE if level == se.BASELINE else key, "level": level, "value": 1}
    return point | {"replication": replication, "seed": replication, **figures, "error": ""}


def test_onset_beyond_tolerance_breaks_only_when_the_whole_interval_is_beyond() -> None:
    """Onset 3 h later in every replication breaks; 3 h later on average with a wide spread
    (interval reaching inside +-2 h) is unclear, which moves the conclusion but does not
    change it."""
    base = [_row(se.BASELINE, r, 3600.0, 36000.0) for r in range(3)]
    sharp = [
        _row(lv, r, 3600.0, 36000.0 + (10800.0 if lv == "high" else 0))
        for lv in ("low", "high")
        for r in range(3)
    ]
    spread = [
        _row(lv, r, 3600.0, 36000.0 + ((0, 3600.0, 28800.0)[r] if lv == "high" else 0))
        for lv in ("low", "high")
        for r in range(3)
    ]
    assumption = [se.Assumption("k", 0, 1)]
    judged = se.analyse(base + sharp, assumption, ["onset"], bin_s=60.0)
    assert judged.verdicts["k"] == {"verdict": se.CHANGES, "low": "holds", "high": "breaks"}
    judged = se.analyse(base + spread, assumption, ["onset"], bin_s=60.0)
    assert judged.verdicts["k"] == {"verdict": se.MOVES, "low": "holds", "high": "unclear"}


def test_a_difference_below_the_resolution_is_no_effect() -> None:
    """With one replication (the fluid engine) a difference under one bin is no effect; one
    of several bins moves the conclusion."""
    base = [_row(se.BASELINE, 0, 36000.0, 7200.0)]
    small = [_row(lv, 0, 36000.0 + 10.0, 7200.0) for lv in ("low", "high")]
    large = [_row(lv, 0, 36000.0 + 1800.0 * (lv == "high"), 7200.0) for lv in ("low", "high")]
    assumption = [se.Assumption("k", 0, 1)]
    assert (
        se.analyse(base + small, assumption, ["outage_time"], bin_s=60.0).verdicts["k"]["verdict"]
        == se.NO_EFFECT
    )
    assert (
        se.analyse(base + large, assumption, ["outage_time"], bin_s=60.0).verdicts["k"]["verdict"]
        == se.MOVES
    )


# ------------------------------------------------------------------------------ interruption


class _Interrupting(sw.Runner):
    """Finishes the first three jobs, then behaves as a Ctrl-C would: the rest unfinished."""

    def run(self, jobs, progress=None, desc="runs", on_done=None):
        rows = super().run(list(jobs[:3]), progress, desc, on_done)
        self.interrupted = True
        return rows + [sw._row(job, None, "interrupted") for job in jobs[3:]]


def test_an_interrupted_analysis_keeps_what_finished(
    scenario_path, analysed, tmp_path, monkeypatch
) -> None:
    """Ctrl-C writes the finished runs and a table with 'not run' levels, then re-raises;
    --resume runs only the rest and ends with the uninterrupted analysis's table."""
    _, out = analysed
    monkeypatch.setattr(se, "Runner", _Interrupting)
    with pytest.raises(KeyboardInterrupt):
        se.sensitivity(scenario_path, reps=REPS, workers=1, out_dir=tmp_path, progress=False)
    runs = _csv(tmp_path / "results.csv")
    assert [r["error"] for r in runs].count("") == 3
    table = _csv(tmp_path / "sensitivity.csv")
    assert "not run" in {r["conclusion"] for r in table}
    monkeypatch.undo()
    se.sensitivity(
        scenario_path, reps=REPS, workers=1, out_dir=tmp_path, progress=False, resume=True
    )
    assert (tmp_path / "sensitivity.csv").read_bytes() == (out / "sensitivity.csv").read_bytes()


# ------------------------------------------------------------------------------ ranges, errors


def _with_entry(scenario_path: Path, tmp_path: Path, entry: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(scenario_path.read_text(encoding="utf-8") + entry, encoding="utf-8")
    return path


def test_an_unknown_key_is_located_at_its_entry(scenario_path, tmp_path) -> None:
    """A key --set cannot apply names the file, sensitivity.N.key and the entry's line."""
    path = _with_entry(
        scenario_path, tmp_path, '\n[[sensitivity]]\nkey = "client.retires"\nlow = 0\nhigh = 3\n'
    )
    with pytest.raises(ScenarioError) as caught:
        se.read_assumptions(path)
    error = caught.value
    assert (error.file, error.key) == (str(path), "sensitivity.2.key")
    assert path.read_text().splitlines()[error.line - 1].startswith("key = ")
    assert "did you mean 'retries'" in error.message


def test_a_refused_value_is_located_at_its_end(scenario_path, tmp_path) -> None:
    """A value the scenario refuses (no servers) blames sensitivity.N.low at its line."""
    path = _with_entry(
        scenario_path, tmp_path, '\n[[sensitivity]]\nkey = "service.servers"\nlow = 0\nhigh = 3\n'
    )
    with pytest.raises(ScenarioError) as caught:
        se.read_assumptions(path)
    error = caught.value
    # The table already has service.servers: the second entry is refused first, on its key.
    assert error.key == "sensitivity.2.key" and "has a range already" in error.message
    path.write_text(
        path.read_text().replace('"service.servers"\nlow = 0', '"client.timeout"\nlow = "-1s"')
    )
    with pytest.raises(ScenarioError) as caught:
        se.read_assumptions(path)
    error = caught.value
    assert error.key == "sensitivity.2.low"
    assert path.read_text().splitlines()[error.line - 1] == 'low = "-1s"'


def test_cli_exits_2_on_a_bad_entry_without_a_traceback(scenario_path, tmp_path) -> None:
    """The command line shows one located message and exits 2."""
    path = _with_entry(
        scenario_path, tmp_path, '\n[[sensitivity]]\nkey = "service.servers"\nlow = 5\nhigh = 5\n'
    )
    result = CliRunner().invoke(cli, ["sensitivity", str(path)])
    assert result.exit_code == 2
    assert "bad.toml:" in result.output and "sensitivity.2.high" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["sensitivity", str(scenario_path), "--vary", "x"])
    assert result.exit_code == 2 and "KEY=LOW,HIGH" in result.output


def test_vary_reads_toml_values_and_replaces_the_tables_entry(scenario_path) -> None:
    """--vary takes two TOML values (arrays and inline tables too, or bare words); a flag for
    a key of the table replaces its entry."""
    assert se.parse_vary("client.timeout=1s,2s") == se.Assumption("client.timeout", "1s", "2s")
    surge = se.parse_vary('arrivals.surge=[{at="1min", factor=2}], []')
    assert (surge.low, surge.high) == ([{"at": "1min", "factor": 2}], [])
    for bad in ("client.timeout", "client.timeout=1s", "client.timeout=1,1", "k=1,2,3"):
        with pytest.raises(UsageError):
            se.parse_vary(bad)
    _, assumptions = se.read_assumptions(scenario_path, ["service.servers=10,20"])
    assert [(a.key, a.low, a.high, a.index) for a in assumptions] == [
        ("service.servers", 10, 20, None),
        ("service.queue_limit", 100_000, 200_000, 1),
    ]


def test_the_engine_is_the_des_while_the_runs_are_small(scenario_path) -> None:
    """The DES while all runs together stay within one DES run's limit; fluid beyond."""
    base = load_scenario(scenario_path)
    assert se.choose_engine(base, 25, None)[0] == "des"
    assert se.choose_engine(base, 10**6, None)[0] == "fluid"
    assert se.choose_engine(base, 10**6, "des")[0] == "des"


# ------------------------------------------------------------------------------ morris


def test_morris_trajectories_move_each_key_once_on_the_grid() -> None:
    """Each trajectory has keys + 1 points on {0, 1/3, 2/3, 1}; step i changes key order[i]
    alone, by exactly 2/3."""
    for points, order in mo.design(5, 8, seed=3):
        assert points.shape == (6, 5) and sorted(order) == list(range(5))
        assert np.allclose(points * 3, np.round(points * 3)) and points.min() >= 0
        for step, key in enumerate(order):
            moved = np.flatnonzero(~np.isclose(points[step + 1], points[step]))
            assert list(moved) == [key]
            assert abs(points[step + 1][key] - points[step][key]) == pytest.approx(2 / 3)


def test_morris_effects_recover_a_known_linear_response() -> None:
    """Outage time = 600 s x (fraction of key a) + 0 x key b: mu* = 600 and 0, sigma 0."""
    plan = mo.design(2, 6, seed=1)
    rows = []
    for points, _ in plan:
        for point in points:
            row = _row("x", 0, 600.0 * point[0], None)
            rows.append(row)
    table = mo.effects(
        rows, plan, [se.Assumption("a", 0, 1), se.Assumption("b", 0, 1)], ["outage_time"], reps=1
    )
    a, b = table
    assert a["mu_star"] == pytest.approx(600.0) and a["sigma"] == pytest.approx(0.0, abs=1e-9)
    assert b["mu_star"] == 0.0 and b["effects"] == 6


def test_interpolation_of_numbers_durations_and_tables() -> None:
    """Integers stay integers, units become plain numbers, tables interpolate by element; a
    range of words cannot be interpolated."""
    assert mo.interpolate(2, 5, 1 / 3) == 3
    assert mo.interpolate("4h", "16h", 0.5) == pytest.approx(36000.0)
    assert mo.interpolate("20/day", "45/day", 0.0) == pytest.approx(20 / 86400)
    low, high = [{"at": "0s", "factor": 0.5}], [{"at": "0s", "factor": 2}]
    assert mo.interpolate(low, high, 2 / 3) == [{"at": "0s", "factor": pytest.approx(1.5)}]
    with pytest.raises(ValueError):
        mo.interpolate("fifo", "lifo", 0.5)
    assert math.isclose(mo.STEP, 2 / 3)
