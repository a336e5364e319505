"""How a sensitivity analysis judges a key: paired differences, the conclusion, the verdict.

How a key is judged (all intervals are 95% Student t intervals over replications; the
differences are paired by replication against the baseline; with one replication, or the
deterministic fluid engine, an interval is the point itself):

- A difference is *beyond noise* when its interval excludes 0 and its mean is at least the
  figure's resolution (one bin for times; 1e-4 for shares and ratios; 0.1% of the baseline
  otherwise): a deterministic engine's rounding is no effect.
- The *conclusion* (by default) is the baseline's: whether there is an outage (in most runs);
  if so, its onset within `onset_within_s` (2 h) and its total outage time within
  `duration_within` (50%) of the baseline's means. At a level it *breaks* when the outage
  presence differs beyond noise, or the interval of the onset's (the outage time's)
  difference lies wholly outside the tolerance; it is *unclear* when the mean is outside but
  the interval is not; otherwise it *holds*.
- A key *changes the conclusion* when it breaks at either end; else it *moves it* when any
  chosen figure (or an unclear conclusion) differs beyond noise at either end; else it has
  *no effect within noise*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sim.experiments.sweep import FIGURES, aggregate, mean_ci

# --figure names -> the column of a run's row (failed_share is derived from success_ratio).
FIGURE_COLUMNS = {
    "outage_time": "outage_total_s",
    "onset": "first_outage_start_s",
    "failed_share": "failed_share",
    **{name: name for name in FIGURES if name not in ("outage_total_s", "first_outage_start_s")},
}
DEFAULT_FIGURES = ("outage_time", "onset", "failed_share")
TIME_FIGURES = {"outage_total_s", "first_outage_start_s", "latency_p99_s", "wait_mean_s"}
SHARE_FIGURES = {"failed_share", "success_ratio", "utilization", "metastable", "recovered"}
BASELINE = "baseline"
CHANGES, MOVES, NO_EFFECT = "changes the conclusion", "moves it", "no effect within noise"
DES_REPS, FLUID_REPS = 5, 1


@dataclass(frozen=True)
class Assumption:
    """One key and its range; `where` says where the range came from (file:line or --vary)."""

    key: str
    low: Any
    high: Any
    why: str = ""
    where: str = "--vary"
    index: int | None = None  # position in the file's [[sensitivity]] table


@dataclass
class Analysis:
    """What `sensitivity` found: the levels' table, a verdict per key, and how it was run."""

    title: str
    engine: str
    engine_reason: str
    reps: int
    figures: list[str]
    assumptions: list[Assumption]
    baseline: dict[str, Any]
    levels: list[dict[str, Any]]  # one row per key and level (sensitivity.csv)
    verdicts: dict[str, dict[str, Any]]  # per key: verdict, holds_low, holds_high, why
    conclusion: str
    start: Any = None
    bin_s: float = 60.0
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Judging


def _with_failed_share(row: dict) -> dict:
    ratio = row.get("success_ratio")
    return {**row, "failed_share": None if ratio is None else 1.0 - ratio}


def _resolution(column: str, bin_s: float, baseline: float) -> float:
    if column in TIME_FIGURES:
        return bin_s
    if column in SHARE_FIGURES:
        return 1e-4
    return 1e-3 * abs(baseline) if math.isfinite(baseline) and baseline else 1e-9


def paired(level_rows: list[dict], base_rows: list[dict], column: str) -> tuple[float, ...]:
    """Mean and 95% interval of the level's figure minus the baseline's, paired by
    replication over runs where both are defined (one pair: the point itself)."""
    base = {r["replication"]: r[column] for r in base_rows if not r["error"]}
    diffs = [
        float(r[column]) - float(base[r["replication"]])
        for r in level_rows
        if not r["error"] and r[column] is not None and base.get(r["replication"]) is not None
    ]
    if len(diffs) == 1:
        return diffs[0], diffs[0], diffs[0]
    return mean_ci(diffs)


def _beyond(interval: tuple[float, ...], resolution: float) -> bool:
    mean, low, high = interval
    return math.isfinite(mean) and abs(mean) >= resolution and not (low <= 0 <= high)


def _outside(interval: tuple[float, ...], tolerance: float) -> str:
    """'breaks' when the interval lies wholly outside +-tolerance; 'unclear' when only its
    mean does; 'holds' otherwise."""
    mean, low, high = interval
    if not math.isfinite(mean):
        return "holds"
    if low > tolerance or high < -tolerance:
        return "breaks"
    return "unclear" if abs(mean) > tolerance else "holds"


