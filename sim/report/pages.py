"""The report pages of a run: report.html (self-contained) and report.md, from its summary.

Both pages are built from one neutral outline (headline facts, tables of rows of plain text)
and differ only in markup. Every piece of text is escaped for its page: scenario text is data,
never markup. report.html inlines its charts as data URIs and its Content-Security-Policy
forbids scripts and network fetches, so it opens anywhere, offline, as it is.
"""

from __future__ import annotations

import base64
import html
import re
from typing import Any

from sim.report.text import (
    headline,
    metastable_words,
    outage_rows,
    parameter_rows,
    provenance_rows,
    route_rows,
    run_span,
    sentence,
    spread_sentence,
    theory_facts,
    tier_rows,
    timeline_rows,
    total_rows,
    warning_lines,
)

CAPTIONS = {
    "dashboard.png": "Queue, load, latency and outcomes on one time axis.",
    "queue.png": "Requests waiting at the end of each bin (a sample at the bin's end, not its "
    "mean or peak), with the queue limit when the queue reached near it. Shaded: outages (the "
    "SLO breached). Lane above: outage bars and events (surges, faults, triggers, capacity "
    "changes).",
    "load.png": "Fresh demand, offered load (every attempt, retries included) and capacity, "
    "in requests per second.",
    "latency.png": "What clients saw in each bin: p50, p95, p99 latency of the requests that "
    "succeeded, first send to success (retries and backoff included), by arrival bin; with "
    "the SLO's p99 target and the client timeout.",
    "outcomes.png": "What became of the attempts of each bin: succeeded, timed out, rejected; "
    "the line shows fresh requests.",
    "compare_queue.png": "Queue length of both runs overlaid, with their outages shaded.",
    "compare_load.png": "Offered load and capacity of both runs, with their fresh demand.",
    "graph.png": "The service graph: a box per tier (dashed and rounded: an external provider), "
    "an arrow per call, labelled with the routes making it. Red: the tier saturated (in some "
    "bin over 1% of its attempts failed, or 95% of its servers were busy); amber: busy (80% "
    "busy, or rate-limited); green: healthy.",
    "tiers.png": "Requests waiting at each tier, and the share of each pool's servers busy, "
    "per bin. Shaded: outages.",
}
ALT = {
    "dashboard.png": "Dashboard: queue, load, latency, outcomes",
    "queue.png": "Queue length over time",
    "load.png": "Demand, offered load and capacity",
    "latency.png": "Latency percentiles per bin",
    "outcomes.png": "Outcomes of attempts per bin",
    "graph.png": "The service graph, tiers coloured by their worst state",
    "tiers.png": "Queue and utilisation per tier",
}
PAGE_CHARTS = ("dashboard.png", "queue.png", "load.png", "latency.png", "outcomes.png")
CLOSEUP_CAPTION = (
    "Outage {n} close up: queue, load and latency from a few hours before it began to a few "
    "hours after it ended, with the events inside that stretch."
)


def closeups(images) -> list[str]:
    """The outage close-ups among the charts (outage-1.png, ...), in outage order."""
    found = [n for n in images if re.fullmatch(r"outage-\d+\.png", n)]
    return sorted(found, key=lambda n: int(n[7:-4]))


def caption(name: str) -> str:
    """A chart's caption (a close-up's names its outage)."""
    if name in CAPTIONS:
        return CAPTIONS[name]
    match = re.fullmatch(r"outage-(\d+)\.png", name)
    return CLOSEUP_CAPTION.format(n=match.group(1)) if match else ""


def alt(name: str) -> str:
    """A chart's alternative text."""
    match = re.fullmatch(r"outage-(\d+)\.png", name)
    return f"Outage {match.group(1)} close up" if match else ALT.get(name, name)


TIER_CHARTS = ("graph.png", "tiers.png")  # a service graph's, in its "Tiers" section


# -- HTML ------------------------------------------------------------------------------------
STYLE = """
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  color:#1a1a1a;background:#fff}
main{max-width:1320px;margin:0 auto;padding:20px 28px 40px}
h1{font-size:28px;margin:2px 0 4px;overflow-wrap:anywhere}
h2{font-size:20px;margin:30px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
.kicker{margin:0;color:#555;font-size:14px;letter-spacing:.02em;overflow-wrap:anywhere}
.meta{margin:0 0 14px;color:#555}
.headline{border:1px solid #ccc;border-left:8px solid #009E73;border-radius:6px;
  padding:14px 18px;background:#f7fbf9}
.headline.bad{border-left-color:#D55E00;background:#fdf6f2}
.lead{font-size:21px;font-weight:600;margin:0 0 12px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:10px;margin:0}
.cards div{background:#fff;border:1px solid #ddd;border-radius:5px;padding:8px 12px}
.cards dt{font-size:13px;color:#555;text-transform:uppercase;letter-spacing:.04em}
.cards dd{margin:0;font-size:24px;font-weight:700}
.cards small{display:block;font-size:13px;font-weight:400;color:#555}
.why{margin:12px 0 0}
.warnings{border:1px solid #E69F00;border-left:8px solid #E69F00;border-radius:6px;
  padding:8px 18px;margin:14px 0 0;background:#fffaf0}
.warnings h2{font-size:17px;margin:4px 0;border:0;padding:0}
.warnings ul{margin:4px 0;padding-left:20px}
.description{overflow-wrap:anywhere;max-width:80ch}
table{border-collapse:collapse;margin:6px 0;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e2e2e2;padding:5px 12px 5px 0;text-align:left;vertical-align:top}
th{font-size:14px;color:#444}
td{overflow-wrap:anywhere}
figure{margin:18px 0}
img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:14px}
code{font-size:13px}
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def escape(text: Any) -> str:
    """Text made safe for HTML (quotes too)."""
    return html.escape(str(text), quote=True)


def html_paragraphs(text: str) -> str:
    """Free text as escaped paragraphs: blank lines part them, single newlines are spaces
    (as in the Markdown the description is written in; its markup is shown as written)."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip())]
    return "".join(f"<p>{escape(p)}</p>" for p in paragraphs if p)


