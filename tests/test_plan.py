"""Pin sim.plan: the monotone search, the confidence rule, and the answer theory gives."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sim import plan as planner
from sim.cli import cli
from sim.theory import erlang_b

# A loss system (no queue) with offered load A = 30/s x 0.1 s = 3 Erlang. With one SLO bin as
# long as the run, a run has an outage exactly when its blocking share exceeds 1 - success_ratio,
# so "meets the SLO" means "blocking below the target". Each run sees about 30,000 arrivals.
OFFERED_LOAD = 3.0
LOSS = """\
[scenario]
name = "loss"
duration = "1000s"
bin = "1000s"
seed = 5

[arrivals]
rate = "30/s"

[service]
servers = 4
time = { dist = "exponential", mean = "100ms" }
queue_limit = 0

[slo]
success_ratio = 0.9
min_duration = "1000s"
"""
# The target sits midway between Erlang B at c - 1 and c servers. B(5, 3) = 0.110 and
# B(6, 3) = 0.052, so the target (about 0.081) is 0.029 from either; one run's blocking share
# varies by 0.003 to 0.005 (standard deviation over replications, which the test measures),
# so the margin is six to nine of those, and the test requires at least three.
REFERENCE_SERVERS = 6


def blocking_target() -> float:
    return (
        erlang_b(REFERENCE_SERVERS - 1, OFFERED_LOAD) + erlang_b(REFERENCE_SERVERS, OFFERED_LOAD)
    ) / 2


def least_servers_by_theory(target: float) -> int:
    servers = 1
    while erlang_b(servers, OFFERED_LOAD) >= target:
        servers += 1
    return servers


@pytest.fixture
def loss_path(tmp_path: Path) -> Path:
    path = tmp_path / "loss.toml"
    path.write_text(LOSS, encoding="utf-8")
    return path


@pytest.mark.parametrize("threshold", range(3, 14))
def test_least_finds_every_threshold_in_logarithmic_probes(threshold: int) -> None:
    """Bisection returns the least passing value, probing at most 2 + log2(range) values."""
    probes = []

    def meets(value: int) -> bool:
        probes.append(value)
        return value >= threshold

    assert planner._least(3, 13, meets) == threshold
    assert len(probes) <= 2 + math.ceil(math.log2(13 - 3))


def test_probe_meets_when_the_share_reaches_the_confidence() -> None:
    """9 of 10 clean runs meet 0.9; a failed run counts as an outage."""
    rows = [
        {"replication": r, "seed": r, "outage_total_s": 0.0, "success_ratio": 1.0,
         "latency_p99_s": 0.1, "error": ""}
        for r in range(10)
    ]  # fmt: skip
    rows[3] = rows[3] | {"outage_total_s": 60.0}
    assert planner._probe(8, rows, 0.9).meets
    rows[4] = rows[4] | {"outage_total_s": None, "error": "boom"}
    probe = planner._probe(8, rows, 0.9)
    assert not probe.meets and probe.share == 0.8


def test_planner_answer_equals_erlang_b(loss_path: Path, tmp_path: Path) -> None:
    """The least servers meeting the SLO in 90% of runs is the least c with B(c, A) < target."""
    target = blocking_target()
    overrides = {"slo.success_ratio": 1 - target}
    result = planner.plan(
        loss_path, "service.servers", 1, 20, reps=5, confidence=0.9, workers=2,
        out_dir=tmp_path, progress=False, overrides=overrides,
    )  # fmt: skip
    expected = least_servers_by_theory(target)
    assert result.value == expected
    # The decision was not noise: at c - 1 and c the blocking share of every run lies on its
    # side of the target, and theory's value is at least three run-to-run deviations away.
    by_value = {probe.value: probe for probe in result.probes}
    for servers in (expected - 1, expected):
        blocking = np.array([1 - run["success_ratio"] for run in by_value[servers].runs])
        spread = blocking.std(ddof=1)
        assert abs(erlang_b(servers, OFFERED_LOAD) - target) >= 3 * spread
        assert np.all(blocking > target) if servers < expected else np.all(blocking < target)
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["param"] == "service.servers" and saved["value"] == expected
    assert [p["value"] for p in saved["probes"]] == [p.value for p in result.probes]
    assert all(len(p["runs"]) == 5 for p in saved["probes"])


def test_cli_plan_prints_key_equals_value(loss_path: Path, tmp_path: Path) -> None:
    """`outage-sim plan` prints KEY = VALUE on stdout and writes plan.json."""
    target = blocking_target()
    args = ["plan", str(loss_path), "--param", "service.servers", "--lo", "5", "--hi", "7"]
    args += ["--reps", "3", "--set", f"slo.success_ratio={1 - target!r}", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, [*args, "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"service.servers = {least_servers_by_theory(target)}"
    assert json.loads((tmp_path / "plan.json").read_text())["param"] == "service.servers"


def test_cli_plan_fails_when_even_hi_misses(loss_path: Path, tmp_path: Path) -> None:
    """When hi misses the SLO, plan exits 1 saying so, after probing only hi."""
    args = ["plan", str(loss_path), "--param", "service.servers", "--lo", "1", "--hi", "2"]
    args += ["--reps", "2", "--workers", "1", "--out", str(tmp_path), "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "no service.servers in [1, 2]" in result.output
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["value"] is None and [p["value"] for p in saved["probes"]] == [2]
