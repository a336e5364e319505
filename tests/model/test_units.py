"""Parsing the human units of scenario files: durations, rates, times of day, timestamps."""

from __future__ import annotations

import math
from datetime import UTC, datetime, time, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.model.units import (
    DURATION_UNITS_S,
    RATE_PERIODS_S,
    format_duration,
    parse_duration,
    parse_rate,
    parse_time_of_day,
    parse_timestamp,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5min", 300.0),
        ("2h", 7200.0),
        ("3d", 259200.0),
        ("1w", 604800.0),
        ("1.5h", 5400.0),
        ("90", 90.0),
        (" 10 min ", 600.0),
        ("1_000s", 1000.0),
        ("500us", 5e-4),
        ("2e3ms", 2.0),
        (".5s", 0.5),
        (45, 45.0),
        (0.1, 0.1),
        ("0s", 0.0),
    ],
)
def test_parse_duration_accepts_units_and_plain_seconds(text, seconds) -> None:
    """Durations with a unit or plain seconds convert to seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("5 parsec", "unknown duration unit 'parsec'"),
        ("5 Min", "expected a duration"),  # units are lower case
        ("-3s", "cannot be negative"),
        (-3, "cannot be negative"),
        ("fast", "expected a duration"),
        ("", "expected a duration"),
        (True, "expected a duration"),
        (None, "expected a duration"),
        ([1], "expected a duration"),
        (math.inf, "finite"),
        (math.nan, "finite"),
        ("1e999s", "finite"),
    ],
)
def test_parse_duration_rejects_with_a_message(value, fragment) -> None:
    """Bad durations raise ValueError whose message says what is wrong."""
    with pytest.raises(ValueError, match=fragment):
        parse_duration(value)


def test_unknown_duration_unit_lists_the_known_ones() -> None:
    """The message for an unknown unit lists every known unit, smallest first."""
    with pytest.raises(ValueError) as info:
        parse_duration("3 fortnights")
    message = str(info.value)
    assert all(unit in message for unit in DURATION_UNITS_S)
    assert message.index("us") < message.index("min") < message.index("w)")


@pytest.mark.parametrize(
    ("text", "per_second"),
    [
        ("9/s", 9.0),
        ("120/min", 2.0),
        ("3600/h", 1.0),
        ("50000/day", 50000 / 86400),
        ("1.3M/day", 1.3e6 / 86400),
        ("2k/s", 2000.0),
        ("1B/week", 1e9 / 604800),
        ("20 / hour", 20 / 3600),
        ("7/d", 7 / 86400),
        (12, 12.0),
        (0.5, 0.5),
        ("0/s", 0.0),
        ("1_000/s", 1000.0),
    ],
)
def test_parse_rate_accepts_periods_and_multipliers(text, per_second) -> None:
    """Rates with a period and an optional k/M/G/B multiplier convert to per second."""
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("9/fortnight", "unknown rate period 'fortnight'"),
        ("9", "expected a rate"),  # a string needs its period
        ("9/S", "expected a rate"),
        ("-1/s", "cannot be negative"),
        (-1, "cannot be negative"),
        ("lots/s", "expected a rate"),
        (False, "expected a rate"),
        (math.inf, "finite"),
        ("9x/s", "expected a rate"),
    ],
)
def test_parse_rate_rejects_with_a_message(value, fragment) -> None:
    """Bad rates raise ValueError whose message says what is wrong."""
    with pytest.raises(ValueError, match=fragment):
        parse_rate(value)


def test_unknown_rate_period_lists_the_known_ones() -> None:
    """The message for an unknown period lists every known period."""
    with pytest.raises(ValueError) as info:
        parse_rate("9/fortnight")
    assert all(period in str(info.value) for period in RATE_PERIODS_S)


@given(
    amount=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    unit=st.sampled_from(sorted(DURATION_UNITS_S)),
)
def test_duration_is_amount_times_unit(amount: float, unit: str) -> None:
    """Any non-negative amount with any known unit is amount × the unit's seconds."""
    assert parse_duration(f"{amount!r}{unit}") == pytest.approx(amount * DURATION_UNITS_S[unit])


@given(
    amount=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    period=st.sampled_from(sorted(RATE_PERIODS_S)),
)
def test_rate_is_amount_per_period(amount: float, period: str) -> None:
    """Any non-negative amount per any known period is amount / the period's seconds."""
    assert parse_rate(f"{amount!r}/{period}") == pytest.approx(amount / RATE_PERIODS_S[period])


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("20:00", 72000.0), ("0:00", 0.0), ("09:30", 34200.0), ("23:59:59", 86399.0)],
)
def test_parse_time_of_day(value, seconds) -> None:
    """HH:MM and HH:MM:SS give seconds after midnight."""
    assert parse_time_of_day(value) == seconds


def test_parse_time_of_day_accepts_toml_local_time() -> None:
    """A TOML local time (datetime.time) is accepted as it is."""
    assert parse_time_of_day(time(20, 15, 30)) == 72930.0


@pytest.mark.parametrize("value", ["24:00", "12:60", "noon", "8pm", 20, "12:00:60"])
def test_parse_time_of_day_rejects(value) -> None:
    """Impossible or unlabelled times of day are rejected."""
    with pytest.raises(ValueError, match="time of day"):
        parse_time_of_day(value)


def test_parse_timestamp_forms() -> None:
    """ISO strings with Z or an offset, naive (as UTC) and TOML datetimes are all aware."""
    utc = datetime(2021, 1, 15, 14, 30, tzinfo=UTC)
    assert parse_timestamp("2021-01-15T14:30:00Z") == utc
    assert parse_timestamp("2021-01-15T15:30:00+01:00") == utc
    assert parse_timestamp("2021-01-15T14:30:00") == utc
    assert parse_timestamp(datetime(2021, 1, 15, 14, 30)) == utc
    assert parse_timestamp("2021-01-15") == datetime(2021, 1, 15, tzinfo=UTC)
    aware = datetime(2021, 1, 15, 9, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert parse_timestamp(aware) == utc
    assert parse_timestamp("2021-01-15T14:30:00Z").tzinfo is not None


@pytest.mark.parametrize("value", ["yesterday", "2021-13-01", 1610721000, None])
def test_parse_timestamp_rejects(value) -> None:
    """Non-timestamps are rejected with an example of the expected form."""
    with pytest.raises(ValueError, match="2021-01-15T14:30:00Z"):
        parse_timestamp(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250ms"),
        (45, "45s"),
        (600, "10min"),
        (5400, "90min"),
        (3 * 3600, "3.0h"),
        (2 * 86400 + 4 * 3600, "2d 4h"),
        (2 * 86400 + 23.7 * 3600, "3d 0h"),
        (math.inf, "∞"),
    ],
)
def test_format_duration(seconds, text) -> None:
    """Durations print in the largest sensible unit."""
    assert format_duration(seconds) == text


@given(st.floats(min_value=0.001, max_value=1e8))
def test_format_duration_reads_back_within_half_its_last_unit(seconds: float) -> None:
    """What format_duration prints parses back to within half of the last unit it shows."""
    text = format_duration(seconds)
    parts = text.split()
    back = sum(parse_duration(part) for part in parts)
    last_unit = parts[-1].lstrip("0123456789.")
    if last_unit == "h" and "." in parts[-1]:
        half_unit = 0.05 * 3600  # one decimal of an hour
    else:
        half_unit = DURATION_UNITS_S[last_unit] / 2
    assert abs(back - seconds) <= half_unit * (1 + 1e-9)