def html_table(rows: list[list[str]], header: bool = True) -> str:
    if not rows:
        return ""
    head = rows[0] if header else None
    body = rows[1:] if header else rows
    parts = ["<table>"]
    if head and any(head):
        parts.append(
            "<thead><tr>" + "".join(f"<th>{escape(c)}</th>" for c in head) + "</tr></thead>"
        )
    parts.append("<tbody>")
    for row in body:
        parts.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def html_figure(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt(name))}">'
        f"<figcaption>{escape(caption(name))} <code>{escape(name)}</code></figcaption></figure>"
    )


def html_page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(part for part in body if part)
        + "\n</main>\n</body>\n</html>\n"
    )


def html_headline(summary: dict) -> str:
    """The headline block: lead sentence, fact cards, the metastability verdict and why."""
    facts = headline(summary)
    cards = "".join(
        f"<div><dt>{escape(label)}</dt><dd>{escape(value)}<small>{escape(note)}</small></dd></div>"
        for label, value, note in facts["cards"]
    )
    why = ""
    if facts["why"]:
        why = (
            f'<p class="why"><strong>Metastable: {escape(metastable_words(summary))}.</strong> '
            f"{escape(sentence(facts['why']))}</p>"
        )
    if facts.get("trigger"):
        why += f'<p class="why"><strong>Trigger:</strong> {escape(facts["trigger"])}</p>'
    return (
        f'<section class="headline{" bad" if facts["bad"] else ""}">'
        f'<p class="lead">{escape(facts["lead"])}</p><dl class="cards">{cards}</dl>{why}</section>'
    )


def html_warnings(summary: dict) -> str:
    """The warnings box (nothing when the run has none)."""
    lines = warning_lines(summary)
    if not lines:
        return ""
    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return f'<section class="warnings"><h2>Warnings</h2><ul>{items}</ul></section>'


def html_theory(summary: dict) -> str:
    """The "Queueing theory" section (nothing when the summary has no `theory`)."""
    facts = theory_facts(summary)
    if facts is None:
        return ""
    parts = ["<h2>Queueing theory</h2>", f"<p>{escape(facts['text'])}</p>"]
    for key in ("figures", "stretches", "compare"):
        parts.append(html_table(facts.get(key) or []))
    if facts.get("verdict"):
        parts.append(f"<p>{escape(facts['verdict'])}</p>")
    return "".join(parts)


def html_tiers(summary: dict, images: dict[str, bytes], ts=None) -> str:
    """The "Tiers" section of a service graph (nothing for one pool): how the failure spread
    (when the Timeseries is given), the two charts, and the tables of tiers and routes."""
    if not summary.get("tiers"):
        return ""
    parts = ["<h2>Tiers</h2>"]
    if ts is not None:
        parts.append(f"<p>{escape(spread_sentence(summary, ts))}</p>")
    parts += [html_figure(n, images[n]) for n in TIER_CHARTS if n in images]
    parts += [html_table(tier_rows(summary)), html_table(route_rows(summary))]
    return "".join(parts)


def html_report(summary: dict, images: dict[str, bytes], ts=None) -> str:
    """report.html: one self-contained page; `images` maps chart names to PNG bytes; `ts`,
    the run's Timeseries, tells a service graph's page how the failure spread."""
    title = summary.get("title") or summary.get("scenario") or "outage-sim run"
    description = summary.get("description") or ""
    body = [
        f'<p class="kicker">outage-sim report · {escape(summary.get("scenario", ""))}</p>',
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{escape(run_span(summary))} · seed {escape(summary.get("seed"))}</p>',
        html_headline(summary),
        html_warnings(summary),
        f'<h2>Scenario</h2><div class="description">{html_paragraphs(description)}</div>'
        if description.strip()
        else "",
        "<h2>Outages</h2>"
        + (html_table(outage_rows(summary)) if summary.get("outages") else "<p>None.</p>")
        + "".join(html_figure(n, images[n]) for n in closeups(images)),
        "<h2>Charts</h2>" + "".join(html_figure(n, images[n]) for n in PAGE_CHARTS if n in images),
        html_tiers(summary, images, ts),
        html_theory(summary),
        "<h2>Key parameters</h2>" + html_table(parameter_rows(summary))
        if summary.get("parameters")
        else "",
        "<h2>Totals</h2>" + html_table(total_rows(summary)),
        "<h2>Timeline</h2>" + html_table(timeline_rows(summary)) if summary.get("timeline") else "",
        "<h2>Provenance</h2>" + html_table(provenance_rows(summary)[1:], header=False),
    ]
    return html_page(f"{title}: outage report", body)


