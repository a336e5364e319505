"""Memory and scale: peak RSS against simulated requests, and the reference scenario per scale.

Part 1 runs the DES (the compiled kernel) on a service at 90% load with clients that time out
and retry (M/M/100, λ = 90/s, timeout 30 s, 2 retries) for about 0.3M, 1M and 3M simulated
requests, each in a fresh process, and reports the process's peak resident set size
(`getrusage` ru_maxrss of the worker process) before and after the run. The Recorder keeps
per-bin counters and histograms, never a list of requests, so the peak should stay flat as
requests grow; the goal is 3M requests under 250 MB.

Part 2 runs the reference scenario (scenarios/signal-2021-01.toml, 19 days) with the DES at
`scenario.scale` 100 for a tenth of the month and for all of it (goal: the month in at most
60 s of simulation, its peak RSS within 1.5x of the tenth's), then the month at each
`--scales` (default 200 and 500) and with the fluid engine at scale 1, each in a fresh
process: wall time of `sim.simulate` (start-up excluded; the process's whole life beside it),
simulated attempts per second, peak RSS, the main outage, and whether the scale warning
(DESIGN: a scale that changes the queue regime) fired.

    python benchmarks/bench_memory.py                  # both parts (part 2: ~3 min)
    python benchmarks/bench_memory.py --skip-reference
    python benchmarks/bench_memory.py --skip-requests --scales 200,400,500
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

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "scenarios" / "signal-2021-01.toml"
RATE_RPS = 90.0
SIZES = (300_000, 1_000_000, 3_000_000)
REFERENCE_SCALE = 100
SCALE_WARNING = "lower scenario.scale"  # how the queue-regime warning ends


def _peak_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def load_text(requests: int) -> str:
    """A service at 90% load with timeouts and retries, offering about `requests` requests."""
    return f"""\
[scenario]
name = "bench-memory"
duration = {requests / RATE_RPS!r}
bin = "1min"

[arrivals]
rate = {RATE_RPS!r}

[service]
servers = 100
time = {{ dist = "exponential", mean = "1s" }}

[client]
timeout = "30s"
retries = 2
"""


def worker(kind: str, argument: str, overrides: dict) -> dict:
    """One measured run in this process (the subprocess side)."""
    import sim
    import sim.run  # noqa: F401 - the engines and numba load before "peak before"
    from sim.model.scenario import load_scenario, parse_scenario

    if kind == "requests":
        scenario = parse_scenario(load_text(int(argument)), overrides=overrides)
    else:
        scenario = load_scenario(argument, overrides=overrides)
    before_mb = _peak_mb()
    start = time.perf_counter()
    summary = sim.simulate(scenario).summary
    wall_s = time.perf_counter() - start
    main = max(summary["outages"], key=lambda o: o["duration_s"], default=None)
    return {
        "engine": summary["engine"],
        "scale": summary["scale"],
        "attempts_simulated": summary["requests"]["attempts"] / summary["scale"],
        "wall_s": wall_s,
        "peak_before_mb": before_mb,
        "peak_mb": _peak_mb(),
        "outage_start": main["start"] if main else None,
        "outage_hours": main["duration_s"] / 3600 if main else None,
        "duration_s": summary["duration_s"],
        "scale_warning": any(SCALE_WARNING in w for w in summary["warnings"]),
    }


def spawn(kind: str, argument: str, overrides: dict | None = None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, argument]
    command += ["--overrides", json.dumps(overrides or {})]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


def _reference_runs(scales: list[float]) -> list[tuple[str, dict]]:
    """The reference runs of part 2: a label and the overrides of each."""
    tenth = f"{19 * 86400 / 10:g}s"
    runs = [
        (
            f"des, scale {REFERENCE_SCALE}, a tenth",
            {"scenario.scale": REFERENCE_SCALE, "scenario.duration": tenth},
        ),
        (f"des, scale {REFERENCE_SCALE}", {"scenario.scale": REFERENCE_SCALE}),
    ]
    runs += [(f"des, scale {s:g}", {"scenario.scale": s}) for s in scales]
    runs.append(("fluid, scale 1", {"scenario.engine": "fluid", "scenario.scale": 1}))
    for _, overrides in runs:
        overrides.setdefault("scenario.engine", "des")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-reference", action="store_true", help="part 1 only")
    parser.add_argument("--skip-requests", action="store_true", help="part 2 only")
    parser.add_argument("--scales", default="200,500", help="more scales for the month")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, json.loads(args.overrides))))
        return 0

    results: dict[str, list] = {"requests": [], "reference": []}
    print(
        f"{os.cpu_count()} CPUs, load average (1, 5, 15 min) at start: "
        + ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        flush=True,
    )
    if not args.skip_requests:
        print("DES (kernel), M/M/100 at 90% load with timeouts and retries, a process per size")
        print(f"{'requests':>12}{'wall s':>9}{'peak before MB':>16}{'peak MB':>9}{'growth MB':>11}")
        for size in SIZES:
            r = spawn("requests", str(size))
            results["requests"].append(r)
            growth = r["peak_mb"] - r["peak_before_mb"]
            print(
                f"{r['attempts_simulated']:>12,.0f}{r['wall_s']:>9.1f}"
                f"{r['peak_before_mb']:>16.1f}{r['peak_mb']:>9.1f}{growth:>11.1f}",
                flush=True,
            )
    if not args.skip_reference:
        scales = [float(s) for s in args.scales.split(",") if s]
        print(f"\nreference scenario {REFERENCE.relative_to(REPO)}, a fresh process per run")
        print(
            f"{'run':<26}{'days':>5}{'wall s':>8}{'process s':>10}{'attempts':>17}"
            f"{'attempts/s':>12}{'peak MB':>9}  scale warning, main outage"
        )
        for label, overrides in _reference_runs(scales):
            r = spawn("scenario", str(REFERENCE), overrides)
            r["label"] = label
            results["reference"].append(r)
            outage = (
                f"from {r['outage_start']}, {r['outage_hours']:.1f} h"
                if r["outage_start"]
                else "none"
            )
            # The fluid engine steps expected counts: attempts per second mean nothing there.
            des = r["engine"] == "des"
            rate = f"{r['attempts_simulated'] / r['wall_s']:,.0f}" if des else "-"
            print(
                f"{label:<26}{r['duration_s'] / 86400:>5.1f}{r['wall_s']:>8.1f}"
                f"{r['process_s']:>10.1f}{r['attempts_simulated']:>17,.0f}{rate:>12}"
                f"{r['peak_mb']:>9.1f}  "
                f"{'WARNS' if r['scale_warning'] else 'silent'}, {outage}",
                flush=True,
            )
        tenth, month = results["reference"][:2]
        print(
            f"\nscale {REFERENCE_SCALE}: the month in {month['wall_s']:.1f} s (goal <= 60 s); "
            f"peak RSS {month['peak_mb']:.0f} MB against {tenth['peak_mb']:.0f} MB for a tenth "
            f"of it: {month['peak_mb'] / tenth['peak_mb']:.2f}x (goal <= 1.5x)"
        )
    print("load average (1, 5, 15 min) at end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
