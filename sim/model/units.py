"""Parse the human units of scenario files: durations, rates, times of day, timestamps.

Durations: "250ms", "30s", "5min", "2h", "3d", "1w" or plain seconds.
Rates: "9/s", "50000/day", "1.3M/day", "120/min", "20/h" or plain per-second numbers.
Every parser raises `ValueError` with a message fit to show a user; `scenario.py` adds the
file, key and line.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, time

DURATION_UNITS_S = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "min": 60.0,
    "m": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "w": 604800.0,
}
RATE_PERIODS_S = {
    "s": 1.0,
    "sec": 1.0,
    "min": 60.0,
    "m": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "w": 604800.0,
    "week": 604800.0,
}
MULTIPLIERS = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9}

_NUMBER = r"[+-]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
# Possessive quantifiers (*+): a long run of spaces costs linear time, not quadratic.
_DURATION_RE = re.compile(rf"^\s*+({_NUMBER})\s*+([a-z]*+)\s*+$")
_RATE_RE = re.compile(rf"^\s*+({_NUMBER})\s*+([kKMGB]?)\s*+/\s*+([a-z]++)\s*+$")

_TIME_OF_DAY_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


def shown(value: object, limit: int = 60) -> str:
    """repr(value) for a message, cut to `limit` characters (a pasted blob stays readable)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 4]} ..."


def _finite(value: float, what: str, given: object = None) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {shown(given or value)}")
    return value


def _plain_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an integer of hundreds of digits
            return math.inf

    return None


def parse_duration(value: object) -> float:
    """Seconds from a duration string with a unit ("250ms", "5min", "2d") or plain seconds."""
    number = _plain_number(value)
    if number is None:
        if not isinstance(value, str):
            raise ValueError(f"expected a duration like '30s' or '5min', got {shown(value)}")
        match = _DURATION_RE.match(value)
        if not match:
            raise ValueError(f"expected a duration like '30s' or '5min', got {shown(value)}")
        amount, unit = match.groups()
        unit = unit or "s"
        if unit not in DURATION_UNITS_S:
            known = ", ".join(sorted(DURATION_UNITS_S, key=DURATION_UNITS_S.get))
            raise ValueError(
                f"unknown duration unit {shown(unit)} in {shown(value)} (use one of: {known})"
            )
        number = float(amount.replace("_", "")) * DURATION_UNITS_S[unit]
    _finite(number, "a duration", value)
    if number < 0:
        raise ValueError(f"a duration cannot be negative, got {shown(value)}")
    return number


def parse_rate(value: object) -> float:
    """Events per second from a rate string ("9/s", "50000/day", "1.3M/day") or plain per-second."""
    number = _plain_number(value)
    if number is None:
        if not isinstance(value, str):
            raise ValueError(f"expected a rate like '9/s' or '1.3M/day', got {shown(value)}")
        match = _RATE_RE.match(value)
        if not match:
            raise ValueError(f"expected a rate like '9/s' or '1.3M/day', got {shown(value)}")
        amount, multiplier, period = match.groups()
        if period not in RATE_PERIODS_S:
            known = ", ".join(sorted(RATE_PERIODS_S, key=RATE_PERIODS_S.get))
            raise ValueError(
                f"unknown rate period {shown(period)} in {shown(value)} (use one of: {known})"
            )
        number = float(amount.replace("_", "")) * MULTIPLIERS[multiplier] / RATE_PERIODS_S[period]
    _finite(number, "a rate", value)
    if number < 0:
        raise ValueError(f"a rate cannot be negative, got {shown(value)}")
    return number


def parse_time_of_day(value: object) -> float:
    """Seconds after midnight from "HH:MM" or "HH:MM:SS" (a TOML local time is accepted too)."""
    if isinstance(value, time):
        return value.hour * 3600.0 + value.minute * 60.0 + value.second
    if isinstance(value, str):
        match = _TIME_OF_DAY_RE.match(value)
        if match:
            hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
            if hours < 24 and minutes < 60 and seconds < 60:
                return hours * 3600.0 + minutes * 60.0 + seconds
    raise ValueError(f"expected a time of day like '20:00', got {shown(value)}")


def parse_timestamp(value: object) -> datetime:
    """A timezone-aware datetime from a TOML datetime or an ISO 8601 string (naive means UTC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"expected a timestamp like 2021-01-15T14:30:00Z, got {shown(value)}"
            ) from None
    if not isinstance(value, datetime):
        raise ValueError(f"expected a timestamp like 2021-01-15T14:30:00Z, got {shown(value)}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def format_duration(seconds: float) -> str:
    """A short human form of a duration in seconds: '45s', '12min', '3.5h', '2d 4h'."""
    if not math.isfinite(seconds):
        return "∞"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f}h"
    # Round to whole hours first, so 2 days 23.7 hours prints "3d 0h", not "2d 24h".
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days}d {hours}h"
