"""The scenario's models: every key of a scenario file, its default, its unit and its checks.

Defaults live here, in the pydantic models, and so do the checks of single values and of one
table; `scenario.py` reads files, applies overrides, runs these models and locates errors.
The type aliases (`Duration`, `Rate`, `TimePoint`, ...) turn the units of scenario files into
seconds and per-second rates, and say in the JSON Schema what a file may hold. (Over 400
lines: the service graph's defaults and checks sit with the tables they read.)

The service graph. `[tiers.NAME]` tables are pools (every key of `[service]`) or, with
`rate_limit`, external providers (`rate_limit`, `burst`, a latency `time`); `[[routes]]` are
request classes. Whichever way a scenario is spelled, the validated Scenario offers one view:

- `scenario.tier_specs`: dict name -> `Tier`, in declaration order. `Tier.kind` is "pool" or
  "provider"; a pool has `.service` (its `Service`: servers, time, queue_limit, ...); a
  provider has `.rate_limit` (per second, real units), `.burst` (calls, real units; default
  one second of rate_limit, at least 1) and `.service` None; `.time` is the pool's service
  time or the provider's latency. Without `[tiers]`, one pool named "service" from `[service]`.
- `scenario.route_specs`: list of `Route` (name, share or None, source or None, mode "sync" or
  "async", calls: tuple of `Call(tier, client)`). The first call is the entry tier; its
  `client` is None (the end user's policy is `[client]`). A later call's `client` is the
  calling tier's policy towards it: a `Client` (a bare tier name: one try, no timeout).
  Without `[[routes]]` (no `[tiers]`, or exactly one tier), one route named after the tier,
  share 1, calls [that tier], sync.
- `scenario.entry_tier`: the first route's first tier; `scenario.service` is that tier's
  `Service` (for a plain scenario, `[service]` itself), so code written for one pool reads it.
- `scenario.has_graph`: False when the graph is the single pool "service" with the one route
  "service" (share 1, calls ["service"]), however spelled: then engines take today's path.
- `tier` on `[[capacity.change]]`, `[capacity.planner]`, `[capacity.autoscale]` and
  `[[faults]]` holds the resolved tier name after validation (default: the entry tier).

Graph rules (each broken one a located ScenarioError): `[service]` and `[tiers]` do not mix
(two spellings of the pools); several tiers need `[[routes]]`; route names are unique; a route
has `share` or `source` (or both: a share of that source), and all routes split demand the
same way (a lone route without either takes share 1); shares sum to 1 within 1e-9, of the
whole demand or of each source that several routes split; `source` needs `[population]`:
"signup" is the population's sign-up work (activation x downloads x requests_per_signup),
"steady" everything else (its active users'
requests_per_user and any `[arrivals]` rate); a source with demand must have its route. A
route's calls name declared tiers, each at most once ("cycle in calls"); the entry call is a
pool and takes no policy of its own (a bare name or `{ tier = NAME }`); a provider makes no
calls, so it is only ever a route's last call. Capacity controls apply to pools only; faults
may name any tier. Tiers no route calls are allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
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
MAX_TIERS = 1000  # the kernel holds a row per tier and per call edge
MAX_CALLS = 100  # calls in one route: retries multiply layer by layer
SHARE_TOLERANCE = 1e-9
# Tier and route names prefix timeseries columns (`TIER.queue`): a scenario name without dots.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


class KeyedError(ValueError):
    """A failed check that names the key to blame: `loc` is the key path from the model the
    validator belongs to (the Scenario's root for its own checks); scenario.py locates it."""

    def __init__(self, message: str, loc: tuple) -> None:
        super().__init__(message)
        self.loc = tuple(loc)


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
    # A field's docstring (the string under it) is its description in `outage-sim schema`,
    # which editors show on hover.
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=False, use_attribute_docstrings=True
    )

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
    """Names the report folder reports/<name>/ (default: the file's name without .toml)."""
    title: str = ""
    """Free text shown at the top of reports."""
    description: str = ""
    """Free text (Markdown) shown in reports."""
    start: datetime | None = None
    """Wall-clock origin (UTC) of the run: charts and the summary show dates; timestamps elsewhere
    need it."""
    duration: Duration = Field(gt=0)
    """How long the run lasts, e.g. "1d" or seconds."""
    seed: int = Field(default=1, ge=0, lt=2**63)
    """Random seed: the same seed gives the same run, byte for byte."""
    bin: Duration = Field(default=60.0, gt=0)
    """Metrics resolution: the length of one row of timeseries.csv, e.g. "1min"."""
    scale: Number = Field(default=1.0, ge=1e-6, le=MAX_SCALE)
    """One simulated request stands for this many real ones (rates, servers and queue limit are
    divided by it; counts are reported in real units)."""
    engine: Literal["des", "fluid"] = "des"
    """The engine: "des" simulates every request (exact); "fluid" steps expected counts in numpy
    (any scale, seconds for a month)."""

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
    """Share by which the rate swings above and below its mean over a day."""
    peak: TimeOfDay = 72000.0
    """Time of day (UTC) of the daily peak, e.g. "20:00"."""


