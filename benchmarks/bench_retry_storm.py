"""Retry storm: the compiled-kernel DES against an idiomatic SimPy model of the same clients.

The case is a metastable retry storm with a finite queue: 70 requests/s on 10 servers of
100 ms (70% load, a queue of at most 200), clients that time out after 1 s and retry up to 3
times with full-jitter backoff (base 100 ms, cap 1 s), and a fault that cuts capacity to 30%
for 60 s at t = 10 min; 30 simulated minutes. Requests queue during the fault, clients time
out, the servers still do the work of clients that left, the queue fills and rejects, and
retries hold the offered load near 4x the fresh demand after the fault has gone.

* ``kernel``: ``sim.simulate`` on that scenario with the DES (the compiled request kernel
  under SimPy; Recorder, outage analysis and summary included). The worker first runs a
  one-minute version so that imports and loading numba's cache are not timed.
* ``simpy_idiomatic``: ``baselines.run_simpy_retry_storm``, the same clients and server as
  SimPy teaches them (a process per request and per attempt, ``PriorityResource``, the
  timeout as ``done | env.timeout``), its parameters read from the same parsed scenario.

Each run is a fresh Python process; the two take turns (the order alternates), seeds 1, 2,
... The speed is simulated attempts (requests sent to the server, retries included) per wall
second, as the median of the repeats; the goal is kernel >= 20x. The two models must agree on
the headline figures: for amplification (attempts / fresh requests) and success ratio
(successes / fresh requests) the difference of the two models' means over the seeds is
printed with its 99% Welch t interval, which must contain 0.

    python benchmarks/bench_retry_storm.py                # 5 repeats
    python benchmarks/bench_retry_storm.py --repeats 3 --json storm.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import baselines  # this folder is on sys.path when the file runs as a script
from scipy import stats

import sim
from sim.model.scenario import parse_scenario

MODELS = ("kernel", "simpy_idiomatic")
FIGURES = ("amplification", "success_ratio")


def scenario_text(duration: str, seed: int) -> str:
    """The retry-storm scenario of this benchmark (fault at 10 min, if the run gets there)."""
    return f"""\
[scenario]
name = "bench-retry-storm"
duration = "{duration}"
seed = {seed}
bin = "10s"

[arrivals]
rate = "70/s"

[service]
servers = 10
time = {{ dist = "exponential", mean = "100ms" }}
queue_limit = 200

[[faults]]
at = "10min"
duration = "60s"
capacity_factor = 0.3

[client]
timeout = "1s"
retries = 3
backoff = {{ base = "100ms", cap = "1s", jitter = "full" }}
"""


def storm_case(text: str) -> baselines.RetryStorm:
    """The SimPy model's parameters, read from the parsed scenario so both run one case."""
    scenario = parse_scenario(text)
    service, client, (fault,) = scenario.service, scenario.client, scenario.faults
    assert service.time.dist == "exponential" and client.backoff.jitter == "full"
    return baselines.RetryStorm(
        arrival_rps=float(scenario.arrivals.rate),
        servers=int(service.servers),
        service_mean_s=service.time.mean,
        queue_limit=int(service.queue_limit),
        timeout_s=client.timeout,
        retries=client.retries,
        backoff_base_s=client.backoff.base,
        backoff_cap_s=client.backoff.cap,
        backoff_multiplier=client.backoff.multiplier,
        fault_at_s=fault.at,
        fault_duration_s=fault.duration,
        fault_capacity_factor=fault.capacity_factor,
        duration_s=scenario.scenario.duration,
    )


def run_one(model: str, duration: str, seed: int) -> dict:
    """One timed run in this process (the worker side)."""
    text = scenario_text(duration, seed)
    if model == "kernel":
        sim.simulate(parse_scenario(scenario_text("1min", seed)))  # imports, numba's cache
        scenario = parse_scenario(text)
        start = time.perf_counter()
        summary = sim.simulate(scenario).summary
        wall_s = time.perf_counter() - start
        counts = summary["requests"]
        return {
            "name": model,
            "engine": summary["engine"],
            **{k: counts[k] for k in ("fresh", "attempts", "retries", "succeeded")},
            **{k: counts[k] for k in ("timed_out", "rejected")},
            "wall_s": wall_s,
            "amplification": summary["amplification"],
            "success_ratio": summary["success_ratio"],
            "metastable": summary["metastable"],
        }
    return baselines.run_simpy_retry_storm(storm_case(text), seed)


