"""Scenario files: TOML in, a validated and frozen `Scenario` out.

The pipeline is the one Ciw taught us: read TOML -> apply `--set` overrides -> validate with
the pydantic models of `fields.py` (defaults live in the models, checks in their
validators) -> freeze.
Every failure is a `ScenarioError` naming the file, the dotted key and the line. Nothing in a
scenario file is evaluated; paths in it are resolved relative to the file. (Over 400 lines:
loading, overrides, cross-key checks and key location belong together, each check needing the
location of the key it blames.)
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)

from sim.errors import ScenarioError
from sim.model.fields import (  # noqa: F401 - the models are part of this API
    MAX_BINS,
    MAX_CONTROL_STEPS,
    MAX_DURATION_S,
    MAX_RATE_RPS,
    MAX_SCENARIO_BYTES,
    MIN_DURATION_S,
    Arrivals,
    Autoscale,
    Backoff,
    Call,
    CallSpec,
    Capacity,
    CapacityChange,
    Client,
    Diurnal,
    Fault,
    KeyedError,
    Planner,
    Population,
    Provider,
    Route,
    RouteSpec,
    Scenario,
    ScenarioMeta,
    Service,
    ServiceTime,
    Slo,
    Surge,
    Tier,
)
from sim.model.units import (
    format_duration,
    parse_timestamp,
    shown,
)

# ---------------------------------------------------------------------------------------------
# Loading: file -> TOML -> overrides -> validation, with errors located by key and line.


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read, override and validate a scenario file; raise ScenarioError on any problem."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ScenarioError("is a folder, not a scenario file", file=path)
        if path.exists() and not path.is_file():  # a FIFO would block, /dev/zero never end
            raise ScenarioError("is not a regular file", file=path)
        with path.open("rb") as handle:
            data = handle.read(MAX_SCENARIO_BYTES + 1)
        if len(data) > MAX_SCENARIO_BYTES:
            raise ScenarioError(f"is over {MAX_SCENARIO_BYTES:,} bytes: not a scenario", file=path)
        text = data.decode("utf-8-sig")  # a byte-order mark is not TOML
    except FileNotFoundError:
        raise ScenarioError("no such scenario file", file=path) from None
    except (OSError, ValueError) as err:  # ValueError: not UTF-8, or a NUL in the name
        raise ScenarioError(f"cannot read the file: {err}", file=path) from None
    return parse_scenario(text, file=path, overrides=overrides)


def parse_scenario(
    text: str, *, file: str | Path = "<scenario>", overrides: dict[str, Any] | None = None
) -> Scenario:
    """Validate scenario TOML text (see `load_scenario`)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        match = re.search(r"\(at line (\d+), column \d+\)", str(err))
        # "at end of document": the parser gave up on the last line (an unclosed string...)
        line = int(match.group(1)) if match else max(1, len(text.splitlines()))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(err))
        raise ScenarioError(f"not valid TOML: {message}", file=file, line=line) from None
    except RecursionError:
        raise ScenarioError(
            "not valid TOML: arrays or inline tables nested too deeply for a scenario",
            file=file,
            line=_deepest_line(text),
        ) from None
    overridden = set()
    for key, value in (overrides or {}).items():
        _apply_override(raw, key, value)
        overridden.add(key)
    return validate_scenario(raw, file=file, text=text, overridden=overridden)


def _deepest_line(text: str) -> int:
    """The line where brackets and braces first nest deepest (strings not told apart)."""
    depth, deepest, where = 0, -1, 1
    for number, line in enumerate(text.splitlines(), start=1):
        for char in line:
            depth += (char in "[{") - (char in "]}")
            if depth > deepest:
                deepest, where = depth, number
    return where