class Surge(_Section):
    """A surge multiplies the rate by `factor` or replaces it by `rate`, with optional ramps."""

    at: TimePoint
    """When it begins: an offset into the run ("6h") or a timestamp."""
    duration: Duration | None = None
    """How long it lasts (omit: to the end of the run)."""
    factor: Number | None = Field(default=None, ge=0, le=1e6)
    """Multiply the rate by this (give factor or rate)."""
    rate: Rate | None = None
    """Replace the rate by this, e.g. "90/s" (give factor or rate)."""
    ramp: Duration = 0.0
    """Linear ramp up at its start and down at its end."""

    @model_validator(mode="after")
    def _one_of(self) -> Surge:
        if (self.factor is None) == (self.rate is None):
            raise ValueError("a surge needs exactly one of `factor` or `rate`")
        return self


class Arrivals(_Section):
    """[arrivals]: fresh requests (first attempts), a Poisson process with a time-varying rate."""

    rate: Rate = 0.0
    """Fresh requests per second: "9/s", "50000/day", "1.3M/day" or a plain number."""
    diurnal: Diurnal | None = None
    """A daily cycle of the rate."""
    surge: list[Surge] = []
    """Surges: each multiplies or replaces the rate for a while."""


class Population(_Section):
    """[population]: demand from a growing user base (downloads -> users -> requests)."""

    initial_users: Number = Field(default=0.0, ge=0, le=1e11)
    """Active users at the start of the run."""
    downloads: Rate | None = None
    """Downloads per unit of time, e.g. "50000/day" (give downloads or downloads_csv)."""
    downloads_csv: str | None = Field(default=None, min_length=1)
    """A CSV of downloads per day to replay, relative to the scenario file (give downloads or
    downloads_csv)."""
    surge: list[Surge] = []
    """Surges of downloads, written as arrivals.surge."""
    activation: Fraction = 1.0
    """Share of downloads that become active users."""
    requests_per_user: Rate = 0.0
    """Steady traffic of one active user, e.g. "20/day"."""
    requests_per_signup: Number = Field(default=0.0, ge=0, le=1e6)
    """One-off requests of one new user's sign-up."""

    @model_validator(mode="after")
    def _source(self) -> Population:
        if (self.downloads is None) == (self.downloads_csv is None):
            raise ValueError("population needs exactly one of `downloads` or `downloads_csv`")
        return self


