"""The compiled request kernel (sim/engine/kernel*.py, driven by des_kernel.KernelEngine).

Judged three ways: by queueing theory (exact answers inside the 99.9% Student t interval of
independent replications, as tests/test_des.py does for the callback engine), against the
callback engine `DesEngine` on a retry storm (different seeds, two-sample intervals), and for
reproducibility (same seed, same bytes; compiled and plain-Python runs identical). Runs go
through the public `sim.simulate` with `DesEngine` swapped for `KernelEngine` until the kernel
replaces it in sim/run.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, assert_within, queue_text, t_quantile

import sim
import sim.engine.des
import sim.engine.des_kernel
import sim.run
import sim.workload
from sim import theory
from sim.engine import clients, kernel_clients, kernel_jit, kernel_store
from sim.engine import kernel_state as ks
from sim.engine.des_kernel import KernelEngine
from sim.metrics import Recorder
from sim.report import summary_json, timeseries_csv
from sim.scenario import parse_scenario

SEEDS = range(1, 11)
CONFIDENCE = 0.999
MEAN_REL, RATIO_REL = 0.2, 0.06


@contextlib.contextmanager
def kernel_engine():
    """sim.simulate runs on KernelEngine inside the block."""
    saved = sim.engine.des.DesEngine
    sim.engine.des.DesEngine = KernelEngine
    had_run = hasattr(sim.run, "DesEngine")
    if had_run:
        saved_run, sim.run.DesEngine = sim.run.DesEngine, KernelEngine
    try:
        yield
    finally:
        sim.engine.des.DesEngine = saved
        if had_run:
            sim.run.DesEngine = saved_run


def replicate_kernel(text: str, seeds, overrides: dict | None = None) -> list[sim.Result]:
    """One kernel run of scenario text per seed."""
    with kernel_engine():
        return [
            sim.simulate(parse_scenario(text, overrides={**(overrides or {}), "scenario.seed": s}))
            for s in seeds
        ]


def _waits(results, key: str) -> list[float]:
    return [r.summary["wait_s"][key] for r in results]


def _blocking(results) -> list[float]:
    return [r.summary["requests"]["rejected"] / r.summary["requests"]["attempts"] for r in results]


# -- theory ----------------------------------------------------------------------------------
def test_mmc_wait_matches_erlang_c() -> None:
    """M/M/3 at ρ = 0.8: mean wait and P(wait) match Erlang C within 99.9% intervals."""
    exact = theory.mmc(2.4, 1.0, 3)
    text = queue_text(rate_rps=2.4, servers=3, mean_s=1.0, duration_s=10_000 / 2.4)
    results = replicate_kernel(text, SEEDS)
    assert_within(
        _waits(results, "mean"), exact.wait_mean_s, confidence=CONFIDENCE, max_rel=MEAN_REL
    )
    assert_within(_waits(results, "p_wait"), exact.p_wait, confidence=CONFIDENCE, max_rel=RATIO_REL)


def test_loss_system_matches_erlang_b() -> None:
    """M/M/4/4 (queue_limit = 0) at offered load 3: blocking matches Erlang B."""
    exact = theory.erlang_b(4, 3.0)
    text = queue_text(rate_rps=3.0, servers=4, mean_s=1.0, duration_s=3000.0, queue_limit=0)
    assert_within(
        _blocking(replicate_kernel(text, SEEDS)), exact, confidence=CONFIDENCE, max_rel=0.1
    )


def test_finite_queue_matches_mm1k() -> None:
    """M/M/1/5 (four waiting places) at ρ = 0.9: blocking matches the M/M/1/K formula."""
    exact = theory.mm1k_blocking(0.9, 1.0, 5)
    text = queue_text(rate_rps=0.9, servers=1, mean_s=1.0, duration_s=8000.0, queue_limit=4)
    assert_within(
        _blocking(replicate_kernel(text, SEEDS)), exact, confidence=CONFIDENCE, max_rel=0.12
    )


def test_md1_wait_matches_pollaczek_khinchine() -> None:
    """M/D/1 at ρ = 0.7: mean wait matches Pollaczek–Khinchine."""
    exact = theory.md1_wait(0.7, 1.0)
    text = queue_text(rate_rps=0.7, servers=1, dist="deterministic", duration_s=10_000 / 0.7)
    assert_within(
        _waits(replicate_kernel(text, SEEDS), "mean"),
        exact,
        confidence=CONFIDENCE,
        max_rel=MEAN_REL,
    )


# -- against the callback engine -------------------------------------------------------------
RETRY_STORM = {"scenario.duration": "6min", "faults.0.at": "1min"}


def _two_sample_interval(a: list[float], b: list[float], confidence: float) -> tuple[float, float]:
    """(difference of means, half-width) of Welch's interval."""
    a, b = np.asarray(a), np.asarray(b)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(a.mean() - b.mean()), float(
        t_quantile(0.5 + confidence / 2, dof) * math.sqrt(va + vb)
    )