def validate_scenario(
    raw: dict,
    *,
    file: str | Path = "<scenario>",
    text: str = "",
    overridden: set[str] = frozenset(),
) -> Scenario:
    """Validate a TOML table already read; `text` (the file's source) locates errors. A
    `[scenario]` without `name` takes the file's name without its suffix."""
    context = {"start": None}
    meta = raw.get("scenario")
    if isinstance(meta, dict) and "name" not in meta and file != "<scenario>":
        # In the table as run too, so scenario.toml beside the report names its run.
        meta = {"name": Path(file).stem, **meta}
        raw = {**raw, "scenario": meta}
    if isinstance(meta, dict) and meta.get("start") is not None:
        try:
            context["start"] = parse_timestamp(meta["start"])
        except ValueError as err:
            raise _located(str(err), ("scenario", "start"), file, text, overridden) from None
    try:
        scenario = Scenario.model_validate(raw, context=context)
    except ValidationError as err:
        # An unknown key often explains a missing one (a typo): report it first.
        first = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        loc, kind = _error_loc(first)
        raise _located(_message(first, loc, kind), loc, file, text, overridden) from None
    if not scenario.has_demand:
        raise _located(
            "no demand: set a rate above 0 or add a [population]",
            ("arrivals", "rate"),
            file,
            text,
            overridden,
        )
    scenario._path = Path(file) if file != "<scenario>" else None
    scenario._raw = raw
    if scenario.population and scenario.population.downloads_csv:
        try:
            csv_path = scenario.resolve_path(scenario.population.downloads_csv)
            found = csv_path.is_file()
        except (OSError, ValueError) as err:  # a NUL byte, a name too long for the system
            raise _located(
                f"not a usable path: {err}", ("population", "downloads_csv"), file, text, overridden
            ) from None
        if not found:
            what = "not a regular file" if csv_path.exists() else "no such file"
            raise _located(
                f"{what}: {csv_path}", ("population", "downloads_csv"), file, text, overridden
            )
    _check_across_keys(scenario, file, text, overridden)
    return scenario


def _check_across_keys(scenario: Scenario, file: str | Path, text: str, overridden: set[str]):
    """Checks that involve several keys, each blaming the key to change."""
    meta = scenario.scenario
    if meta.bin > 1e6 * meta.duration:  # the run would have no bin at all to count in
        raise _located(
            f"a bin of {meta.bin:.3g} s is over a million times the run "
            f"({format_duration(meta.duration)}); use a bin no longer than the run",
            ("scenario", "bin"),
            file,
            text,
            overridden,
        )
    for index, fault in enumerate(scenario.faults):
        if fault.at < 0:  # a timestamp before scenario.start
            raise _located(
                f"a fault cannot start before the run ({format_duration(-fault.at)} before its"
                " start); start it at 0 with a shorter duration",
                ("faults", index, "at"),
                file,
                text,
                overridden,
            )
    autoscale = scenario.capacity.autoscale
    if autoscale is not None:
        steps = scenario.scenario.duration / autoscale.interval
        if steps > MAX_CONTROL_STEPS:
            raise _located(
                f"an autoscaler deciding every {autoscale.interval:g} s decides {steps:.3g} times"
                f" in the run, more than {MAX_CONTROL_STEPS:,}; use a longer interval",
                ("capacity", "autoscale", "interval"),
                file,
                text,
                overridden,
            )
    _check_scale(scenario, file, text, overridden)
    population = scenario.population
    if population and population.downloads_csv and scenario.scenario.start is None:
        raise _located(
            "downloads_csv needs scenario.start to place its dates",
            ("population", "downloads_csv"),
            file,
            text,
            overridden,
        )


def scaled_counts(scenario: Scenario) -> list[tuple[tuple, float]]:
    """The counts of a scenario that `scale` divides into whole simulated ones: every pool's
    servers, finite queue limit and `lifo_over`, and every planned change's servers.

    Bounds of the planner and the autoscaler are not among them: they limit decisions that
    the engines round to whole simulated servers anyway, as they round a fault's share. A
    provider's rate limit and burst are rates and a bucket's level: they need not be whole.
    """
    counts: list[tuple[tuple, float]] = []
    for name, tier in scenario.tier_specs.items():
        if tier.kind != "pool":
            continue
        where = ("service",) if scenario.service_table is not None else ("tiers", name)
        service = tier.service
        counts.append(((*where, "servers"), float(service.servers)))
        if math.isfinite(service.queue_limit):
            counts.append(((*where, "queue_limit"), service.queue_limit))
        if service.lifo_over is not None:
            counts.append(((*where, "lifo_over"), float(service.lifo_over)))
    for index, change in enumerate(scenario.capacity.change):
        counts.append((("capacity", "change", index, "servers"), float(change.servers)))
    return counts


def _divides(count: float, scale: float) -> bool:
    simulated = count / scale
    return abs(simulated - round(simulated)) <= 1e-9 * max(1.0, simulated)


