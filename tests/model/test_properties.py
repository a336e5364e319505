"""Property-based tests of the input edge: units, scenario files and downloads CSVs.

Whatever a user writes ends in a valid scenario or in a ScenarioError naming the file, the key
and the line: never another exception. Hypothesis runs derandomized (the same examples on every
run), so a failure reproduces; each property gets a bounded number of examples to stay fast.
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sim.errors import ScenarioError
from sim.model.scenario import load_scenario, parse_override, parse_scenario
from sim.model.units import (
    DURATION_UNITS_S,
    MULTIPLIERS,
    RATE_PERIODS_S,
    parse_duration,
    parse_rate,
    parse_time_of_day,
    parse_timestamp,
)
from sim.model.workload import Demand
from sim.report.provenance import toml_text

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- values a TOML file can hold, with the odd ones weighted in -----------------------------
ODD_NUMBERS = [0, -1, 1, 10**400, -(10**400), 2**63, 2**64, 1e308, -1e308, 1e-308, 0.5, -0.0]
ODD_STRINGS = [
    "", "inf", "nan", "-5min", "5 parsec", "1e400s", "1e300/s", "inf/s", "nan s", "0/s", "1e15/s",
    "99999999999d", "1__0s", "_1s", ".5s", "5e", "1.3M/day", "20:00", "25:00", "fifo", "gamma",
    "exponentail", "2021-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "\x00", "é", "../x", " " * 50,
]  # fmt: skip
scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.sampled_from(ODD_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(ODD_STRINGS),
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.dates(),
    st.times(),
)
keys = st.sampled_from(["at", "rate", "factor", "dist", "mean", "servers", "x", "seed"]) | st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=6
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=6,
)
# Values that often fit a key, so that many mutants stay valid and exercise the round trip.
plausible = st.one_of(
    st.integers(1, 50),
    st.floats(0.01, 0.99),
    st.builds(lambda n, u: f"{n}{u}", st.integers(1, 90), st.sampled_from(["s", "min", "ms"])),
    st.builds(lambda n, u: f"{n}/{u}", st.integers(1, 90), st.sampled_from(["s", "min"])),
    st.sampled_from(["fifo", "lifo", "exponential", "deterministic", "full", "none", "20:00"]),
)

BASE = tomllib.loads("""
[scenario]
name = "prop"
start = 2021-01-01T00:00:00Z
duration = "10min"
seed = 1
bin = "1min"
scale = 1
[arrivals]
rate = "5/s"
diurnal = { amplitude = 0.3, peak = "20:00" }
[[arrivals.surge]]
at = "2min"
duration = "2min"
factor = 3
ramp = "10s"
[population]
initial_users = 1000
downloads = "1000/day"
activation = 0.5
requests_per_user = "10/day"
requests_per_signup = 3
[service]
servers = 8
time = { dist = "gamma", mean = "1s", cv = 1.5 }
queue_limit = 100
discipline = "fifo"
sojourn_limit = "5s"
[[capacity.change]]
at = "3min"
servers = 9
[capacity.autoscale]
interval = "1min"
max_servers = 100
[[faults]]
at = "4min"
duration = "1min"
capacity_factor = 0.5
[client]
timeout = "3s"
retries = 2
backoff = { base = "100ms", cap = "2s", jitter = "full" }
[slo]
success_ratio = 0.99
latency_p99 = "2s"
""")


def _paths(table: dict, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a TOML table (tables, array items and leaves)."""
    found = []
    for key, value in table.items():
        path = (*prefix, key)
        found.append(path)
        if isinstance(value, dict):
            found += _paths(value, path)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    found.append((*path, index))
                    found += _paths(item, (*path, index))
    return found


PATHS = _paths(BASE)


