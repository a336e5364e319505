"""The scenario's models: every key of a scenario file, its default, its unit and its checks.

Defaults live here, in the pydantic models, and so do the checks of single values and of one
table; `scenario.py` reads files, applies overrides, runs these models and locates errors.
The type aliases (`Duration`, `Rate`, `TimePoint`, ...) turn the units of scenario files into
seconds and per-second rates, and say in the JSON Schema what a file may hold.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from sim.model.units import (
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
MAX_SCALE = 1e9  # one simulated request for at most a billion real ones
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
    scale: Number = Field(default=1.0, ge=1e-6, le=MAX_SCALE)
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
    # Serve newest first while more than this many wait (adaptive LIFO under overload).
    lifo_over: int | None = Field(default=None, ge=0)
    # CoDel-style shedding, simplified: work that waited longer than this when a server
    # reaches it is rejected (its client may retry); no CoDel interval or drop schedule.
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