def test_retry_storm_agrees_with_callback_engine() -> None:
    """A shortened retry storm: amplification, success ratio and timeouts agree with DesEngine
    (independent seeds) within 99.9% two-sample intervals."""
    text = (REPO / "scenarios" / "retry-storm.toml").read_text()
    kernel = replicate_kernel(text, range(1, 6), RETRY_STORM)
    callback = [
        sim.simulate(parse_scenario(text, overrides={**RETRY_STORM, "scenario.seed": s}))
        for s in range(101, 106)
    ]
    for figure in (
        lambda r: r.summary["amplification"],
        lambda r: r.summary["success_ratio"],
        lambda r: r.summary["requests"]["timed_out"] / r.summary["requests"]["fresh"],
    ):
        diff, half = _two_sample_interval(
            [figure(r) for r in kernel], [figure(r) for r in callback], CONFIDENCE
        )
        assert abs(diff) <= max(half, 1e-12), f"kernel − callback = {diff:.4g} ± {half:.3g}"
    # The storm happened (a test on a healthy run could not tell the engines apart).
    assert min(r.summary["amplification"] for r in kernel) > 1.5


# -- reproducibility -------------------------------------------------------------------------
# Timeouts, retries with decorrelated jitter, a retry budget, throttling, errors, a finite
# queue with LIFO beyond a depth, shedding by sojourn, a fault, a capacity change and an
# autoscaler: every branch of the request path and every control.
BUSY_TEXT = """\
[scenario]
name = "kernel-busy"
duration = "20min"
seed = 7
bin = "30s"
[arrivals]
rate = "60/s"
surge = [{ at = "8min", duration = "3min", factor = 2.5 }]
[service]
servers = 8
time = { dist = "lognormal", mean = "100ms", cv = 1.5 }
queue_limit = 6000
lifo_over = 200
sojourn_limit = "3s"
drop_expired = true
error_rate = 0.01
[[capacity.change]]
at = "15min"
servers = 10
[capacity.autoscale]
interval = "30s"
delay = "60s"
max_servers = 20
[[faults]]
at = "5min"
duration = "90s"
capacity_factor = 0.4
slowdown = 1.5
error_rate = 0.05
[client]
timeout = "1s"
retries = 3
backoff = { base = "50ms", cap = "2s", jitter = "decorrelated" }
retry_budget = 0.5
throttle_k = 2
throttle_window = "30s"
"""


def _fingerprint(text: str, overrides: dict | None = None) -> str:
    """sha256 of summary.json (wall times aside) and timeseries.csv of a kernel run."""
    with kernel_engine():
        result = sim.simulate(parse_scenario(text, overrides=overrides))
    summary = dict(result.summary)
    for key in ("wall_time_s", "simulated_per_s"):
        summary.pop(key, None)
    digest = hashlib.sha256(summary_json(summary).encode())
    digest.update(timeseries_csv(result.timeseries).encode())
    return digest.hexdigest()


