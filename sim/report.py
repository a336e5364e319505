"""Write a run's outputs to a folder: summary.json, timeseries.csv, charts and reports.

Every file is written whole or not at all (a temporary name, then a rename), and files in the
folder that this tool did not write are left alone. The charts and the reports are always
drawn from what summary.json and timeseries.csv hold, read back from the folder, so
`outage-sim report DIR` redraws a run exactly as `outage-sim run` drew it. The pages
themselves (HTML and Markdown) are composed in `report_pages.py`; the provenance beside them
(scenario.toml as run, provenance.json) in `report_provenance.py`.

"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import signal
import tempfile
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import UsageError
from sim.metrics import TIMESERIES_COLUMNS, Timeseries

REPORT_NAMES = ("report.html", "report.md")
COMPARE_REPORT_NAMES = ("compare.html", "compare.md")


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename.

    Ctrl-C (SIGINT) and SIGTERM are held while one file is written and take effect right after
    its rename, so an interrupted run never leaves a temporary or a half-written file."""
    with _signals_held():
        _write_then_rename(Path(path), data)


@contextlib.contextmanager
def _signals_held():
    """Defer SIGINT and SIGTERM to the end of the block, then act on the first one that came.

    Python runs signal handlers in the main thread only, so that is where they are swapped
    (a mask would not do: numpy's threads would take the signal instead)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[tuple[int, Any]] = []
    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(number) is not None:  # None: set outside Python, left alone
            previous[number] = signal.signal(number, lambda n, frame: came.append((n, frame)))

    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if came:
            number, frame = came[0]
            handler = previous[number]
            if callable(handler):
                handler(number, frame)  # Python's own: KeyboardInterrupt for SIGINT
            elif handler == signal.SIG_DFL:
                signal.raise_signal(number)


def _write_then_rename(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); outputs get the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(
            fd, mode, **({} if mode == "wb" else {"encoding": "utf-8", "newline": ""})
        ) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clean(value):
    """JSON-safe: NaN and infinities become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary_json(summary: dict) -> str:
    """summary.json text (stable key order, NaN as null)."""
    return json.dumps(_clean(summary), indent=2, ensure_ascii=False) + "\n"


def timeseries_csv(ts: Timeseries) -> str:
    """timeseries.csv text: one row per bin, the columns of DESIGN.md in order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TIMESERIES_COLUMNS)
    n = len(ts)
    times = (
        [(ts.start + timedelta(seconds=float(t))).strftime("%Y-%m-%dT%H:%M:%SZ") for t in ts["t_s"]]
        if ts.start is not None
        else [""] * n
    )
    columns = [ts[c] if c != "time" else times for c in TIMESERIES_COLUMNS]
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


# -- writing ---------------------------------------------------------------------------------
def render_report(out_dir: str | Path) -> list[Path]:
    """Draw the charts and write report.html and report.md from the files in `out_dir`."""
    from sim import charts
    from sim.report_pages import html_report, markdown_report

    out = Path(out_dir)
    summary, ts = read_run(out)
    written = charts.write_charts(summary, ts, out)
    images = [p.name for p in written]
    atomic_write(out / "report.html", html_report(summary, _inline(out, images)))
    atomic_write(out / "report.md", markdown_report(summary, _existing(out, images)))
    return [*written, out / "report.html", out / "report.md"]


def write_report(result, out_dir: str | Path, *, charts: bool = True) -> Path:
    """Write everything `outage-sim run` writes for a Result into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "summary.json", summary_json(result.summary))
    atomic_write(out / "timeseries.csv", timeseries_csv(result.timeseries))
    from sim.report_provenance import started_from_wall_time, write_provenance

    started_at = result.extra.get("started_at") or started_from_wall_time(result.summary)
    write_provenance(result.scenario, out, result.summary, started_at)
    if charts:
        render_report(out)
    return out


def write_comparison(dir_a: str | Path, dir_b: str | Path, out_dir: str | Path) -> list[Path]:
    """Compare two run folders: overlaid charts, compare.html and compare.md in `out_dir`."""
    from sim import charts
    from sim.report_compare import html_comparison, markdown_comparison

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
