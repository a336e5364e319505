"""The charts of a run (PNG, matplotlib): queue growth, load, latency, outcomes, a dashboard;
for a service graph also the graph itself (graph.png) and its tiers over time (tiers.png).

The only module that imports matplotlib, so it holds every chart, the comparison of two runs
and the picture of a service graph included; that is why it runs past 400 lines. Charts are
drawn from the summary dict and the Timeseries alone, so `outage-sim report DIR` redraws them
without simulating again.

Made for a postmortem: 1300 px wide at 100 dpi, axes labelled with units, legends beside the
plot (never over the data), series told apart by line style, marker and hatching as well as
by colour (Okabe–Ito palette), so they survive greyscale printing. Events are labelled in a
timeline lane above the plot, never on the data.
"""

from __future__ import annotations

import io
import math
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator  # noqa: E402

from sim.analysis.metrics import Timeseries  # noqa: E402
from sim.model.units import format_duration  # noqa: E402
from sim.report.text import call_depths, call_edges, count, queue_limit, tier_state  # noqa: E402

WIDTH_IN, DPI = 13.0, 100  # 1300 px wide
CHART_NAMES = ("queue.png", "load.png", "latency.png", "outcomes.png", "dashboard.png")
COMPARE_NAMES = ("compare_queue.png", "compare_load.png")
GRAPH_CHART_NAMES = ("graph.png", "tiers.png")  # service graphs only
# Okabe–Ito: distinguishable with colour-vision deficiencies.
BLUE, ORANGE, VERMILLION, GREEN = "#0072B2", "#E69F00", "#D55E00", "#009E73"
SKY, PURPLE, GREY, BLACK = "#56B4E9", "#CC79A7", "#777777", "#000000"
OUTAGE_COLOUR = VERMILLION
# kind -> (colour, line style, marker) for the event lines and the timeline lane
EVENT_STYLE = {
    "surge": (ORANGE, "--", "^"),
    "surge_end": (ORANGE, ":", "v"),
    "fault": (VERMILLION, "--", "X"),
    "fault_end": (VERMILLION, ":", "P"),
    "capacity": (GREEN, "-", "s"),
    "autoscale": (GREEN, "-.", "D"),
    "overload": (PURPLE, "--", "v"),
    "overload_end": (PURPLE, ":", "^"),
}
LANE_ROWS = 3
# Latency ticks a reader knows: 1 ms ... 1 day.
SECONDS_TICKS = (0.001, 0.01, 0.1, 1, 10, 60, 600, 3600, 6 * 3600, 86400)
SECONDS_TICKS_FINE = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30,
                      60, 120, 300, 600, 1200, 1800, 3600, 7200, 3 * 3600, 6 * 3600, 12 * 3600,
                      86400, 2 * 86400, 7 * 86400)  # fmt: skip
plt.rcParams.update(
    {
        "font.size": 11,
        "axes.titlesize": 12,
        "axes.labelsize": 11,
        "legend.fontsize": 10,
        "xtick.labelsize": 10,
        "ytick.labelsize": 10,
        "hatch.linewidth": 0.6,
    }
)
from sim.io import atomic_write  # noqa: E402


class _Axis:
    """Chart x values of a run: matplotlib dates when it has a start, else time since start."""

    def __init__(self, ts: Timeseries, dates: bool = True, window=None) -> None:
        """`window`: (from_s, to_s), the part of the run a close-up shows (default: all)."""
        self.bin_s = ts.bin_s
        run_s = float(ts["t_s"][-1] + ts.bin_s) if len(ts) else ts.bin_s
        self.t0_s, self.t1_s = window if window is not None else (0.0, run_s)
        self.span_s = self.t1_s - self.t0_s
        self.dates = dates and ts.start is not None
        self.origin = mdates.date2num(ts.start) if self.dates else 0.0
        self.unit_s, self.unit = _time_unit(self.span_s)

    def x(self, t_s):
        """x values of offsets in seconds (scalar or array)."""
        t = np.asarray(t_s, dtype=float)
        return self.origin + t / 86400.0 if self.dates else t / self.unit_s

    def edges(self, ts: Timeseries):
        """Bin edges: n + 1 x values, so the last bin is drawn whole."""
        return self.x(np.append(ts["t_s"], ts["t_s"][-1] + ts.bin_s if len(ts) else 0.0))

    def format(self, ax) -> None:
        if self.dates:
            locator = mdates.AutoDateLocator(minticks=6, maxticks=14)
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, show_offset=True))
            ax.set_xlabel("time (UTC)")
        else:
            ax.set_xlabel(f"time since start ({self.unit})")
        ax.set_xlim(self.x(self.t0_s), self.x(self.t1_s))


def _time_unit(span_s: float) -> tuple[float, str]:
    if span_s > 3 * 86400:
        return 86400.0, "days"
    if span_s > 3 * 3600:
        return 3600.0, "hours"
    if span_s > 180:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _steps(ts: Timeseries, column: str) -> np.ndarray:
    """Per-bin values with the last repeated, to pair with `_Axis.edges` in a post step."""
    values = np.asarray(ts[column], dtype=float)
    return np.append(values, values[-1]) if len(values) else values


def human(value: float, _pos=None) -> str:
    """Compact count: 950, 12k, 1.5M (for axis ticks)."""
    if value is None or not math.isfinite(value):
        return ""
    size = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if size >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}" if size < 10 and value != int(value) else f"{value:.0f}"


def _seconds_tick(value: float, _pos=None) -> str:
    if value <= 0:
        return ""
    if value < 1:
        return f"{value * 1000:g} ms"
    if value < 60:
        return f"{value:g} s"
    if value < 3600:
        return f"{value / 60:.3g} min"
    if value < 86400:
        return f"{value / 3600:.3g} h"
    return f"{value / 86400:.3g} d"


