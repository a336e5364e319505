"""Engine throughput: the DES (its compiled kernel under SimPy) against idiomatic SimPy, Ciw and
a heapq loop, on M/M/10 at 90% load (λ = 9/s, μ = 1/s, about 200,000 customers a run).

Each run is a fresh Python process; the engines take turns in every repeat (the order
rotates, so a burst of load on the shared machine hits all of them) and the median of the
repeats is reported, with the ratios the issue asks for:

* ``kernel``: ``sim.simulate`` on the scenario with ``DesEngine`` (Recorder on, outages
  analysed, summary built): what a user pays per run once numba's cache is warm. The worker
  first runs the same model for 2,000 customers on another seed, so that loading the compiled
  code and every code path's first use are not timed; that start-up is measured on its own
  (below).
* ``simpy_idiomatic``, ``ciw``, ``heapq``: the yardsticks of ``baselines.py``.

Also measured, once each, in a fresh process: the kernel's compile time (numba's cache
off, ``OUTAGE_SIM_JIT_CACHE=0``: its first run compiles every kernel function) and its cached
start-up (the first kernel run with the cache warm: loading the compiled code).

Every engine's mean wait is checked: the exact Erlang C value must lie in the 99% Student t
interval of the repeats' means (seeds 1, 2, ...).

    python benchmarks/bench_engine.py                      # 5 repeats, 200,000 customers
    python benchmarks/bench_engine.py --repeats 3 --engines kernel,simpy_idiomatic
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

from scipy import stats

HERE = Path(__file__).resolve().parent
ENGINES = ("kernel", "simpy_idiomatic", "ciw", "heapq")
ARRIVAL_RPS, SERVICE_RPS, SERVERS = 9.0, 1.0, 10


def scenario_text(customers: int, seed: int) -> str:
    """The M/M/10 scenario whose run offers about `customers` arrivals."""
    return f"""\
[scenario]
name = "bench-mmc"
duration = {customers / ARRIVAL_RPS!r}
seed = {seed}
bin = "1min"

[arrivals]
rate = {ARRIVAL_RPS!r}

[service]
servers = {SERVERS}
time = {{ dist = "exponential", mean = {1 / SERVICE_RPS!r} }}
"""


def _simulate(text: str) -> dict:
    """sim.simulate on scenario text (the DES)."""
    import sim
    from sim.model.scenario import parse_scenario

    return sim.simulate(parse_scenario(text)).summary


def run_one(engine: str, customers: int, seed: int) -> dict:
    """One timed run in this process (the worker side)."""
    if engine == "kernel":
        # Warm: imports, numba's cache, and every code path's first use (scipy's distributions
        # in the outage and theory sections, numpy's first allocations), with a short run of
        # the same model on another seed: what each run of a sweep pays, not the process once.
        _simulate(scenario_text(2_000, seed + 1_000))
        start = time.perf_counter()
        summary = _simulate(scenario_text(customers, seed))
        wall_s = time.perf_counter() - start
        return {
            "name": engine,
            "customers": summary["requests"]["fresh"],
            "wall_s": wall_s,
            "wait_mean_s": summary["wait_s"]["mean"],
        }
    sys.path.insert(0, str(HERE))
    import baselines

    return baselines.RUNNERS[engine](ARRIVAL_RPS, SERVICE_RPS, SERVERS, customers, seed)


def start_up(cache: bool) -> dict:
    """The worker side of the start-up measurement: import, a first one-second run (loading
    or compiling the kernel, and every lazy first call), then a second (what a run costs once
    warm)."""
    start = time.perf_counter()
    import sim  # noqa: F401

    imported = time.perf_counter()
    _simulate(scenario_text(9, 1))
    first = time.perf_counter()
    _simulate(scenario_text(9, 1))
    second = time.perf_counter()
    return {
        "import_s": imported - start,
        "kernel_s": first - imported,
        "warm_run_s": second - first,
        "cache": cache,
    }


def spawn(args: list[str], env: dict | None = None) -> dict:
    """A worker in a fresh interpreter; its result comes back as a JSON line."""
    command = [sys.executable, str(Path(__file__).resolve()), *args]
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5, help="runs per engine (3..15)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset")
    parser.add_argument("--json", type=Path, help="also write the raw runs and medians here")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--start-up", choices=("cached", "compile"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_one(args.worker, args.customers, args.seed)))
        return 0
    if args.start_up:
        print(json.dumps(start_up(args.start_up == "cached")))
        return 0

    engines = [e for e in args.engines.split(",") if e]
    repeats = min(max(args.repeats, 3), 15)
    print(
        f"M/M/{SERVERS} at rho = {ARRIVAL_RPS / (SERVERS * SERVICE_RPS):g}, "
        f"{args.customers:,} customers a run, {repeats} repeats, a fresh process per run"
    )
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average at start {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    compile_run = spawn(["--start-up", "compile"], {"OUTAGE_SIM_JIT_CACHE": "0"})
    spawn(["--start-up", "cached"])  # make sure the cache is written
    cached_run = spawn(["--start-up", "cached"])
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    for repeat in range(repeats):
        order = engines[repeat % len(engines) :] + engines[: repeat % len(engines)]
        for engine in order:
            command = ["--worker", engine, "--customers", str(args.customers)]
            runs[engine].append(spawn([*command, "--seed", str(repeat + 1)]))
        print(f"  repeat {repeat + 1}/{repeats} done", file=sys.stderr, flush=True)

    sys.path.insert(0, str(HERE))
    import baselines

    exact = baselines.erlang_c_wait(ARRIVAL_RPS, SERVICE_RPS, SERVERS)
    print(f"\nErlang C mean wait W_q = {exact:.4f} s; 99% t interval of the repeats' means")
    print(
        f"{'engine':<16}{'customers/s':>13}{'median wall s':>15}{'mean wait s':>21}"
        f"{'Erlang C in CI':>16}"
    )
    medians = {}
    for engine in engines:
        rates = [r["customers"] / r["wall_s"] for r in runs[engine]]
        waits = [r["wait_mean_s"] for r in runs[engine]]
        medians[engine] = statistics.median(rates)
        mean = statistics.fmean(waits)
        t = stats.t.ppf(0.995, len(waits) - 1)
        half = t * statistics.stdev(waits) / math.sqrt(len(waits))
        inside = abs(mean - exact) <= half
        wall = statistics.median(r["wall_s"] for r in runs[engine])
        print(
            f"{engine:<16}{medians[engine]:>13,.0f}{wall:>15.3f}"
            f"{mean:>12.4f} ± {half:.4f}{'yes' if inside else 'NO':>16}"
        )
    if "kernel" in medians:
        print("\nratios (median customers/s):")
        for other in engines:
            if other != "kernel":
                print(f"  kernel / {other:<16} {medians['kernel'] / medians[other]:7.2f}x")
    print(
        f"\ncompile (cache off): a fresh process's first kernel run takes "
        f"{compile_run['kernel_s']:.2f} s"
    )
    print(
        f"cached start-up (cache warm): a fresh process's first kernel run takes "
        f"{cached_run['kernel_s']:.2f} s (import sim {cached_run['import_s']:.2f} s; the same "
        f"run warm {cached_run['warm_run_s']:.3f} s)"
    )
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"runs": runs, "medians": medians, "compile": compile_run, "cached": cached_run},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