def spawn(args: list[str]) -> dict:
    """A worker in a fresh interpreter; its result comes back as a JSON line."""
    command = [sys.executable, str(Path(__file__).resolve()), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def welch_interval(a: list[float], b: list[float], level: float = 0.99) -> tuple[float, float]:
    """mean(a) - mean(b) and the half-width of its Welch t interval at `level`."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0:
        return diff, 0.0
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return diff, stats.t.ppf(0.5 + level / 2, dof) * math.sqrt(va + vb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per model (3..15)")
    parser.add_argument("--duration", default="30min", help="simulated time of each run")
    parser.add_argument("--json", type=Path, help="also write the raw runs and medians here")
    parser.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_one(args.worker, args.duration, args.seed)))
        return 0

    repeats = min(max(args.repeats, 3), 15)
    print(
        f"retry storm, {args.duration} simulated a run, {repeats} repeats, a fresh process per run"
    )
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        "load average (1, 5, 15 min) at start " + ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        flush=True,
    )
    runs: dict[str, list[dict]] = {m: [] for m in MODELS}
    for repeat in range(repeats):
        order = MODELS if repeat % 2 == 0 else MODELS[::-1]
        for model in order:
            command = ["--worker", model, "--duration", args.duration]
            runs[model].append(spawn([*command, "--seed", str(repeat + 1)]))
        print(f"  repeat {repeat + 1}/{repeats} done", file=sys.stderr, flush=True)

    print(
        f"\n{'model':<17}{'attempts/s':>12}{'fresh/s':>10}{'median wall s':>15}"
        f"{'attempts':>11}{'amplification':>15}{'success ratio':>15}"
    )
    medians = {}
    for model in MODELS:
        rs = runs[model]
        medians[model] = statistics.median(r["attempts"] / r["wall_s"] for r in rs)
        fresh_rate = statistics.median(r["fresh"] / r["wall_s"] for r in rs)
        print(
            f"{model:<17}{medians[model]:>12,.0f}{fresh_rate:>10,.0f}"
            f"{statistics.median(r['wall_s'] for r in rs):>15.3f}"
            f"{statistics.fmean(r['attempts'] for r in rs):>11,.0f}"
            f"{statistics.fmean(r['amplification'] for r in rs):>15.4f}"
            f"{statistics.fmean(r['success_ratio'] for r in rs):>15.4f}"
        )
    ratio = medians["kernel"] / medians["simpy_idiomatic"]
    print(
        f"\nkernel / simpy_idiomatic: {ratio:.1f}x simulated attempts per wall second (goal >= 20x)"
    )
    print("\nagreement (kernel - simpy over the seeds; 99% Welch t interval must contain 0):")
    agree = True
    for figure in FIGURES:
        diff, half = welch_interval(
            [r[figure] for r in runs["kernel"]], [r[figure] for r in runs["simpy_idiomatic"]]
        )
        inside = abs(diff) <= half
        agree &= inside
        sd = {m: statistics.stdev(r[figure] for r in runs[m]) for m in MODELS}
        print(
            f"  {figure:<14} {diff:+.4f} ± {half:.4f}  {'agree' if inside else 'DIFFER'}"
            f"  (seed-to-seed sd: kernel {sd['kernel']:.4f}, simpy {sd['simpy_idiomatic']:.4f})"
        )
    storms = sum(r["metastable"] for r in runs["kernel"])
    print(f"  kernel runs the summary calls metastable: {storms}/{repeats}")
    print(
        "load average (1, 5, 15 min) at end "
        + ", ".join(f"{v:.2f}" for v in os.getloadavg())
        + f"; models agree: {'yes' if agree else 'NO'}"
    )
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": medians}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