def _seconds_ticks(low: float, high: float, most: int = 9) -> list[float]:
    """Latency ticks inside [low, high]: 1-2-5 steps when few enough, else decades."""
    fine = [t for t in SECONDS_TICKS_FINE if low <= t <= high]
    if len(fine) <= most:
        return fine
    return [t for t in SECONDS_TICKS if low <= t <= high]


def _legend(ax) -> None:
    """The legend beside the plot, outside the axes, so it never covers data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _suptitle(fig, summary: dict, what: str) -> None:
    title = summary.get("title") or summary.get("scenario") or "run"
    fig.suptitle(f"{title}: {what}", x=0.01, ha="left", fontsize=14, parse_math=False)


def _lane_rows(summary: dict, span_s: float, t0_s: float = 0.0) -> int:
    """Rows of event labels the lane needs, 1 to LANE_ROWS: a dry run of `_place_label` with
    label widths estimated from their length on a plot about 1000 px wide."""
    starts = [e for e in summary.get("timeline") or [] if not e["kind"].endswith("_end")]
    starts.sort(key=_label_priority)
    taken: list[list[tuple[float, float]]] = [[] for _ in range(LANE_ROWS)]
    used = 1
    for event in starts:
        x = 1000.0 * (event["t_s"] - t0_s) / max(span_s, 1e-9)
        width = 12 + 6.5 * len(_lane_text(event))
        for row in range(LANE_ROWS):
            spans = ((x - 6, x + width), (x - width, x + 6))
            fits = [s for s in spans if s[0] >= 0 and s[1] <= 1060]
            free = [s for s in fits if all(s[1] + 6 < a or s[0] - 6 > b for a, b in taken[row])]
            if free:
                taken[row].append(free[0])
                used = max(used, row + 1)
                break
    return used


def _figure(height_in: float, lane_rows: int, panels: int = 1, ratios=None):
    """A figure with a timeline lane on top (unless lane_rows is 0) and `panels` plots below,
    sharing the x axis."""
    lane = lane_rows > 0
    rows = panels + (1 if lane else 0)
    height_in += 0.28 * lane_rows
    ratios = ([0.3 + 0.28 * lane_rows] if lane else []) + list(ratios or [height_in] * panels)
    fig, axes = plt.subplots(
        rows,
        1,
        figsize=(WIDTH_IN, height_in),
        dpi=DPI,
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": ratios},
        layout="constrained",
    )
    axes = list(axes[:, 0])
    return fig, (axes[0] if lane else None), axes[1:] if lane else axes


# -- decorations shared by the panels --------------------------------------------------------
def shade_outages(ax, summary: dict, axis: _Axis, label: bool = True) -> None:
    """Shade every outage window; name the shading once in the legend."""
    for i, outage in enumerate(summary.get("outages") or []):
        ax.axvspan(
            axis.x(outage["start_s"]),
            axis.x(outage["end_s"]),
            facecolor=OUTAGE_COLOUR,
            alpha=0.13,
            lw=0,
            label="outage (SLO breached)" if label and i == 0 else None,
        )


def mark_events(ax, summary: dict, axis: _Axis) -> None:
    """Thin vertical lines at surges, faults, triggers and capacity changes, named by kind in
    the chart's legend (each event's label lives in the lane)."""
    for event in summary.get("timeline") or []:
        colour, style, _ = EVENT_STYLE.get(event["kind"], (GREY, ":", "o"))
        ax.axvline(axis.x(event["t_s"]), color=colour, ls=style, lw=1.0, alpha=0.7, zorder=1)
    _event_legend(ax, summary)


def draw_timeline(lane, summary: dict, axis: _Axis) -> None:
    """The lane above a chart: outage bars and labelled events, in rows that do not overlap."""
    rows = _lane_rows(summary, axis.span_s, axis.t0_s)
    lane.set_ylim(0, rows + 1.1)
    lane.set_yticks([])
    for side in ("left", "right", "top"):
        lane.spines[side].set_visible(False)
    lane.tick_params(axis="x", which="both", length=0)
    for i, outage in enumerate(summary.get("outages") or []):
        x0, x1 = axis.x(outage["start_s"]), axis.x(outage["end_s"])
        lane.barh(
            0.45,
            x1 - x0,
            left=x0,
            height=0.8,
            color=OUTAGE_COLOUR,
            alpha=0.3,
            hatch="///",
            edgecolor=OUTAGE_COLOUR,
            lw=0.8,
        )
        text = f"outage {i + 1}: {format_duration(outage['duration_s'])}"
        if outage.get("ongoing"):
            text += ", still down at the end"
        label = lane.text(
            x0,
            0.45,
            f" {text}",
            fontsize=9,
            va="center",
            ha="left",
            clip_on=True,
            parse_math=False,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.0},
        )
        label.set_in_layout(False)
    for event in summary.get("timeline") or []:
        colour, style, _ = EVENT_STYLE.get(event["kind"], (GREY, ":", "o"))
        lane.axvline(axis.x(event["t_s"]), color=colour, ls=style, lw=0.9, alpha=0.6)
    fig = lane.figure
    fig.canvas.draw()  # fix the layout, so label widths can be compared in pixels
    renderer = fig.canvas.get_renderer()
    to_px = lane.transData.transform
    # labels may run past the lane's right end into the margin, never off the figure
    left_px, right_px = lane.get_window_extent(renderer).x0, fig.bbox.x1 - 4
    taken: list[list[tuple[float, float]]] = [[] for _ in range(rows)]
    starts = [e for e in summary.get("timeline") or [] if not e["kind"].endswith("_end")]
    starts.sort(key=_label_priority)
    hidden = 0
    for event in starts:
        colour, _, marker = EVENT_STYLE.get(event["kind"], (GREY, ":", "o"))
        x = axis.x(event["t_s"])
        x_px = to_px((x, 0))[0]
        if _place_label(lane, renderer, event, x, x_px, rows, taken, (left_px, right_px)):
            continue
        hidden += 1
    if hidden:
        note = f"+{hidden} more events: see the report's timeline"
        lane.text(
            1.0,
            1.0,
            note,
            transform=lane.transAxes,
            ha="right",
            va="bottom",
            fontsize=8.5,
            color=GREY,
        )


def _label_priority(event: dict) -> tuple:
    """Triggers explain an outage: faults, surges and overload get a row before capacity
    changes do."""
    return (event["kind"] not in ("fault", "surge", "overload"), event["t_s"])


def _lane_text(event: dict, limit: int = 44) -> str:
    """An event label short enough for the lane (the report's timeline has it whole): no
    parenthesis, and a capacity change only as its new size ("→ 21,581 servers"), marked
    "capped" when the planner's growth limit held it back."""
    short = event["label"].split(" (")[0]
    if event["kind"] in ("capacity", "autoscale") and "→" in short:
        short = "→" + short.rsplit("→", 1)[1]
        if "cap applied" in event["label"]:
            short += " (capped)"
    if event["kind"] == "overload":
        short = "trigger: demand ≥ " + short.rsplit("reached ", 1)[-1]
    return short if len(short) <= limit else short[: limit - 1] + "…"


def _place_label(lane, renderer, event, x, x_px, rows, taken, bounds) -> bool:
    """Put an event's marker and label in the first row where the label fits, right of the
    marker or else left of it, inside the lane and clear of other labels; False if none."""
    colour, _, marker = EVENT_STYLE.get(event["kind"], (GREY, ":", "o"))
    text = lane.text(x, 0, "", fontsize=9.5, va="center", color=BLACK, parse_math=False,
                     bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85,
                           "pad": 0.5})  # fmt: skip
    text.set_in_layout(False)
    for row in range(rows):
        y = rows + 0.5 - row
        for ha, content in (("left", f"  {_lane_text(event)}"),
                            ("right", f"{_lane_text(event)}  ")):  # fmt: skip
            text.set_text(content)
            text.set_horizontalalignment(ha)
            text.set_y(y)
            box = text.get_window_extent(renderer)
            x0, x1 = (x_px - 6, box.x1) if ha == "left" else (box.x0, x_px + 6)
            inside = bounds[0] - 2 <= x0 and x1 <= bounds[1] + 2
            if inside and all(x1 + 6 < a or x0 - 6 > b for a, b in taken[row]):
                taken[row].append((x0, x1))
                lane.plot(x, y, marker=marker, color=colour, ms=7, clip_on=False, zorder=3)
                return True
    text.remove()
    return False


