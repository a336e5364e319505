"""Engine throughput: outage-sim's DES against idiomatic SimPy, Ciw and a bare heapq loop.

The model is M/M/10 at 90% load (λ = 9/s, μ = 1/s), about 200,000 customers a run. Each run is
a fresh Python process (no warm caches, no shared interpreter state), the engines take turns
in every repeat (the order rotates, so a burst of load on a shared machine hits all of them),
and the median of the repeats is reported, with the ratios the issue asks for:

* ``des``: the project's engine through the public API, ``sim.simulate`` on a scenario (the
  Recorder on, outages analysed): what a user pays, scenario validation included.
* ``simpy_idiomatic``, ``ciw``, ``heapq``: the yardsticks of ``baselines.py``.

(The fluid engine has no customers to count and no queueing below capacity, so it is not in
this race; ``bench_memory.py`` times it on the reference scenario.)

Every run's mean wait is checked: the exact Erlang C value must lie in the 99% Student t
interval of the repeats' means (seeds 1, 2, ...), engine by engine.

    python benchmarks/bench_engine.py                    # 5 repeats, 200,000 customers
    python benchmarks/bench_engine.py --repeats 9 --json results.json
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

HERE = Path(__file__).resolve().parent
ENGINES = ("des", "simpy_idiomatic", "ciw", "heapq")
ARRIVAL_RPS, SERVICE_RPS, SERVERS = 9.0, 1.0, 10
# Student t 0.995 quantiles (two-sided 99%) by degrees of freedom.
T995 = {2: 9.925, 3: 5.841, 4: 4.604, 5: 4.032, 6: 3.707, 7: 3.499, 8: 3.355, 9: 3.250}


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


def run_one(engine: str, customers: int, seed: int) -> dict:
    """One timed run in this process (the worker side)."""
    if engine == "des":
        import sim
        from sim.scenario import parse_scenario

        start = time.perf_counter()
        result = sim.simulate(parse_scenario(scenario_text(customers, seed)))
        wall_s = time.perf_counter() - start
        summary = result.summary
        return {
            "name": engine,
            "customers": summary["requests"]["fresh"],
            "wall_s": wall_s,
            "wait_mean_s": summary["wait_s"]["mean"],
        }
    sys.path.insert(0, str(HERE))
    import baselines

    runner = baselines.RUNNERS[engine]
    return runner(ARRIVAL_RPS, SERVICE_RPS, SERVERS, customers, seed)


def spawn(engine: str, customers: int, seed: int) -> dict:
    """One run in a fresh interpreter; its result comes back as a JSON line."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", engine]
    command += ["--customers", str(customers), "--seed", str(seed)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def erlang_c_wait() -> float:
    sys.path.insert(0, str(HERE))
    import baselines

    return baselines.erlang_c_wait(ARRIVAL_RPS, SERVICE_RPS, SERVERS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5, help="runs per engine (3..10)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset")
    parser.add_argument("--json", type=Path, help="also write the raw runs and medians here")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_one(args.worker, args.customers, args.seed)))
        return 0

    engines = [e for e in args.engines.split(",") if e]
    repeats = min(max(args.repeats, 3), 10)
    rho = ARRIVAL_RPS / (SERVERS * SERVICE_RPS)
    print(f"M/M/{SERVERS} at rho = {rho:g}, {args.customers:,} customers a run, {repeats} repeats,")
    print("a fresh process per run, engines interleaved")
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs,")
    print(f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    for repeat in range(repeats):
        order = engines[repeat % len(engines) :] + engines[: repeat % len(engines)]
        for engine in order:
            runs[engine].append(spawn(engine, args.customers, seed=repeat + 1))
        print(f"  repeat {repeat + 1}/{repeats} done", file=sys.stderr, flush=True)

    exact = erlang_c_wait()
    print(f"\nErlang C mean wait W_q = {exact:.4f} s; 99% t interval of the repeats' means")
    header = f"{'engine':<16}{'customers/s':>13}{'median wall s':>15}{'mean wait s':>21}"
    print(header + f"{'Erlang C in CI':>16}")
    medians = {}
    for engine in engines:
        rates = [r["customers"] / r["wall_s"] for r in runs[engine]]
        waits = [r["wait_mean_s"] for r in runs[engine]]
        medians[engine] = statistics.median(rates)
        mean = statistics.fmean(waits)
        half = T995[len(waits) - 1] * statistics.stdev(waits) / math.sqrt(len(waits))
        inside = abs(mean - exact) <= half
        wall = statistics.median(r["wall_s"] for r in runs[engine])
        print(
            f"{engine:<16}{medians[engine]:>13,.0f}{wall:>15.3f}"
            f"{mean:>12.4f} ± {half:.4f}{'yes' if inside else 'NO':>16}"
        )
    if "des" in medians:
        print("\nratios (median customers/s):")
        for other in engines:
            if other != "des":
                print(f"  des / {other:<16} {medians['des'] / medians[other]:6.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": medians}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
