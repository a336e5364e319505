"""Write a run's outputs to a folder: summary.json, timeseries.csv, charts and reports.

Every file is written whole or not at all (a temporary name, then a rename), and files in the
folder that this tool did not write are left alone. The charts and the reports are always
drawn from what summary.json and timeseries.csv hold, read back from the folder, so
`outage-sim report DIR` redraws a run exactly as `outage-sim run` drew it. The pages
themselves (HTML and Markdown) are composed in `pages.py`; the provenance beside them
(scenario.toml as run, provenance.json) in `provenance.py`; files are written by `sim.io`.

"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from sim.analysis.metrics import TIMESERIES_COLUMNS, Timeseries
from sim.analysis.outages import OVERLOAD, OVERLOAD_LOAD, trigger_spans
from sim.errors import UsageError
from sim.io import atomic_write, summary_json
from sim.report import charts
from sim.report.compare import html_comparison, markdown_comparison
from sim.report.pages import html_report, markdown_report
from sim.report.provenance import started_from_wall_time, write_provenance

REPORT_NAMES = ("report.html", "report.md")
COMPARE_REPORT_NAMES = ("compare.html", "compare.md")


def timeseries_csv(ts: Timeseries) -> str:
    """timeseries.csv text: one row per bin, the columns of DESIGN.md in order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    # DESIGN.md's columns, then a service graph's per-tier and per-route ones (TIER.queue,
    # ROUTE.success_ratio: the only names with a dot).
    names = [*TIMESERIES_COLUMNS, *(c for c in ts.columns if "." in c)]
    writer.writerow(names)
    n = len(ts)
    times = (
        [(ts.start + timedelta(seconds=float(t))).strftime("%Y-%m-%dT%H:%M:%SZ") for t in ts["t_s"]]
        if ts.start is not None
        else [""] * n
    )
    columns = [ts[c] if c != "time" else times for c in names]
    for row in zip(*columns, strict=True):
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()


def _cell(value) -> str:
    if isinstance(value, str):
        return value
    value = float(value)
    if math.isnan(value):
        return ""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


# -- reading a run back ----------------------------------------------------------------------
def read_timeseries(path: str | Path, start: datetime | None = None, bin_s=None) -> Timeseries:
    """Load a timeseries.csv into a Timeseries (empty cells become NaN; `time` is dropped)."""
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or header[0] != "t_s":
            raise UsageError(f"{path}: not a timeseries.csv (its first column is not t_s)")
        rows = list(reader)
    if any(len(row) != len(header) for row in rows):
        raise UsageError(f"{path}: rows do not all have the {len(header)} columns of the header")
    columns: dict[str, np.ndarray] = {}
    for i, name in enumerate(header):
        if name == "time":
            continue
        cells = np.array([row[i] for row in rows], dtype=object)
        cells[cells == ""] = "nan"  # timeseries_csv writes NaN as an empty cell
        try:
            columns[name] = cells.astype(float)
        except ValueError:
            raise UsageError(f"{path}: column {name!r} has a value that is not a number") from None
    t_s = columns["t_s"]
    if bin_s is None:
        bin_s = float(t_s[1] - t_s[0]) if len(t_s) > 1 else 1.0
    return Timeseries(bin_s=float(bin_s), start=start, columns=columns)


def read_run(run_dir: str | Path) -> tuple[dict, Timeseries]:
    """(summary, Timeseries) of a run folder written by `outage-sim run`."""
    run_dir = Path(run_dir)
    summary_path, csv_path = run_dir / "summary.json", run_dir / "timeseries.csv"
    for path in (summary_path, csv_path):
        if not path.is_file():
            raise UsageError(f"{run_dir}: not a run folder (no {path.name})")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{summary_path}: not valid JSON ({err})") from None
    if not isinstance(summary, dict) or "requests" not in summary:
        raise UsageError(f"{summary_path}: not a summary written by outage-sim")
    start = datetime.fromisoformat(summary["start"]) if summary.get("start") else None
    # summaries written before `bin_s` was stored: read_timeseries infers it from t_s
    bin_s = summary.get("bin_s") or (summary.get("parameters") or {}).get("bin_s")
    ts = read_timeseries(csv_path, start=start, bin_s=bin_s)
    bands_path = run_dir / "bands.csv"
    if summary.get("replications") and bands_path.is_file():
        # `run --reps N`: the per-bin median and 5-95% band across replications, drawn with
        # replication 0 (a bands.csv left by an earlier run without replications is ignored).
        bands = read_timeseries(bands_path, bin_s=bin_s)
        n = min(len(ts), len(bands))
        for name, values in bands.columns.items():
            if name != "t_s" and len(values) >= n:
                ts.columns[name] = np.concatenate([values[:n], np.full(len(ts) - n, np.nan)])
    return summary, ts