@st.composite
def mutated_tables(draw) -> dict:
    """The base scenario with one to three keys replaced, removed or added."""
    raw = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        node = raw
        try:
            for part in path[:-1]:
                node = node[part]
            action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
            if action == "replace":
                node[path[-1]] = draw(toml_values | plausible)
            elif action == "delete":
                del node[path[-1]]
            elif isinstance(node, dict):
                node[draw(keys)] = draw(toml_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced this path
    return raw


def _physical_lines(text: str) -> int:
    return max(1, len(re.split(r"\r\n|\r|\n", text)))


def assert_located(error: ScenarioError, file: str | Path, text: str) -> None:
    """The error names the file, a line inside it and (unless TOML itself failed) a key."""
    assert error.file == str(file)
    assert isinstance(error.line, int) and 1 <= error.line <= _physical_lines(text), error
    assert error.key or error.message.startswith("not valid TOML"), error
    assert "\n" not in str(error) and len(str(error)) < 600, error


def _usable(scenario) -> None:
    """A valid scenario builds its demand: finite, non-negative rates on the grid."""
    with np.errstate(over="ignore", invalid="ignore"):
        demand = Demand(scenario)
    rates = np.concatenate([demand.left, demand.right])
    assert not (rates < 0).any()


# ------------------------------------------------------------------------------------ units
RATE_LIKE = r"\A[-+.\de_ ]{0,8}[kMGB]?/[a-z]{0,5}\Z"


@PROPERTY
@given(
    st.one_of(
        toml_values, st.sampled_from(ODD_STRINGS), st.from_regex(r"\A[-+.\de_ ]{0,8}[a-z]{0,5}\Z")
    )
)
def test_parse_duration_gives_finite_seconds_or_a_value_error(value) -> None:  # fmt: skip
    """Any value is a finite, non-negative number of seconds or a ValueError with a message."""
    try:
        seconds = parse_duration(value)
    except ValueError as error:
        assert 0 < len(str(error)) < 300
    else:
        assert math.isfinite(seconds) and seconds >= 0


@PROPERTY
@given(
    st.one_of(
        toml_values,
        st.sampled_from(ODD_STRINGS),
        st.from_regex(r"\A[-+.\de_ ]{0,8}[kMGB]?/[a-z]{0,5}\Z"),
    )
)
def test_parse_rate_gives_a_finite_rate_or_a_value_error(value) -> None:  # fmt: skip
    """Any value is a finite, non-negative rate per second or a ValueError with a message."""
    try:
        rate = parse_rate(value)
    except ValueError as error:
        assert 0 < len(str(error)) < 300
    else:
        assert math.isfinite(rate) and rate >= 0


@PROPERTY
@given(st.floats(0, 1e9), st.sampled_from(sorted(DURATION_UNITS_S)))
def test_a_duration_with_a_unit_is_its_amount_in_that_unit(amount: float, unit: str) -> None:
    """'<amount><unit>' is amount times the unit's seconds, whatever way the float is written."""
    assert parse_duration(f"{amount!r}{unit}") == pytest.approx(amount * DURATION_UNITS_S[unit])


@PROPERTY
@given(
    st.floats(0, 1e6),
    st.sampled_from(sorted(MULTIPLIERS)),
    st.sampled_from(sorted(RATE_PERIODS_S)),
)
def test_a_rate_with_a_period_is_its_amount_per_second(amount, multiplier, period) -> None:
    """'<amount><multiplier>/<period>' is amount times the multiplier over the period."""
    expected = amount * MULTIPLIERS[multiplier] / RATE_PERIODS_S[period]
    assert parse_rate(f"{amount!r}{multiplier}/{period}") == pytest.approx(expected)


@PROPERTY
@given(toml_values)
def test_times_of_day_and_timestamps_fail_only_with_value_errors(value) -> None:
    """Times of day fall in one day; timestamps come back timezone-aware; else ValueError."""
    try:
        seconds = parse_time_of_day(value)
    except ValueError:
        pass
    else:
        assert 0 <= seconds < 86400
    try:
        stamp = parse_timestamp(value)
    except ValueError:
        pass
    else:
        assert stamp.tzinfo is not None


# --------------------------------------------------------------------------- scenario files
@PROPERTY
@given(mutated_tables())
def test_any_scenario_table_is_valid_or_a_located_scenario_error(raw: dict) -> None:
    """Odd values, wrong types, unknown and missing keys: a scenario or a located error."""
    text = toml_text(raw)
    try:
        scenario = parse_scenario(text, file="prop.toml")
    except ScenarioError as error:
        event("error")
        assert_located(error, "prop.toml", text)
        return
    event("valid")
    _usable(scenario)


@PROPERTY
@given(mutated_tables())
def test_a_valid_scenario_written_back_loads_to_the_same_hash(raw: dict) -> None:
    """scenario.toml's writer round-trips every valid scenario to its scenario_sha256."""
    try:
        scenario = parse_scenario(toml_text(raw), file="prop.toml")
    except ScenarioError:
        return
    again = toml_text(scenario.raw)
    assert tomllib.loads(again) == scenario.raw
    assert parse_scenario(again, file="prop.toml").sha256 == scenario.sha256


@PROPERTY
@given(st.text(max_size=300))
def test_any_text_is_a_scenario_or_a_located_scenario_error(text: str) -> None:
    """Arbitrary text (mostly broken TOML) is an error at a line of the file, or a scenario."""
    try:
        parse_scenario(text, file="text.toml")
    except ScenarioError as error:
        assert_located(error, "text.toml", text)


BASE_LINES = toml_text(BASE).splitlines()


@st.composite
def line_edits(draw) -> str:
    """The base file with a few lines dropped, doubled (duplicate keys) or swapped."""
    lines = list(BASE_LINES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        j = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(["drop", "double", "swap"]))
        if edit == "drop" and len(lines) > 1:
            del lines[i]
        elif edit == "double":
            lines.insert(j, lines[i])
        else:
            lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines) + "\n"


