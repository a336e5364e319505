"""The charts of a run (PNG, matplotlib): queue growth, load, latency and outcomes.

The only module that imports matplotlib. Charts are drawn from the summary dict and the
Timeseries alone, so `outage-sim report DIR` can redraw them without simulating again.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sim.metrics import Timeseries  # noqa: E402

WIDTH_IN, DPI = 13.0, 100  # 1300 px wide
OUTAGE_COLOUR = "#d62728"
EVENT_STYLE = {
    "capacity": ("#2ca02c", "-"),
    "autoscale": ("#2ca02c", ":"),
    "fault": ("#9467bd", "--"),
    "fault_end": ("#9467bd", ":"),
    "surge": ("#ff7f0e", "--"),
    "surge_end": ("#ff7f0e", ":"),
}


def _x(summary: dict, ts: Timeseries, t_s):
    """Chart x values: datetimes when the run has a start, else hours."""
    if ts.start is not None:
        return np.array(ts.times()) if t_s is None else _dt(ts, t_s)
    values = ts["t_s"] if t_s is None else np.asarray(t_s, dtype=float)
    return values / _time_unit(ts)[0]


def _dt(ts: Timeseries, t_s):
    from datetime import timedelta

    if np.ndim(t_s) == 0:
        return ts.start + timedelta(seconds=float(t_s))
    return np.array([ts.start + timedelta(seconds=float(t)) for t in t_s])


def _time_unit(ts: Timeseries) -> tuple[float, str]:
    span = float(ts["t_s"][-1] + ts.bin_s) if len(ts) else 1.0
    if span > 3 * 86400:
        return 86400.0, "days"
    if span > 3 * 3600:
        return 3600.0, "hours"
    if span > 180:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _format_time_axis(ax, ts: Timeseries) -> None:
    if ts.start is not None:
        locator = mdates.AutoDateLocator(minticks=6, maxticks=14)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.set_xlabel("time (UTC)")
    else:
        ax.set_xlabel(f"time since start ({_time_unit(ts)[1]})")


def shade_outages(ax, summary: dict, ts: Timeseries, label: bool = True) -> None:
    """Shade every outage window; label the first in the legend."""
    for i, outage in enumerate(summary.get("outages") or []):
        ax.axvspan(
            _x(summary, ts, outage["start_s"]),
            _x(summary, ts, outage["end_s"]),
            color=OUTAGE_COLOUR,
            alpha=0.15,
            hatch="//",
            lw=0,
            label="outage (SLO breached)" if label and i == 0 else None,
        )


def mark_events(ax, summary: dict, ts: Timeseries, annotate: bool = True, limit: int = 12) -> None:
    """Vertical lines for surges, faults and capacity changes, labelled at the top."""
    timeline = summary.get("timeline") or []
    labelled = 0
    for event in timeline:
        colour, style = EVENT_STYLE.get(event["kind"], ("grey", ":"))
        x = _x(summary, ts, event["t_s"])
        ax.axvline(x, color=colour, ls=style, lw=1.0, alpha=0.8)
        if annotate and labelled < limit and not event["kind"].endswith("_end"):
            ax.annotate(
                event["label"],
                xy=(x, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -4),
                textcoords="offset points",
                rotation=90,
                va="top",
                ha="left",
                fontsize=7,
                color=colour,
            )
            labelled += 1


def _title(ax, summary: dict, what: str) -> None:
    ax.set_title(f"{summary.get('title') or summary.get('scenario')}: {what}", loc="left")


def queue_figure(summary: dict, ts: Timeseries):
    """The hero chart: queue length over time, outages shaded, events marked."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 5.5), dpi=DPI)
    x = _x(summary, ts, None)
    queue = ts["queue"]
    ax.fill_between(x, queue, step="post", color="#1f77b4", alpha=0.35, lw=0)
    ax.step(
        x, queue, where="post", color="#1f77b4", lw=1.4, label="queue length (requests waiting)"
    )
    shade_outages(ax, summary, ts)
    mark_events(ax, summary, ts)
    if queue.max() > 0 and queue.max() / max(np.median(queue[queue > 0]), 1) > 1000:
        ax.set_yscale("symlog", linthresh=max(1.0, float(np.percentile(queue, 50))))
    ax.set_ylabel("requests in queue")
    ax.set_ylim(bottom=0)
    _format_time_axis(ax, ts)
    _title(ax, summary, "queue growth")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", framealpha=0.9)
    fig.tight_layout()
    return fig