EVENT_NAMES = {
    "surge": "surge begins",
    "fault": "fault begins",
    "overload": "trigger: fresh demand\nreaches 95% of capacity",
    "capacity": "capacity change",
    "autoscale": "autoscaler acts",
    "surge_end": "surge ends",
    "fault_end": "fault ends",
    "overload_end": "trigger ends: demand\nback below 95%",
}


def _event_legend(ax, summary: dict) -> None:
    """Legend entries for the kinds of event lines drawn (their labels are in the lane)."""
    kinds = {e["kind"] for e in summary.get("timeline") or []}
    for kind, name in EVENT_NAMES.items():
        if kind in kinds:
            colour, style, marker = EVENT_STYLE[kind]
            marker = None if kind.endswith("_end") else marker
            ax.plot([], [], color=colour, ls=style, lw=1.0, marker=marker, ms=6, label=name)


# -- the panels ------------------------------------------------------------------------------
def draw_queue(ax, summary: dict, ts: Timeseries, axis: _Axis) -> None:
    """Queue length at each bin's end, as a filled step (a sample, not the bin's mean or
    peak: timeseries.csv's `queue`), with the queue limit when the queue came near it."""
    x, queue = axis.edges(ts), _steps(ts, "queue")
    ax.fill_between(x, queue, step="post", color=BLUE, alpha=0.25, lw=0)
    ax.step(x, queue, where="post", color=BLUE, lw=1.6,
            label="requests waiting\nin the queue (sampled\nat each bin's end)")  # fmt: skip
    _draw_band(ax, summary, ts, x, "queue")
    peak = float(np.nanmax(queue)) if len(ts) else 0.0
    limit = queue_limit(summary)
    if limit is not None and peak >= 0.5 * limit:
        # A plateau at the limit is work refused, not a natural peak: say so on the chart.
        words = f"queue limit {count(limit)}\n(arrivals beyond it\nare rejected)"
        ax.axhline(limit, color=BLACK, lw=1.4, ls=(0, (6, 3)), zorder=2.6, label=words)
        peak = max(peak, limit)
    shade_outages(ax, summary, axis)
    mark_events(ax, summary, axis)
    ax.set_ylabel("requests in queue")
    ax.set_ylim(bottom=0, top=max(peak * 1.05, 1.0))
    ax.yaxis.set_major_formatter(FuncFormatter(human))
    ax.grid(alpha=0.3)
    _legend(ax)


def _draw_band(ax, summary: dict, ts: Timeseries, x, column: str) -> None:
    """With `run --reps N`: the 5-95% band of `column` across the runs, and their median."""
    if f"{column}_q05" not in ts.columns:
        return
    reps = (summary.get("replications") or {}).get("reps", "N")
    low, high = _steps(ts, f"{column}_q05"), _steps(ts, f"{column}_q95")
    ax.fill_between(
        x, low, high, step="post", color=GREY, alpha=0.3, hatch="..", lw=0,
        label=f"5-95% of {reps} runs",
    )  # fmt: skip
    ax.step(
        x, _steps(ts, f"{column}_median"), where="post", color=BLACK, lw=1.0, ls="--",
        label=f"median of {reps} runs",
    )  # fmt: skip