@PROPERTY
@given(line_edits())
def test_dropped_doubled_and_moved_lines_give_a_scenario_or_a_located_error(text: str) -> None:
    """Lines of a valid file, some missing, some twice (duplicate keys), some out of place."""
    try:
        scenario = parse_scenario(text, file="lines.toml")
    except ScenarioError as error:
        event("not valid TOML" if error.key is None else "error")
        assert_located(error, "lines.toml", text)
        return
    _usable(scenario)


@PROPERTY
@given(st.text(max_size=40) | st.from_regex(r"\A[a-z_.0-9]{1,30}=.{0,12}\Z"))
def test_any_override_is_applied_or_blamed_on_set(assignment: str) -> None:
    """--set KEY=VALUE of any text: a valid scenario or an error naming --set."""
    try:
        key, value = parse_override(assignment)
        scenario = parse_scenario(toml_text(BASE), file="base.toml", overrides={key: value})
    except ScenarioError as error:
        assert error.file in ("--set", "base.toml"), error
        assert "\n" not in str(error)
        return
    _usable(scenario)


# --------------------------------------------------------------------------- downloads CSV
ODD_CELLS = ["nan", "inf", "-5", "1e400", "1e308", "", "2021-13-01", "0001-01-01", "9999-12-31",
             "2021-01-01T25:00", '"', "1,5", "1_000", " 12 "]  # fmt: skip
odd_cells = st.text(max_size=10) | st.sampled_from(ODD_CELLS)
odd_rows = st.one_of(
    st.builds(lambda a, b: f"{a},{b}", odd_cells, odd_cells),
    st.builds(lambda a, b: f"2021-01-{a:02d},{b}", st.integers(1, 28), odd_cells),
    st.builds(lambda a: a, odd_cells),  # one cell
    st.builds(lambda a, b, c: f"{a},{b},{c}", odd_cells, odd_cells, odd_cells),
)
headers = st.sampled_from(["date,downloads", "\ufeffdate,downloads", "downloads,date",
                           "day,count", "", "date"])  # fmt: skip


@st.composite
def csv_texts(draw) -> str:
    """A CSV of increasing days (often valid), with odd rows and an odd header mixed in."""
    header = draw(headers | st.just("date,downloads"))
    days = sorted(draw(st.sets(st.integers(1, 28), max_size=6)))
    rows = [f"2021-01-{day:02d},{draw(st.integers(0, 10**7))}" for day in days]
    for _ in range(draw(st.integers(0, 2))):
        rows.insert(draw(st.integers(0, len(rows))), draw(odd_rows))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join([header, *rows]) + newline