def working_scales(counts: list[float], scale: float) -> tuple[float | None, float | None]:
    """The nearest scales at or below and at or above `scale` that divide every count.

    Those scales are G/m for whole m, G the greatest common divisor of the counts (zero
    divides by anything): (scale, scale) when `scale` works, None where none is left.
    """
    whole = [int(c) for c in counts if c > 0]
    if not whole:
        return scale, scale
    if all(_divides(c, scale) for c in whole):
        return scale, scale
    divisor = math.gcd(*whole)
    fewer = math.floor(divisor / scale)  # m for the scale just above
    return divisor / (fewer + 1), (divisor / fewer if fewer >= 1 else None)


def whole_scales(counts: list[float], scale: float) -> list[float]:
    """The nearest whole scales below and above `scale` that divide every count: the
    divisors of the counts' greatest common divisor (at most a few thousand to look at)."""
    divisor = math.gcd(*(int(c) for c in counts if c > 0)) if any(c > 0 for c in counts) else 1
    divisors = set()
    for small in range(1, math.isqrt(divisor) + 1):
        if divisor % small == 0:
            divisors |= {small, divisor // small}
    below = [d for d in divisors if d < scale]
    above = [d for d in divisors if d > scale]
    return ([float(max(below))] if below else []) + ([float(min(above))] if above else [])


def _check_scale(scenario: Scenario, file: str | Path, text: str, overridden: set[str]) -> None:
    """Refuse a scale at which a count would not be a whole number of simulated units."""
    scale = scenario.scenario.scale
    counts = scaled_counts(scenario)
    for loc, count in counts:
        if _divides(count, scale):
            continue
        whole_counts = [c for _, c in counts]
        below, above = working_scales(whole_counts, scale)
        nearest = " and ".join(f"{s:.10g}" for s in (below, above) if s is not None)
        whole = [s for s in whole_scales(whole_counts, scale) if s not in (below, above)]
        if whole:
            nearest += f" (whole: {' and '.join(f'{s:g}' for s in whole)})"
        key = ".".join(str(part) for part in loc)
        where = locate_key(text, loc)
        raise _located(
            f"at scale {scale:g}, {key} = {count:,.0f}{f' (line {where})' if where else ''}"
            f" would be {count / scale:,.4g} simulated, not a whole number; the nearest scales"
            f" that divide every server count, queue limit and lifo_over are {nearest}",
            ("scenario", "scale"),
            file,
            text,
            overridden,
        )


def parse_override(assignment: str) -> tuple[str, Any]:
    """Split 'service.servers=12' into its dotted key and TOML value (bare words are strings)."""
    key, sep, value = assignment.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][\w-]*(\.[\w-]+)*", key):
        raise ScenarioError(
            f"an override is KEY=VALUE with a dotted key, got {shown(assignment)}", file="--set"
        )
    try:
        table = tomllib.loads(f"value = {value.strip()}")
    except (tomllib.TOMLDecodeError, RecursionError):
        table = {}
    # One value only: "12\nother = 1" is the string it looks like, not 12 and a stray key.
    parsed = table["value"] if list(table) == ["value"] else value.strip()
    return key, parsed


def _apply_override(raw: dict, key: str, value: Any) -> None:
    node: Any = raw
    parts = key.split(".")
    _check_tier_override(raw, parts, key)
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, key)
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict | list):
            where = ".".join(parts[: depth + 1])
            raise ScenarioError(f"{where} is a value, not a table", file="--set", key=key)
        node = child
    if isinstance(node, list):
        raise ScenarioError("cannot replace a whole list item", file="--set", key=key)
    node[parts[-1]] = value


