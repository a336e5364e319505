"""The compiled request kernel (sim/engine/kernel*.py, driven by sim/engine/des.py).

Queueing theory judges the engine through `sim.simulate` in tests/engine/test_des.py; here, the
kernel's own promises: the same seed gives the same bytes, compiled and plain-Python runs are
identical (OUTAGE_SIM_JIT=0 in a child process), its heap, queues and jitter behave, counts add
up, and Ctrl-C and odd durations stop where they should.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, TESTS, queue_text

import sim
import sim.engine.controls
import sim.engine.des
import sim.model.workload
import sim.run
from sim.analysis.metrics import HIST_BUCKETS, HIST_EDGES, Recorder
from sim.engine import clients, kernel_clients, kernel_jit, kernel_store
from sim.engine import kernel_state as ks
from sim.engine.des import DesEngine
from sim.io import summary_json
from sim.model.scenario import parse_scenario
from sim.report.writer import timeseries_csv

SEEDS = range(1, 11)
CONFIDENCE = 0.999
MEAN_REL, RATIO_REL = 0.2, 0.06


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
sys.path[:0] = {paths!r}
import test_kernel
import json
job = json.loads(sys.stdin.read())
print(test_kernel._fingerprint(job["text"], job["overrides"]))
"""


def _fingerprint_in_child(job: str, jit: str) -> str:
    """_fingerprint in a fresh interpreter with OUTAGE_SIM_JIT=jit (the job as JSON)."""
    env = {**os.environ, "OUTAGE_SIM_JIT": jit}
    paths = [str(Path(__file__).resolve().parent), str(TESTS)]  # this module, then helpers
    done = subprocess.run(
        [sys.executable, "-c", _CHILD.format(paths=paths)],
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
        # A service graph: sync calls with their own timeouts and retries, a fault on a callee.
        (
            "cascade.toml",
            {"scenario.duration": "3min", "faults.0.at": "1min", "faults.0.duration": "1min"},
        ),  # fmt: skip
        # The fluid engine's compiled graph step (sim/engine/fluid_graph_kernel.py).
        (
            "cascade.toml",
            {
                "scenario.engine": "fluid",
                "scenario.duration": "5min",
                "faults.0.at": "1min",
                "faults.0.duration": "2min",
            },
        ),  # fmt: skip
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
    demand = sim.model.workload.Demand(scenario)
    monkeypatch.setattr(sim.engine.des, "TICK_REQUESTS", demand.expected_total() / 9.5)  # 10
    recorder = Recorder(40, 100.0)
    engine = DesEngine(scenario, demand, recorder)
    clock = iter(range(10**6))
    monkeypatch.setattr(sim.engine.controls.time, "monotonic", lambda: float(next(clock)))
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
    demand = sim.model.workload.Demand(scenario)
    monkeypatch.setattr(sim.engine.des, "TICK_REQUESTS", demand.expected_total() / 9.5)  # 10
    engine = DesEngine(scenario, demand, Recorder(10, duration_s / 10))
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


def test_a_stream_never_filled_is_never_drawn_silently() -> None:
    """A run without errors, jitter or throttling gives those streams no random block; a
    fault's error rate fills the error stream when it strikes (so the fault's errors are
    drawn, about its share), and a kernel drawing from a stream still unfilled is an error,
    never zeros taken for random numbers."""
    text = queue_text(rate_rps=20.0, servers=4, mean_s=0.1, duration_s=600.0, bin_s=60.0)
    scenario = parse_scenario(text)
    demand = sim.model.workload.Demand(scenario)
    engine = DesEngine(scenario, demand, Recorder(10, 60.0))
    unfilled = [ks.R_JITTER, ks.R_ERRORS, ks.R_THROTTLE]
    assert (engine.k.rand_n[unfilled] == ks.UNFILLED).all()
    engine.k.st_f[0, ks.STF_ERROR_RATE] = 0.5  # an error rate set behind the driver's back
    with pytest.raises(RuntimeError, match="never filled"):
        engine.run()

    faulted = parse_scenario(
        text + '\n[[faults]]\nat = "5min"\nduration = "5min"\nerror_rate = 0.5\n'
    )
    summary = sim.simulate(faulted).summary
    attempts, rejected = summary["requests"]["attempts"], summary["requests"]["rejected"]
    # Half the attempts of the run's second half: a 99.9% binomial interval around 1/4.
    share, sd = rejected / attempts, math.sqrt(0.25 * 0.75 / attempts)
    assert abs(share - 0.25) < 3.3 * sd + 0.01


def test_latency_bucket_is_exact_on_the_histogram_edges() -> None:
    """The kernel's bucket (a guess from the float's exponent, then a walk on the edges) puts
    every latency in the bucket of HIST_EDGES that holds it, right at the edges too, and
    out-of-range ones in the end buckets."""
    rng = np.random.default_rng(11)
    values = np.concatenate(
        [
            10 ** rng.uniform(-4.9, 5.9, 20_000),
            HIST_EDGES[1:-1],
            np.nextafter(HIST_EDGES[1:-1], 0.0),
            np.nextafter(HIST_EDGES[1:-1], np.inf),
        ]
    )
    buckets = np.array([kernel_store.latency_bucket(float(v)) for v in values])
    assert np.all(HIST_EDGES[buckets] <= values) and np.all(values < HIST_EDGES[buckets + 1])
    assert [kernel_store.latency_bucket(v) for v in (0.0, 1e-9, 1e9)] == [0, 0, HIST_BUCKETS - 1]