def test_same_seed_same_bytes() -> None:
    """Two runs of one seed give identical summary.json and timeseries.csv; another seed differs."""
    assert _fingerprint(BUSY_TEXT) == _fingerprint(BUSY_TEXT)
    assert _fingerprint(BUSY_TEXT) != _fingerprint(BUSY_TEXT.replace("seed = 7", "seed = 8"))


_CHILD = """
import sys
sys.path.insert(0, {tests!r})
import test_kernel
import json
job = json.loads(sys.stdin.read())
print(test_kernel._fingerprint(job["text"], job["overrides"]))
"""


def _fingerprint_in_child(job: str, jit: str) -> str:
    """_fingerprint in a fresh interpreter with OUTAGE_SIM_JIT=jit (the job as JSON)."""
    env = {**os.environ, "OUTAGE_SIM_JIT": jit}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD.format(tests=str(REPO / "tests"))],
        input=job,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(
    not kernel_jit.JIT and os.environ.get("OUTAGE_SIM_JIT") != "0",
    reason="numba is not importable",
)
@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("busy", {"scenario.duration": "12min"}),
        ("retry-storm.toml", {"scenario.duration": "4min", "faults.0.at": "1min"}),
        ("retry-storm-budget.toml", {"scenario.duration": "4min", "faults.0.at": "1min"}),
    ],
)
def test_compiled_and_plain_runs_are_identical(name: str, overrides: dict) -> None:
    """The compiled kernel and the same code as plain Python give byte-identical
    summary.json (wall time aside) and timeseries.csv, on scenarios with timeouts, retries
    and controls."""
    text = BUSY_TEXT if name == "busy" else (REPO / "scenarios" / name).read_text()
    job = json.dumps({"text": text, "overrides": overrides})
    assert _fingerprint_in_child(job, "1") == _fingerprint_in_child(job, "0")


# -- pieces ----------------------------------------------------------------------------------
def test_heap_pops_in_time_order_ties_by_insertion() -> None:
    """The event heap returns events by time, and equal times in the order they were pushed."""
    state = ks.new_state(1, 1, 1, 1.0)
    rng = np.random.default_rng(3)
    times = rng.integers(0, 20, 500).astype(float)
    for item, t in enumerate(times):
        kernel_store.heap_push(state.heap_t, state.heap_i, state.si, t, 0, item)
    popped = [int(kernel_store.heap_pop(state.heap_t, state.heap_i, state.si)[1]) for _ in times]
    assert popped == sorted(range(len(times)), key=lambda i: (times[i], i))


def test_queue_growth_keeps_order() -> None:
    """Growing a wrapped ring-buffer queue keeps its attempts in order."""
    state = ks.new_state(1, 1, 1, 1.0)
    cap = state.queue.shape[1]
    for a in range(cap - 10):
        kernel_store.queue_push(state.queue, state.st_i, 0, a)
    for _ in range(cap - 20):
        kernel_store.queue_take(
            state.queue, state.st_i, state.st_f, 0
        )  # fifo: from the head; the ring now wraps below
    for a in range(cap - 10, cap + 20):
        kernel_store.queue_push(state.queue, state.st_i, 0, a)
    state = ks.grow_queues(state)
    order = [
        int(kernel_store.queue_take(state.queue, state.st_i, state.st_f, 0))
        for _ in range(int(state.st_i[0, ks.ST_QLEN]))
    ]
    assert order == list(range(cap - 20, cap + 20))


