"""Two runs side by side (before and after a mitigation, two capacities): compare.html and .md.

A table of differences of the outcomes, the parameters that differ, and the overlaid charts.
The text helpers and the escaping are those of `pages.py`.
"""

from __future__ import annotations

import math
from typing import Any

from sim.report.pages import escape, html_figure, html_page, html_table, md_table, md_text
from sim.report.text import count, failed_requests, headline, metastable_words, ratio, seconds

COMPARE_CHARTS = ("compare_queue.png", "compare_load.png")
Run = tuple[str, str, dict]  # (label, folder, summary)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _change(a: Any, b: Any, kind: str) -> str:
    """B − A, in the measure's unit, with the relative change when it means something."""
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return "" if a == b else "differs"
    if x == y:
        return "same"
    diff = y - x
    if kind == "ratio":
        return f"{diff * 100:+.2f} points"
    if kind == "seconds":
        text = ("+" if diff > 0 else "-") + seconds(abs(diff))
    elif kind == "times":
        text = f"{diff:+.2f}×"
    else:
        text = f"{diff:+,.0f}"
    if not x:
        return text
    factor = y / x
    if 0 < factor < 0.1:  # a share of A reads at once; "1/714,661 of A" does not
        return f"{text} ({_share(factor)} of A)"
    if factor > 10:
        return f"{text} ({_fold(factor)}× A)"
    return f"{text} ({factor - 1:+.0%})"


def _share(factor: float) -> str:
    """A small share as a percentage with two significant figures: '0.00014%', '3.2%'."""
    digits = max(0, 1 - math.floor(math.log10(factor * 100)))
    return f"{factor * 100:.{digits}f}%"


def _fold(factor: float) -> str:
    return f"{factor:,.0f}" if factor >= 100 else f"{factor:.3g}"


def _longest(summary: dict) -> float:
    return max((o["duration_s"] for o in summary.get("outages") or []), default=0.0)


def _peak(summary: dict) -> float | None:
    return (summary.get("queue") or {}).get("max")


MEASURES = (
    # label, getter, kind (for formatting and the change column)
    ("fresh requests", lambda s: s["requests"].get("fresh"), "count"),
    ("requests failed", failed_requests, "count"),
    ("success ratio", lambda s: s.get("success_ratio"), "ratio"),
    ("attempts", lambda s: s["requests"].get("attempts"), "count"),
    ("amplification (attempts per fresh request)", lambda s: s.get("amplification"), "times"),
    ("outages", lambda s: len(s.get("outages") or []), "count"),
    ("time in outage", lambda s: s.get("outage_total_s"), "seconds"),
    ("longest outage", _longest, "seconds"),
    ("first outage began", lambda s: s.get("first_outage_start_s"), "seconds"),
    ("peak queue", _peak, "count"),
    ("latency p50", lambda s: (s.get("latency_s") or {}).get("p50"), "seconds"),
    ("latency p99", lambda s: (s.get("latency_s") or {}).get("p99"), "seconds"),
    ("mean wait", lambda s: (s.get("wait_s") or {}).get("mean"), "seconds"),
    ("utilisation", lambda s: s.get("utilization"), "ratio"),
    ("recovered by the end", lambda s: s.get("recovered"), "flag"),
    ("metastable", metastable_words, "flag"),
)


def _show(value: Any, kind: str) -> str:
    if kind == "count":
        return count(value)
    if kind == "ratio":
        return ratio(value, 2)
    if kind == "seconds":
        return seconds(value) if value is not None else "–"
    if kind == "times":
        return f"{value:.2f}×" if _number(value) is not None else "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "–" if value is None else str(value)


def difference_rows(a: Run, b: Run) -> list[list[str]]:
    """Measure | A | B | change (B − A), for the outcomes that matter in a review."""
    rows = [["measure", a[0], b[0], "change (B − A)"]]
    for label, get, kind in MEASURES:
        x, y = get(a[2]), get(b[2])
        rows.append([label, _show(x, kind), _show(y, kind), _change(x, y, kind)])
    return rows


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    if isinstance(value, list):
        flat = {f"{prefix}count": len(value)} if value else {prefix.rstrip("."): "none"}
        for i, item in enumerate(value):
            flat.update(_flatten(item, f"{prefix}{i}."))
        return flat
    return {prefix.rstrip("."): value}