def draw_load(ax, summary: dict, ts: Timeseries, axis: _Axis) -> None:
    """Fresh demand, offered load with retries, and capacity, in requests per second."""
    x = axis.edges(ts)
    ax.step(
        x,
        _steps(ts, "capacity_rps"),
        where="post",
        color=GREEN,
        lw=3.0,
        alpha=0.8,
        label="capacity",
    )
    ax.step(
        x,
        _steps(ts, "offered_rps"),
        where="post",
        color=VERMILLION,
        lw=1.3,
        ls="--",
        label="offered load\n(incl. retries)",
    )
    ax.plot(
        axis.x(ts["t_s"] + ts.bin_s / 2),
        ts["demand_rps"],
        color=BLACK,
        lw=1.3,
        label="fresh demand",
    )
    shade_outages(ax, summary, axis)
    mark_events(ax, summary, axis)
    ax.set_ylabel("requests per second")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(human))
    ax.grid(alpha=0.3)
    _legend(ax)


def draw_latency(ax, summary: dict, ts: Timeseries, axis: _Axis) -> None:
    """Per-bin latency on a log scale, two views told apart in the legend: what clients see
    (p50 / p95 / p99 of first send to success, retries included, by first-arrival bin) in
    colour, and the server's time in system of every completed attempt (abandoned work
    included, by completion bin) in grey; with the SLO and timeout lines."""
    x = axis.edges(ts)
    client_p99 = "what clients see: p99\n(first send to success,\nretries included)"
    series = [
        ("latency_p50", BLUE, "-", 1.3, "what clients see: p50"),
        ("latency_p95", ORANGE, "--", 1.3, "what clients see: p95"),
        ("latency_p99", VERMILLION, "-", 2.0, client_p99),
    ]
    if "server_latency_p99" in ts.columns:
        server_p99 = "server time in system: p99\n(abandoned work included)"
        series += [
            ("server_latency_p50", GREY, ":", 1.6, "server time in system: p50"),
            ("server_latency_p99", GREY, "-.", 1.6, server_p99),
        ]
    for column, colour, style, width, label in series:
        # The server's view goes beneath, so it never hides what clients saw.
        behind = column.startswith("server_")
        ax.step(x, _steps(ts, column), where="post", color=colour, ls=style, lw=width,
                label=label, zorder=1.5 if behind else 2.5,
                alpha=0.7 if behind else 1.0)  # fmt: skip
    _mark_no_success(ax, ts, x)
    _draw_band(ax, summary, ts, x, "latency_p99")
    slo_p99 = (summary.get("slo") or {}).get("latency_p99_s")
    timeout = ((summary.get("parameters") or {}).get("client") or {}).get("timeout_s")
    if slo_p99 and slo_p99 == timeout:  # one line, or the second would hide the first
        text = f"SLO p99 ≤ {_seconds_tick(slo_p99)}\n= client timeout"
        ax.axhline(slo_p99, color=BLACK, lw=1.3, ls=":", label=text)
    else:
        if slo_p99:
            text = f"SLO p99 ≤ {_seconds_tick(slo_p99)}"
            ax.axhline(slo_p99, color=BLACK, lw=1.3, ls=":", label=text)
        if timeout:
            text = f"client timeout {_seconds_tick(timeout)}"
            ax.axhline(timeout, color=PURPLE, lw=1.3, ls="-.", label=text)
    shade_outages(ax, summary, axis)
    mark_events(ax, summary, axis)
    values = np.concatenate(
        [np.asarray(ts[column], dtype=float) for column, *_ in series]
        + [np.array([v for v in (slo_p99, timeout) if v], dtype=float)]
    )
    values = values[np.isfinite(values) & (values > 0)]
    if len(values):
        low, high = float(values.min()) / 1.5, float(values.max()) * 1.5
        ax.set_yscale("log")
        ax.set_ylim(low, high)
        ax.yaxis.set_major_locator(FixedLocator(_seconds_ticks(low, high)))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(_seconds_tick))
    ax.set_ylabel("latency")
    ax.grid(alpha=0.3, which="major")
    _legend(ax)


def _mark_no_success(ax, ts: Timeseries, x) -> None:
    """A strip along the top where requests arrived but none succeeded: no client latency
    exists there, and a gap in the lines alone reads like missing data."""
    fresh = np.asarray(ts["fresh"], dtype=float)
    none = (fresh > 0) & ~np.isfinite(np.asarray(ts["latency_p50"], dtype=float))
    if not none.any():
        return
    starts = np.flatnonzero(none & ~np.concatenate([[False], none[:-1]]))
    ends = np.flatnonzero(none & ~np.concatenate([none[1:], [False]])) + 1
    for k, (a, b) in enumerate(zip(starts, ends, strict=True)):
        ax.axvspan(x[a], x[b], ymin=0.95, ymax=1.0, color=VERMILLION, lw=0, zorder=3,
                   label="no request succeeded" if k == 0 else None)  # fmt: skip


def draw_outcomes(ax, summary: dict, ts: Timeseries, axis: _Axis) -> None:
    """Attempts per bin by outcome, stacked, with fresh requests and dropped work as lines."""
    x = axis.edges(ts)
    layers = (
        ("succeeded", "succeeded", GREEN, ""),
        ("timed_out", "timed out\n(client gave up)", ORANGE, "///"),
        ("rejected", "rejected\n(queue full, errors)", VERMILLION, "xxx"),
    )
    ax.stackplot(
        x,
        *[_steps(ts, name) for name, *_ in layers],
        labels=[label for _, label, *_ in layers],
        colors=[colour for *_, colour, _ in layers],
        hatch=[hatch for *_, hatch in layers],
        edgecolor="white",
        lw=0.0,
        alpha=0.85,
        step="post",
    )
    ax.step(x, _steps(ts, "fresh"), where="post", color=BLACK, lw=1.4, label="fresh requests")
    if np.nansum(ts["dropped"]) > 0:
        ax.step(
            x,
            _steps(ts, "dropped"),
            where="post",
            color=PURPLE,
            lw=1.4,
            ls=":",
            label="dropped (queued work\nof clients gone)",
        )
    shade_outages(ax, summary, axis)
    mark_events(ax, summary, axis)
    ax.set_ylabel(f"attempts per {format_duration(ts.bin_s)}")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(human))
    ax.grid(alpha=0.3)
    _legend(ax)