class ServiceTime(_Section):
    """How long one attempt occupies a server."""

    dist: Literal["exponential", "deterministic", "lognormal", "gamma", "empirical"] = "exponential"
    """Distribution of the time one attempt holds a server."""
    mean: Duration | None = Field(default=None, gt=0)
    """Mean service time, e.g. "1s" (all but empirical)."""
    cv: Number | None = Field(default=None, ge=1e-6, le=100)
    """Coefficient of variation (standard deviation / mean), for lognormal and gamma."""
    samples: list[Duration] | None = Field(default=None, min_length=1, max_length=1_000_000)
    """Service times to draw from at random, for empirical."""

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
    """Servers in the pool at the start of the run."""
    time: ServiceTime
    """The service time of one attempt."""
    queue_limit: QueueLimit = math.inf
    """Room in the queue ("inf": unbounded; 0: a loss system); an attempt finding it full is
    rejected."""
    discipline: Literal["fifo", "lifo"] = "fifo"
    """Which waiting request a free server takes: "fifo" the oldest, "lifo" the newest."""
    drop_expired: bool = False
    """Skip queued work whose client has already given up."""
    error_rate: Fraction = 0.0
    """Share of attempts refused at once with an error (error injection)."""
    # Serve newest first while more than this many wait (adaptive LIFO under overload).
    lifo_over: int | None = Field(default=None, ge=0)
    """Serve newest first while more than this many wait (adaptive LIFO under overload)."""
    # CoDel-style shedding, simplified: work that waited longer than this when a server
    # reaches it is rejected (its client may retry); no CoDel interval or drop schedule.
    sojourn_limit: Duration | None = Field(default=None, gt=0)
    """Reject work that waited longer than this when a server reaches it (its client may retry)."""


def _tier_key() -> Any:
    return Field(default=None, description="The pool it applies to (default: the entry tier).")


class CapacityChange(_Section):
    """A planned change of the number of servers."""

    at: TimePoint
    """When the pool changes: an offset into the run or a timestamp."""
    servers: int = Field(ge=0, le=10_000_000)
    """Servers from then on."""
    tier: str | None = _tier_key()


class Planner(_Section):
    """Daily capacity review: next day's servers from a forecast of the peak load seen."""

    review_at: TimeOfDay = 32400.0
    """Time of day (UTC) of the daily review, e.g. "17:00"."""
    lead_time: Duration = 43200.0
    """Delay from a review to its servers being in service."""
    forecast: Literal["last", "trend"] = "trend"
    """How tomorrow's peak is forecast: "last" as the last day's; "trend" growing as over the last
    trend_days."""
    trend_days: int = Field(default=3, ge=1, le=60)
    """Days the trend forecast looks back over."""
    headroom: Number = Field(default=1.0, ge=1, le=100)
    """Multiplier on the servers the forecast needs (1: none)."""
    target_utilization: Number = Field(default=0.8, gt=0, le=1)
    """Utilisation the planner sizes the pool for at the forecast peak."""
    max_growth: Number = Field(default=1.5, ge=1, le=1000)
    """At most this many times the current servers per review (1.5: +50% a day)."""
    min_servers: int = Field(default=1, ge=1)
    """Fewest servers the planner keeps."""
    max_servers: int = Field(default=10_000_000, ge=1)
    """Most servers the planner adds up to."""
    tier: str | None = _tier_key()


class Autoscale(_Section):
    """Reactive scaling on utilisation or queue, with provisioning delay and cooldown."""

    metric: Literal["utilization", "queue"] = "utilization"
    """What it sizes for: "utilization" the mean busy servers over target; "queue" those plus
    servers for the requests waiting, target per server."""
    target: Number = Field(default=0.7, gt=0, le=1e9)
    """Target utilisation (metric utilization), or requests waiting per added server (queue)."""
    interval: Duration = Field(default=60.0, gt=0)
    """How often it decides."""
    delay: Duration = 300.0
    """Provisioning delay: from a decision to scale up until the servers serve."""
    cooldown: Duration = 300.0
    """No scaling down within this long of the last action."""
    min_servers: int = Field(default=1, ge=1)
    """Fewest servers it keeps."""
    max_servers: int = Field(default=10_000, ge=1)
    """Most servers it scales up to."""
    max_step: Number = Field(default=2.0, gt=1, le=1000)
    """At most this many times the current servers in one decision."""
    tier: str | None = _tier_key()


class Capacity(_Section):
    """[capacity]: planned changes, the daily planner, the autoscaler."""

    change: list[CapacityChange] = []
    """Planned changes of the number of servers."""
    planner: Planner | None = None
    """A daily capacity review: next day's servers from a forecast of the peak load seen."""
    autoscale: Autoscale | None = None
    """Reactive scaling on utilisation or queue, with a provisioning delay."""