def load_figure(summary: dict, ts: Timeseries):
    """Fresh demand and offered load (with retries) against capacity."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 5.0), dpi=DPI)
    x = _x(summary, ts, None)
    ax.plot(x, ts["demand_rps"], color="#555555", lw=1.2, label="fresh demand λ(t)")
    ax.plot(
        x, ts["offered_rps"], color="#ff7f0e", lw=1.2, ls="--", label="offered load (incl. retries)"
    )
    ax.step(x, ts["capacity_rps"], where="post", color="#2ca02c", lw=2.0, label="capacity")
    shade_outages(ax, summary, ts)
    ax.set_ylabel("requests per second")
    ax.set_ylim(bottom=0)
    _format_time_axis(ax, ts)
    _title(ax, summary, "demand, offered load and capacity")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", framealpha=0.9)
    fig.tight_layout()
    return fig


def latency_figure(summary: dict, ts: Timeseries, slo_p99_s: float | None = None):
    """p50 / p95 / p99 per bin on a log scale."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 5.0), dpi=DPI)
    x = _x(summary, ts, None)
    for column, colour, style in (
        ("latency_p50", "#1f77b4", "-"),
        ("latency_p95", "#ff7f0e", "--"),
        ("latency_p99", "#d62728", "-."),
    ):
        ax.plot(x, ts[column], color=colour, ls=style, lw=1.2, label=column.replace("latency_", ""))
    if slo_p99_s:
        ax.axhline(slo_p99_s, color="black", lw=1.0, ls=":", label=f"SLO p99 {slo_p99_s:g} s")
    shade_outages(ax, summary, ts)
    if np.nanmax(np.nan_to_num(ts["latency_p99"], nan=0.0)) > 0:
        ax.set_yscale("log")
    ax.set_ylabel("time in system (s)")
    _format_time_axis(ax, ts)
    _title(ax, summary, "latency")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", framealpha=0.9)
    fig.tight_layout()
    return fig


def outcomes_figure(summary: dict, ts: Timeseries):
    """Attempts per bin by outcome, stacked."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 5.0), dpi=DPI)
    x = _x(summary, ts, None)
    layers = [
        ("succeeded", "#2ca02c", None),
        ("timed_out", "#ff7f0e", "//"),
        ("rejected", "#d62728", "xx"),
    ]
    ax.stackplot(
        x,
        *[ts[name] for name, _, _ in layers],
        labels=[name.replace("_", " ") for name, _, _ in layers],
        colors=[c for _, c, _ in layers],
        hatch=[h for _, _, h in layers],
        alpha=0.8,
        step="post",
    )
    ax.plot(x, ts["dropped"], color="black", lw=1.0, ls=":", label="dropped (client gone)")
    ax.plot(x, ts["fresh"], color="#555555", lw=1.0, label="fresh requests")
    ax.set_ylabel(f"attempts per {ts.bin_s:g} s bin")
    _format_time_axis(ax, ts)
    _title(ax, summary, "outcomes")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", framealpha=0.9)
    fig.tight_layout()
    return fig


def write_charts(
    summary: dict, ts: Timeseries, out_dir: Path, slo_p99_s: float | None = None
) -> list[Path]:
    """Write queue.png, load.png, latency.png and outcomes.png into out_dir."""
    from sim.report import atomic_write

    written = []
    figures = {
        "queue.png": queue_figure(summary, ts),
        "load.png": load_figure(summary, ts),
        "latency.png": latency_figure(
            summary, ts, slo_p99_s or summary.get("slo", {}).get("latency_p99_s")
        ),
        "outcomes.png": outcomes_figure(summary, ts),
    }
    for name, fig in figures.items():
        buffer = __import__("io").BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        plt.close(fig)
        atomic_write(Path(out_dir) / name, buffer.getvalue())
        written.append(Path(out_dir) / name)
    return written
