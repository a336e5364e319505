"""Workload: the fresh-request rate λ(t) of a scenario, an arrival sampler for it, and the
service-time draws of its pool (one definition for both engines and the theory module).

λ(t) comes from a constant rate with surges and a daily cycle, and from a user population:
downloads per day (constant, with surges, or replayed from a CSV) make new users, whose sign-up
work arrives at once and whose steady traffic adds up as the user base accumulates.

λ is held as a piecewise-linear function on a fine grid (at most one minute a cell, every
surge edge a cell edge), so both engines see the same demand and the thinning bound of each
cell (the larger of its two ends) is exact: a short surge is never skipped.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from datetime import timedelta

import numpy as np

from sim.errors import ScenarioError
from sim.model.scenario import MAX_RATE_RPS, Scenario, ServiceTime, Surge
from sim.model.units import parse_timestamp

DAY_S = 86400.0
MAX_CELL_S = 60.0


def surge_factor(surges: list[Surge], base: float, t: np.ndarray) -> np.ndarray:
    """Rate after surges: each multiplies by `factor` or replaces by `rate`, ramping linearly."""
    value = np.full_like(t, base, dtype=float)
    for surge in surges:
        end = math.inf if surge.duration is None else surge.at + surge.duration
        target = (
            value * surge.factor if surge.factor is not None else np.full_like(value, surge.rate)
        )
        weight = np.where((t >= surge.at) & (t < end), 1.0, 0.0)
        if surge.ramp > 0:
            up = np.clip((t - surge.at) / surge.ramp, 0.0, 1.0)
            down = np.clip((end - t) / surge.ramp, 0.0, 1.0) if math.isfinite(end) else 1.0
            weight = weight * np.minimum(up, down)
        value = value + weight * (target - value)
    return value


def surge_edges(surges: list[Surge]) -> list[float]:
    """Times where a surge's rate has a corner or a jump."""
    edges = []
    for surge in surges:
        edges += [surge.at, surge.at + surge.ramp]
        if surge.duration is not None:
            end = surge.at + surge.duration
            edges += [end - surge.ramp, end]
    return edges


def read_downloads_csv(scenario: Scenario) -> tuple[np.ndarray, np.ndarray]:
    """(offset_s, downloads_per_s) from a CSV with `date` and `downloads` columns.

    Each row is a day's total, placed at that day's noon (UTC); between rows the rate is
    interpolated linearly, and before the first and after the last row it is held.
    """
    population = scenario.population
    path = scenario.resolve_path(population.downloads_csv)
    start = scenario.scenario.start
    if start is None:
        raise ScenarioError(
            "downloads_csv needs scenario.start to place its dates",
            file=scenario.path,
            key="population.downloads_csv",
        )
    times, rates = [], []
    line = 1
    try:
        # utf-8-sig: a spreadsheet's byte-order mark would otherwise hide the `date` column.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = {"date", "downloads"} - set(reader.fieldnames or ())
            if missing:
                raise ScenarioError(
                    f"the CSV has no column {', '.join(sorted(missing))!s}"
                    " (its first line names the columns: date,downloads)",
                    file=path,
                    key="population.downloads_csv",
                    line=1,
                )
            for row in reader:
                line = reader.line_num
                offset, downloads = _csv_row(row, start, path, line)
                if times and offset <= times[-1]:
                    raise ScenarioError(
                        "dates must increase from row to row", file=path, key="date", line=line
                    )
                times.append(offset)
                rates.append(downloads / DAY_S)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ScenarioError(
            f"cannot read the CSV: {err}", file=path, key="population.downloads_csv", line=line
        ) from None
    if not times:
        raise ScenarioError(
            "the CSV has no rows", file=path, key="population.downloads_csv", line=max(line, 1)
        )
    return np.asarray(times), np.asarray(rates)