def parameter_difference_rows(a: Run, b: Run) -> list[list[str]]:
    """The scenario settings that differ between the runs (parameters, SLO, seed, engine)."""

    def settings(summary: dict) -> dict[str, Any]:
        flat = _flatten(
            {"parameters": summary.get("parameters") or {}, "slo": summary.get("slo") or {}}
        )
        for key in ("seed", "engine", "scale", "version", "scenario", "start"):
            flat[key] = summary.get(key)
        return flat

    left, right = settings(a[2]), settings(b[2])
    rows = [["setting", a[0], b[0]]]
    for key in sorted(set(left) | set(right)):
        x, y = left.get(key), right.get(key)
        if x != y:
            rows.append([key.removeprefix("parameters."), _plain(x), _plain(y)])
    return rows


def _plain(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def run_sentence(run: Run) -> str:
    """One line about a run: its lead sentence and the metastability verdict."""
    label, folder, summary = run
    facts = headline(summary)
    return f"{label} ({summary.get('title') or summary.get('scenario')}): {facts['lead']}"


def settings_sentence(rows: list[list[str]], shown: int = 4) -> str:
    """The settings that differ, in one sentence (from parameter_difference_rows)."""
    changes = [f"{key}: {a} → {b}" for key, a, b in rows[1:]]
    if not changes:
        return "Both runs have the same settings."
    more = f" and {len(changes) - shown} more" if len(changes) > shown else ""
    return "What differs: " + "; ".join(changes[:shown]) + more + "."


def html_comparison(runs: list[Run], images: dict[str, bytes]) -> str:
    """compare.html: one self-contained page comparing two runs."""
    a, b = runs
    params = parameter_difference_rows(a, b)
    body = [
        '<p class="kicker">outage-sim comparison</p>',
        f"<h1>{escape(a[0])} vs {escape(b[0])}</h1>",
        '<section class="headline">'
        + "".join(f'<p class="lead">{escape(run_sentence(r))}</p>' for r in runs)
        + f'<p class="why">{escape(settings_sentence(params))}</p></section>',
        "<h2>Differences</h2>" + html_table(difference_rows(a, b)),
        "<h2>Charts</h2>"
        + "".join(html_figure(n, images[n]) for n in COMPARE_CHARTS if n in images),
        "<h2>Settings that differ</h2>"
        + (html_table(params) if len(params) > 1 else "<p>None: the same scenario.</p>"),
        "<h2>Runs</h2>"
        + html_table(
            [["run", "folder", "title", "scenario sha256"]]
            + [[r[0], r[1], r[2].get("title", ""), r[2].get("scenario_sha256", "")] for r in runs]
        ),
    ]
    return html_page(f"{a[0]} vs {b[0]}: outage comparison", body)


def markdown_comparison(runs: list[Run], images: list[str]) -> str:
    """compare.md: the comparison for a postmortem; `images` are files beside it."""
    a, b = runs
    params = parameter_difference_rows(a, b)
    parts = [
        f"# {md_text(a[0])} vs {md_text(b[0])}",
        "\n".join(f"- {md_text(run_sentence(r))}" for r in runs),
        md_text(settings_sentence(params)),
        "## Differences",
        md_table(difference_rows(a, b)),
    ]
    charts = [n for n in COMPARE_CHARTS if n in images]
    if charts:
        parts += ["## Charts", *[f"![{n}]({n})" for n in charts]]
    parts += [
        "## Settings that differ",
        md_table(params) if len(params) > 1 else "None: the same scenario.",
        "## Runs",
        md_table(
            [["run", "folder", "title", "scenario sha256"]]
            + [[r[0], r[1], r[2].get("title", ""), r[2].get("scenario_sha256", "")] for r in runs]
        ),
    ]
    return "\n\n".join(parts) + "\n"