@pytest.fixture(scope="module")
def csv_folder(tmp_path_factory) -> Path:
    """A folder for the scenario and the CSV that each example rewrites."""
    folder = tmp_path_factory.mktemp("csv")
    raw = copy.deepcopy(BASE)
    raw["scenario"]["duration"] = "30d"
    raw["scenario"]["bin"] = "1h"
    raw["population"].pop("downloads")
    raw["population"]["downloads_csv"] = "downloads.csv"
    (folder / "scenario.toml").write_text(toml_text(raw), encoding="utf-8")
    return folder


@PROPERTY
@given(csv_texts())
def test_any_downloads_csv_replays_or_is_an_error_at_its_line(csv_folder: Path, text: str) -> None:
    """Bad rows, columns, dates, counts, order or encoding: an error naming the CSV line."""
    csv_path = csv_folder / "downloads.csv"
    csv_path.write_text(text, encoding="utf-8", newline="")
    try:
        scenario = load_scenario(csv_folder / "scenario.toml")
        _usable(scenario)
        event("valid")
    except ScenarioError as error:
        event("error")
        assert error.file == str(csv_path), error
        assert isinstance(error.line, int) and 1 <= error.line <= _physical_lines(text), error
        assert error.key and "\n" not in str(error), error


def test_empty_and_binary_csv_files_are_located_errors(csv_folder: Path) -> None:
    """An empty CSV, a CSV of NUL bytes and one that is not UTF-8 each get a located error."""
    csv_path = csv_folder / "downloads.csv"
    for content in (b"", b"date,downloads\n\x00\x00,1\n", b"date,downloads\n\xff\xfe,1\n"):
        csv_path.write_bytes(content)
        with pytest.raises(ScenarioError) as info:
            Demand(load_scenario(csv_folder / "scenario.toml"))
        assert info.value.file == str(csv_path) and info.value.line >= 1


# ------------------------------------------------------------------------- known bad values
ODD_CASES = [
    # (key path, value, fragment of the message)
    (("arrivals", "rate"), math.nan, "finite"),
    (("arrivals", "surge", 0, "factor"), math.inf, "finite"),
    (("service", "servers"), 0, "greater than or equal to 1"),
    (("service", "time", "mean"), "-1s", "negative"),
    (("service", "time", "dist"), "weibull", "'exponential'"),
    (("scenario", "duration"), "5000d", "at most 1000d"),
    (("scenario", "scale"), True, "expected a number, got true"),
    (("scenario", "seed"), "one", "valid integer"),
    (("service", "queue_limit"), "lots", "whole number"),
    (("arrivals", "rate"), "1e15/s", "beyond any service"),
    (("client", "retries"), 10**400, "less than or equal"),
    (("capacity", "autoscale", "interval"), "100us", "longer interval"),
    (("scenario", "start"), date(2021, 1, 1), "timestamp"),
    (("faults", 0, "at"), time(12, 0), "duration"),
    (("service", "time", "cv"), 0.0, "greater than or equal"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "value", "fragment"), ODD_CASES, ids=[".".join(map(str, c[0])) for c in ODD_CASES]
)
def test_odd_values_get_a_clear_message_at_their_key(path: tuple, value, fragment: str) -> None:
    """NaN, infinities, negatives, absurd sizes, zero servers, wrong types: a clear message."""
    raw = copy.deepcopy(BASE)
    node = raw
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    text = toml_text(raw)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, file="odd.toml")
    assert_located(info.value, "odd.toml", text)
    assert info.value.key.startswith(".".join(map(str, path))), info.value
    assert fragment in info.value.message, info.value


def test_a_timestamp_far_before_the_start_is_an_offset_not_a_crash() -> None:
    """A surge dated centuries before the start lies before the run: valid, and harmless."""
    raw = copy.deepcopy(BASE)
    raw["arrivals"]["surge"][0]["at"] = datetime(1, 1, 1, tzinfo=UTC)
    scenario = parse_scenario(toml_text(raw))
    assert scenario.arrivals.surge[0].at < -timedelta(days=700_000).total_seconds()
    _usable(scenario)
