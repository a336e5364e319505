"""The chart of a sweep (sweep.png): what each setting costs in outage time.

One swept parameter: mean outage time per run with its 95% confidence band and every run as
a dot, above the share of runs with an outage, with the least value that had no outage in any
run marked. Two parameters: a heatmap of mean outage time, each cell labelled with the time
and the share of runs with an outage. Minutes, or hours for outages over five hours. Drawn
from the aggregate table and the runs alone.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sim.io import atomic_write  # noqa: E402

WIDTH_IN, DPI = 11.0, 100
OUTAGE_COLOUR = "#d62728"
SAFE_COLOUR = "#2ca02c"


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
