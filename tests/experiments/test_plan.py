"""Pin sim.experiments.plan: the monotone search, the confidence rule, the answer theory gives."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import binom

from sim.analysis.theory import erlang_b
from sim.cli import cli
from sim.errors import UsageError
from sim.experiments import plan as planner

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


def _rows(clean: int, runs: int) -> list[dict]:
    """`runs` replication rows of which the first `clean` had no outage."""
    return [
        {"replication": r, "seed": r, "outage_total_s": 0.0 if r < clean else 60.0,
         "success_ratio": 1.0, "latency_p99_s": 0.1, "error": ""}
        for r in range(runs)
    ]  # fmt: skip


def test_nine_clean_runs_of_ten_do_not_meet_ninety_percent() -> None:
    """9 of 10 is a share of 0.9 but no proof that the pass probability is 0.9: it misses."""
    probe = planner._probe(8, _rows(9, 10), 0.9)
    assert not probe.meets
    assert probe.share == 0.9 and probe.clean == 9
    assert probe.lower_bound < 0.9


def test_a_failed_run_counts_against_the_value() -> None:
    """A run that failed is a run without evidence of meeting the SLO: it counts as an outage."""
    rows = _rows(22, 22)
    assert planner._probe(8, rows, 0.9).meets
    rows[4] = rows[4] | {"outage_total_s": None, "error": "boom"}
    probe = planner._probe(8, rows, 0.9)
    assert probe.clean == 21 and not probe.meets


@pytest.mark.parametrize("runs", [1, 5, 22, 60])
def test_lower_bound_with_no_failure_is_the_closed_form(runs: int) -> None:
    """With every run clean, P(all clean | p) = p^n = 1 - confidence gives the bound."""
    for confidence in (0.5, 0.8, 0.9, 0.95):
        bound = planner.lower_bound(runs, runs, confidence)
        assert bound == pytest.approx((1 - confidence) ** (1 / runs), rel=1e-9)
    assert planner.lower_bound(0, runs, 0.9) == 0.0


@pytest.mark.parametrize("confidence", [0.5, 0.8, 0.9, 0.95, 0.99])
def test_reps_needed_is_the_least_count_that_can_reach_the_confidence(confidence: float) -> None:
    """n runs can prove `confidence` only when (1 - confidence)^(1/n) >= confidence."""
    needed = planner.reps_needed(confidence)
    assert needed == math.ceil(math.log(1 - confidence) / math.log(confidence))
    assert planner._probe(1, _rows(needed, needed), confidence).meets
    if needed > 1:
        assert not planner._probe(1, _rows(needed - 1, needed - 1), confidence).meets


@pytest.mark.parametrize(("runs", "confidence"), [(22, 0.9), (30, 0.9), (8, 0.8), (59, 0.95)])
def test_a_service_below_the_target_rarely_passes(runs: int, confidence: float) -> None:
    """For a true pass probability p under the target, P(the probe meets) <= 1 - confidence,
    computed exactly over the binomial outcomes; at p = 0.75 the old share rule passed 9 of 10
    in 24% of plans."""
    passing = [k for k in range(runs + 1) if planner._probe(1, _rows(k, runs), confidence).meets]
    assert passing, "some outcome must pass, or the test proves nothing"
    for p in np.linspace(0.05, confidence - 1e-6, 200):
        assert binom.pmf(passing, runs, p).sum() <= 1 - confidence + 1e-12
    old_rule = binom.sf(8, 10, 0.75)  # P(at least 9 of 10 clean) at p = 0.75
    assert old_rule == pytest.approx(0.244, abs=1e-3)


def test_a_reliable_service_passes_with_enough_runs() -> None:
    """The rule is not merely strict: p = 0.999 passes 22 runs at 90% in at least 97% of plans."""
    passing = [k for k in range(23) if planner._probe(1, _rows(k, 22), 0.9).meets]
    assert binom.pmf(passing, 22, 0.999).sum() >= 0.97


def test_too_few_reps_are_said_and_the_least_sufficient_count_given(
    loss_path: Path, tmp_path: Path
) -> None:
    """10 reps cannot prove 0.9: plan.json and the description say so and name 22."""
    result = planner.plan(
        loss_path, "service.servers", 8, 10, reps=10, confidence=0.9, workers=1,
        out_dir=tmp_path, progress=False,
    )  # fmt: skip
    assert result.value is None and result.reps_needed == 22
    assert len(result.warnings) == 1 and "22" in result.warnings[0]
    assert "--reps 10" in result.warnings[0]
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["reps_needed"] == 22 and saved["warnings"] == result.warnings
    described = planner.describe(result)
    assert result.warnings[0] in described and "misses the SLO" not in described
    # Even all-clean evidence at hi misses: the bound is (1 - 0.9)^(1/10) = 0.79.
    (probe,) = saved["probes"]
    assert probe["clean"] == 10 and probe["lower_bound"] == pytest.approx(0.1**0.1)


def test_enough_reps_raise_no_warning() -> None:
    """No warning when `reps` can reach the confidence; none reaches a confidence of 1."""
    assert planner.reach_warning(22, 0.9) is None
    assert "22" in planner.reach_warning(21, 0.9)
    with pytest.raises(UsageError, match="below 1"):
        planner.plan("unused.toml", "service.servers", 1, 2, reps=5, confidence=1.0)


def test_planner_answer_equals_erlang_b(loss_path: Path, tmp_path: Path) -> None:
    """The least servers meeting the SLO at 80% confidence is the least c with B(c, A) < target."""
    target = blocking_target()
    overrides = {"slo.success_ratio": 1 - target}
    # 8 runs are the fewest that can show 80% (reps_needed): every probe is decided by them.
    result = planner.plan(
        loss_path, "service.servers", 1, 20, reps=None, confidence=0.8, workers=2,
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
    assert saved["reps"] == saved["reps_needed"] == 8 and saved["warnings"] == []
    assert all(len(p["runs"]) == 8 for p in saved["probes"])
    bounds = {p["value"]: p["lower_bound"] for p in saved["probes"]}
    assert bounds[expected] >= 0.8 > bounds[expected - 1]


def test_cli_plan_prints_key_equals_value(loss_path: Path, tmp_path: Path) -> None:
    """`outage-sim plan` prints KEY = VALUE on stdout and writes plan.json."""
    target = blocking_target()
    args = ["plan", str(loss_path), "--param", "service.servers", "--lo", "5", "--hi", "7"]
    args += ["--reps", "8", "--confidence", "0.8", "--set", f"slo.success_ratio={1 - target!r}"]
    args += ["--out", str(tmp_path)]
    result = CliRunner().invoke(cli, [*args, "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"service.servers = {least_servers_by_theory(target)}"
    assert json.loads((tmp_path / "plan.json").read_text())["param"] == "service.servers"


def test_cli_plan_fails_when_even_hi_misses(loss_path: Path, tmp_path: Path) -> None:
    """When hi misses the SLO, plan exits 1 saying so, after probing only hi."""
    args = ["plan", str(loss_path), "--param", "service.servers", "--lo", "1", "--hi", "2"]
    args += ["--reps", "8", "--confidence", "0.8", "--workers", "1", "--out", str(tmp_path)]
    args += ["--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "no service.servers in [1, 2]" in result.output
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["value"] is None and [p["value"] for p in saved["probes"]] == [2]


def test_cli_plan_says_on_stderr_when_reps_are_too_few(loss_path: Path, tmp_path: Path) -> None:
    """`plan --reps 3` at 90% exits 1, and stderr names the 22 runs needed and each bound."""
    args = ["plan", str(loss_path), "--param", "service.servers", "--lo", "8", "--hi", "10"]
    args += ["--reps", "3", "--workers", "1", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "use --reps 22 or more" in result.stderr
    assert "service.servers = 10: 3 of 3 runs without an outage" in result.stderr
    assert f"pass probability >= {0.1 ** (1 / 3):.3f}" in result.stderr
