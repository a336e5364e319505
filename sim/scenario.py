"""Scenario files: TOML in, a validated and frozen `Scenario` out.

The pipeline is the one Ciw taught us: read TOML -> apply `--set` overrides -> validate with
the pydantic models below (defaults live in the models, checks in their validators) -> freeze.
Every failure is a `ScenarioError` naming the file, the dotted key and the line. Nothing in a
scenario file is evaluated; paths in it are resolved relative to the file.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from sim.errors import ScenarioError
from sim.units import (
    format_duration,
    parse_duration,
    parse_rate,
    parse_time_of_day,
    parse_timestamp,
    shown,
)

MAX_BINS = 1_000_000
MAX_SCENARIO_BYTES = 10_000_000
MAX_DURATION_S = 1000 * 86400.0  # the demand grid holds a cell a minute: keep it in memory
MAX_RATE_RPS = 1e12  # beyond any service, and still finite once multiplied out
MIN_DURATION_S = 1e-9  # shorter spans vanish in sums of times, and divide to infinity
MAX_CONTROL_STEPS = 1_000_000  # autoscaler decisions in a run, as MAX_BINS bounds the bins

_DURATION_SCHEMA = {
    "anyOf": [
        {
            "type": "string",
            "pattern": r"^\s*[0-9._]+([eE][+-]?[0-9]+)?\s*"
            r"(us|ms|s|sec|min|m|h|hr|d|day|days|w)?\s*$",
        },
        {"type": "number", "minimum": 0},
    ]
}
_RATE_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*[0-9._eE+-]+\s*[kKMGB]?\s*/\s*[a-z]+\s*$"},
        {"type": "number", "minimum": 0},
    ]
}


def _time_point(value: object, info: ValidationInfo) -> float:
    """An offset from the run's start: a duration, or a timestamp when `scenario.start` is set."""
    if isinstance(value, datetime) or (isinstance(value, str) and re.match(r"^\d{4}-", value)):
        start = (info.context or {}).get("start")
        if start is None:
            raise ValueError("a timestamp needs scenario.start to be set")
        return (parse_timestamp(value) - start).total_seconds()
    return parse_duration(value)


def _duration(value: object) -> float:
    seconds = parse_duration(value)
    if 0 < seconds < MIN_DURATION_S:
        raise ValueError(
            f"a duration is 0 or at least 1 ns (the clock's resolution); got {shown(value)}"
        )
    return seconds


def _rate(value: object) -> float:
    rate = parse_rate(value)
    if rate > MAX_RATE_RPS:
        raise ValueError(
            f"a rate above {MAX_RATE_RPS:g}/s is beyond any service; got {shown(value)}"
        )
    return rate


def _queue_limit(value: object) -> float:
    if value in ("inf", "infinite", "unbounded", math.inf):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'expected a whole number of places or "inf", got {shown(value)}')
    if value < 0:
        raise ValueError(f"the queue limit cannot be negative, got {shown(value)}")
    try:
        return float(value)
    except OverflowError:  # hundreds of digits: a queue that never fills
        return math.inf


def _finite_float(value: object) -> object:
    number = value
    if isinstance(value, str):
        try:
            number = float(value.replace("_", ""))
        except ValueError:
            return value  # pydantic says that it is not a number
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {shown(value)}")
    return value


def _counts_as_number(annotation: Any) -> bool:
    """Whether a field's type is a number (int or float), possibly optional."""
    if annotation in (int, float):
        return True
    return any(_counts_as_number(arg) for arg in getattr(annotation, "__args__", ()))