class Fault(_Section):
    """[[faults]]: for a while, less capacity, slower service or failing attempts."""

    at: TimePoint
    """When it strikes: an offset into the run or a timestamp."""
    duration: Duration = Field(gt=0)
    """How long it lasts."""
    capacity_factor: Fraction = 1.0
    """Share of capacity left while it lasts (0.2: 20%)."""
    slowdown: Number = Field(default=1.0, ge=1, le=1e6)
    """Service times are this many times longer while it lasts."""
    error_rate: Fraction = 0.0
    """Share of attempts refused at once with an error while it lasts."""
    tier: str | None = Field(
        default=None, description="The tier it strikes, pool or provider (default: the entry tier)."
    )


class Backoff(_Section):
    """Delay before a retry: exponential from `base`, capped, with jitter."""

    base: Duration = 0.1
    """Delay before the first retry (before jitter)."""
    cap: Duration = 20.0
    """Longest delay before a retry."""
    multiplier: Number = Field(default=2.0, ge=1, le=100)
    """Each retry waits this many times longer than the one before (up to cap)."""
    jitter: Literal["none", "full", "equal", "decorrelated"] = "full"
    """Randomness of the delay: "none", "full" (uniform from 0 to it), "equal" (half fixed, half
    random) or "decorrelated"."""


class Client(_Section):
    """[client]: timeouts, retries, backoff, retry budget and adaptive throttling."""

    timeout: Duration | None = Field(default=None, gt=0)
    """A client gives up on an attempt after this long (the server may still do the work); omit:
    never."""
    retries: int = Field(default=0, ge=0, le=100)
    """Retries after a timeout or a rejection."""
    backoff: Backoff = Backoff()
    """The delay before each retry."""
    retry_budget: Number | None = Field(default=None, gt=0, le=1)
    """A token bucket of retries: a retry costs 1 token, a success earns this many (0.1: at most one
    retry per ten successes)."""
    throttle_k: Number | None = Field(default=None, ge=1, le=100)
    """Adaptive client-side throttling: reject locally when requests exceed k times the accepted
    ones (2 is common)."""
    throttle_window: Duration = Field(default=120.0, gt=0)
    """The window over which throttling counts requests and accepts."""


class Slo(_Section):
    """[slo]: per-bin targets; breaches lasting `min_duration` are outages."""

    success_ratio: Fraction = 0.99
    """Per bin: the share of fresh requests that must succeed."""
    latency_p99: Duration | None = Field(default=None, gt=0)
    """Per bin: the p99 latency clients may see (omit: no latency target)."""
    min_duration: Duration = 300.0
    """Breaches lasting this long or longer are outages."""


# ---------------------------------------------------------------------------------------------
# The service graph: the tables as written, then the resolved view the engines read.


class Provider(_Section):
    """[tiers.NAME] with `rate_limit`: an external provider, no pool of ours. A token bucket
    admits calls up to `rate_limit` (bursts up to `burst`); above it a call is refused at once
    (HTTP 429); an admitted call answers after `time`."""

    rate_limit: Rate = Field(gt=0, description="Calls admitted per second in the long run.")
    burst: Number | None = Field(
        default=None,
        ge=1,
        le=1e15,
        description="Calls the bucket holds (default: one second of rate_limit, at least 1).",
    )
    time: ServiceTime = Field(description="The provider's latency (as a service time).")


def _tier_kind(value: object) -> str:
    if isinstance(value, BaseModel):
        return "provider" if isinstance(value, Provider) else "pool"
    return "provider" if isinstance(value, dict) and "rate_limit" in value else "pool"


TierTable = Annotated[
    Annotated[Service, Tag("pool")] | Annotated[Provider, Tag("provider")],
    Discriminator(_tier_kind),
]


class CallSpec(Client):
    """One call of a route: the tier called and, for every call after the first, the calling
    tier's client policy towards it (every key of [client])."""

    tier: str = Field(description="The tier called.")


def _call_table(value: object) -> object:
    if isinstance(value, str):
        return {"tier": value}
    if isinstance(value, dict | BaseModel):
        return value
    raise ValueError(
        "a call is a tier name or a table { tier = NAME, timeout = ..., ... }, got " + shown(value)
    )


