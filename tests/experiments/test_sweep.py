"""Pin sim.experiments.sweep: seeds, grids, executors giving identical runs, aggregation,
outputs, bands."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import sim
from sim.analysis.metrics import Timeseries
from sim.cli import cli
from sim.errors import UsageError
from sim.experiments import sweep as sw

# A short M/M/c run with a surge and retrying clients: some points have outages, some not.
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
"""
GRID = {"service.servers": [11, 16], "client.retries": [0, 2]}
REPS = 2


@pytest.fixture(scope="module")
def scenario_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "surge.toml"
    path.write_text(SURGE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def one_worker_rows(scenario_path) -> list[dict]:
    return sw.sweep(scenario_path, GRID, REPS, workers=1, progress=False)


# ------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize("size", [2, 3, 5, 10])
@pytest.mark.parametrize("confidence", [0.8, 0.95])
def test_mean_ci_covers_the_true_mean_at_its_confidence(size: int, confidence: float) -> None:
    """Over 4000 normal samples, the t interval covers the mean at its confidence +- 3 SE; a
    normal-quantile interval would cover 70% (n = 2, 95%) and fail."""
    rng = np.random.default_rng(20240515 + size)
    trials = 4000
    covered = 0
    for sample in rng.normal(3.0, 2.0, size=(trials, size)):
        _, low, high = sw.mean_ci(sample, confidence)
        covered += low <= 3.0 <= high
    standard_error = math.sqrt(confidence * (1 - confidence) / trials)
    assert abs(covered / trials - confidence) < 3 * standard_error


def test_t_quantile_refuses_what_has_no_quantile() -> None:
    """A probability outside (0, 1) or no degree of freedom is an error, not a NaN."""
    for probability, dof in ((0.0, 3), (1.0, 3), (0.5, 0)):
        with pytest.raises(ValueError, match="t_quantile"):
            sw.t_quantile(probability, dof)


def test_mean_ci_skips_missing_values_and_needs_two() -> None:
    """None and NaN are left out; one value has a mean but no interval."""
    mean, low, high = sw.mean_ci([2.0, None, math.nan])
    assert mean == 2.0 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in sw.mean_ci([]))
    mean, low, high = sw.mean_ci([1.0, 1.0, 1.0])
    assert mean == low == high == 1.0


# ------------------------------------------------------------------------------ grid, seeds


def test_replication_seeds_start_at_the_scenario_seed_and_differ() -> None:
    """Replication 0 keeps the scenario's seed; the others are distinct, valid and repeatable."""
    seeds = [sw.replication_seed(11, r) for r in range(50)]
    assert seeds[0] == 11
    assert len(set(seeds)) == 50
    assert all(0 <= s < 2**63 for s in seeds)
    assert seeds == [sw.replication_seed(11, r) for r in range(50)]
    assert sw.replication_seed(12, 1) != seeds[1]


def test_parse_grid_reads_lists_ranges_and_toml_values() -> None:
    """Comma lists take TOML values (bare words are strings); LO..HI:STEP is an integer range."""
    assert sw.parse_grid("service.servers=8,10") == ("service.servers", [8, 10])
    assert sw.parse_grid("service.servers=8..12:2") == ("service.servers", [8, 10, 12])
    assert sw.parse_grid("client.timeout=1s, 2.5") == ("client.timeout", ["1s", 2.5])
    for bad in ("service.servers", "service.servers=", "service.servers=9..3", "x=1,,2"):
        with pytest.raises(UsageError):
            sw.parse_grid(bad)


def test_grid_points_vary_the_first_key_slowest_and_refuse_the_seed() -> None:
    """Points are the product in the order given; sweeping scenario.seed is refused."""
    points = sw.grid_points({"a": [1, 2], "b": ["x", "y"]})
    assert points == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]
    with pytest.raises(UsageError):
        sw.grid_points({"scenario.seed": [1, 2]})


# ------------------------------------------------------------------------------ runs


def test_rows_are_the_runs_a_user_would_make_by_hand(scenario_path, one_worker_rows) -> None:
    """Each row equals load_scenario(point + replication seed) + simulate: common random numbers."""
    assert len(one_worker_rows) == 4 * REPS
    seeds = [sw.replication_seed(11, r) for r in range(REPS)]
    for row in one_worker_rows:
        point = {key: row[key] for key in GRID}
        assert row["seed"] == seeds[row["replication"]]
        scenario = sim.load_scenario(
            scenario_path, overrides={**point, "scenario.seed": row["seed"]}
        )
        expected = sw.headline(sim.simulate(scenario).summary)
        assert {k: row[k] for k in sw.FIGURES} == expected
        assert row["error"] == ""
    outages = {row["outage_total_s"] > 0 for row in one_worker_rows}
    assert outages == {True, False}, "the grid should hold points with and without outages"