PANELS = {
    "queue": (draw_queue, "queue length (at each bin's end)"),
    "load": (draw_load, "demand, offered load and capacity"),
    "latency": (draw_latency, "latency per bin (what clients see, and server time)"),
    "outcomes": (draw_outcomes, "outcome of attempts per bin"),
}


def panel_figure(name: str, summary: dict, ts: Timeseries):
    """One of the four charts; the queue chart (the hero) carries the timeline lane."""
    draw, what = PANELS[name]
    axis = _Axis(ts)
    lane_rows = _lane_rows(summary, axis.span_s) if name == "queue" else 0
    fig, lane, (ax,) = _figure(5.6 if lane_rows else 5.0, lane_rows)
    _suptitle(fig, summary, what)
    draw(ax, summary, ts, axis)
    axis.format(ax)
    if lane is not None:
        draw_timeline(lane, summary, axis)
    return fig


def queue_figure(summary: dict, ts: Timeseries):
    """The hero chart: queue length over time, outages shaded, events labelled above."""
    return panel_figure("queue", summary, ts)


def load_figure(summary: dict, ts: Timeseries):
    """Fresh demand and offered load (with retries) against capacity."""
    return panel_figure("load", summary, ts)


def latency_figure(summary: dict, ts: Timeseries):
    """Client and server latency percentiles per bin on a log scale, with the SLO line."""
    return panel_figure("latency", summary, ts)


def outcomes_figure(summary: dict, ts: Timeseries):
    """Attempts per bin by outcome."""
    return panel_figure("outcomes", summary, ts)


def dashboard_figure(summary: dict, ts: Timeseries):
    """The four charts stacked on one shared time axis, under the timeline lane."""
    axis = _Axis(ts)
    fig, lane, axes = _figure(
        14.4, _lane_rows(summary, axis.span_s), panels=4, ratios=[3.2, 2.6, 2.6, 2.6]
    )
    _suptitle(fig, summary, "queue, load, latency and outcomes")
    for ax, (draw, what) in zip(axes, PANELS.values(), strict=True):
        draw(ax, summary, ts, axis)
        ax.set_title(what, loc="left", fontsize=11)
    axis.format(axes[-1])
    draw_timeline(lane, summary, axis)
    return fig


# -- outage close-ups ------------------------------------------------------------------------
CLOSEUPS = 3  # at most this many outages get a close-up: the longest ones
CLOSEUP_MARGIN_S = (3600.0, 6 * 3600.0)  # least and most shown either side of an outage


def closeup_window(outage: dict, run_s: float, bin_s: float) -> tuple[float, float]:
    """The stretch a close-up shows: the outage with half its length either side, at least an
    hour (or 4 bins) and at most 6 hours, within the run."""
    low, high = CLOSEUP_MARGIN_S
    margin = min(max(outage["duration_s"] / 2, low, 4 * bin_s), high)
    return max(0.0, outage["start_s"] - margin), min(run_s, outage["end_s"] + margin)


def closeup_outages(summary: dict, ts: Timeseries) -> list[int]:
    """Indexes of the outages that get a close-up: those whose window is under half the run
    (a longer one already fills the main charts), the CLOSEUPS longest, in time order."""
    if not len(ts):
        return []
    run_s = float(ts["t_s"][-1] + ts.bin_s)
    outages = summary.get("outages") or []
    windows = [closeup_window(o, run_s, ts.bin_s) for o in outages]
    narrow = [i for i, (t0, t1) in enumerate(windows) if t1 - t0 < run_s / 2]
    longest = sorted(narrow, key=lambda i: -outages[i]["duration_s"])[:CLOSEUPS]
    return sorted(longest)


def closeup_name(index: int) -> str:
    """outage-1.png for the first outage."""
    return f"outage-{index + 1}.png"


def closeup_figure(summary: dict, ts: Timeseries, index: int):
    """Outage `index` close up: queue, load and latency over its window, under the lane of
    the events inside it; y axes fitted to the window."""
    outage = summary["outages"][index]
    run_s = float(ts["t_s"][-1] + ts.bin_s)
    t0, t1 = closeup_window(outage, run_s, ts.bin_s)
    inside = (ts["t_s"] + ts.bin_s > t0) & (ts["t_s"] < t1)
    part = Timeseries(ts.bin_s, ts.start, {k: np.asarray(v)[inside] for k, v in ts.columns.items()})
    view = dict(summary)
    view["timeline"] = [e for e in summary.get("timeline") or [] if t0 <= e["t_s"] <= t1]
    axis = _Axis(part, window=(t0, t1))
    fig, lane, axes = _figure(
        10.6, _lane_rows(view, axis.span_s, axis.t0_s), panels=3, ratios=[3.2, 2.6, 2.6]
    )
    lasted = format_duration(outage["duration_s"])
    _suptitle(fig, summary, f"outage {index + 1} close up ({lasted}, a few hours either side)")
    for ax, name in zip(axes, ("queue", "load", "latency"), strict=True):
        draw, what = PANELS[name]
        draw(ax, view, part, axis)
        ax.set_title(what, loc="left", fontsize=11)
    axis.format(axes[-1])
    draw_timeline(lane, view, axis)
    return fig


def figure_png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    finally:
        plt.close(fig)
    return buffer.getvalue()


