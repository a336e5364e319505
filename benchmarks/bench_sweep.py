"""How much faster a sweep runs on two local worker processes than on one, with the kernel DES.

An 8-point sweep of `service.servers` over the M/M/c scenario (scenarios/mmc.toml, its
duration set with --duration), timed end to end (the pool's process start-up included) with 1
and then 2 workers. Prints both wall times, the workers' CPU time (so the cores they actually
obtained), the speed-up and the load average before and after, since other processes take
cores too. The goal is a speed-up of at least 1.6 on an otherwise idle two-core machine. The
two runs' rows must be identical.

The DES is the compiled request kernel: each spawned worker pays numba's cached start-up
(loading the compiled kernel) once; it is measured on its own first, in a fresh process:
importing sim and a first one-minute run, against a second one-minute run in the same
process.

Runs default to 6 days (about 2 s each on the kernel): a worker's start-up (about 2.2 s)
then weighs little, where at 2 days (0.7 s a run) it holds the speed-up near 1.5.

    python benchmarks/bench_sweep.py [--duration 6d] [--reps 2] [--scenario scenarios/mmc.toml]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

start_s = time.perf_counter()

import sim.run  # noqa: E402 - the start-up measurement times these imports
from sim.experiments.sweep import sweep  # noqa: E402
from sim.model.scenario import load_scenario  # noqa: E402

import_s = time.perf_counter() - start_s

REPO = Path(__file__).resolve().parent.parent
POINTS = list(range(10, 18))  # 8 values of service.servers


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_sweep(
    scenario: Path, duration: str, reps: int, workers: int
) -> tuple[float, float, list]:
    """Wall seconds of one sweep (pool start-up included), its workers' CPU seconds, its rows."""
    cpu_start = _children_cpu_s()
    start = time.perf_counter()
    rows = sweep(
        scenario,
        {"service.servers": POINTS},
        reps,
        workers=workers,
        progress=False,
        overrides={"scenario.duration": duration},
    )
    wall_s = time.perf_counter() - start
    return wall_s, _children_cpu_s() - cpu_start, rows


def start_up(scenario: Path) -> dict:
    """The worker side of the start-up measurement (a fresh process): imports, then a first
    and a second one-minute run."""
    one_minute = load_scenario(scenario, overrides={"scenario.duration": "1min"})
    start = time.perf_counter()
    sim.run.simulate(one_minute)
    first = time.perf_counter()
    sim.run.simulate(one_minute)
    second = time.perf_counter()
    return {"import_s": import_s, "first_s": first - start, "second_s": second - first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=REPO / "scenarios" / "mmc.toml")
    parser.add_argument("--duration", default="6d", help="scenario.duration of each run")
    parser.add_argument("--reps", type=int, default=2, help="replications per point")
    parser.add_argument("--start-up", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.start_up:
        print(json.dumps(start_up(args.scenario)))
        return

    command = [sys.executable, str(Path(__file__).resolve()), "--start-up"]
    done = subprocess.run([*command, "--scenario", str(args.scenario)], capture_output=True,
                          text=True, check=True)  # fmt: skip
    boot = json.loads(done.stdout.strip().splitlines()[-1])

    load_before = os.getloadavg()
    one_s, one_cpu_s, one_rows = timed_sweep(args.scenario, args.duration, args.reps, 1)
    two_s, two_cpu_s, two_rows = timed_sweep(args.scenario, args.duration, args.reps, 2)
    load_after = os.getloadavg()
    assert one_rows == two_rows, "1 and 2 workers gave different rows"
    failed = sum(1 for row in one_rows if row["error"])
    runs = len(one_rows)
    print(f"sweep: {len(POINTS)} points x {args.reps} reps = {runs} runs of {args.duration}")
    # Cores obtained = worker CPU seconds / wall seconds: below the worker count when other
    # processes compete for the cores.
    print(
        f"  1 worker : {one_s:7.2f} s wall, {one_cpu_s:6.2f} s CPU ({one_cpu_s / one_s:.2f} cores)"
    )
    print(
        f"  2 workers: {two_s:7.2f} s wall, {two_cpu_s:6.2f} s CPU ({two_cpu_s / two_s:.2f} cores)"
    )
    print(f"  speed-up : {one_s / two_s:7.2f}x (goal >= 1.6x)")
    print(
        f"  a worker's start-up (fresh process): imports {boot['import_s']:.2f} s, first "
        f"one-minute run {boot['first_s']:.2f} s (numba's cache loaded), second "
        f"{boot['second_s']:.3f} s"
    )
    print(f"  failed runs: {failed}; CPUs: {os.cpu_count()}")
    print(
        "  load average (1, 5, 15 min) before: "
        + ", ".join(f"{v:.2f}" for v in load_before)
        + "; after: "
        + ", ".join(f"{v:.2f}" for v in load_after)
    )


if __name__ == "__main__":
    main()