def _csv_row(row: dict, start, path, line: int) -> tuple[float, float]:
    """(offset_s of the day's noon, downloads) of one CSV row, or a ScenarioError at its line."""
    date, downloads_text = row.get("date"), row.get("downloads")
    if date is None or downloads_text is None:
        raise ScenarioError(
            "bad row: fewer cells than the header (date,downloads)",
            file=path,
            key="downloads" if date is not None else "date",
            line=line,
        )
    try:
        day = parse_timestamp(date.strip())
        offset = (day + timedelta(hours=12) - start).total_seconds()
    except (ValueError, OverflowError):
        raise ScenarioError(
            f"bad row: expected a date like 2021-01-15, got {date!r}",
            file=path,
            key="date",
            line=line,
        ) from None
    try:
        downloads = float(downloads_text)
    except ValueError:
        raise ScenarioError(
            f"bad row: expected a number of downloads, got {downloads_text!r}",
            file=path,
            key="downloads",
            line=line,
        ) from None
    if not math.isfinite(downloads) or not 0 <= downloads <= MAX_RATE_RPS * DAY_S:
        raise ScenarioError(
            f"downloads must be a finite number >= 0 (and at most {MAX_RATE_RPS * DAY_S:g}),"
            f" got {downloads_text!r}",
            file=path,
            key="downloads",
            line=line,
        )
    return offset, downloads