def write_charts(summary: dict, ts: Timeseries, out_dir: Path) -> list[Path]:
    """Write the five charts (CHART_NAMES), for a service graph GRAPH_CHART_NAMES too, and a
    close-up of each long outage (outage-N.png) into out_dir; return their paths."""

    if not len(ts):
        return []
    makers = (queue_figure, load_figure, latency_figure, outcomes_figure, dashboard_figure)
    if summary.get("tiers"):  # a service graph: its picture and its tiers over time too
        makers += (graph_figure, tiers_figure)
    written = []
    for name, make in zip(CHART_NAMES + GRAPH_CHART_NAMES, makers, strict=False):
        path = Path(out_dir) / name
        atomic_write(path, figure_png(make(summary, ts)))
        written.append(path)
    for index in closeup_outages(summary, ts):
        path = Path(out_dir) / closeup_name(index)
        atomic_write(path, figure_png(closeup_figure(summary, ts, index)))
        written.append(path)
    return written


# -- a service graph ------------------------------------------------------------------------
# a tier's worst state (text.tier_state) -> (fill, edge, legend words)
STATE_STYLE = {
    "saturated": (
        "#F6C9B0",
        VERMILLION,
        "saturated: >1% of attempts failed in a bin, or ≥95% busy",
    ),
    "busy": ("#FBE3B0", ORANGE, "busy: ≥80% busy in a bin, or rate-limited below 1%"),
    "healthy": ("#BFE6D8", GREEN, "healthy"),
}
BOX_W, BOX_H = 2.3, 1.05  # a tier's box, in layout units (one column is 4 units wide)
COLUMN_GAP, ROW_GAP = 4.0, 1.7


def graph_layout(summary: dict) -> dict[str, tuple[float, float]]:
    """Box centres: tiers in columns by call depth, left to right; within a column, ordered by
    the mean height of their callers (fewer crossing arrows), centred on the middle row."""
    depths = call_depths(summary)
    edges = call_edges(summary)
    columns: dict[int, list[str]] = {}
    for tier in summary.get("tiers") or {}:
        columns.setdefault(depths[tier], []).append(tier)
    centres: dict[str, tuple[float, float]] = {}
    for depth in sorted(columns):
        tiers = columns[depth]

        def callers_height(tier: str) -> float:
            ys = [centres[a][1] for (a, b) in edges if b == tier and a in centres]
            return -sum(ys) / len(ys) if ys else 0.0

        tiers.sort(key=callers_height)  # stable: ties keep the summary's order
        for row, tier in enumerate(tiers):
            centres[tier] = (depth * COLUMN_GAP, ((len(tiers) - 1) / 2 - row) * ROW_GAP)
    return centres


def _tier_note(summary: dict, ts: Timeseries, tier: str) -> str:
    """The small print in a tier's box: what it is and its worst numbers."""
    facts = summary["tiers"][tier]
    attempts = facts.get("attempts") or 0
    failed = sum(facts.get(k) or 0 for k in ("timed_out", "rejected", "limited"))
    failed_text = f"failed {failed / attempts:.1%}" if attempts else "no attempts"
    if facts.get("kind") == "provider":
        return f"external provider\n{human(attempts)} calls · {failed_text}"
    servers = ts[f"{tier}.servers"] if f"{tier}.servers" in ts.columns else []
    servers = np.asarray(servers, dtype=float)
    servers = servers[np.isfinite(servers)]
    size = f"{human(float(servers.max()))} servers" if len(servers) else "pool"
    utilization = ts[f"{tier}.utilization"] if f"{tier}.utilization" in ts.columns else []
    utilization = np.asarray(utilization, dtype=float)
    utilization = utilization[np.isfinite(utilization)]
    first = f"{size} · peak {utilization.max():.0%} busy" if len(utilization) else size
    return f"{first}\n{human(attempts)} attempts · {failed_text}"


def _arc_points(start, end, bend: float) -> np.ndarray:
    """Points along matplotlib's arc3 curve from start to end: a quadratic Bézier whose
    control point lies off the middle by bend × the chord (equal aspect, so data units do)."""
    (x0, y0), (x1, y1) = start, end
    control = np.array([(x0 + x1) / 2 + bend * (y1 - y0), (y0 + y1) / 2 - bend * (x1 - x0)])
    t = np.linspace(0.0, 1.0, 41)[:, None]
    return (1 - t) ** 2 * np.array(start) + 2 * (1 - t) * t * control + t**2 * np.array(end)


def _arrow_bend(start, end, centres, skip: tuple[str, str]) -> tuple[float, np.ndarray]:
    """The arc3 bend of an arrow, and points along its curve: 0 (straight) when no other box
    is in its way, else the smallest bend, up or down, whose curve clears every box but its
    two ends (or, when none does, a mild bend drawn over them)."""
    boxes = [c for tier, c in centres.items() if tier not in skip]
    for bend in (0.0, 0.3, -0.3, 0.5, -0.5, 0.8, -0.8):
        curve = _arc_points(start, end, bend)
        clear = all(
            not np.any((abs(curve[:, 0] - bx) < BOX_W / 2 + 0.15)
                       & (abs(curve[:, 1] - by) < BOX_H / 2 + 0.15))
            for bx, by in boxes
        )  # fmt: skip
        if clear:
            return bend, curve
    return 0.3, _arc_points(start, end, 0.3)


