"""How much faster a sweep runs on two local worker processes than on one.

An 8-point sweep of `service.servers` over the M/M/c scenario (scenarios/mmc.toml, shortened
with --duration), timed end to end (process start-up included) with 1 and then 2 workers.
Prints both wall times, the workers' CPU time (so the cores they actually obtained), the
speed-up and the load average before and after, since other processes take cores too. The
goal is a speed-up of at least 1.6 on an otherwise idle two-core machine. The two runs' rows
must be identical.

    python benchmarks/bench_sweep.py [--duration 6h] [--reps 2] [--scenario scenarios/mmc.toml]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

from sim.sweep import sweep

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=REPO / "scenarios" / "mmc.toml")
    parser.add_argument("--duration", default="6h", help="scenario.duration of each run")
    parser.add_argument("--reps", type=int, default=2, help="replications per point")
    args = parser.parse_args()

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
    print(f"  failed runs: {failed}; CPUs: {os.cpu_count()}")
    print(
        "  load average (1, 5, 15 min) before: "
        + ", ".join(f"{v:.2f}" for v in load_before)
        + "; after: "
        + ", ".join(f"{v:.2f}" for v in load_after)
    )


if __name__ == "__main__":
    main()
