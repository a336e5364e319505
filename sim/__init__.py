"""outage-sim: simulate a service under a traffic surge, see the outage before it happens.

import sim
scenario = sim.load_scenario("scenarios/mmc.toml", overrides={"service.servers": 12})
result = sim.simulate(scenario)      # nothing written
sim.write_report(result, "reports/x")

The names below load on first use (PEP 562), so `import sim` and `outage-sim --help` stay
quick: the engines, scipy and matplotlib are imported only when a run needs them.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "OutageSimError": "sim.errors",
    "ScenarioError": "sim.errors",
    "write_report": "sim.report.writer",
    "Result": "sim.run",
    "simulate": "sim.run",
    "Scenario": "sim.model.scenario",
    "load_scenario": "sim.model.scenario",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
