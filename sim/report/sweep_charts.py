"""The charts of a sweep (sweep.png) and of a sensitivity analysis (tornado.png).

(Over ~400 lines: both charts draw from sweep's aggregate table with the same helpers for
intervals, units and labels.)

sweep.png: what each setting costs in outage time.

One swept parameter: mean outage time per run with its 95% confidence band and every run as
a dot, above the share of runs with an outage, with the least value that had no outage in any
run marked. Two parameters: a heatmap of mean outage time, each cell labelled with the time
and the share of runs with an outage. Minutes, or hours for outages over five hours. Drawn
from the aggregate table and the runs alone.

tornado.png: one panel per figure (outage time, onset, failed share by default), one row per
key, sorted by its effect over all panels (largest on top); a bar runs from the baseline to the
key's low end (blue) and to its high end (orange), each end with its 95% interval; the
baseline is the vertical line (its interval shaded). Keys that change the conclusion are
labelled in red and marked "!", keys with no effect within noise in grey. Onsets are dates when
the scenario has a start.
"""

from __future__ import annotations

import io
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sim.io import atomic_write  # noqa: E402

WIDTH_IN, DPI = 11.0, 100
OUTAGE_COLOUR = "#d62728"
SAFE_COLOUR = "#2ca02c"
LOW_COLOUR, HIGH_COLOUR = "#1f77b4", "#ff7f0e"
VERDICT_COLOUR = {"changes the conclusion": "#c00000", "no effect within noise": "#888888"}
FIGURE_TITLES = {
    "outage_total_s": "outage time",
    "first_outage_start_s": "onset of the first outage",
    "failed_share": "failed share of requests",
}


def write_sweep_chart(
    table: list[dict], rows: list[dict], params: list[str], path: Path, title: str = ""
) -> Path | None:
    """Draw sweep.png for one or two swept parameters; None (nothing written) for more."""

    if len(params) == 1:
        fig = line_figure(table, rows, params[0], title)
    elif len(params) == 2:
        fig = heatmap_figure(table, params, title)
    else:
        return None
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
    return path