def test_two_workers_and_dask_give_identical_rows(scenario_path, one_worker_rows) -> None:
    """1 worker, 2 workers and a Dask LocalCluster return the same rows in the same order."""
    two = sw.sweep(scenario_path, GRID, REPS, workers=2, progress=False)
    assert two == one_worker_rows
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        on_dask = sw.sweep(scenario_path, GRID, REPS, dask_address=cluster.scheduler_address)
    assert on_dask == one_worker_rows


def test_a_failed_run_is_reported_and_the_others_kept(scenario_path) -> None:
    """A job that fails in its worker comes back as a row naming its error and parameters."""
    good = sim.load_scenario(scenario_path).raw
    bad = {**good, "service": {**good["service"], "servers": -3}}
    jobs = [
        sw.Job(
            raw=raw, file=str(scenario_path), point={"service.servers": s}, replication=0, seed=5
        )
        for raw, s in ((good, 12), (bad, -3), (good, 12))
    ]
    with sw.Runner(workers=2) as runner:
        rows = runner.run(jobs, progress=False)
    assert [row["service.servers"] for row in rows] == [12, -3, 12]
    assert rows[0] == rows[2] and rows[0]["error"] == ""
    assert "servers" in rows[1]["error"] and rows[1]["outage_total_s"] is None
    (entry,) = sw.aggregate(rows, ["service.servers"])[:1]
    assert entry["runs"] == 2


def test_runner_refuses_two_executors() -> None:
    """--workers and --dask together are a usage error (exit 2)."""
    with pytest.raises(UsageError):
        sw.Runner(workers=2, dask_address="tcp://localhost:8786")


# ------------------------------------------------------------------------------ aggregation


def _row(servers: int, replication: int, outage_s: float, error: str = "") -> dict:
    figures = dict.fromkeys(sw.FIGURES, 0.0)
    figures |= {
        "outage_total_s": outage_s,
        "first_outage_start_s": 60.0 * replication if outage_s else None,
        "metastable": None,
        "recovered": True,
    }
    if error:
        figures = dict.fromkeys(sw.FIGURES)
    keys = {"service.servers": servers, "replication": replication, "seed": replication}
    return keys | figures | {"error": error}


def test_aggregate_gives_mean_t_interval_and_outage_share() -> None:
    """Per point: t interval of the mean, share of runs with an outage, failures counted apart."""
    rows = [_row(8, r, s) for r, s in enumerate((0.0, 120.0, 300.0, 60.0))]
    rows += [_row(10, 0, 0.0), _row(10, 1, 0.0), _row(10, 2, 0.0, error="boom")]
    eight, ten = sw.aggregate(rows, ["service.servers"])
    data = np.array([0.0, 120.0, 300.0, 60.0])
    half = 3.1824 * data.std(ddof=1) / 2  # t(0.975, 3 dof) from a printed table
    assert eight["outage_total_s_mean"] == pytest.approx(120.0)
    high = eight["outage_total_s_ci_high"]
    assert high - eight["outage_total_s_mean"] == pytest.approx(half, rel=2e-5)
    assert eight["outage_share"] == 0.75
    assert eight["first_outage_start_s_mean"] == pytest.approx(120.0)  # runs with an outage only
    assert math.isnan(eight["metastable_mean"]) and eight["recovered_mean"] == 1.0
    assert (ten["runs"], ten["failed"], ten["outage_share"]) == (2, 1, 0.0)