def analyse(
    rows: list[dict],
    assumptions: list[Assumption],
    figures: list[str],
    onset_within_s: float = 7200.0,
    duration_within: float = 0.5,
    bin_s: float = 60.0,
) -> Analysis:
    """Judge every key from the runs (module docstring); rows are sweep's rows with `key`,
    `level` and `value` as their point."""
    rows = [_with_failed_share(r) for r in rows if r is not None]
    for row in rows:
        row["outage"] = None if row["error"] else float(row["outage_total_s"] > 0)
    table = {(e["key"], e["level"]): e for e in aggregate(rows, ["key", "level"])}
    for entry in table.values():
        group = [r for r in rows if (r["key"], r["level"]) == (entry["key"], entry["level"])]
        mean, low, high = mean_ci(1.0 - r["success_ratio"] for r in group if not r["error"])
        entry |= {
            "failed_share_mean": mean,
            "failed_share_ci_low": low,
            "failed_share_ci_high": high,
        }
    base_rows = [r for r in rows if r["level"] == BASELINE]
    baseline = table.get((BASELINE, BASELINE), {})
    base_outage = baseline.get("outage_share", math.nan) >= 0.5
    if not baseline or not baseline.get("runs"):
        conclusion = "unknown: the baseline has no finished run"
    elif base_outage:
        conclusion = (
            f"an outage, starting within {onset_within_s / 3600:g} h of the baseline's "
            f"onset and lasting within {duration_within:.0%} of its outage time"
        )
    else:
        conclusion = "no outage"
    levels, verdicts = [], {}
    for assumption in assumptions:
        moved, states = False, {}
        for level in ("low", "high"):
            group = [r for r in rows if (r["key"], r["level"]) == (assumption.key, level)]
            entry = table.get((assumption.key, level))
            row = {"key": assumption.key, "level": level, "value": getattr(assumption, level)}
            if entry is None or not entry["runs"] or not base_rows:
                states[level] = "not run"
                levels.append(row | {"conclusion": "not run"})
                continue
            row |= {k: v for k, v in entry.items() if k not in ("key", "level")}
            for name in figures:
                column = FIGURE_COLUMNS[name]
                interval = paired(group, base_rows, column)
                row |= dict(
                    zip(
                        (f"{column}_diff", f"{column}_diff_ci_low", f"{column}_diff_ci_high"),
                        interval,
                        strict=True,
                    )
                )
                resolution = _resolution(column, bin_s, baseline.get(f"{column}_mean", math.nan))
                moved |= _beyond(interval, resolution)
            state, reason = _conclusion_at(
                group, base_rows, entry, baseline, bin_s, onset_within_s, duration_within
            )
            states[level] = state
            moved |= state == "unclear"
            levels.append(row | {"conclusion": state, "reason": reason})
        broken = "breaks" in states.values()
        verdict = CHANGES if broken else MOVES if moved else NO_EFFECT
        verdicts[assumption.key] = {
            "verdict": verdict,
            "low": states["low"],
            "high": states["high"],
        }
        for row in levels[-2:]:
            row["verdict"] = verdict
    base_row = {"key": BASELINE, "level": BASELINE, "value": ""}
    base_row |= {k: v for k, v in baseline.items() if k not in ("key", "level")}
    return Analysis(
        "",
        "",
        "",
        0,
        figures,
        assumptions,
        base_row | {"conclusion": conclusion},
        levels,
        verdicts,
        conclusion,
        bin_s=bin_s,
    )


def _conclusion_at(group, base_rows, entry, baseline, bin_s, onset_within_s, duration_within):
    """The conclusion at one level: ('holds' | 'breaks' | 'unclear', a short reason)."""
    base_outage = baseline["outage_share"] >= 0.5
    level_outage = entry["outage_share"] >= 0.5
    if base_outage != level_outage:
        presence = paired(group, base_rows, "outage")
        state = "breaks" if _beyond(presence, 1e-4) else "unclear"
        return state, "an outage" if level_outage else "no outage"
    if not base_outage:
        return "holds", "no outage"
    onset = _outside(paired(group, base_rows, "first_outage_start_s"), onset_within_s)
    total = paired(group, base_rows, "outage_total_s")
    duration = _outside(total, duration_within * baseline["outage_total_s_mean"])
    reasons = []
    mean_onset = paired(group, base_rows, "first_outage_start_s")[0]
    if onset != "holds":
        reasons.append(
            f"onset {abs(mean_onset) / 3600:.1f} h " + ("later" if mean_onset > 0 else "earlier")
        )
    if duration != "holds":
        change = total[0] / baseline["outage_total_s_mean"]
        reasons.append(f"outage time {abs(change):.0%} " + ("longer" if change > 0 else "shorter"))
    state = "breaks" if "breaks" in (onset, duration) else "unclear" if reasons else "holds"
    return state, "; ".join(reasons) or "within the tolerances"