def report_view(summary: dict, ts: Timeseries) -> dict:
    """The summary as the report shows it (summary.json is not changed): `triggers`, every
    trigger the outage analysis sees in the series (start_s, end_s or None, label, kind), and
    in the timeline the moments fresh demand reached OVERLOAD_LOAD of capacity and fell back
    below it, which are triggers but no event of the run."""
    if not len(ts):
        return summary
    view = dict(summary)
    timeline = list(summary.get("timeline") or [])
    spans = trigger_spans(ts, timeline)
    share = f"{OVERLOAD_LOAD:.0%}"
    view["overload_share"] = OVERLOAD_LOAD
    view["triggers"] = []
    added = []
    for start_s, end_s, label in spans:
        kind = "overload" if label == OVERLOAD else "event"
        view["triggers"].append({"start_s": start_s, "end_s": end_s, "label": label, "kind": kind})
        if kind == "overload":
            added.append(
                {"t_s": start_s, "kind": "overload",
                 "label": f"trigger: fresh demand reached {share} of capacity"}
            )  # fmt: skip
            if end_s is not None:
                added.append(
                    {"t_s": end_s, "kind": "overload_end",
                     "label": f"trigger ended: fresh demand fell back below {share} of capacity"}
                )  # fmt: skip
    view["timeline"] = sorted(timeline + added, key=lambda e: e["t_s"])
    return view


# -- writing ---------------------------------------------------------------------------------
def render_report(out_dir: str | Path) -> list[Path]:
    """Draw the charts and write report.html and report.md from the files in `out_dir`."""

    out = Path(out_dir)
    summary, ts = read_run(out)
    summary = report_view(summary, ts)
    written = charts.write_charts(summary, ts, out)
    images = [p.name for p in written]
    atomic_write(out / "report.html", html_report(summary, _inline(out, images), ts))
    atomic_write(out / "report.md", markdown_report(summary, _existing(out, images), ts))
    return [*written, out / "report.html", out / "report.md"]


def write_report(result, out_dir: str | Path, *, charts: bool = True) -> Path:
    """Write everything `outage-sim run` writes for a Result into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "summary.json", summary_json(result.summary))
    atomic_write(out / "timeseries.csv", timeseries_csv(result.timeseries))

    started_at = result.extra.get("started_at") or started_from_wall_time(result.summary)
    write_provenance(result.scenario, out, result.summary, started_at)
    if charts:
        render_report(out)
    return out


def write_comparison(dir_a: str | Path, dir_b: str | Path, out_dir: str | Path) -> list[Path]:
    """Compare two run folders: overlaid charts, compare.html and compare.md in `out_dir`."""

    out = Path(out_dir)
    runs = []
    for run_dir in (Path(dir_a), Path(dir_b)):
        summary, ts = read_run(run_dir)
        runs.append((run_dir, summary, ts))
    labels = run_labels([r[0] for r in runs], [r[1] for r in runs])
    written = charts.write_compare_charts(
        [(label, s, ts) for label, (_, s, ts) in zip(labels, runs, strict=True)], out
    )
    images = [p.name for p in written]
    pair = [(label, str(d), s) for label, (d, s, _) in zip(labels, runs, strict=True)]
    atomic_write(out / "compare.html", html_comparison(pair, _inline(out, images)))
    atomic_write(out / "compare.md", markdown_comparison(pair, _existing(out, images)))
    return [*written, out / "compare.html", out / "compare.md"]


def run_labels(dirs: list[Path], summaries: list[dict]) -> list[str]:
    """Short names for two runs: "A: <folder>" and "B: <folder>"."""
    names = [d.resolve().name or str(d) for d in dirs]
    if names[0] == names[1]:
        names = [str(d) for d in dirs]
    return [f"{tag}: {name}" for tag, name in zip("AB", names, strict=False)]


def _inline(out: Path, names: list[str]) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in names if (out / name).is_file()}


def _existing(out: Path, names: list[str]) -> list[str]:
    return [name for name in names if (out / name).is_file()]