Duration = Annotated[float, BeforeValidator(_duration), WithJsonSchema(_DURATION_SCHEMA)]
Rate = Annotated[float, BeforeValidator(_rate), WithJsonSchema(_RATE_SCHEMA)]
TimePoint = Annotated[
    float,
    BeforeValidator(_time_point),
    WithJsonSchema({"anyOf": [_DURATION_SCHEMA, {"type": "string", "format": "date-time"}]}),
]
TimeOfDay = Annotated[
    float,
    BeforeValidator(parse_time_of_day),
    WithJsonSchema({"type": "string", "pattern": r"^\d{1,2}:\d{2}$"}),
]
QueueLimit = Annotated[
    float,
    BeforeValidator(_queue_limit),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0}, {"const": "inf"}]}),
]
Number = Annotated[float, BeforeValidator(_finite_float)]
Fraction = Annotated[float, BeforeValidator(_finite_float), Field(ge=0, le=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_flag_for_a_number(cls, value: object, info: ValidationInfo) -> object:
        # pydantic's lax mode reads true as 1; in a scenario file that is always a mistake.
        if isinstance(value, bool):
            annotation = cls.model_fields[info.field_name].annotation
            if annotation is not bool and _counts_as_number(annotation):
                raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


class ScenarioMeta(_Section):
    """[scenario]: naming, time frame, randomness and resolution of a run."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    title: str = ""
    description: str = ""
    start: datetime | None = None
    duration: Duration = Field(gt=0)
    seed: int = Field(default=1, ge=0, lt=2**63)
    bin: Duration = Field(default=60.0, gt=0)
    scale: Number = Field(default=1.0, ge=1e-6, le=1e9)
    engine: Literal["des", "fluid"] = "des"

    @field_validator("start", mode="before")
    @classmethod
    def _utc(cls, value: object) -> object:
        return None if value is None else parse_timestamp(value)

    @field_validator("duration")
    @classmethod
    def _not_too_long(cls, duration: float) -> float:
        if duration > MAX_DURATION_S:
            raise ValueError(
                f"a run lasts at most {MAX_DURATION_S / 86400:.0f}d; got {duration / 86400:.6g}d"
            )
        return duration

    @model_validator(mode="after")
    def _check(self) -> ScenarioMeta:
        if self.duration / self.bin > MAX_BINS:
            raise ValueError(
                f"duration / bin gives {self.duration / self.bin:.0f} bins, more than {MAX_BINS:,};"
                " use a larger bin"
            )
        return self


class Diurnal(_Section):
    """A daily cycle: rate × (1 + amplitude·cos(2π (t − peak) / 1 day))."""

    amplitude: Fraction
    peak: TimeOfDay = 72000.0


class Surge(_Section):
    """A surge multiplies the rate by `factor` or replaces it by `rate`, with optional ramps."""

    at: TimePoint
    duration: Duration | None = None
    factor: Number | None = Field(default=None, ge=0, le=1e6)
    rate: Rate | None = None
    ramp: Duration = 0.0

    @model_validator(mode="after")
    def _one_of(self) -> Surge:
        if (self.factor is None) == (self.rate is None):
            raise ValueError("a surge needs exactly one of `factor` or `rate`")
        return self


class Arrivals(_Section):
    """[arrivals]: fresh requests (first attempts), a Poisson process with a time-varying rate."""

    rate: Rate = 0.0
    diurnal: Diurnal | None = None
    surge: list[Surge] = []


class Population(_Section):
    """[population]: demand from a growing user base (downloads -> users -> requests)."""

    initial_users: Number = Field(default=0.0, ge=0, le=1e11)
    downloads: Rate | None = None
    downloads_csv: str | None = Field(default=None, min_length=1)
    surge: list[Surge] = []
    activation: Fraction = 1.0
    requests_per_user: Rate = 0.0
    requests_per_signup: Number = Field(default=0.0, ge=0, le=1e6)

    @model_validator(mode="after")
    def _source(self) -> Population:
        if (self.downloads is None) == (self.downloads_csv is None):
            raise ValueError("population needs exactly one of `downloads` or `downloads_csv`")
        return self


class ServiceTime(_Section):
    """How long one attempt occupies a server."""

    dist: Literal["exponential", "deterministic", "lognormal", "gamma", "empirical"] = "exponential"
    mean: Duration | None = Field(default=None, gt=0)
    cv: Number | None = Field(default=None, ge=1e-6, le=100)
    samples: list[Duration] | None = Field(default=None, min_length=1, max_length=1_000_000)

    @model_validator(mode="after")
    def _parameters(self) -> ServiceTime:
        if self.dist == "empirical":
            if not self.samples or sum(self.samples) <= 0:
                raise ValueError("an empirical service time needs `samples` with a positive mean")
        elif self.mean is None:
            raise ValueError(f"a {self.dist} service time needs `mean`")
        if self.dist in ("lognormal", "gamma") and self.cv is None:
            raise ValueError(f"a {self.dist} service time needs `cv` (coefficient of variation)")
        return self

    @property
    def mean_s(self) -> float:
        """Mean service time in seconds."""
        if self.dist == "empirical":
            return sum(self.samples) / len(self.samples)
        return self.mean

    @property
    def second_moment_s2(self) -> float:
        """E[S²] in s², for Pollaczek–Khinchine."""
        if self.dist == "empirical":
            return sum(s * s for s in self.samples) / len(self.samples)
        cv = {"exponential": 1.0, "deterministic": 0.0}.get(self.dist, self.cv)
        return self.mean**2 * (1 + cv**2)


class Service(_Section):
    """[service]: the server pool, its queue and its overload controls."""

    servers: int = Field(ge=1, le=10_000_000)
    time: ServiceTime
    queue_limit: QueueLimit = math.inf
    discipline: Literal["fifo", "lifo"] = "fifo"
    drop_expired: bool = False
    error_rate: Fraction = 0.0
    lifo_over: int | None = Field(default=None, ge=0)
    sojourn_limit: Duration | None = Field(default=None, gt=0)


class CapacityChange(_Section):
    """A planned change of the number of servers."""

    at: TimePoint
    servers: int = Field(ge=0, le=10_000_000)


class Planner(_Section):
    """Daily capacity review: next day's servers from a forecast of the peak load seen."""

    review_at: TimeOfDay = 32400.0
    lead_time: Duration = 43200.0
    forecast: Literal["last", "trend"] = "trend"
    trend_days: int = Field(default=3, ge=1, le=60)
    headroom: Number = Field(default=1.0, ge=1, le=100)
    target_utilization: Number = Field(default=0.8, gt=0, le=1)
    max_growth: Number = Field(default=1.5, ge=1, le=1000)
    min_servers: int = Field(default=1, ge=1)
    max_servers: int = Field(default=10_000_000, ge=1)


class Autoscale(_Section):
    """Reactive scaling on utilisation or queue, with provisioning delay and cooldown."""

    metric: Literal["utilization", "queue"] = "utilization"
    target: Number = Field(default=0.7, gt=0, le=1e9)
    interval: Duration = Field(default=60.0, gt=0)
    delay: Duration = 300.0
    cooldown: Duration = 300.0
    min_servers: int = Field(default=1, ge=1)
    max_servers: int = Field(default=10_000, ge=1)
    max_step: Number = Field(default=2.0, gt=1, le=1000)


class Capacity(_Section):
    """[capacity]: planned changes, the daily planner, the autoscaler."""

    change: list[CapacityChange] = []
    planner: Planner | None = None
    autoscale: Autoscale | None = None


class Fault(_Section):
    """[[faults]]: for a while, less capacity, slower service or failing attempts."""

    at: TimePoint
    duration: Duration = Field(gt=0)
    capacity_factor: Fraction = 1.0
    slowdown: Number = Field(default=1.0, ge=1, le=1e6)
    error_rate: Fraction = 0.0


class Backoff(_Section):
    """Delay before a retry: exponential from `base`, capped, with jitter."""

    base: Duration = 0.1
    cap: Duration = 20.0
    multiplier: Number = Field(default=2.0, ge=1, le=100)
    jitter: Literal["none", "full", "equal", "decorrelated"] = "full"


class Client(_Section):
    """[client]: timeouts, retries, backoff, retry budget and adaptive throttling."""

    timeout: Duration | None = Field(default=None, gt=0)
    retries: int = Field(default=0, ge=0, le=100)
    backoff: Backoff = Backoff()
    retry_budget: Number | None = Field(default=None, gt=0, le=1)
    throttle_k: Number | None = Field(default=None, ge=1, le=100)
    throttle_window: Duration = Field(default=120.0, gt=0)


class Slo(_Section):
    """[slo]: per-bin targets; breaches lasting `min_duration` are outages."""

    success_ratio: Fraction = 0.99
    latency_p99: Duration | None = Field(default=None, gt=0)
    min_duration: Duration = 300.0


class Scenario(_Section):
    """A whole validated scenario. Build it with `load_scenario`."""

    scenario: ScenarioMeta
    arrivals: Arrivals = Arrivals()
    population: Population | None = None
    service: Service
    capacity: Capacity = Capacity()
    faults: list[Fault] = []
    client: Client | None = None
    slo: Slo = Slo()

    _path: Path | None = PrivateAttr(default=None)
    _raw: dict = PrivateAttr(default_factory=dict)

    @property
    def has_demand(self) -> bool:
        """Whether anything ever arrives (a rate, a surge with a rate, or a population)."""
        return bool(
            self.arrivals.rate or self.population or any(s.rate for s in self.arrivals.surge)
        )

    @property
    def path(self) -> Path | None:
        """The file this scenario was read from (None when built from a dict)."""
        return self._path

    @property
    def raw(self) -> dict:
        """The scenario as run: the file's TOML table with overrides applied."""
        return self._raw

    @property
    def sha256(self) -> str:
        """Hash of the validated scenario (overrides included), for provenance."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def resolve_path(self, relative: str) -> Path:
        """A path named in the scenario, resolved relative to the scenario file."""
        base = self._path.parent if self._path else Path.cwd()
        return (base / relative).resolve()


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
    """Validate a TOML table already read; `text` (the file's source) locates errors."""
    context = {"start": None}
    meta = raw.get("scenario")
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
        raise _located(_message(first), first["loc"], file, text, overridden) from None
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
    population = scenario.population
    if population and population.downloads_csv and scenario.scenario.start is None:
        raise _located(
            "downloads_csv needs scenario.start to place its dates",
            ("population", "downloads_csv"),
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


def _list_item(items: list, part: str, key: str) -> Any:
    if not part.isdigit() or int(part) >= len(items):
        raise ScenarioError(
            f"{part!r} is not an index of a list of {len(items)}", file="--set", key=key
        )
    return items[int(part)]


def _message(error: dict) -> str:
    kind, loc = error["type"], error["loc"]
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}{_did_you_mean(loc)}"
    if kind == "missing":
        what = "table" if _field_model(loc) is not None else "key"
        return f"missing required {what} {loc[-1]!r}"
    if kind in ("model_type", "dict_type"):
        return f"expected a table ([section] or {{ key = value }}), got {shown(error['input'])}"
    if kind == "string_pattern_mismatch" and loc[-1] == "name":
        return (
            "a name is letters, digits, '.', '_' and '-', starting with a letter or digit "
            f"(it names the report folder); got {shown(error['input'])}"
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


def _did_you_mean(loc: tuple) -> str:
    model: Any = Scenario
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return ""
        model = _model_of(field.annotation)
        if model is None:
            return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return (
        f" (did you mean {close[0]!r}?)"
        if close
        else f" (known keys: {', '.join(model.model_fields)})"
    )


def _field_model(loc: tuple) -> Any:
    """The model (table) the key at `loc` holds, or None when it holds a plain value."""
    model: Any = Scenario
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return None
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
            lines.setdefault(table, number)
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


def _split_key(key: str) -> tuple:
    return tuple(part.strip().strip("\"'") for part in key.split("."))


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
    return schema