# -- Markdown --------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|$~])")


def md_text(text: Any) -> str:
    """Plain text made safe for Markdown: markup characters escaped, HTML made inert."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text).replace("\n", " ")


def md_block(text: str) -> str:
    """Free Markdown text (a description): kept as Markdown, but raw HTML made inert."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").strip()


def md_table(rows: list[list[str]]) -> str:
    """A Markdown table; the first row is the header."""
    if not rows:
        return ""
    head, body = rows[0], rows[1:]
    lines = ["| " + " | ".join(md_text(c) for c in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def md_headline(summary: dict) -> str:
    """The headline as Markdown: the lead in bold, the facts as a list, the verdict and why."""
    facts = headline(summary)
    lines = [f"**{md_text(facts['lead'])}**", ""]
    for label, value, note in facts["cards"]:
        if label == "Metastable" and facts["why"]:
            continue  # the verdict follows, with its reason
        note = f" ({md_text(note)})" if note else ""
        lines.append(f"- {md_text(label)}: **{md_text(value)}**{note}")
    if facts["why"]:
        verdict = f"Metastable: **{metastable_words(summary)}**."
        lines += ["", f"{verdict} {md_text(sentence(facts['why']))}"]
    if facts.get("trigger"):
        lines += ["", f"Trigger: {md_text(facts['trigger'])}"]
    return "\n".join(lines)


def md_warnings(summary: dict) -> str:
    """The warnings as a quoted block (empty when the run has none)."""
    lines = warning_lines(summary)
    if not lines:
        return ""
    return "\n".join(["> **Warnings**", ">"] + [f"> - {md_text(line)}" for line in lines])


def md_theory(summary: dict) -> list[str]:
    """The "Queueing theory" section's parts (none when the summary has no `theory`)."""
    facts = theory_facts(summary)
    if facts is None:
        return []
    parts = ["## Queueing theory", md_text(facts["text"])]
    parts += [md_table(facts[key]) for key in ("figures", "stretches", "compare") if facts.get(key)]
    if facts.get("verdict"):
        parts.append(md_text(facts["verdict"]))
    return parts


def md_tiers(summary: dict, images: list[str], ts=None) -> list[str]:
    """The "Tiers" section's parts (none for one pool): as `html_tiers`, in Markdown."""
    if not summary.get("tiers"):
        return []
    parts = ["## Tiers"]
    if ts is not None:
        parts.append(md_text(spread_sentence(summary, ts)))
    parts += [f"![{ALT[n]}]({n})\n\n{md_text(CAPTIONS[n])}" for n in TIER_CHARTS if n in images]
    return parts + [md_table(tier_rows(summary)), md_table(route_rows(summary))]


def markdown_report(summary: dict, images: list[str], ts=None) -> str:
    """report.md: the report for pasting into a postmortem; `images` are files beside it;
    `ts`, the run's Timeseries, tells a service graph's page how the failure spread."""
    title = summary.get("title") or summary.get("scenario") or "outage-sim run"
    parts = [
        f"# {md_text(title)}",
        f"outage-sim report of `{summary.get('scenario', '')}`: {md_text(run_span(summary))}, "
        f"seed {summary.get('seed', '–')}.",
        md_headline(summary),
    ]
    if warning_lines(summary):
        parts.append(md_warnings(summary))
    if summary.get("description"):
        parts += ["## Scenario", md_block(summary["description"])]
    parts += ["## Outages", md_table(outage_rows(summary)) if summary.get("outages") else "None."]
    parts += [f"![{alt(n)}]({n})\n\n{md_text(caption(n))}" for n in closeups(images)]
    charts = [n for n in PAGE_CHARTS if n in images]
    if charts:
        parts.append("## Charts")
        parts += [f"![{alt(n)}]({n})\n\n{md_text(caption(n))}" for n in charts]
    parts += md_tiers(summary, images, ts)
    parts += md_theory(summary)
    if summary.get("parameters"):
        parts += ["## Key parameters", md_table(parameter_rows(summary))]
    parts += ["## Totals", md_table(total_rows(summary))]
    if summary.get("timeline"):
        parts += ["## Timeline", md_table(timeline_rows(summary))]
    parts += ["## Provenance", md_table([["", ""], *provenance_rows(summary)[1:]])]
    return "\n\n".join(parts) + "\n"
