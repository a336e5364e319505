"""Write a run's outputs to a folder: summary.json, timeseries.csv, charts and reports.

Every file is written whole or not at all (a temporary name, then a rename), and files in the
folder that this tool did not write are left alone.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np

from sim.metrics import TIMESERIES_COLUMNS, Timeseries


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def write_report(result, out_dir: str | Path, *, charts: bool = True) -> Path:
    """Write everything `outage-sim run` writes for a Result into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "summary.json", summary_json(result.summary))
    atomic_write(out / "timeseries.csv", timeseries_csv(result.timeseries))
    if charts:
        from sim import charts as charts_module

        charts_module.write_charts(result.summary, result.timeseries, out)
    return out