class Demand:
    """The fresh-request rate λ(t) in real requests per second, piecewise linear on a grid."""

    def __init__(self, scenario: Scenario) -> None:
        meta = scenario.scenario
        self.duration_s = meta.duration
        edges = [0.0, meta.duration]
        edges += surge_edges(scenario.arrivals.surge)
        self._csv = None
        if scenario.population is not None:
            edges += surge_edges(scenario.population.surge)
            if scenario.population.downloads_csv is not None:
                self._csv = read_downloads_csv(scenario)
                edges += list(self._csv[0])
        cell = min(MAX_CELL_S, meta.bin, meta.duration)
        grid = np.arange(0.0, meta.duration, cell)
        edges = [e for e in edges if 0 <= e <= meta.duration]
        self.t = np.unique(np.concatenate([grid, edges, [meta.duration]]))
        self._scenario = scenario
        # Values just inside each cell's ends (a jump at a cell edge stays exact).
        width = np.diff(self.t)
        inset = np.minimum(width * 1e-6, 1e-6)
        # Rates that multiply out past a float become inf, which `run.estimate_requests`
        # refuses; the overflow itself is not worth a warning.
        with np.errstate(over="ignore", invalid="ignore"):
            self.left = self._rate(self.t[:-1] + inset)
            self.right = self._rate(self.t[1:] - inset)

    # -- the rate, evaluated directly ------------------------------------------------------
    def _daily_cycle(self, t: np.ndarray) -> np.ndarray:
        diurnal = self._scenario.arrivals.diurnal
        if diurnal is None or diurnal.amplitude == 0:
            return np.ones_like(t)
        return 1.0 + diurnal.amplitude * np.cos(
            2 * np.pi * (t + self._clock0() - diurnal.peak) / DAY_S
        )

    def _clock0(self) -> float:
        start = self._scenario.scenario.start
        if start is None:
            return 0.0
        return start.hour * 3600.0 + start.minute * 60.0 + start.second

    def downloads_rps(self, t: np.ndarray) -> np.ndarray:
        """New downloads per second (daily cycle applied)."""
        population = self._scenario.population
        if population is None:
            return np.zeros_like(t)
        if self._csv is not None:
            base = np.interp(t, *self._csv)
            # Surges on a replayed series multiply it.
            level = surge_factor(population.surge, 1.0, t) * base
        else:
            level = surge_factor(population.surge, population.downloads, t)
        return level * self._daily_cycle(t)

    def _active_users(self, t: np.ndarray) -> np.ndarray:
        population = self._scenario.population
        # Cumulative downloads on a fine grid (trapezoids), then interpolated.
        step = min(MAX_CELL_S, self.duration_s / 10)
        grid = np.arange(0.0, self.duration_s + step, step)
        rate = self.downloads_rps(grid)
        cumulative = np.concatenate([[0.0], np.cumsum((rate[1:] + rate[:-1]) / 2 * step)])
        return population.initial_users + population.activation * np.interp(t, grid, cumulative)

    def _rate(self, t: np.ndarray, source: str | None = None) -> np.ndarray:
        """λ(t): all of it, or one route `source`'s part: "steady" (the [arrivals] rate and
        the active users' requests) or "signup" (the new users' sign-up work)."""
        arrivals = self._scenario.arrivals
        cycle = self._daily_cycle(t)
        rate = np.zeros_like(t)
        if source != "signup":
            rate = rate + surge_factor(arrivals.surge, arrivals.rate, t) * cycle
        population = self._scenario.population
        if population is not None:
            if source != "signup":
                users = self._active_users(t)
                rate = rate + users * population.requests_per_user * cycle
            if source != "steady":
                signups = population.activation * self.downloads_rps(t)
                rate = rate + signups * population.requests_per_signup
        return rate

    # -- the grid form both engines use ----------------------------------------------------
    def rate(self, t: np.ndarray | float) -> np.ndarray:
        """λ(t) from the grid (what the engines sample), real requests per second."""
        t = np.asarray(t, dtype=float)
        index = np.clip(np.searchsorted(self.t, t, side="right") - 1, 0, len(self.left) - 1)
        t0, t1 = self.t[index], self.t[index + 1]
        frac = np.clip((t - t0) / (t1 - t0), 0.0, 1.0)
        return self.left[index] + (self.right[index] - self.left[index]) * frac

    def cumulative(self, t: np.ndarray | float) -> np.ndarray:
        """Expected fresh requests in [0, t] (real units)."""
        area = np.concatenate([[0.0], np.cumsum((self.left + self.right) / 2 * np.diff(self.t))])
        t = np.clip(np.asarray(t, dtype=float), 0.0, self.duration_s)
        index = np.clip(np.searchsorted(self.t, t, side="right") - 1, 0, len(self.left) - 1)
        partial = t - self.t[index]
        at_t = self.rate(t)
        return area[index] + (self.left[index] + at_t) / 2 * partial

    def bin_means(self, bin_s: float, n_bins: int) -> np.ndarray:
        """Mean λ over each bin, real requests per second."""
        edges = np.minimum(np.arange(n_bins + 1) * bin_s, self.duration_s)
        totals = np.diff(self.cumulative(edges))
        widths = np.diff(edges)
        return np.divide(totals, widths, out=np.zeros_like(totals), where=widths > 0)

    def peak(self, t0: float, t1: float) -> float:
        """Largest λ in [t0, t1] (real requests per second)."""
        inside = (self.t[:-1] < t1) & (self.t[1:] > t0)
        if not inside.any():
            return float(self.rate(min(max(t0, 0.0), self.duration_s)))
        return float(max(self.left[inside].max(), self.right[inside].max()))

    def expected_total(self) -> float:
        """Expected fresh requests over the whole run (real units)."""
        return float(self.cumulative(self.duration_s))

    def unit_grid(
        self, scale: float, share: float = 1.0, source: str | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The grid the DES draws arrivals from, in simulated requests (λ / scale), of the
        whole demand times `share`, or of one `source`'s part (a route's): cell starts `t`
        (with the end), each cell's rate at its start `low` and `slope` such that the mean
        count from a cell's start t0 to t0 + x is low·x + slope·x², and the mean count `mass`
        at each cell start (with the total at the end)."""
        left, right = self.left, self.right
        if source is not None:
            left, right = self.source_edges(source)
        left, right = left * share, right * share
        width = np.diff(self.t)
        low = left / scale
        slope = (right - left) / scale / (2 * width)
        mass = np.concatenate([[0.0], np.cumsum((left + right) / 2 * width / scale)])
        return self.t.copy(), low, slope, mass

    def source_edges(self, source: str) -> tuple[np.ndarray, np.ndarray]:
        """A source's rate just inside each cell's ends (as `left` and `right` are λ's)."""
        width = np.diff(self.t)
        inset = np.minimum(width * 1e-6, 1e-6)
        with np.errstate(over="ignore", invalid="ignore"):
            return (
                self._rate(self.t[:-1] + inset, source),
                self._rate(self.t[1:] - inset, source),
            )


def service_time_draw(
    time_spec: ServiceTime, rng: np.random.Generator
) -> Callable[[int], np.ndarray]:
    """A function n -> n service times (seconds) of the given distribution."""
    mean = time_spec.mean_s
    if time_spec.dist == "exponential":
        # The same numbers as rng.exponential(mean, n), which pays for broadcasting its scale.
        return lambda n: mean * rng.standard_exponential(n)
    if time_spec.dist == "deterministic":
        return lambda n: np.full(n, mean)
    if time_spec.dist == "lognormal":
        sigma2 = math.log1p(time_spec.cv**2)
        mu = math.log(mean) - sigma2 / 2
        return lambda n: rng.lognormal(mu, math.sqrt(sigma2), n)
    if time_spec.dist == "gamma":
        shape = 1.0 / time_spec.cv**2
        return lambda n: rng.gamma(shape, mean / shape, n)
    samples = np.asarray(time_spec.samples, dtype=float)
    return lambda n: rng.choice(samples, n)