def graph_figure(summary: dict, ts: Timeseries):
    """The service graph: tiers as boxes coloured by their worst state in the run, one arrow
    per caller → callee labelled with the routes that make the call; providers (external,
    rate-limited) in dashed, rounded boxes. Drawn to scale (equal aspect), at most an inch
    a layout unit, so a small graph is not blown up to the page's width."""
    centres = graph_layout(summary)
    edges = call_edges(summary)
    arrows = []  # (start, end, bend, routes)
    ys = [y for _, y in centres.values()] or [0.0]
    low, high = min(ys) - BOX_H / 2, max(ys) + BOX_H / 2
    for (caller, callee), routes in edges.items():
        (x0, y0), (x1, y1) = centres[caller], centres[callee]
        forward = x1 > x0
        start = (x0 + BOX_W / 2, y0) if forward else (x0, y0 - BOX_H / 2)
        end = (x1 - BOX_W / 2, y1) if forward else (x1, y1 - BOX_H / 2)
        bend, curve = _arrow_bend(start, end, centres, (caller, callee))
        low, high = min(low, curve[:, 1].min()), max(high, curve[:, 1].max())
        arrows.append((start, end, bend, routes))
    xs = [x for x, _ in centres.values()] or [0.0]
    x_lim = (min(xs) - BOX_W / 2 - 0.5, max(xs) + BOX_W / 2 + 0.5)
    y_lim = (low - 0.4, high + 0.4)  # bent arrows and their labels included
    scale = min(1.0, (WIDTH_IN - 0.4) / (x_lim[1] - x_lim[0]))  # inches per layout unit
    height = (y_lim[1] - y_lim[0]) * scale + 1.3  # the title above, the legend below
    fig, ax = plt.subplots(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained")
    _suptitle(fig, summary, "the service graph, each tier coloured by its worst state")
    for start, end, bend, routes in arrows:
        ax.annotate(
            "", xy=end, xytext=start,
            arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 1.4,
                        "mutation_scale": 16, "shrinkA": 2, "shrinkB": 2,
                        "connectionstyle": f"arc3,rad={bend}"},
        )  # fmt: skip
        # the label on the curve's middle: half-way to arc3's control point
        mx = (start[0] + end[0]) / 2 + bend * (end[1] - start[1]) / 2
        my = (start[1] + end[1]) / 2 - bend * (end[0] - start[0]) / 2
        ax.text(mx, my, ", ".join(routes), ha="center", va="center", fontsize=9.5,
                color="#333333", parse_math=False, zorder=4,
                bbox={"facecolor": "white", "edgecolor": "#bbbbbb",
                      "boxstyle": "round,pad=0.25"})  # fmt: skip
    for tier, (x, y) in centres.items():
        state, _ = tier_state(ts, tier)
        fill, edge, _ = STATE_STYLE[state]
        provider = summary["tiers"][tier].get("kind") == "provider"
        ax.add_patch(
            matplotlib.patches.FancyBboxPatch(
                (x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H,
                boxstyle="round,pad=0.02,rounding_size=0.3" if provider else "square,pad=0.02",
                facecolor=fill, edgecolor=edge, lw=2.4, ls="--" if provider else "-", zorder=3,
            )
        )  # fmt: skip
        ax.text(x, y + 0.22, tier, ha="center", va="center", fontsize=12, fontweight="bold",
                parse_math=False, zorder=5)  # fmt: skip
        ax.text(x, y - 0.2, _tier_note(summary, ts, tier), ha="center", va="center",
                fontsize=9.5, color="#333333", parse_math=False, zorder=5,
                linespacing=1.3)  # fmt: skip
    handles = [
        matplotlib.patches.Patch(facecolor=fill, edgecolor=edge, lw=2, label=words)
        for fill, edge, words in STATE_STYLE.values()
    ]
    handles.append(
        matplotlib.patches.Patch(
            facecolor="white",
            edgecolor=GREY,
            lw=2,
            ls="--",
            label="dashed, rounded: external provider",
        )  # fmt: skip
    )
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9.5,
               title="box: a tier, coloured by its worst state in the run · arrow: a call, "
               "labelled with the routes making it", title_fontsize=10)  # fmt: skip
    ax.set_xlim(*x_lim)
    ax.set_ylim(*y_lim)
    ax.set_aspect("equal", adjustable="box")
    ax.axis("off")
    return fig


# line styles for many tiers: colour, dash and marker together, so they survive greyscale
TIER_STYLES = (
    (BLUE, "-", "o"),
    (VERMILLION, "--", "s"),
    (GREEN, "-.", "^"),
    (PURPLE, ":", "D"),
    (ORANGE, "-", "v"),
    (SKY, "--", "P"),
    (BLACK, "-.", "X"),
    (GREY, ":", "*"),
)


def _tier_lines(ax, summary: dict, ts: Timeseries, axis: _Axis, column: str, tiers) -> None:
    """One step line per tier of TIER.<column>, each with a few markers to tell them apart."""
    x = axis.edges(ts)
    every = max(1, len(ts) // 12)
    for i, tier in enumerate(tiers):
        colour, style, marker = TIER_STYLES[i % len(TIER_STYLES)]
        ax.step(x, _steps(ts, f"{tier}.{column}"), where="post", color=colour, ls=style, lw=1.6)
        # markers at bin middles, staggered so that equal lines still show each marker
        mid = axis.x(ts["t_s"] + ts.bin_s / 2)
        ax.plot(mid[i % every :: every], np.asarray(ts[f"{tier}.{column}"])[i % every :: every],
                ls="", marker=marker, ms=5, color=colour)  # fmt: skip
        ax.plot([], [], color=colour, ls=style, lw=1.6, marker=marker, ms=5, label=tier)


def tiers_figure(summary: dict, ts: Timeseries):
    """Each tier's queue and utilisation on one time axis (providers have no servers, so no
    utilisation line), outages shaded and events marked as on the other charts."""
    axis = _Axis(ts)
    depths = call_depths(summary)
    tiers = sorted(summary.get("tiers") or {}, key=lambda t: depths.get(t, 0))
    pools = [t for t in tiers if summary["tiers"][t].get("kind") != "provider"]
    fig, lane, (queue_ax, busy_ax) = _figure(
        9.0, _lane_rows(summary, axis.span_s), panels=2, ratios=[3.0, 3.0]
    )
    _suptitle(fig, summary, "queue and utilisation per tier")
    _tier_lines(queue_ax, summary, ts, axis, "queue", tiers)
    queue_ax.set_title("requests waiting at each tier (end of bin)", loc="left", fontsize=11)
    queue_ax.set_ylabel("requests in queue")
    peak = max((float(np.nanmax(ts[f"{t}.queue"])) for t in tiers), default=0.0)
    queue_ax.set_ylim(bottom=0, top=max(peak * 1.05, 1.0))
    queue_ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # whole requests
    queue_ax.yaxis.set_major_formatter(FuncFormatter(human))
    _tier_lines(busy_ax, summary, ts, axis, "utilization", pools)
    busy_ax.axhline(0.95, color=BLACK, lw=1.0, ls=":", label="95%: saturated")
    busy_ax.set_title("share of each pool's servers busy (providers have none)", loc="left",
                      fontsize=11)  # fmt: skip
    busy_ax.set_ylabel("utilisation")
    busy_ax.set_ylim(0, 1.05)
    busy_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.0%}"))
    for ax in (queue_ax, busy_ax):
        shade_outages(ax, summary, axis)
        mark_events(ax, summary, axis)
        ax.grid(alpha=0.3)
        _legend(ax)
    axis.format(busy_ax)
    draw_timeline(lane, summary, axis)
    return fig