def test_decorrelated_jitter_spreads_the_first_retry() -> None:
    """Decorrelated jitter puts the first retry anywhere in [base, 3·base], not at base."""
    state = ks.new_state(1, 1, 1, 1.0)
    state.cl_f[0, ks.CL_JITTER] = clients.JITTER_DECORRELATED
    state.cl_f[0, ks.CL_BASE_S], state.cl_f[0, ks.CL_CAP_S] = 0.2, 10.0
    state.rand[ks.R_JITTER] = np.random.default_rng(5).random(state.rand.shape[1])
    state.rand_n[ks.R_JITTER] = state.rand.shape[1]
    first = [kernel_clients.backoff_delay(state, 0, 0, 0.2) for _ in range(2000)]
    assert min(first) >= 0.2 and max(first) <= 0.6
    assert np.std(first) == pytest.approx(0.4 / math.sqrt(12), rel=0.1)  # uniform's sd
    # Later sleeps grow from the previous one: U(base, 3 · previous), capped.
    later = [kernel_clients.backoff_delay(state, 0, 1, 4.0) for _ in range(2000)]
    assert max(later) <= 10.0 and np.mean(later) > 5.0


def test_summary_counts_add_up() -> None:
    """Every fresh request of a finished busy run is decided once: ok + failed + undecided."""
    with kernel_engine():
        result = sim.simulate(parse_scenario(BUSY_TEXT))
    ts = result.timeseries
    fresh, ok, failed = ts["fresh"].sum(), ts["fresh_ok"].sum(), ts["fresh_failed"].sum()
    assert ok + failed <= fresh
    assert ok == pytest.approx(result.summary["requests"]["succeeded"])
    assert json.loads(summary_json(result.summary))["requests"]["throttled"] > 0


def test_heap_growth_keeps_order() -> None:
    """A heap grown while full keeps returning events in time order."""
    state = ks.new_state(1, 1, 1, 1.0)
    times = np.random.default_rng(4).random(2 * len(state.heap_t))
    half = len(state.heap_t)
    for item, t in enumerate(times[:half]):
        kernel_store.heap_push(state.heap_t, state.heap_i, state.si, t, 0, item)
    state = ks.grow_heap(state)
    for item, t in enumerate(times[half:], start=half):
        kernel_store.heap_push(state.heap_t, state.heap_i, state.si, t, 0, item)
    popped = [int(kernel_store.heap_pop(state.heap_t, state.heap_i, state.si)[1]) for _ in times]
    assert popped == list(np.argsort(times, kind="stable"))


def test_ctrl_c_stops_with_the_time_reached(monkeypatch) -> None:
    """Ctrl-C during a run sets `interrupted` and returns the simulated time reached, with
    the Recorder's bins closed up to it."""
    text = queue_text(rate_rps=5.0, servers=2, mean_s=0.3, duration_s=4000.0, bin_s=100.0)
    scenario = parse_scenario(text)
    demand = sim.workload.Demand(scenario)
    recorder = Recorder(40, 100.0)
    engine = KernelEngine(scenario, demand, recorder)
    clock = iter(range(10**6))
    monkeypatch.setattr(sim.engine.des_kernel.time, "monotonic", lambda: float(next(clock)))
    calls = []

    def progress(share: float) -> None:
        calls.append(share)
        if len(calls) == 3:
            raise KeyboardInterrupt

    end_s = engine.run(progress)
    assert engine.interrupted
    assert 0 < end_s < 4000.0
    assert recorder.closed_bins == math.ceil(end_s / 100.0)
    assert sum(recorder.fresh) > 0


def test_run_reaches_a_duration_that_ticks_do_not_divide(monkeypatch) -> None:
    """A run ends at its duration even when `ticks · duration / ticks` rounds below it (the
    clock once waited forever in zero-length steps there)."""
    duration_s = 111.2111111111111  # (10 · d) / 10 != d in floating point
    assert (10 * duration_s) / 10 != duration_s
    text = queue_text(rate_rps=2.0, servers=2, mean_s=0.5, duration_s=duration_s)
    scenario = parse_scenario(text)
    engine = KernelEngine(scenario, sim.workload.Demand(scenario), Recorder(10, duration_s / 10))
    steps = 0
    step = engine.env.step

    def counted() -> None:
        nonlocal steps
        steps += 1
        assert steps < 10_000, "the SimPy clock stopped advancing"
        step()

    monkeypatch.setattr(engine.env, "step", counted)
    assert engine.run() == duration_s
    assert engine.k.sf[ks.SF_NOW] == duration_s