def _positions(values: list) -> tuple[np.ndarray, list[str] | None]:
    """Numeric values are their own x; anything else is placed in order, labelled."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=float), None
    return np.arange(len(values), dtype=float), [str(v) for v in values]


def _duration_unit(seconds) -> tuple[float, str]:
    """Minutes for outages up to five hours, hours above: numbers a reader takes in at once."""
    finite = [v for v in seconds if v is not None and math.isfinite(v)]
    return (3600.0, "hours") if finite and max(finite) > 5 * 3600 else (60.0, "minutes")


def _scaled(values, unit_s: float) -> np.ndarray:
    return np.asarray([math.nan if v is None else v / unit_s for v in values], dtype=float)


def _tick(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:g}"


def _label(value) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _tick(value)
    return str(value)


def line_figure(table: list[dict], rows: list[dict], param: str, title: str = ""):
    """Outage time (mean, 95% CI band, runs) and share of runs with an outage vs `param`."""
    values = [entry[param] for entry in table]
    x, labels = _positions(values)
    where = {repr(v): xi for v, xi in zip(values, x, strict=True)}
    ok = [r for r in rows if not r["error"]]
    unit_s, unit = _duration_unit([r["outage_total_s"] for r in ok])
    mean = _scaled((e["outage_total_s_mean"] for e in table), unit_s)
    low = np.maximum(_scaled((e["outage_total_s_ci_low"] for e in table), unit_s), 0)
    high = _scaled((e["outage_total_s_ci_high"] for e in table), unit_s)
    share = np.asarray([e["outage_share"] for e in table], dtype=float) * 100
    runs = max((e["runs"] for e in table), default=0)

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(WIDTH_IN, 7.5), dpi=DPI, sharex=True, height_ratios=(2.2, 1)
    )
    top.scatter(
        [where[repr(r[param])] for r in ok],
        _scaled((r["outage_total_s"] for r in ok), unit_s),
        s=12,
        color="#555555",
        alpha=0.35,
        lw=0,
        label="one run",
        zorder=2,
    )
    top.fill_between(x, low, high, color=OUTAGE_COLOUR, alpha=0.18, lw=0, label="95% CI of mean")
    top.plot(x, mean, color=OUTAGE_COLOUR, lw=2, marker="o", label="mean outage per run", zorder=3)
    top.set_ylabel(f"outage {unit} per run")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    bottom.bar(x, share, width=_bar_width(x), color=OUTAGE_COLOUR, alpha=0.6)
    bottom.set_ylabel("runs with an outage (%)")
    bottom.set_ylim(0, 105)
    bottom.grid(alpha=0.3, axis="y")
    bottom.set_xlabel(param)
    if labels is not None:
        bottom.set_xticks(x, labels)
    elif len(x) <= 25:
        bottom.set_xticks(x, [_tick(v) for v in x])
    safe = _first_safe(table)
    if safe is not None:
        xs = x[safe]
        for ax in (top, bottom):
            ax.axvline(xs, color=SAFE_COLOUR, ls="--", lw=1.5)
        # The text goes right of the line (where the runs had no outage) when it fits there,
        # else left: either way inside the axes. About 7 px a character at 10 pt.
        text = (
            f"from {param} = {_label(values[safe])}: no outage in any of {table[safe]['runs']} runs"
        )
        left, right = bottom.get_xlim()
        room = (right - xs) / (right - left) * WIDTH_IN * DPI * 0.85
        on_right = room > 7 * len(text) + 12
        bottom.annotate(
            text,
            xy=(xs, 0.5),
            xycoords=("data", "axes fraction"),
            xytext=(6 if on_right else -6, 0),
            textcoords="offset points",
            ha="left" if on_right else "right",
            va="center",
            color=SAFE_COLOUR,
            fontsize=10,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
    top.legend(loc="best", framealpha=0.9)
    top.set_title(
        (f"{title}\n" if title else "")
        + f"outage {unit} by {param} ({runs} runs per value, common random numbers)",
        loc="left",
    )
    fig.tight_layout()
    return fig


def _bar_width(x: np.ndarray) -> float:
    gaps = np.diff(np.sort(x))
    return 0.6 * float(gaps[gaps > 0].min()) if np.any(gaps > 0) else 0.6


def _first_safe(table: list[dict]) -> int | None:
    """Index of the least value from which no later point had an outage in any run."""
    safe = None
    for i in range(len(table) - 1, -1, -1):
        if table[i]["runs"] and table[i]["outage_share"] == 0:
            safe = i
        else:
            break
    return safe


def heatmap_figure(table: list[dict], params: list[str], title: str = ""):
    """Mean outage time over two parameters; cells labelled with it and the outage share."""
    across, down = params
    xs, x_labels = _levels(table, across)
    ys, y_labels = _levels(table, down)
    unit_s, unit = _duration_unit([e["outage_total_s_mean"] for e in table])
    outage = np.full((len(ys), len(xs)), np.nan)
    shares = np.full((len(ys), len(xs)), np.nan)
    for entry in table:
        i, j = ys.index(repr(entry[down])), xs.index(repr(entry[across]))
        outage[i, j] = entry["outage_total_s_mean"] / unit_s
        shares[i, j] = entry["outage_share"]
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 1.2 + 0.7 * len(ys) + 2), dpi=DPI)
    image = ax.imshow(outage, cmap="Reds", aspect="auto", origin="lower", vmin=0)
    peak = np.nanmax(outage) if np.any(np.isfinite(outage)) else 0
    short = {"minutes": "min", "hours": "h"}[unit]
    for (i, j), value in np.ndenumerate(outage):
        if math.isfinite(value):
            ax.text(
                j,
                i,
                f"{value:.1f} {short}\n{shares[i, j]:.0%} of runs",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if peak and value > 0.6 * peak else "black",
            )
    ax.set_xticks(range(len(xs)), x_labels)
    ax.set_yticks(range(len(ys)), y_labels)
    ax.set_xlabel(across)
    ax.set_ylabel(down)
    fig.colorbar(image, ax=ax, label=f"mean outage {unit} per run")
    ax.set_title(
        (f"{title}\n" if title else "") + f"mean outage {unit} per run by {across} and {down}",
        loc="left",
    )
    fig.tight_layout()
    return fig


def _levels(table: list[dict], param: str) -> tuple[list[str], list[str]]:
    """The distinct values of `param` in table order: keys (repr) and tick labels."""
    levels = {repr(entry[param]): _label(entry[param]) for entry in table}
    return list(levels), list(levels.values())


# ---------------------------------------------------------------------------------------------
# The tornado chart of a sensitivity analysis


def write_tornado_chart(analysis: Any, path: Path) -> Path | None:
    """Draw tornado.png from an Analysis (sim.experiments.sensitivity); None without levels."""
    if not analysis.levels:
        return None
    fig = tornado_figure(analysis)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
    return path


def short_value(value: Any, limit: int = 24) -> str:
    """A range end in a few characters: numbers as written, tables and lists compactly."""
    if isinstance(value, dict):
        text = "{" + ", ".join(f"{k}={short_value(v, limit)}" for k, v in value.items()) + "}"
    elif isinstance(value, list):
        text = "[" + ", ".join(short_value(v, limit) for v in value) + "]"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ends(analysis: Any, column: str) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Per key: {'low': (mean, ci_low, ci_high), 'high': ...} of a figure (NaN where none)."""
    ends: dict[str, dict[str, tuple[float, float, float]]] = {}
    for row in analysis.levels:
        triple = tuple(
            _number(row.get(f"{column}_{part}")) for part in ("mean", "ci_low", "ci_high")
        )
        ends.setdefault(row["key"], {})[row["level"]] = triple
    return ends


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _effect_order(analysis: Any, columns: list[str]) -> list[str]:
    """Keys by their effect summed over the panels, each panel's effects scaled to its largest."""
    keys = [a.key for a in analysis.assumptions]
    score = dict.fromkeys(keys, 0.0)
    for column in columns:
        base = _number(analysis.baseline.get(f"{column}_mean"))
        ends = _ends(analysis, column)
        effect = {}
        for key in keys:
            values = [ends.get(key, {}).get(lv, (math.nan,))[0] for lv in ("low", "high")]
            spread = [abs(v - base) for v in values if math.isfinite(v) and math.isfinite(base)]
            if all(math.isfinite(v) for v in values):
                spread.append(abs(values[1] - values[0]))
            # An end without an outage (no onset) moves the onset as far as anything can.
            missing = any(not math.isfinite(v) for v in values) and math.isfinite(base)
            effect[key] = (
                math.inf
                if missing and column == "first_outage_start_s"
                else max(spread, default=0.0)
            )
        finite = [e for e in effect.values() if math.isfinite(e)]
        top = max(finite, default=0.0) or 1.0
        for key in keys:
            score[key] += min(effect[key] / top, 1.5)
    return sorted(keys, key=lambda k: (-score[k], k))