class _NameOrTable:
    """In the JSON Schema, a call is a tier name or a call table."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict:
        return {
            "anyOf": [{"type": "string"}, handler(core_schema)],
            "description": "A tier name (one try, no timeout) or a call table.",
        }


CallItem = Annotated[CallSpec, BeforeValidator(_call_table), _NameOrTable()]


class RouteSpec(_Section):
    """[[routes]]: a request class, its part of fresh demand and the tiers it calls in turn."""

    name: str = Field(pattern=NAME_PATTERN, max_length=100, description="Unique route name.")
    share: Fraction | None = Field(
        default=None, description="Fraction of fresh demand (the routes' shares sum to 1)."
    )
    source: Literal["steady", "signup"] | None = Field(
        default=None,
        description='With [population]: its "steady" or "signup" demand (with share, that'
        " fraction of it; the shares of one source's routes sum to 1).",
    )
    calls: list[CallItem] = Field(
        min_length=1,
        max_length=MAX_CALLS,
        description="The entry tier first; each later tier is called by the one before it.",
    )
    mode: Literal["sync", "async"] = Field(
        default="sync",
        description='"sync": a caller holds its slot until its callee answers, fails or times'
        ' out; "async": the caller\'s slot is freed as the request moves on.',
    )


@dataclass(frozen=True)
class Tier:
    """A tier as the engines read it: a pool (`service`) or a provider (`rate_limit`, `burst`)."""

    name: str
    kind: Literal["pool", "provider"]
    service: Service | None
    rate_limit: float | None
    burst: float | None
    time: ServiceTime


@dataclass(frozen=True)
class Call:
    """A call of a route: the tier called, and the caller's policy (None for the entry call,
    whose caller is the end user with [client])."""

    tier: str
    client: Client | None


@dataclass(frozen=True)
class Route:
    """A route as the engines read it (`share` None when it takes a population `source`)."""

    name: str
    share: float | None
    source: Literal["steady", "signup"] | None
    mode: Literal["sync", "async"]
    calls: tuple[Call, ...]

    @property
    def tiers(self) -> tuple[str, ...]:
        """The tiers called, the entry tier first."""
        return tuple(call.tier for call in self.calls)


def _tier(name: str, table: Service | Provider) -> Tier:
    if isinstance(table, Provider):
        burst = table.burst if table.burst is not None else max(1.0, table.rate_limit)
        return Tier(name, "provider", None, table.rate_limit, burst, table.time)
    return Tier(name, "pool", table, None, None, table.time)


def _hint(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (tiers: {', '.join(known)})"


def _calls(index: int, route: RouteSpec, tiers: dict[str, Tier]) -> tuple[Call, ...]:
    """A route's calls, checked: declared tiers, each once, a pool first, providers last."""
    calls, seen = [], {}
    for position, call in enumerate(route.calls):
        loc = ("routes", index, "calls", position)
        tier = tiers.get(call.tier)
        if tier is None:
            raise KeyedError(f"unknown tier {call.tier!r}{_hint(call.tier, list(tiers))}", loc)
        if call.tier in seen:
            raise KeyedError(
                f"cycle in calls: {call.tier!r} is called twice (calls {seen[call.tier]} and"
                f" {position}); a request visits a tier at most once on its route",
                loc,
            )
        seen[call.tier] = position
        if position == 0 and tier.kind == "provider":
            raise KeyedError(
                f"the entry tier {call.tier!r} is a provider: a route enters at a pool of ours",
                loc,
            )
        if tier.kind == "provider" and position < len(route.calls) - 1:
            raise KeyedError(
                f"a provider makes no calls: {call.tier!r} must be the last call of its route",
                loc,
            )
        policy = sorted(call.model_fields_set - {"tier"})
        if position == 0 and policy:
            raise KeyedError(
                f"the entry call's policy is the end user's, [client]: set {policy[0]} there"
                " (the first call is a tier name or { tier = NAME })",
                (*loc, policy[0]),
            )
        client = (
            None if position == 0 else Client(**{k: getattr(call, k) for k in Client.model_fields})
        )
        calls.append(Call(call.tier, client))
    return tuple(calls)


