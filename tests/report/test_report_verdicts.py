"""The report's words for outage verdicts, warnings and queueing theory, on hand-made summaries.

Each summary holds only the keys the pages read, so a key that another part of the product
has not written yet (or an older summary lacks) must show nothing rather than fail.
"""

from __future__ import annotations

import copy

import pytest

from sim.report.pages import html_report, markdown_report
from sim.report.text import headline, outage_rows, theory_facts

OUTAGE = {
    "start_s": 600.0,
    "end_s": 3600.0,
    "start": None,
    "end": None,
    "duration_s": 3000.0,
    "peak_queue": 5400.0,
    "ongoing": True,
    "criterion": "success_ratio",
    "cause": "metastable",
    "trigger": "fault: 30% capacity",
    "amplification": 3.9,
    "success_ratio": 0.01,
}
SUMMARY = {
    "scenario": "hand",
    "title": "hand-made",
    "seed": 1,
    "duration_s": 3600.0,
    "start": None,
    "requests": {"fresh": 1000, "succeeded": 10},
    "amplification": 3.5,
    "outages": [OUTAGE],
    "outage_total_s": 3000.0,
    "recovered": False,
    "metastable": True,
    "metastable_reason": "after the fault the service is still down: retries kept it down",
}
THEORY = {
    "applies": True,
    "reason": "constant arrivals at 8/s against 10 servers",
    "model": "M/M/c (Erlang C)",
    "utilization": 0.8,
    "p_wait": 0.409,
    "wait_mean_s": 0.2045,
    "servers_needed": 11,
    "compare": [
        {"figure": "wait_mean_s", "label": "mean wait", "theory": 0.2045, "simulated": 0.21,
         "ci_low": 0.19, "ci_high": 0.23, "agrees": True},
        {"figure": "p_wait", "label": "P(wait)", "theory": 0.409, "simulated": 0.52,
         "ci_low": 0.50, "ci_high": 0.54, "agrees": False},
    ],
}  # fmt: skip


def _summary(**changes) -> dict:
    summary = copy.deepcopy(SUMMARY)
    outage = changes.pop("outage", {})
    summary["outages"][0].update(outage)
    summary.update(changes)
    return summary


def test_outage_rows_name_the_criterion_and_the_cause() -> None:
    """Each outage row says which target it breached and what caused it."""
    header, row = outage_rows(_summary(outage={"criterion": "both"}))
    assert row[header.index("breached")] == "success ratio and latency"
    assert row[header.index("cause")] == "metastable: outlived fault: 30% capacity"
    _, chronic = outage_rows(_summary(outage={"cause": "chronic", "criterion": "latency"}))
    assert chronic[header.index("cause")] == "chronic: before any trigger"
    assert chronic[header.index("breached")] == "latency"


@pytest.mark.parametrize(
    ("outage", "metastable", "lead_words", "card_note"),
    [
        ({}, True, "A metastable failure", "outlived its trigger"),
        ({"cause": "chronic", "trigger": None}, False, "A chronic outage, not a metastable one",
         "chronic: never met its SLO"),
        ({"cause": "spontaneous", "trigger": None}, None, "began with no trigger",
         "began with no trigger"),
        ({"cause": "trigger", "ongoing": False}, False, "ended with its backlog",
         "ended with its backlog"),
        ({"cause": "trigger"}, None, "too early to tell", "too early to tell"),
    ],
)  # fmt: skip
def test_headline_says_what_kind_of_outage(outage, metastable, lead_words, card_note) -> None:
    """The lead names the cause and the breached target; the Metastable card agrees."""
    facts = headline(_summary(outage=outage, metastable=metastable))
    assert lead_words in facts["lead"]
    assert "It breached the success ratio target." in facts["lead"]
    card = next(c for c in facts["cards"] if c[0] == "Metastable")
    assert card[1] == {True: "yes", False: "no"}.get(metastable, "cannot tell")
    assert card[2] == card_note
    ongoing = outage.get("ongoing", True)
    assert ("still down" in facts["lead"]) is ongoing
    assert ("then recovered" in facts["lead"]) is not ongoing


def test_warnings_box_near_the_top_of_both_pages() -> None:
    """Warnings show as a box right after the headline, escaped, in HTML and Markdown."""
    warning = 'slo.latency_p99 = 2s is below the idle service\'s p99 of 4.6s <b>"x"</b>'
    summary = _summary(warnings=[warning, "scale 2000: the pool queues differently"])
    page = html_report(summary, {})
    box = page.index('<section class="warnings">')
    assert page.index('<section class="headline') < box < page.index("<h2>Outages</h2>")
    assert "&lt;b&gt;&quot;x&quot;&lt;/b&gt;" in page and "<b>" not in page
    assert page.count("<li>") == 2
    markdown = markdown_report(summary, [])
    assert "> **Warnings**" in markdown
    assert markdown.index("> **Warnings**") < markdown.index("## Outages")
    assert "&lt;b&gt;" in markdown


@pytest.mark.parametrize("warnings", [None, []])
def test_no_warnings_no_box(warnings) -> None:
    """Without warnings (none, or a summary from before the key existed) there is no box."""
    summary = _summary() if warnings is None else _summary(warnings=warnings)
    assert '<section class="warnings">' not in html_report(summary, {})
    assert "Warnings" not in markdown_report(summary, [])


def test_theory_section_puts_theory_beside_simulation() -> None:
    """The section names the model, gives the figures and each comparison with its interval,
    and says where theory and simulation disagree."""
    facts = theory_facts(_summary(theory=THEORY))
    assert "M/M/c (Erlang C)" in facts["text"]
    figures = dict(map(tuple, facts["figures"][1:]))
    assert figures["utilisation"] == "80.0%" and figures["least servers meeting the SLO"] == "11"
    rows = {row[0]: row for row in facts["compare"][1:]}
    assert rows["mean wait"][1:] == ["204ms", "210ms", "190ms to 230ms", "yes"]
    assert rows["P(wait)"][1:] == ["40.9%", "52.0%", "50.0% to 54.0%", "no: beyond the interval"]
    assert "disagree beyond the simulated interval on P(wait)" in facts["verdict"]
    page = html_report(_summary(theory=THEORY), {})
    assert page.index("<h2>Queueing theory</h2>") > page.index("<h2>Outages</h2>")
    assert "190ms to 230ms" in page
    assert "## Queueing theory" in markdown_report(_summary(theory=THEORY), [])


def test_theory_that_does_not_apply_says_why_and_prints_no_number() -> None:
    """applies false: 'No formula applies: <reason>' and no table."""
    theory = {"applies": False, "reason": "the service graph has synchronous calls"}
    facts = theory_facts(_summary(theory=theory))
    assert facts == {"text": "No formula applies: the service graph has synchronous calls."}
    page = html_report(_summary(theory=theory), {})
    section = page[page.index("<h2>Queueing theory</h2>") :]
    assert "No formula applies: the service graph has synchronous calls." in section
    assert "<table" not in section.split("<h2>", 2)[1]


def test_missing_theory_keys_show_nothing() -> None:
    """No `theory` key: no section; a theory with only some keys renders what it has."""
    assert "Queueing theory" not in html_report(_summary(), {})
    partial = theory_facts(_summary(theory={"applies": True, "p_wait": 0.2}))
    assert partial["figures"] == [
        ["figure", "theory"],
        ["P(wait): share of requests that queue", "20.0%"],
    ]
    assert partial["compare"] == [] and partial["stretches"] == []
