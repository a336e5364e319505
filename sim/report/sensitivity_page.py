"""The pages of a sensitivity analysis: sensitivity.md and sensitivity.html (self-contained).

Both come from one outline: the conclusion under test, how the runs were made, a one-line
verdict per key, the table of each key's figures at its low and high end beside the
baseline's, and the tornado chart. Text from the scenario (the `why` of each range, values,
the title) is escaped for its page, as in the run's report.
"""

from __future__ import annotations

import base64
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

from sim.io import atomic_write
from sim.model.units import format_duration
from sim.report.pages import escape, html_page, html_table, md_table, md_text
from sim.report.sweep_charts import short_value

RULES = (
    "Intervals are 95% Student t intervals over replications, differences paired by "
    "replication against the baseline (common random numbers). A difference counts when its "
    "interval excludes 0 and it is at least one bin (times) or 0.0001 (shares). The "
    "conclusion breaks at an end when the outage appears or disappears beyond noise, or when "
    "the whole interval of the onset's (outage time's) difference lies outside the tolerance; "
    "it is unclear when only the mean does. A key changes the conclusion when it breaks at "
    "either end; it moves it when a figure differs beyond noise; else it has no effect "
    "within noise."
)


def _figure(row: dict, column: str, start: Any) -> str:
    mean = row.get(f"{column}_mean")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "no outage" if column == "first_outage_start_s" else "-"
    low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    has_ci = low is not None and high is not None and math.isfinite(low) and high > low
    if column == "first_outage_start_s":
        text = _moment(mean, start)
        return text + (f" (± {format_duration((high - low) / 2)})" if has_ci else "")
    if column == "failed_share":
        text = f"{100 * mean:.2f}%"
        return text + (f" ({100 * max(low, 0):.2f}-{100 * high:.2f}%)" if has_ci else "")
    if column == "outage_total_s":
        text = format_duration(mean) if mean else "0"
        return text + (
            f" ({format_duration(max(low, 0))}-{format_duration(high)})" if has_ci else ""
        )
    text = f"{mean:.4g}"
    return text + (f" ({low:.4g}-{high:.4g})" if has_ci else "")


def _moment(seconds: float, start: Any) -> str:
    if start is None:
        return f"{format_duration(seconds)} into the run"
    return (start + timedelta(seconds=seconds)).strftime("%d %b %H:%M UTC")


def _columns(analysis: Any) -> list[str]:
    return [
        {"outage_time": "outage_total_s", "onset": "first_outage_start_s"}.get(f, f)
        for f in analysis.figures
    ]


def verdict_lines(analysis: Any) -> list[str]:
    """One line per key: its verdict and whether the conclusion holds at each end."""
    lines = []
    reasons = {(row["key"], row["level"]): row.get("reason", "") for row in analysis.levels}
    for assumption in analysis.assumptions:
        info = analysis.verdicts.get(assumption.key, {})
        ends = []
        for level in ("low", "high"):
            state = info.get(level, "not run")
            value = short_value(getattr(assumption, level))
            reason = reasons.get((assumption.key, level), "")
            said = {"holds": "holds", "breaks": "breaks", "unclear": "unclear"}.get(state, state)
            ends.append(
                f"{level} {value}: {said}" + (f" ({reason})" if state != "holds" and reason else "")
            )
        lines.append(f"{assumption.key}: {info.get('verdict', 'not run')}; " + "; ".join(ends))
    return lines


def table_rows(analysis: Any) -> list[list[str]]:
    """Header and one row for the baseline, then one per key and level."""
    columns = _columns(analysis)
    names = {
        "outage_total_s": "outage time",
        "first_outage_start_s": "onset",
        "failed_share": "failed share",
    }
    rows = [["key", "level", "value", "runs", *(names.get(c, c) for c in columns), "conclusion"]]
    base = analysis.baseline
    rows.append(
        [
            "(baseline)",
            "",
            "",
            str(base.get("runs", 0)),
            *(_figure(base, c, analysis.start) for c in columns),
            analysis.conclusion,
        ]
    )
    for row in analysis.levels:
        rows.append(
            [
                row["key"],
                row["level"],
                short_value(row["value"], 40),
                str(row.get("runs", 0)),
                *(_figure(row, c, analysis.start) for c in columns),
                row.get("conclusion", ""),
            ]
        )
    return rows


def _facts(analysis: Any) -> list[str]:
    facts = [
        f"Conclusion under test (the baseline's): {analysis.conclusion}.",
        f"Engine: {analysis.engine_reason}; {analysis.reps} replication(s) per level.",
    ]
    if analysis.interrupted:
        facts.append("Interrupted: levels without finished runs are marked 'not run'.")
    return facts + list(analysis.notes)


def markdown_page(analysis: Any, chart: str | None) -> str:
    """sensitivity.md: facts, verdicts, the chart, the table, the rules."""
    parts = [f"# Sensitivity: {md_text(analysis.title)}", ""]
    parts += [f"- {md_text(fact)}" for fact in _facts(analysis)]
    parts += ["", "## Verdicts", ""]
    parts += [f"- {md_text(line)}" for line in verdict_lines(analysis)]
    if chart:
        parts += ["", f"![Tornado chart: each assumption from low to high]({chart})"]
    parts += ["", "## Figures at each end", "", md_table(table_rows(analysis))]
    ranges = [["key", "range", "from", "why"]] + [
        [a.key, f"{short_value(a.low, 40)} to {short_value(a.high, 40)}", a.where, a.why]
        for a in analysis.assumptions
    ]
    parts += ["", "## The ranges", "", md_table(ranges), "", "## How keys are judged", ""]
    parts += [md_text(RULES), ""]
    return "\n".join(parts)


def html_report(analysis: Any, png: bytes | None) -> str:
    """sensitivity.html: the same as the Markdown page, the chart inlined."""
    body = [f"<h1>Sensitivity: {escape(analysis.title)}</h1>"]
    body.append("<ul>" + "".join(f"<li>{escape(f)}</li>" for f in _facts(analysis)) + "</ul>")
    body.append(
        "<h2>Verdicts</h2><ul>"
        + "".join(f"<li>{escape(line)}</li>" for line in verdict_lines(analysis))
        + "</ul>"
    )
    if png:
        data = base64.b64encode(png).decode("ascii")
        body.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="Tornado chart">'
            "<figcaption>Each assumption from its low (blue) to its high (orange) end "
            "around the baseline (black line), with 95% intervals. "
            "<code>tornado.png</code></figcaption></figure>"
        )
    body.append("<h2>Figures at each end</h2>" + html_table(table_rows(analysis)))
    ranges = [["key", "range", "from", "why"]] + [
        [a.key, f"{short_value(a.low, 40)} to {short_value(a.high, 40)}", a.where, a.why]
        for a in analysis.assumptions
    ]
    body.append("<h2>The ranges</h2>" + html_table(ranges))
    body.append(f"<h2>How keys are judged</h2><p>{escape(RULES)}</p>")
    return html_page(f"Sensitivity: {analysis.title}", body)


def write_pages(analysis: Any, out: Path, chart: str | None) -> list[Path]:
    """Write sensitivity.md and sensitivity.html into `out` (the chart already there)."""
    png = (out / chart).read_bytes() if chart else None
    atomic_write(out / "sensitivity.md", markdown_page(analysis, chart))
    atomic_write(out / "sensitivity.html", html_report(analysis, png))
    return [out / "sensitivity.md", out / "sensitivity.html"]
