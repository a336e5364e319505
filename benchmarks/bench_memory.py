"""Memory and scale: peak RSS against simulated requests, and the reference scenario per engine.

Part 1 runs the DES on a service at 90% load with clients that time out and retry (M/M/100,
λ = 90/s, timeout 30 s, 2 retries) for about 0.3M, 1M and 3M simulated requests, each in a
fresh process, and reports the process's peak resident set size (`getrusage` ru_maxrss)
before and after the run. The Recorder keeps per-bin counters and histograms, never a list of
requests, so the peak should stay flat as requests grow; the goal is 3M requests under 250 MB.

Part 2 runs the reference scenario (scenarios/signal-2021-01.toml) with the DES at its own
scale, and with the fluid engine at the same scale and at scale 1 (every real request), and
reports wall time, peak RSS and the main outage each found.

    python benchmarks/bench_memory.py                  # both parts (part 2 takes minutes)
    python benchmarks/bench_memory.py --skip-reference
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "scenarios" / "signal-2021-01.toml"
RATE_RPS = 90.0
SIZES = (300_000, 1_000_000, 3_000_000)


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
    from sim.scenario import load_scenario, parse_scenario

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
    }


def spawn(kind: str, argument: str, overrides: dict | None = None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, argument]
    command += ["--overrides", json.dumps(overrides or {})]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-reference", action="store_true", help="part 1 only")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, json.loads(args.overrides))))
        return 0

    results: dict[str, list] = {"requests": [], "reference": []}
    print("DES, M/M/100 at 90% load with timeouts and retries, fresh process per size")
    print(f"{'requests':>12}{'wall s':>9}{'peak before MB':>16}{'peak MB':>9}{'growth MB':>11}")
    for size in SIZES:
        r = spawn("requests", str(size))
        results["requests"].append(r)
        growth = r["peak_mb"] - r["peak_before_mb"]
        print(
            f"{r['attempts_simulated']:>12,.0f}{r['wall_s']:>9.1f}{r['peak_before_mb']:>16.1f}"
            f"{r['peak_mb']:>9.1f}{growth:>11.1f}",
            flush=True,
        )
    if not args.skip_reference:
        print(f"\nreference scenario {REFERENCE.relative_to(REPO)}")
        print(f"{'engine':<8}{'scale':>7}{'wall s':>9}{'peak MB':>9}  main outage")
        for overrides in (
            {"scenario.engine": "des"},
            {"scenario.engine": "fluid"},
            {"scenario.engine": "fluid", "scenario.scale": 1},
        ):
            r = spawn("scenario", str(REFERENCE), overrides)
            results["reference"].append(r)
            outage = (
                f"from {r['outage_start']}, {r['outage_hours']:.1f} h"
                if r["outage_start"]
                else "none"
            )
            print(
                f"{r['engine']:<8}{r['scale']:>7g}{r['wall_s']:>9.1f}{r['peak_mb']:>9.1f}  "
                f"{outage}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