def _steady_demand(scenario: Scenario) -> bool:
    arrivals, population = scenario.arrivals, scenario.population
    return bool(
        arrivals.rate
        or any(s.rate for s in arrivals.surge)
        or (population is not None and population.requests_per_user > 0)
    )


def _split_demand(
    scenario: Scenario, specs: list[RouteSpec]
) -> list[tuple[float | None, str | None]]:
    """Each route's (share, source), checked: one way of splitting, shares summing to 1 (of
    the whole demand, or of each source's when routes split a source), and every source with
    demand on a route."""
    by_source = [spec.source is not None for spec in specs]
    split = []
    for index, spec in enumerate(specs):
        if spec.source is not None and scenario.population is None:
            raise KeyedError(
                f"source = {spec.source!r} names population demand: add [population], or give"
                " the route a share",
                ("routes", index, "source"),
            )
        if spec.share is None and spec.source is None:
            if len(specs) > 1:
                raise KeyedError(
                    "a route needs share (its fraction of fresh demand) or, with [population],"
                    ' source = "steady" or "signup"',
                    ("routes", index),
                )
            split.append((1.0, None))
            continue
        if by_source[index] != by_source[0]:
            first = "source" if by_source[0] else "share"
            raise KeyedError(
                f"routes split demand by share or by source, not both: routes.0 has {first}",
                ("routes", index, "source" if by_source[index] else "share"),
            )
        split.append((spec.share, spec.source))
    if not by_source[0] and specs[0].share is not None:
        total = math.fsum(share for share, _ in split)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            shares = " + ".join(f"{share:g}" for share, _ in split)
            raise KeyedError(f"route shares sum to {total:.12g} ({shares}), not 1", ("routes",))
    if by_source[0]:
        fed: dict[str, list[int]] = {}
        for index, (_, source) in enumerate(split):
            fed.setdefault(source, []).append(index)
        for source, indices in fed.items():
            shared = [i for i in indices if split[i][0] is not None]
            if len(indices) > 1 and len(shared) < len(indices):
                index = [i for i in indices if split[i][0] is None][-1]
                other = next(i for i in indices if i != index)
                raise KeyedError(
                    f"source {source!r} also feeds routes.{other} ({specs[other].name!r}):"
                    " routes that split a source each take a share of it (summing to 1)",
                    ("routes", index, "source"),
                )
            if shared:
                total = math.fsum(split[i][0] for i in shared)
                if abs(total - 1.0) > SHARE_TOLERANCE:
                    shares = " + ".join(f"{split[i][0]:g}" for i in shared)
                    raise KeyedError(
                        f"the shares of source {source!r} sum to {total:.12g} ({shares}), not 1",
                        ("routes", shared[0], "share"),
                    )
        needs = {
            "signup": scenario.population.requests_per_signup > 0,
            "steady": _steady_demand(scenario),
        }
        for source, demand in needs.items():
            if demand and source not in fed:
                what = (
                    "population.requests_per_signup > 0 makes sign-up demand"
                    if source == "signup"
                    else "requests_per_user or [arrivals] make steady demand"
                )
                raise KeyedError(f'{what}, but no route has source = "{source}"', ("routes",))
    return split


def _routes(scenario: Scenario, tiers: dict[str, Tier]) -> list[Route]:
    specs = scenario.routes
    if not specs:
        if len(tiers) > 1:
            raise KeyedError(
                f"{len(tiers)} tiers and no [[routes]]: with several tiers, [[routes]] say which"
                " tiers a request calls",
                ("tiers",),
            )
        ((name, tier),) = tiers.items()
        if tier.kind == "provider":
            raise KeyedError(
                f"the only tier {name!r} is a provider: a request enters at a pool of ours",
                ("tiers", name, "rate_limit"),
            )
        return [Route(name, 1.0, None, "sync", (Call(name, None),))]
    names: dict[str, int] = {}
    for index, spec in enumerate(specs):
        if spec.name in names:
            raise KeyedError(
                f"route name {spec.name!r} is taken by routes.{names[spec.name]}",
                ("routes", index, "name"),
            )
        names[spec.name] = index
    split = _split_demand(scenario, specs)
    return [
        Route(spec.name, share, source, spec.mode, _calls(index, spec, tiers))
        for index, (spec, (share, source)) in enumerate(zip(specs, split, strict=True))
    ]