def _check_tier_override(raw: dict, parts: list[str], key: str) -> None:
    """An override of a tier names a tier of the file, in the file's spelling of the pools."""
    tiers = raw.get("tiers")
    if parts[0] == "service" and len(parts) > 1 and tiers and "service" not in raw:
        raise ScenarioError(
            "this scenario's pools are [tiers.NAME]: set tiers.NAME.KEY"
            f" (tiers: {', '.join(map(str, tiers))})",
            file="--set",
            key=key,
        )
    if parts[0] != "tiers" or len(parts) < 3:
        return
    if not isinstance(tiers, dict) or not tiers:
        spelling = "its pool is [service]: set service.KEY" if "service" in raw else "no [tiers]"
        raise ScenarioError(f"this scenario has no [tiers]; {spelling}", file="--set", key=key)
    if parts[1] not in tiers:
        known = [str(name) for name in tiers]
        close = difflib.get_close_matches(parts[1], known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"tiers: {', '.join(known)}"
        raise ScenarioError(f"unknown tier {parts[1]!r} ({hint})", file="--set", key=key)


def _list_item(items: list, part: str, key: str) -> Any:
    if not part.isdigit() or int(part) >= len(items):
        raise ScenarioError(
            f"{part!r} is not an index of a list of {len(items)}", file="--set", key=key
        )
    return items[int(part)]


def _error_loc(error: dict) -> tuple[tuple, str | None]:
    """The key path an error blames, and the kind of tier ("pool" or "provider") it lies in.

    A check that names its key (KeyedError) extends the path of the model it ran in; the tag
    that the tiers' union puts after a tier's name is no key of the file.
    """
    loc = tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, KeyedError):
        loc = (*loc, *cause.loc)
    kind = None
    if len(loc) >= 3 and loc[0] == "tiers" and loc[2] in ("pool", "provider"):
        kind, loc = loc[2], (*loc[:2], *loc[3:])
    return loc, kind


def _message(error: dict, loc: tuple | None = None, tier_kind: str | None = None) -> str:
    kind = error["type"]
    loc = tuple(error["loc"]) if loc is None else loc
    if kind == "extra_forbidden" and tier_kind == "provider" and loc[-1] in Service.model_fields:
        return (
            f"a provider (a tier with rate_limit) has no {loc[-1]!r}: it is not a pool of ours;"
            " it takes rate_limit, burst and time (drop rate_limit to make it a pool)"
        )
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}{_did_you_mean(loc, tier_kind)}"
    if kind == "missing":
        what = "table" if _field_model(loc, tier_kind) is not None else "key"
        hint = " (a pool needs servers; a provider has rate_limit)" if tier_kind == "pool" else ""
        return f"missing required {what} {loc[-1]!r}{hint if loc[-1] == 'servers' else ''}"
    if kind in ("model_type", "dict_type"):
        return f"expected a table ([section] or {{ key = value }}), got {shown(error['input'])}"
    if kind == "string_pattern_mismatch" and loc[-1] == "name" and loc[0] == "routes":
        return (
            "a route name is letters, digits, '_' and '-', starting with a letter or digit "
            f"(it prefixes timeseries columns, ROUTE.success_ratio); got {shown(error['input'])}"
        )
    if kind == "string_pattern_mismatch" and loc[-1] == "name":
        return (
            "a name is letters, digits, '.', '_' and '-', starting with a letter or digit "
            f"(it names the report folder; without one, the file's name is taken); got "
            f"{shown(error['input'])}"
        )
    message = error["msg"]
    message = re.sub(r"^(Value error|Assertion failed), ", "", message)
    if kind == "literal_error" and isinstance(error.get("input"), str):
        allowed = re.findall(r"'([^']+)'", message)
        close = difflib.get_close_matches(error["input"], allowed, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    if "input" in error and kind not in ("value_error", "model_type", "dict_type"):
        message += f"; got {shown(error['input'])}"
    return message


def _did_you_mean(loc: tuple, tier_kind: str | None = None) -> str:
    model = _field_model(loc[:-1], tier_kind)
    if model is None:
        return ""
    keys = list(_keys(model))
    # A tier's kind follows from rate_limit: a typo may be of the other kind's key.
    either = {*_keys(Service), *_keys(Provider)} if tier_kind else keys
    close = difflib.get_close_matches(str(loc[-1]), sorted(either), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(keys)})"


