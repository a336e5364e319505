"""The workbench's controls, built from the scenario and its JSON Schema.

Each control is a dotted key (the `--set` form), its kind (integer, number, duration,
choice, flag, count-or-inf), the scenario's value as its start, the schema's description,
bounds and choices, and a unit. Only the parameters that matter for tuning capacity and
mitigations are offered; the planner's and the autoscaler's only when the scenario has them.
"""

from __future__ import annotations

import math
from typing import Any

from sim.model.scenario import Client, Scenario, json_schema

# (key below a table, kind, unit, label)
POOL_KEYS = (
    ("servers", "integer", "servers", "Servers"),
    ("queue_limit", "count_or_inf", "requests", "Queue limit"),
    ("drop_expired", "flag", "", "Skip work of clients gone"),
)
CLIENT_KEYS = (
    ("timeout", "duration", "", "Client timeout"),
    ("retries", "integer", "retries", "Retries"),
    ("backoff.base", "duration", "", "Backoff base"),
    ("backoff.cap", "duration", "", "Backoff cap"),
    ("backoff.jitter", "choice", "", "Backoff jitter"),
    ("retry_budget", "number", "tokens per success", "Retry budget"),
    ("throttle_k", "number", "× accepted", "Client throttling k"),
)
PLANNER_KEYS = (
    ("target_utilization", "number", "of servers busy", "Planner target"),
    ("max_growth", "number", "× per review", "Planner max growth"),
    ("headroom", "number", "×", "Planner headroom"),
    ("max_servers", "integer", "servers", "Planner max servers"),
)
AUTOSCALE_KEYS = (
    ("min_servers", "integer", "servers", "Autoscaler min"),
    ("max_servers", "integer", "servers", "Autoscaler max"),
    ("target", "number", "", "Autoscaler target"),
    ("delay", "duration", "", "Provisioning delay"),
)
DURATION_HINT = 'a duration: "250ms", "10s", "5min" or seconds'


def controls(scenario: Scenario) -> list[dict[str, Any]]:
    """The controls for this scenario, grouped, in the order the page shows them."""
    schema = json_schema()
    definitions = schema["$defs"]
    raw = scenario.raw or {}
    found: list[dict[str, Any]] = []
    scale = scenario.scenario.scale
    for name, tier in scenario.tier_specs.items():
        if tier.kind != "pool":
            continue
        where = "service" if scenario.service_table is not None else f"tiers.{name}"
        group = "Capacity" if where == "service" else f"Tier {name}"
        for key, kind, unit, label in POOL_KEYS:
            value = getattr(tier.service, key)
            control = _control(f"{where}.{key}", kind, unit, label, group, value, raw)
            control.update(_schema_facts(definitions["Service"], key))
            if key == "servers" and scale > 1 and float(scale).is_integer():
                control["step"] = int(scale)  # servers must divide into whole simulated ones
                control["min"] = int(scale)
            found.append(control)
    client = scenario.client or Client()  # no [client]: the defaults a new one would get
    for key, kind, unit, label in CLIENT_KEYS:
        value = _attribute(client, key)
        control = _control(f"client.{key}", kind, unit, label, "Clients", value, raw)
        model = "Backoff" if key.startswith("backoff.") else "Client"
        control.update(_schema_facts(definitions[model], key.split(".")[-1]))
        found.append(control)
    for table, keys, model, group in (
        ("planner", PLANNER_KEYS, "Planner", "Planner"),
        ("autoscale", AUTOSCALE_KEYS, "Autoscale", "Autoscaler"),
    ):
        spec = getattr(scenario.capacity, table)
        if spec is None:
            continue
        for key, kind, unit, label in keys:
            value = getattr(spec, key)
            control = _control(f"capacity.{table}.{key}", kind, unit, label, group, value, raw)
            control.update(_schema_facts(definitions[model], key))
            found.append(control)
    return found


def _attribute(model: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        model = getattr(model, part)
    return model


def _control(
    key: str, kind: str, unit: str, label: str, group: str, value: Any, raw: dict
) -> dict[str, Any]:
    """A control starting from the file's spelling of the value where it has one ("10s"),
    else from the validated value (seconds, a default)."""
    spelled = _lookup(raw, key.split("."))
    start = spelled if spelled is not None else value
    if isinstance(start, float) and math.isinf(start):
        start = "inf"
    if kind == "duration" and isinstance(start, int | float):
        start = f"{start:g}s"
    return {
        "key": key,
        "kind": kind,
        "unit": unit or (DURATION_HINT if kind == "duration" else ""),
        "label": label,
        "group": group,
        "value": start,
        "in_file": spelled is not None,
    }


def _lookup(raw: dict, parts: list[str]) -> Any:
    node: Any = raw
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _schema_facts(model: dict, key: str) -> dict[str, Any]:
    """Description, bounds and choices of a key from the JSON Schema."""
    prop = model["properties"].get(key, {})
    facts: dict[str, Any] = {"help": " ".join(prop.get("description", "").split())}
    options = [prop, *prop.get("anyOf", [])]
    for option in options:
        for bound, name in (("minimum", "min"), ("maximum", "max")):
            if bound in option and isinstance(option[bound], int | float):
                facts.setdefault(name, option[bound])
        if "exclusiveMinimum" in option and isinstance(option["exclusiveMinimum"], int | float):
            facts.setdefault("min_exclusive", option["exclusiveMinimum"])
        if "enum" in option:
            facts["choices"] = option["enum"]
    return facts
