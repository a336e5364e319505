"""outage-sim: simulate a service under a traffic surge, see the outage before it happens.

import sim
scenario = sim.load_scenario("scenarios/mmc.toml", overrides={"service.servers": 12})
result = sim.simulate(scenario)      # nothing written
sim.write_report(result, "reports/x")
"""

__version__ = "0.1.0"

from sim.errors import OutageSimError, ScenarioError  # noqa: E402
from sim.report import write_report  # noqa: E402
from sim.run import Result, simulate  # noqa: E402
from sim.scenario import Scenario, load_scenario  # noqa: E402

__all__ = [
    "OutageSimError",
    "Result",
    "Scenario",
    "ScenarioError",
    "__version__",
    "load_scenario",
    "simulate",
    "write_report",
]