def test_write_sweep_writes_tables_and_a_chart_for_one_or_two_parameters(tmp_path) -> None:
    """results.csv has a row per run, aggregate.csv a row per point; sweep.png for <= 2 params."""
    rows = [_row(s, r, 60.0 * (12 - s) * (r + 1)) for s in (8, 10, 12) for r in range(3)]
    sw.write_sweep(rows, ["service.servers"], tmp_path / "one", title="t")
    with open(tmp_path / "one" / "results.csv", newline="") as f:
        results = list(csv.DictReader(f))
    assert len(results) == 9 and results[0]["service.servers"] == "8"
    assert results[0]["metastable"] == "" and results[0]["recovered"] == "true"
    with open(tmp_path / "one" / "aggregate.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [t["service.servers"] for t in table] == ["8", "10", "12"]
    assert float(table[2]["outage_share"]) == 0.0
    assert (tmp_path / "one" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    two = [r | {"client.retries": k} for r in rows for k in (0, 3)]
    sw.write_sweep(two, ["service.servers", "client.retries"], tmp_path / "two")
    assert (tmp_path / "two" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    three = [r | {"x": 1} for r in two]
    sw.write_sweep(three, ["service.servers", "client.retries", "x"], tmp_path / "three")
    assert not (tmp_path / "three" / "sweep.png").exists()


# ------------------------------------------------------------------------------ bands


def _fake_result(queue: np.ndarray, latency: np.ndarray) -> sim.Result:
    n = len(queue)
    columns = {"t_s": np.arange(n) * 60.0, "queue": queue}
    columns |= {"latency_p50": latency, "latency_p99": latency * 2}
    return sim.Result(scenario=None, summary={}, timeseries=Timeseries(60.0, None, columns))


def test_bands_are_per_bin_quantiles_across_replications() -> None:
    """21 replications with queue = r: 5% is 1, median 10, 95% 19; NaN bins are skipped."""
    results = []
    for r in range(21):
        latency = np.array([float(r), math.nan if r % 2 else float(r), math.nan])
        results.append(_fake_result(np.full(3, float(r)), latency))
    band = sw.bands(results)
    assert list(band["queue_q05"]) == [1.0] * 3
    assert list(band["queue_median"]) == [10.0] * 3
    assert list(band["queue_q95"]) == [19.0] * 3
    assert band["latency_p50_median"][1] == 10.0  # the even replications 0..20
    assert math.isnan(band["latency_p99_median"][2])  # no completion in any replication
    assert list(band["t_s"]) == [0.0, 60.0, 120.0]


def test_replicate_keeps_the_plain_run_and_adds_bands(scenario_path, tmp_path) -> None:
    """`run --reps`: replication 0 is the plain run; the bands and replication summary are added."""
    scenario = sim.load_scenario(scenario_path)
    plain = sim.simulate(scenario)
    result = sw.replicate(scenario, 3, workers=1, progress=False)
    volatile = {"wall_time_s", "simulated_per_s", "replications"}
    assert {k: v for k, v in result.summary.items() if k not in volatile} == {
        k: v for k, v in plain.summary.items() if k not in volatile
    }
    for column in ("queue", "latency_p99"):
        np.testing.assert_array_equal(result.timeseries[column], plain.timeseries[column])
    band = result.extra["bands"]
    assert np.all(band["queue_q05"] <= band["queue_median"])
    assert np.all(band["queue_median"] <= band["queue_q95"])
    assert result.summary["replications"]["seeds"][0] == 11
    path = sw.write_bands(result, tmp_path)
    with open(path, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(plain.timeseries)


# ------------------------------------------------------------------------------ CLI


def test_cli_sweep_writes_outputs_and_prints_the_table(scenario_path, tmp_path) -> None:
    """`outage-sim sweep` exits 0, writes the three outputs and prints one line per point."""
    out = tmp_path / "sweep"
    args = ["sweep", str(scenario_path), "--grid", "service.servers=11,16", "--reps", "2"]
    result = CliRunner().invoke(cli, [*args, "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"results.csv", "aggregate.csv", "sweep.png"}
    lines = result.output.splitlines()
    assert lines[0].startswith("service.servers") and lines[1].startswith("11 ")


def test_cli_sweep_rejects_a_bad_grid_with_exit_2(scenario_path) -> None:
    """A grid value the scenario refuses exits 2 naming the key and the point, no traceback."""
    args = ["sweep", str(scenario_path), "--grid", "service.servers=0,4", "--reps", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "service.servers" in result.output and "Traceback" not in result.output


def test_cli_run_reps_writes_bands(scenario_path, tmp_path) -> None:
    """`outage-sim run --reps 3` writes bands.csv beside the usual report."""
    args = ["run", str(scenario_path), "--reps", "3", "--out", str(tmp_path), "--no-charts"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bands.csv").is_file() and (tmp_path / "summary.json").is_file()
    assert "3 replications" in result.output


def test_resume_keeps_finished_runs_and_runs_only_the_rest(
    scenario_path, one_worker_rows, tmp_path
) -> None:
    """After an interrupted sweep, --resume keeps rows that finished (even ones we marked),
    reruns failed or missing ones, and ends with the rows of an uninterrupted sweep."""
    out = tmp_path / "sweep"
    sw.sweep(scenario_path, GRID, REPS, workers=1, out_dir=out, progress=False)
    with (out / "results.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["outage_total_s"] = "12345"  # a finished run: must be kept as it is
    rows[1]["error"] = "interrupted"  # an unfinished run: must run again
    del rows[2]  # a run never written: must run
    with (out / "results.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = CliRunner().invoke(
        cli,
        ["sweep", str(scenario_path), "--out", str(out), "--reps", str(REPS), "--workers", "1",
         "--resume", "-q", *[f"--grid={k}={','.join(map(str, v))}" for k, v in GRID.items()]],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    resumed = sw.sweep(scenario_path, GRID, REPS, workers=1, out_dir=out, resume=True)
    assert resumed[0]["outage_total_s"] == 12345
    assert resumed[1:] == one_worker_rows[1:]
    # A changed scenario (another point hash) keeps nothing: every run is done again.
    changed = {"service.time.mean": "1.1s"}
    rerun = sw.sweep(scenario_path, GRID, REPS, workers=1, out_dir=out, resume=True,
                     overrides=changed)  # fmt: skip
    assert rerun[0]["outage_total_s"] != 12345