def _keys(model: Any) -> dict[str, Any]:
    """A model's fields by the key a file spells them with (its alias, if any)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _field_model(loc: tuple, tier_kind: str | None = None) -> Any:
    """The model (table) the key at `loc` holds, or None when it holds a plain value."""
    model: Any = Scenario
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if isinstance(part, int):
            continue
        field = _keys(model).get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return None
        if model is Scenario and part == "tiers":
            if not parts:
                return None  # the table of tiers holds tables by name, not keys
            parts.pop(0)  # the tier's name
            model = Provider if tier_kind == "provider" else Service
            continue
        model = _model_of(field.annotation)
        if model is None:
            return None
    return model


def _model_of(annotation: Any) -> Any:

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _located(
    message: str, loc: tuple, file: str | Path, text: str, overridden: set[str]
) -> ScenarioError:
    key = ".".join(str(p) for p in loc)
    for override in overridden:
        if key == override or key.startswith(override + ".") or override.startswith(key + "."):
            return ScenarioError(message, file="--set", key=key)
    # A key that is nowhere in the text (a missing table) is blamed on the file's first line.
    return ScenarioError(message, file=file, key=key, line=locate_key(text, loc) or 1)


# Possessive quantifiers (*+, ++) keep these linear in the line's length: a long line of
# spaces must not take quadratic time. Names keep their spaces; _split_key strips them.
_TABLE_RE = re.compile(r"^\s*+\[([^\[\]]++)\]\s*+(#.*)?$")
_ARRAY_TABLE_RE = re.compile(r"^\s*+\[\[([^\[\]]++)\]\]\s*+(#.*)?$")
_KEY_RE = re.compile(r"^\s*+([A-Za-z0-9_\-.\"' \t]++)=")
_INLINE_KEY_RE = re.compile(r"[{,]\s*+([A-Za-z0-9_-]++)\s*+=")


def locate_key(text: str, loc: tuple) -> int | None:
    """The 1-based line where a key path is set in TOML text (else its nearest enclosing key)."""
    lines: dict[tuple, int] = {}
    table: tuple = ()
    array_counts: dict[tuple, int] = {}
    in_multiline = False
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            in_multiline = line.count('"""') % 2 == 0 and line.count("'''") % 2 == 0
            continue
        if match := _ARRAY_TABLE_RE.match(line):
            path = _split_key(match.group(1))
            index = array_counts.get(path, 0)
            array_counts[path] = index + 1
            table = (*path, index)
            lines.setdefault(path, number)
            lines[table] = number
            continue
        if match := _TABLE_RE.match(line):
            table = _split_key(match.group(1))
            # [tiers.api] also places the table `tiers`, which it defines implicitly.
            for depth in range(1, len(table) + 1):
                lines.setdefault(table[:depth], number)
            continue
        if match := _KEY_RE.match(line):
            path = (*table, *_split_key(match.group(1)))
            lines.setdefault(path, number)
            rest = line[match.end() :]
            for inner in _INLINE_KEY_RE.finditer(rest):
                lines.setdefault((*path, inner.group(1)), number)
            if rest.count('"""') % 2 == 1 or rest.count("'''") % 2 == 1:
                in_multiline = True
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


_KEY_PART_RE = re.compile(r"\s*+(?:\"[^\"]*+\"|'[^']*+')\s*+|[^.]++")


def _split_key(key: str) -> tuple:
    """'tiers."d.b" . x' -> ('tiers', 'd.b', 'x'): dots inside quotes do not split."""
    return tuple(part.strip().strip("\"'") for part in _KEY_PART_RE.findall(key))


_BOUND_KEYWORDS = {
    "ge": "minimum",
    "gt": "exclusiveMinimum",
    "le": "maximum",
    "lt": "exclusiveMaximum",
}


def _standard_schema(node: Any) -> Any:
    """pydantic leaves ge/gt/le/lt on types with a custom schema and writes inf as a float:
    rename them to JSON Schema keywords and write inf as the string a scenario uses."""
    if isinstance(node, dict):
        return {_BOUND_KEYWORDS.get(k, k): _standard_schema(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_standard_schema(v) for v in node]
    if isinstance(node, float) and math.isinf(node):
        return "inf"
    return node


def json_schema() -> dict:
    """The JSON Schema of scenario files (strict JSON: no Infinity)."""
    schema = _standard_schema(Scenario.model_json_schema())
    schema["title"] = "outage-sim scenario"
    # A file without scenario.name takes its file name (validate_scenario): not required.
    meta = schema["$defs"]["ScenarioMeta"]
    meta["required"] = [key for key in meta.get("required", []) if key != "name"]
    # The pools are [service] or [tiers.NAME], never both (the models check the rest).
    schema["oneOf"] = [{"required": ["service"]}, {"required": ["tiers"]}]
    return schema