def _control_tier(
    control: BaseModel, loc: tuple, tiers: dict[str, Tier], entry: str, capacity: bool
) -> BaseModel:
    """The control with its tier resolved (default: the entry tier) and checked."""
    name = control.tier if control.tier is not None else entry
    tier = tiers.get(name)
    if tier is None:
        raise KeyedError(f"unknown tier {name!r}{_hint(name, list(tiers))}", (*loc, "tier"))
    if capacity and tier.kind == "provider":
        raise KeyedError(
            f"{name!r} is a provider: it has no servers to change (capacity controls apply to"
            " pools; a fault may strike a provider)",
            (*loc, "tier"),
        )
    return control if control.tier == name else control.model_copy(update={"tier": name})


def _graph(scenario: Scenario) -> tuple[dict[str, Tier], list[Route]]:
    """The tiers and routes of a scenario, checked, and its controls' tiers resolved."""
    given = scenario.service_table
    if given is not None and scenario.tiers:
        raise KeyedError(
            "[service] and [tiers] are two spellings of the pools: with tiers, declare every"
            " pool as [tiers.NAME] (write [service] as [tiers.service])",
            ("service",),
        )
    if given is None and not scenario.tiers:
        raise KeyedError(
            "missing required table 'service' (or [tiers.NAME] tables of pools and providers)",
            ("service",),
        )
    declared = {"service": given} if given is not None else scenario.tiers
    tiers = {name: _tier(name, table) for name, table in declared.items()}
    routes = _routes(scenario, tiers)
    entry = routes[0].calls[0].tier
    capacity = scenario.capacity
    changes = [
        _control_tier(change, ("capacity", "change", index), tiers, entry, True)
        for index, change in enumerate(capacity.change)
    ]
    planner, autoscale = (
        None if control is None else _control_tier(control, ("capacity", key), tiers, entry, True)
        for key, control in (("planner", capacity.planner), ("autoscale", capacity.autoscale))
    )
    faults = [
        _control_tier(fault, ("faults", index), tiers, entry, False)
        for index, fault in enumerate(scenario.faults)
    ]
    # The scenario is being built: its tables take their resolved controls before it is frozen.
    object.__setattr__(
        scenario,
        "capacity",
        capacity.model_copy(update={"change": changes, "planner": planner, "autoscale": autoscale}),
    )
    object.__setattr__(scenario, "faults", faults)
    return tiers, routes


def _tier_names(value: object) -> object:
    if isinstance(value, dict):
        if len(value) > MAX_TIERS:
            raise ValueError(f"at most {MAX_TIERS} tiers, got {len(value)}")
        for name in value:
            if not (
                isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) and len(name) <= 100
            ):
                raise KeyedError(
                    "a tier name is letters, digits, '_' and '-', starting with a letter or digit"
                    f" (it prefixes timeseries columns, TIER.queue); got {shown(name)}",
                    (name,),
                )
    return value


class SensitivityEntry(_Section):
    """[[sensitivity]]: an assumption and its plausible range, for `outage-sim sensitivity`
    (which checks the key and both values by applying them as `--set` does)."""

    key: str = Field(pattern=r"^[A-Za-z_][\w-]*(\.[\w-]+)*$", max_length=200)
    """A key --set accepts, e.g. "population.activation"."""
    low: Any
    """Low end of the plausible range (a TOML value, as --set takes)."""
    high: Any
    """High end of the plausible range."""
    why: str = Field(default="", max_length=2000)
    """What the number is and where its range comes from."""

    @model_validator(mode="after")
    def _a_range(self) -> SensitivityEntry:
        if self.key == "scenario.seed":
            raise KeyedError("scenario.seed is no assumption: --reps chooses seeds", ("key",))
        if self.low == self.high:
            raise KeyedError(f"low and high are the same ({shown(self.low)})", ("high",))
        return self


