"""A service graph's cost: a three-tier sync chain against one tier of the same demand.

Issue 12 asks that a three-tier chain cost at most about three times a one-tier run of the
same demand. Both scenarios take 9 requests a second for 6 simulated hours with clients that
time out and retry; the chain's every request holds a server at each of its three tiers (a
sync chain, each call with its own timeout and retry) so it has three times the attempts
and completions of the one tier (twice its events: a completion at one tier sends the next
call in the same step). Both run in this process, in turns (`--repeats`),
after a short warm-up run of each; the best wall time of each is reported, and their ratio.

    python benchmarks/bench_graph.py              # 5 repeats
"""

from __future__ import annotations

import argparse
import os
import time

import sim
from sim.model.scenario import parse_scenario

HEAD = """\
[scenario]
name = "graph-cost"
duration = "6h"
seed = 1
bin = "1min"

[arrivals]
rate = "9/s"

[client]
timeout = "30s"
retries = 2
"""
ONE_TIER = (
    HEAD
    + """
[service]
servers = 10
time = { dist = "exponential", mean = "1s" }
"""
)
THREE_TIERS = (
    HEAD
    + """
[tiers.a]
servers = 30
time = { dist = "exponential", mean = "1s" }

[tiers.b]
servers = 30
time = { dist = "exponential", mean = "1s" }

[tiers.c]
servers = 30
time = { dist = "exponential", mean = "1s" }

[[routes]]
name = "chain"
share = 1
calls = [
    "a",
    { tier = "b", timeout = "20s", retries = 1 },
    { tier = "c", timeout = "10s", retries = 1 },
]
"""
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"load average at start {os.getloadavg()[0]:.2f}")
    cases = {"one tier": ONE_TIER, "three-tier sync chain": THREE_TIERS}
    for text in cases.values():
        sim.simulate(parse_scenario(text.replace('"6h"', '"10min"')))  # warm
    best: dict[str, float] = {}
    events: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, text in cases.items():
            scenario = parse_scenario(text)
            start = time.perf_counter()
            summary = sim.simulate(scenario).summary
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
            events[name] = summary["events"]
    for name in cases:
        print(f"{name:24s} best wall {best[name]:.3f} s, {events[name]:,} events")
    ratio = best["three-tier sync chain"] / best["one tier"]
    print(f"three tiers / one tier: {ratio:.2f}x (goal: about 3x at most)")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