# -- two runs overlaid -----------------------------------------------------------------------
def _compare_axes(runs) -> list[_Axis]:
    """Dates when both runs start at the same instant, else time since each run's start."""
    starts = {ts.start for _, _, ts in runs}
    dates = len(starts) == 1 and isinstance(next(iter(starts)), datetime)
    axes = [_Axis(ts, dates=dates) for _, _, ts in runs]
    if not dates:  # one unit for both: the longer run's
        longest = max(axes, key=lambda a: a.span_s)
        for axis in axes:
            axis.unit_s, axis.unit = longest.unit_s, longest.unit
    return axes


def compare_queue_figure(runs):
    """Queue length of two runs, (label, summary, Timeseries) each, overlaid, with a lane of
    each run's outages above; a log scale when their peaks differ more than 20-fold."""
    fig, lane, (ax,) = _figure(5.5, 1)
    axes = _compare_axes(runs)
    styles = ((BLUE, "-", "///"), (VERMILLION, "--", "\\\\\\"))
    peaks = []
    for row, ((label, summary, ts), axis, (colour, style, hatch)) in enumerate(
        zip(runs, axes, styles, strict=True)
    ):
        queue = _steps(ts, "queue")
        peaks.append(float(np.nanmax(queue)))
        ax.step(axis.edges(ts), queue, where="post", color=colour, ls=style, lw=1.8, label=label)
        y = 1.55 - row
        for outage in summary.get("outages") or []:
            x0, x1 = axis.x(outage["start_s"]), axis.x(outage["end_s"])
            lane.barh(y, x1 - x0, left=x0, height=0.7, color=colour, alpha=0.3, hatch=hatch,
                      edgecolor=colour, lw=0.8)  # fmt: skip
        lane.text(0.0, y, f"{label} outages ", transform=lane.get_yaxis_transform(),
                  ha="right", va="center", fontsize=9.5, parse_math=False)  # fmt: skip
    lane.set_ylim(0, 2.1)
    lane.set_yticks([])
    for side in ("left", "right", "top"):
        lane.spines[side].set_visible(False)
    lane.tick_params(axis="x", which="both", length=0)
    low, high = sorted(peaks)
    if high > 0 and high > 20 * max(low, 1.0):
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(bottom=0, top=high * 1.5)
        ax.set_ylabel("requests in queue (log scale)")
    else:
        ax.set_ylim(bottom=0)
        ax.set_ylabel("requests in queue")
    ax.yaxis.set_major_formatter(FuncFormatter(human))
    ax.grid(alpha=0.3)
    max(axes, key=lambda a: a.span_s).format(ax)
    fig.suptitle("queue length: " + " vs ".join(r[0] for r in runs), x=0.01, ha="left",
                 fontsize=14, parse_math=False)  # fmt: skip
    _legend(ax)
    return fig


def compare_load_figure(runs):
    """Offered load and capacity of two runs overlaid, with the fresh demand of each."""
    fig, _, (ax,) = _figure(5.5, 0)
    axes = _compare_axes(runs)
    styles = ((BLUE, "-"), (VERMILLION, "--"))
    for (label, _summary, ts), axis, (colour, style) in zip(runs, axes, styles, strict=True):
        x = axis.edges(ts)
        ax.step(
            x,
            _steps(ts, "capacity_rps"),
            where="post",
            color=colour,
            ls=style,
            lw=3.0,
            alpha=0.45,
            label=f"{label} · capacity",
        )
        ax.step(
            x,
            _steps(ts, "offered_rps"),
            where="post",
            color=colour,
            ls=style,
            lw=1.3,
            label=f"{label} · offered load",
        )
        ax.plot(
            axis.x(ts["t_s"] + ts.bin_s / 2),
            ts["demand_rps"],
            color=BLACK,
            lw=1.0,
            ls=style,
            label=f"{label} · fresh demand",
        )
    ax.set_ylabel("requests per second")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(human))
    ax.grid(alpha=0.3)
    max(axes, key=lambda a: a.span_s).format(ax)
    fig.suptitle(
        "offered load and capacity: " + " vs ".join(r[0] for r in runs),
        x=0.01,
        ha="left",
        fontsize=14,
        parse_math=False,
    )
    _legend(ax)
    return fig


def write_compare_charts(runs, out_dir: Path) -> list[Path]:
    """Write compare_queue.png and compare_load.png for two (label, summary, ts) runs."""

    runs = [r for r in runs if len(r[2])]
    if len(runs) != 2:
        return []
    written = []
    for name, make in zip(COMPARE_NAMES, (compare_queue_figure, compare_load_figure), strict=True):
        path = Path(out_dir) / name
        atomic_write(path, figure_png(make(runs)))
        written.append(path)
    return written