class Scenario(_Section):
    """A whole validated scenario. Build it with `load_scenario`."""

    # The file's [service] is `service_table`; `service` is the entry tier's pool, however
    # the pools are spelled (see the module docstring).
    model_config = ConfigDict(serialize_by_alias=True)

    scenario: ScenarioMeta
    """Naming, time frame, randomness and resolution of the run."""
    arrivals: Arrivals = Arrivals()
    """Fresh requests (first attempts): a rate, a daily cycle, surges."""
    population: Population | None = None
    """Demand from users instead of a rate: downloads make users, users make requests."""
    service_table: Service | None = Field(
        default=None,
        alias="service",
        description="The server pool of a single-pool scenario (with [tiers]: none).",
    )
    tiers: Annotated[dict[str, TierTable], BeforeValidator(_tier_names)] = Field(
        default_factory=dict,
        description="The service graph's tiers by name: pools (the keys of [service]) or, with"
        " rate_limit, external providers.",
        json_schema_extra={"propertyNames": {"pattern": NAME_PATTERN, "maxLength": 100}},
    )
    routes: list[RouteSpec] = Field(
        default_factory=list,
        max_length=MAX_TIERS,
        description="Request classes: their part of fresh demand and the tiers they call.",
    )
    capacity: Capacity = Capacity()
    """Changes of the pool over time: planned changes, a daily planner, an autoscaler."""
    faults: list[Fault] = []
    """Stretches of lost capacity, slower service or failing attempts."""
    client: Client | None = None
    """What clients do: timeout, retries, backoff, retry budget, throttling (omit: wait forever,
    never retry)."""
    slo: Slo = Slo()
    """The targets a bin is judged on; breaches lasting min_duration are outages."""
    sensitivity: list[SensitivityEntry] = Field(default_factory=list, exclude=True)
    """Assumptions and their ranges for `outage-sim sensitivity` (not part of a run's sha256)."""

    _path: Path | None = PrivateAttr(default=None)
    _raw: dict = PrivateAttr(default_factory=dict)
    _tier_specs: dict[str, Tier] = PrivateAttr(default_factory=dict)
    _route_specs: list[Route] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _resolve_graph(self) -> Scenario:
        self._tier_specs, self._route_specs = _graph(self)
        return self

    @property
    def tier_specs(self) -> dict[str, Tier]:
        """Every tier by name, in declaration order (one pool "service" without [tiers])."""
        return self._tier_specs

    @property
    def route_specs(self) -> list[Route]:
        """Every route in file order (one default route without [[routes]])."""
        return self._route_specs

    @property
    def entry_tier(self) -> str:
        """The first route's first tier: where controls and faults apply by default."""
        return self._route_specs[0].calls[0].tier

    @property
    def service(self) -> Service:
        """The entry tier's pool: [service] itself in a single-pool scenario."""
        return self._tier_specs[self.entry_tier].service

    @property
    def has_graph(self) -> bool:
        """Whether the scenario is more than the pool "service" behind its one route "service"
        (share 1, calls ["service"]), whether spelled [service] or [tiers.service]."""
        if list(self._tier_specs) != ["service"] or len(self._route_specs) != 1:
            return True
        route = self._route_specs[0]
        return not (route.name == "service" and route.share == 1.0)

    def canonical_dump(self) -> dict:
        """The scenario as JSON data in one spelling: a single pool as [service] (without the
        controls' resolved `tier`), as before tiers existed; a graph as written."""
        data = self.model_dump(mode="json")
        if self.has_graph:
            return data
        data.pop("tiers")
        data.pop("routes")
        data["service"] = self.service.model_dump(mode="json")
        capacity = data["capacity"]
        for control in [*capacity["change"], capacity["planner"], capacity["autoscale"]]:
            if control is not None:
                control.pop("tier")
        for fault in data["faults"]:
            fault.pop("tier")
        return data

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
        text = json.dumps(self.canonical_dump(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def resolve_path(self, relative: str) -> Path:
        """A path named in the scenario, resolved relative to the scenario file."""
        base = self._path.parent if self._path else Path.cwd()
        return (base / relative).resolve()