def _axis_scale(analysis: Any, column: str) -> tuple[float, str, Any]:
    """Divisor, axis label and (for onsets with a start) the datetime origin of a panel."""
    if column == "first_outage_start_s":
        if analysis.start is not None:
            return 1.0, "onset (UTC)", analysis.start
        values = [_number(r.get(f"{column}_mean")) for r in [analysis.baseline, *analysis.levels]]
        unit_s, unit = _duration_unit(values)
        return unit_s, f"onset ({unit} into the run)", None
    if column in ("outage_total_s",):
        values = [_number(r.get(f"{column}_mean")) for r in [analysis.baseline, *analysis.levels]]
        unit_s, unit = _duration_unit(values)
        return unit_s, f"{FIGURE_TITLES[column]} ({unit} per run)", None
    if column in ("failed_share", "success_ratio", "utilization", "metastable", "recovered"):
        return 0.01, f"{FIGURE_TITLES.get(column, column)} (%)", None
    return 1.0, column, None


def _to_axis(values: np.ndarray, unit: float, origin) -> np.ndarray:
    if origin is None:
        return values / unit
    return np.asarray(
        [
            mdates.date2num(origin + timedelta(seconds=float(v))) if math.isfinite(v) else math.nan
            for v in values
        ]
    )


def tornado_figure(analysis: Any):
    """One panel per figure, one row per key (sorted by effect), low and high ends around the
    baseline with their 95% intervals."""
    columns = [_column_of(name) for name in analysis.figures]
    order = _effect_order(analysis, columns)
    ranges = {a.key: a for a in analysis.assumptions}
    rows = len(order)
    fig, axes = plt.subplots(
        1,
        len(columns),
        figsize=(14.0, 2.0 + 0.42 * rows),
        dpi=DPI,
        sharey=True,
        squeeze=False,
    )
    y = np.arange(rows)[::-1].astype(float)  # the largest effect on top
    for ax, column in zip(axes[0], columns, strict=True):
        unit, label, origin = _axis_scale(analysis, column)
        base = np.asarray(
            [_number(analysis.baseline.get(f"{column}_{p}")) for p in ("mean", "ci_low", "ci_high")]
        )
        base_x = _to_axis(base, unit, origin)
        ends = _ends(analysis, column)
        if math.isfinite(base_x[0]):
            ax.axvline(base_x[0], color="black", lw=1.2, zorder=3)
            if math.isfinite(base_x[1]) and base_x[2] > base_x[1]:
                ax.axvspan(base_x[1], base_x[2], color="black", alpha=0.08, lw=0)
        for yi, key in zip(y, order, strict=True):
            for level, colour, offset in (("low", LOW_COLOUR, 0.17), ("high", HIGH_COLOUR, -0.17)):
                mean, low, high = _to_axis(
                    np.asarray(ends.get(key, {}).get(level, (math.nan,) * 3)), unit, origin
                )
                if not math.isfinite(mean):
                    if math.isfinite(base_x[0]) and column == "first_outage_start_s":
                        ax.text(
                            base_x[0],
                            yi + offset,
                            f" {level}: no outage ",
                            fontsize=7.5,
                            ha="left",
                            va="center",
                            color=colour,
                        )
                    continue
                start = base_x[0] if math.isfinite(base_x[0]) else mean
                ax.barh(
                    yi + offset,
                    mean - start,
                    left=start,
                    height=0.32,
                    color=colour,
                    alpha=0.85,
                    zorder=2,
                )
                if math.isfinite(low) and high > low:
                    ax.errorbar(
                        mean,
                        yi + offset,
                        xerr=[[mean - low], [high - mean]],
                        fmt="none",
                        ecolor="black",
                        elinewidth=1,
                        capsize=2.5,
                        zorder=4,
                    )
        ax.set_title(FIGURE_TITLES.get(column, column), loc="left", fontsize=11)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, axis="x")
        if origin is not None:
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b\n%H:%M"))
            ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=5))
        if column == "outage_total_s":
            ax.set_xlim(left=0)
    first = axes[0][0]
    labels = []
    for key in order:
        verdict = analysis.verdicts.get(key, {}).get("verdict", "")
        mark = "! " if verdict == "changes the conclusion" else ""
        a = ranges[key]
        labels.append(f"{mark}{key}\n{short_value(a.low)} → {short_value(a.high)}")
    first.set_yticks(y, labels, fontsize=8.5)
    for tick, key in zip(first.get_yticklabels(), order, strict=True):
        tick.set_color(VERDICT_COLOUR.get(analysis.verdicts.get(key, {}).get("verdict"), "black"))
    first.set_ylim(-0.7, rows - 0.3)
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.95 / height))  # room for the title and legend above
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=LOW_COLOUR, alpha=0.85),
        plt.Rectangle((0, 0), 1, 1, color=HIGH_COLOUR, alpha=0.85),
        plt.Line2D([], [], color="black", lw=1.2),
    ]
    fig.legend(
        handles,
        ["low end", "high end", "baseline (shaded: its 95% CI)"],
        loc="upper right",
        bbox_to_anchor=(0.995, 1 - 0.5 / height),
        ncol=3,
        frameon=False,
        fontsize=9,
    )
    runs = f"{analysis.reps} run{'s' if analysis.reps != 1 else ''} per level"
    fig.text(
        0.01, 1 - 0.12 / height, analysis.title, ha="left", va="top", fontsize=12, weight="bold"
    )
    fig.text(
        0.01,
        1 - 0.42 / height,
        f"each assumption from its low to its high end, others at the scenario's values "
        f"({analysis.engine}, {runs}); red '!': changes the conclusion; grey: no effect "
        "within noise",
        ha="left",
        va="top",
        fontsize=9.5,
    )
    return fig


def _column_of(figure: str) -> str:
    return {"outage_time": "outage_total_s", "onset": "first_outage_start_s"}.get(figure, figure)
