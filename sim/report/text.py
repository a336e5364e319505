"""The facts of a run's report in plain text: headline, warnings, outage table, queueing
theory, parameters, provenance.

Pages (`pages.py`, `compare.py`) lay these out in HTML or Markdown and escape
them there; nothing here is markup. Everything is read from the summary dict alone, and keys
that an older summary lacks show nothing rather than fail. Over 400 lines for a reason: every
sentence the report says is worded here once, so both pages (and the comparison) say the same.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Any

from sim.model.units import format_duration

TIMELINE_ROWS = 60


def _start(summary: dict) -> datetime | None:
    return datetime.fromisoformat(summary["start"]) if summary.get("start") else None


def when(summary: dict, t_s: float, date: bool = True) -> str:
    """A moment of the run: a UTC date and time when the run has a start, else an offset."""
    start = _start(summary)
    if start is None:
        return f"t = {format_duration(t_s)}" if t_s else "t = 0"
    moment = start + timedelta(seconds=float(t_s))
    return moment.strftime("%d %b %Y %H:%M UTC" if date else "%H:%M UTC").lstrip("0")


def count(value: Any) -> str:
    """A count with thousands separators ('–' when unknown)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:,.0f}"


def ratio(value: Any, digits: int = 2) -> str:
    """A share as a percentage."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value * 100:.{digits}f}%"


def big_count(value: Any) -> str:
    """A count for a headline card: exact below a million, else '4.06 billion'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    for limit, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million")):
        if abs(value) >= limit:
            return f"{value / limit:.3g} {word}"
    return count(value)


def seconds(value: Any) -> str:
    """A duration in seconds, short and human ('250ms', '12min', '19d'); 'none' for zero (no
    wait, no time in outage), never '0ms'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    value = float(value)
    if value == 0:
        return "none"
    if abs(value) < 0.001:  # format_duration would round it to '0ms'
        return f"{value * 1000:.2g}ms"
    if value >= 2 * 86400 and value % 86400 == 0:
        return f"{value / 86400:.0f}d"
    if value == 60:
        return "1min"
    return format_duration(value)


def rate(value: Any) -> str:
    """Requests per second."""
    if value is None:
        return "–"
    return f"{value:,.4g}/s" if value < 1000 else f"{value:,.0f}/s"


def failed_requests(summary: dict) -> float:
    """Fresh requests that never got an answer (failed, or still waiting at the end)."""
    requests = summary["requests"]
    if "failed" in requests:
        return requests["failed"]
    return max(requests["fresh"] - requests["succeeded"], 0)


def metastable_words(summary: dict) -> str:
    """'yes', 'no' or 'cannot tell'."""
    return {True: "yes", False: "no"}.get(summary.get("metastable"), "cannot tell")


def headline(summary: dict) -> dict[str, Any]:
    """The facts above the fold: a lead sentence, cards (label, value, note), and why."""
    outages = summary.get("outages") or []
    requests = summary["requests"]
    failed = failed_requests(summary)
    fresh = requests["fresh"] or 0
    if fresh:
        part = failed / fresh
        percent = "under 0.1%" if 0 < part < 0.001 else f"{part:.1%}"
        share = f"{percent} of {big_count(fresh)} fresh"
    else:
        share = "no fresh requests"
    cards = []
    if outages:
        first = outages[0]
        longest = max(outages, key=lambda o: o["duration_s"])
        peak = max(o["peak_queue"] for o in outages)
        ongoing = first.get("ongoing")
        lasted = seconds(first["duration_s"])
        onset = (
            f"at {when(summary, first['start_s'])}"
            if _start(summary)
            else f"{seconds(first['start_s'])} into the run"
        )
        lead = f"The service went down {onset} "
        lead += (
            f"and was still down {lasted} later, when the run ended."
            if ongoing
            else f"and stayed down for {lasted}, then recovered."
        )
        cause = cause_sentence(first)
        if cause:
            lead += " " + cause
        if len(outages) > 1:
            lead += (
                f" {len(outages)} outages in all, {seconds(summary.get('outage_total_s'))} "
                f"down; the longest lasted {seconds(longest['duration_s'])}."
            )
        into = f"{seconds(first['start_s'])} into the run"
        start = _start(summary)
        if start is not None:
            moment = start + timedelta(seconds=float(first["start_s"]))
            began = moment.strftime("%H:%M UTC")
            began_note = day_first(moment.strftime("%a %d %b %Y · "))
            began_note += into
        else:
            began, began_note = seconds(first["start_s"]), "into the run"
        cards += [
            ("Outage began", began, began_note),
            (
                "Lasted",
                ("≥ " if ongoing else "") + seconds(first["duration_s"]),
                "still down at the end of the run" if ongoing else "then recovered",
            ),
            ("Peak queue", big_count(peak), queue_note(summary, peak)),
        ]
    else:
        slo = summary.get("slo")
        lead = (
            f"No outage: the SLO ({slo_text(summary)}) was never missed for "
            f"{seconds(slo['min_duration_s'])} or more."
            if slo
            else "No outage: the SLO held throughout the run."
        )
        peak = (summary.get("queue") or {}).get("max")
        cards.append(("Peak queue", big_count(peak), queue_note(summary, peak)))
    cards += [
        ("Requests failed", big_count(failed), share),
        amplification_card(summary),
        ("Metastable", metastable_words(summary), _metastable_note(summary)),
    ]
    return {
        "bad": bool(outages),
        "lead": lead,
        "cards": cards,
        "why": day_first(summary.get("metastable_reason") or ""),
        "trigger": trigger_sentence(summary),
    }


def day_first(text: str) -> str:
    """Dates written one way throughout ('1 Mar', never '01 Mar'): the analysis writes its
    reasons with zero-padded days, the report without."""
    return re.sub(r"\b0(\d) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\b", r"\1 \2", text)


def queue_limit(summary: dict) -> float | None:
    """The pool's queue limit in real requests (None when unbounded or not recorded)."""
    limit = ((summary.get("parameters") or {}).get("service") or {}).get("queue_limit")
    return float(limit) if isinstance(limit, int | float) and math.isfinite(limit) else None


def queue_note(summary: dict, peak: Any) -> str:
    """The peak queue card's note: 'queue full: limit 1 million' when the peak is the limit
    (a plateau at the limit is refused work, not a natural peak)."""
    limit = queue_limit(summary)
    if limit and isinstance(peak, int | float) and peak >= limit:
        return f"queue full: limit {big_count(limit)}"
    return "requests waiting" + (f"; limit {big_count(limit)}" if limit else "")


def amplification_card(summary: dict) -> tuple[str, str, str]:
    """Attempts per fresh request: in the first outage when there is one (where retries
    matter), with the whole run's figure beside it. The CLI prints the same words."""
    overall = summary.get("amplification")
    overall_text = f"{overall:.2f}×" if overall else "–"
    outages = summary.get("outages") or []
    during = outages[0].get("amplification") if outages else None
    if during:
        note = f"attempts per fresh request in the outage; {overall_text} over the run"
        return ("Amplification", f"{during:.2f}×", note)
    return ("Amplification", overall_text, "attempts per fresh request over the run")


TRIGGER_MEANING = (
    "a trigger is a surge, a fault, or fresh demand at {share} of capacity or more; an outage "
    "that outlives its last trigger by more than its backlog takes to drain is metastable"
)


def trigger_sentence(summary: dict) -> str:
    """The triggers of the first outage in plain words, with when each began and ended, and
    what a trigger is ('' when the outage had none or the summary lacks `triggers`, which
    the report adds from the time series)."""
    outages = summary.get("outages") or []
    spans = summary.get("triggers") or []
    if not outages or outages[0].get("cause") not in ("trigger", "metastable") or not spans:
        return ""
    first = outages[0]
    slack = (summary.get("slo") or {}).get("min_duration_s") or 0.0
    slack += summary.get("bin_s") or 0.0
    near = [
        s
        for s in spans
        if s["start_s"] < first["end_s"]
        and (s["end_s"] is None or s["end_s"] >= first["start_s"] - slack)
    ]
    if not near:
        return ""
    parts = [_trigger_words(summary, s) for s in near[:3]]
    if len(near) > 3:
        parts.append(f"{len(near) - 3} more")
    share = f"{summary.get('overload_share', 0.95):.0%}"
    meaning = TRIGGER_MEANING.format(share=share)
    return sentence("; ".join(parts)) + f" ({meaning[:1].upper() + meaning[1:]}.)"


def _trigger_words(summary: dict, span: dict) -> str:
    """'fresh demand reached 95% of capacity at 15 Jan 13:30 UTC and fell back below it at
    15 Jan 19:55 UTC', or for a surge or a fault its label, from when to when."""
    start, end = _moment(summary, span["start_s"]), span.get("end_s")
    if span.get("kind") == "overload":
        share = f"{summary.get('overload_share', 0.95):.0%}"
        text = f"fresh demand reached {share} of capacity at {start}"
        if end is None:
            return text + " and stayed there to the end of the run"
        return text + f" and fell back below it at {_moment(summary, end)}"
    text = f"{span['label']} from {start}"
    return text + (f" to {_moment(summary, end)}" if end is not None else " to the end of the run")


def slo_text(summary: dict) -> str:
    """The SLO's per-bin targets in words."""
    slo = summary.get("slo") or {}
    text = f"≥ {ratio(slo.get('success_ratio'), 1)} of fresh requests succeed"
    if slo.get("latency_p99_s"):
        text += f" and p99 ≤ {seconds(slo['latency_p99_s'])}"
    bin_s = summary.get("bin_s") or (summary.get("parameters") or {}).get("bin_s")
    return text + (f", per {seconds(bin_s)} bin" if bin_s else "")


def _metastable_note(summary: dict) -> str:
    causes = {o.get("cause") for o in summary.get("outages") or []}
    if summary.get("metastable") is True:
        return "outlived its trigger"
    if causes and causes <= {"chronic", "spontaneous"}:
        return "chronic: never met its SLO" if "chronic" in causes else "began with no trigger"
    if summary.get("metastable") is False:
        return "ended with its backlog" if summary.get("outages") else "nothing to outlive"
    if "trigger" in causes:
        return "too early to tell"
    return "no trigger ended in the run"


CRITERIA = {
    "success_ratio": "success ratio",
    "latency": "latency",
    "both": "success ratio and latency",
}


def criterion_words(outage: dict) -> str:
    """Which SLO target the outage breached, in words ('–' when the summary predates it)."""
    return CRITERIA.get(outage.get("criterion"), "–")


def cause_words(outage: dict) -> str:
    """The outage's cause in a few words, for a table cell."""
    cause, trigger = outage.get("cause"), outage.get("trigger") or "its trigger"
    if cause == "metastable":
        return f"metastable: outlived {trigger}"
    if cause == "trigger":
        return f"trigger: {trigger}"
    if cause == "chronic":
        return "chronic: before any trigger"
    if cause == "spontaneous":
        return "spontaneous: no trigger (bistable baseline)"
    return "–"


def cause_sentence(outage: dict) -> str:
    """One sentence: what caused the outage and which target it breached."""
    cause, trigger = outage.get("cause"), outage.get("trigger") or "its trigger"
    targets = "targets" if outage.get("criterion") == "both" else "target"
    criterion = criterion_words(outage)
    breached = f" It breached the {criterion} {targets}." if outage.get("criterion") else ""
    if cause == "chronic":
        text = "A chronic outage, not a metastable one: it was under way before any trigger."
    elif cause == "spontaneous":
        text = "It began with no trigger: the baseline collapses on its own now and then."
    elif cause == "metastable":
        text = f"A metastable failure: it outlived the trigger that tipped it ({trigger})."
    elif cause == "trigger" and outage.get("ongoing"):
        text = f"It began with {trigger}; too early to tell whether it outlives it."
    elif cause == "trigger":
        text = f"It began with {trigger} and ended with its backlog."
    else:
        text = ""
    return (text + breached).strip()


def outage_rows(summary: dict) -> list[list[str]]:
    """The outage table: header row, then one row per outage."""
    rows = [
        [
            "#",
            "began",
            "ended",
            "lasted",
            "breached",
            "cause",
            "peak queue",
            "success ratio",
            "amplification",
        ]
    ]
    for i, o in enumerate(summary.get("outages") or [], start=1):
        amplification = o.get("amplification")
        rows.append(
            [
                str(i),
                when(summary, o["start_s"]),
                "still down at the end" if o.get("ongoing") else when(summary, o["end_s"]),
                seconds(o["duration_s"]),
                criterion_words(o),
                cause_words(o),
                count(o["peak_queue"]),
                ratio(o.get("success_ratio"), 1),
                f"{amplification:.2f}×" if amplification else "–",
            ]
        )
    return rows


def total_rows(summary: dict) -> list[list[str]]:
    """Totals over the run: requests by outcome, latency, waiting, utilisation, queue."""
    r, lat = summary["requests"], summary.get("latency_s") or {}
    wait, queue = summary.get("wait_s") or {}, summary.get("queue") or {}
    return [
        ["measure", "value"],
        ["fresh requests", count(r.get("fresh"))],
        ["attempts", f"{count(r.get('attempts'))} ({count(r.get('retries'))} of them retries)"],
        ["succeeded", f"{count(r.get('succeeded'))} ({ratio(summary.get('success_ratio'))})"],
        [
            "attempts timed out / rejected / dropped",
            " / ".join(count(r.get(k)) for k in ("timed_out", "rejected", "dropped")),
        ],
        [
            "latency p50 / p95 / p99 / max",
            " / ".join(seconds(lat.get(k)) for k in ("p50", "p95", "p99", "max")),
        ],
        [
            "mean wait in queue; share that waited",
            f"{seconds(wait.get('mean'))}; {ratio(wait.get('p_wait'), 1)}",
        ],
        ["utilisation", ratio(summary.get("utilization"), 1)],
        [
            "queue mean / max / at the end",
            " / ".join(count(queue.get(k)) for k in ("mean", "max", "final")),
        ],
    ]


def _surge_text(summary: dict, s: dict) -> str:
    what = f"×{s['factor']:g}" if s.get("factor") is not None else f"to {rate(s.get('rate_rps'))}"
    text = f"{what} from {when(summary, s['at_s'])}"
    text += f" for {seconds(s['duration_s'])}" if s.get("duration_s") else " to the end"
    return text + (f", ramp {seconds(s['ramp_s'])}" if s.get("ramp_s") else "")


TIME_OF_DAY_KEYS = {"review_at", "peak", "peak_s"}
DURATION_KEYS = {"lead_time", "interval", "delay", "cooldown", "throttle_window", "window"}
PER_DAY_KEYS = {"requests_per_user", "downloads"}
SHARE_KEYS = {"activation", "target_utilization", "amplitude"}


def _value(key: str, value: Any) -> str:
    """A setting's value in the unit its key implies (the summary holds seconds and /s)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return str(value)
    if isinstance(value, int | float):
        if key in TIME_OF_DAY_KEYS:
            return f"{int(value // 3600):02d}:{int(value % 3600 // 60):02d} UTC"
        if key in DURATION_KEYS or key.endswith("_s"):
            return seconds(value)
        if key in PER_DAY_KEYS:
            return f"{value * 86400:,.4g}/day"
        if key in SHARE_KEYS:
            return f"{value:.0%}"
        if float(value).is_integer():
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return str(value)


def _pairs(values: dict) -> str:
    return ", ".join(
        f"{k.removesuffix('_s').replace('_', ' ')} {_value(k, v)}"
        for k, v in values.items()
        if v is not None
    )


def parameter_rows(summary: dict) -> list[list[str]]:
    """Key parameters of the scenario as (what, value) rows; empty when summary lacks them."""
    p, slo = summary.get("parameters"), summary.get("slo")
    if not p:
        return []
    rows = [["parameter", "value"]]
    engine = f"{summary.get('engine', '?')} engine, scale {summary.get('scale', 1):g}"
    rows.append(["run", f"{seconds(p['duration_s'])} in bins of {seconds(p['bin_s'])}, {engine}"])
    arrivals = p["arrivals"]
    if arrivals["rate_rps"]:
        demand = f"{rate(arrivals['rate_rps'])} fresh requests"
        if arrivals.get("diurnal"):
            d = arrivals["diurnal"]
            peak = f"{int(d['peak_s'] // 3600):02d}:{int(d['peak_s'] % 3600 // 60):02d}"
            demand += f", daily cycle ±{d['amplitude']:.0%} peaking at {peak}"
        rows.append(["demand", demand])
    rows += [["surge", _surge_text(summary, s)] for s in arrivals.get("surges") or []]
    if p.get("population"):
        population = dict(p["population"])
        surges = population.pop("surges", [])
        rows.append(["population", _pairs(population)])
        rows += [["downloads surge", _surge_text(summary, s)] for s in surges]
    service, time = p["service"], p["service"]["time"]
    shape = f", cv {time['cv']:g}" if time.get("cv") else ""
    limit = "unbounded" if service["queue_limit"] is None else f"{service['queue_limit']:,.0f}"
    rows.append(["servers", f"{service['servers']:,}"])
    rows.append(["service time", f"{time['dist']}, mean {seconds(time['mean_s'])}{shape}"])
    drops = ", drops work of clients gone" if service.get("drop_expired") else ""
    rows.append(["queue", f"{limit}, {service['discipline']}{drops}"])
    extras = {k: service.get(k) for k in ("error_rate", "lifo_over", "sojourn_limit_s")}
    if any(extras.values()):
        rows.append(["overload controls", _pairs({k: v for k, v in extras.items() if v})])
    for change in p["capacity"]["changes"]:
        rows.append(
            [
                "capacity change",
                f"{change['servers']:,} servers from {when(summary, change['at_s'])}",
            ]
        )
    for name in ("planner", "autoscale"):
        if p["capacity"].get(name):
            rows.append([f"capacity {name}", _pairs(p["capacity"][name])])
    for f in p.get("faults") or []:
        effects = []
        if f["capacity_factor"] < 1:
            effects.append(f"{f['capacity_factor']:.0%} capacity")
        if f["slowdown"] > 1:
            effects.append(f"{f['slowdown']:g}× slower")
        if f["error_rate"] > 0:
            effects.append(f"{f['error_rate']:.0%} errors")
        rows.append(
            [
                "fault",
                f"{', '.join(effects) or 'no effect'} from "
                f"{when(summary, f['at_s'])} for {seconds(f['duration_s'])}",
            ]
        )
    client = p.get("client")
    if client:
        backoff = client["backoff"]
        text = f"timeout {seconds(client['timeout_s'])}, {client['retries']} retries"
        if client["retries"]:
            text += (
                f", backoff {seconds(backoff['base_s'])} ×{backoff['multiplier']:g} up to "
                f"{seconds(backoff['cap_s'])}, {backoff['jitter']} jitter"
            )
        if client.get("retry_budget"):
            text += f", retry budget {client['retry_budget']:g}"
        if client.get("throttle_k"):
            text += f", adaptive throttling k = {client['throttle_k']:g}"
        rows.append(["clients", text])
    else:
        rows.append(["clients", "wait forever, never retry"])
    if slo:
        rows.append(
            [
                "SLO",
                f"{slo_text(summary)}; breaches lasting "
                f"{seconds(slo['min_duration_s'])} or more are outages",
            ]
        )
    return rows


def timeline_rows(summary: dict) -> list[list[str]]:
    """Events in time order (at most TIMELINE_ROWS; a last row says how many more)."""
    events = summary.get("timeline") or []
    rows = [["when", "event"]]
    rows += [[when(summary, e["t_s"]), e["label"]] for e in events[:TIMELINE_ROWS]]
    if len(events) > TIMELINE_ROWS:
        rows.append(["…", f"{len(events) - TIMELINE_ROWS} more events in summary.json"])
    return rows


def provenance_rows(summary: dict) -> list[list[str]]:
    """Where the numbers come from: version, seed, scenario hash, engine, scale. Not the wall
    time (summary.json and the CLI give it): a page that changed with every run could not
    be committed as the reference report."""
    keys = (
        ("outage-sim version", "version"),
        ("scenario", "scenario"),
        ("seed", "seed"),
        ("scenario sha256", "scenario_sha256"),
        ("engine", "engine"),
        ("scale (real requests per simulated one)", "scale"),
        ("simulated events", "events"),
    )
    rows = [["", ""]] + [[label, _plain(summary.get(key))] for label, key in keys]
    if summary.get("interrupted"):
        rows.append(["interrupted", "yes: the run stopped early; numbers cover the part run"])
    return rows


def _plain(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def run_span(summary: dict) -> str:
    """'15 Jan 2021 08:00 UTC, 3.0h' or '3.0h' when the run has no start."""
    span = seconds(summary.get("duration_s"))
    return f"from {when(summary, 0.0)}, {span}" if _start(summary) else span


def sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def warning_lines(summary: dict) -> list[str]:
    """summary["warnings"] as one-line strings (none when the key is absent or empty)."""
    warnings = summary.get("warnings") or []
    if isinstance(warnings, str):
        warnings = [warnings]
    return [" ".join(str(w).split()) for w in warnings if str(w).strip()]


THEORY_FIGURES = (
    ("model", "model", None),
    ("offered_load", "offered load", "erlangs"),
    ("utilization", "utilisation", "share"),
    ("p_wait", "P(wait): share of requests that queue", "share"),
    ("wait_mean_s", "mean wait in queue", "seconds"),
    ("blocking", "blocking: share refused", "share"),
    ("servers_needed", "least servers meeting the SLO", "count"),
    ("success_ratio", "success ratio", "share"),
    ("latency_p99_s", "p99 latency", "seconds"),
)


def _theory_value(value: Any, kind: str | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if kind == "share":
        return ratio(value, 1 if value >= 0.001 or value == 0 else 3)
    if kind == "seconds":
        return seconds(value)
    if kind == "count":
        return count(value)
    if kind == "erlangs":
        return f"{value:,.4g} erlangs"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _compare_value(figure: str, value: Any) -> str:
    kind = next((k for key, _, k in THEORY_FIGURES if key == figure), None)
    if kind is None:
        kind = "seconds" if figure.endswith("_s") else None
    return _theory_value(value, kind)


def theory_facts(summary: dict) -> dict[str, Any] | None:
    """The "Queueing theory" section: a sentence, the headline figures, the steady stretches
    and theory beside simulation (None when the summary has no `theory`)."""
    theory = summary.get("theory")
    if not isinstance(theory, dict):
        return None
    reason = str(theory.get("reason") or "").strip()
    if not theory.get("applies"):
        return {"text": sentence(f"No formula applies: {reason or 'no reason given'}")}
    model = theory.get("model")
    text = f"What queueing theory expects: {reason}" if reason else "What queueing theory expects"
    if model and model not in reason:
        text += f" (model: {model})"
    text = sentence(text)
    figures = [["figure", "theory"]]
    figures += [
        [label, _theory_value(theory[key], kind)]
        for key, label, kind in THEORY_FIGURES[1:]
        if theory.get(key) is not None
    ]
    stretches = [["from", "to", "arrivals", "servers", "model", "utilisation", "P(wait)",
                  "mean wait", "blocking", "servers needed"]]  # fmt: skip
    for stretch in theory.get("stretches") or []:
        stretches.append(
            [
                when(summary, stretch.get("start_s") or 0.0),
                when(summary, stretch["end_s"]) if stretch.get("end_s") is not None else "end",
                rate(stretch.get("arrival_rps")),
                count(stretch.get("servers")),
                str(stretch.get("model") or "–"),
                _theory_value(stretch.get("utilization"), "share"),
                _theory_value(stretch.get("p_wait"), "share"),
                _theory_value(stretch.get("wait_mean_s"), "seconds"),
                _theory_value(stretch.get("blocking"), "share"),
                _theory_value(stretch.get("servers_needed"), "count"),
            ]
        )
    confidence = theory.get("confidence") or 0.95
    compare = [["figure", "theory", "simulated", f"{confidence:.0%} interval", "agree?"]]
    disagree = []
    for row in theory.get("compare") or []:
        figure = row.get("figure", "")
        label = row.get("label") or figure.replace("_", " ")
        low, high = row.get("ci_low"), row.get("ci_high")
        interval = (
            f"{_compare_value(figure, low)} to {_compare_value(figure, high)}"
            if low is not None and high is not None
            else "–"
        )
        agrees = row.get("agrees")
        if agrees is False:
            disagree.append(label)
        compare.append(
            [
                label,
                _compare_value(figure, row.get("theory")),
                _compare_value(figure, row.get("simulated")),
                interval,
                {True: "yes", False: "no: beyond the interval"}.get(agrees, "–"),
            ]
        )
    verdict = ""
    if disagree:
        verdict = sentence(
            "Theory and simulation disagree beyond the simulated interval on " + ", ".join(disagree)
        )
    elif len(compare) > 1:
        verdict = "Theory and simulation agree within the simulated interval."
    return {
        "text": text,
        "figures": figures if len(figures) > 1 else [],
        # One stretch that spans the run repeats the figures above.
        "stretches": stretches if len(stretches) > 2 else [],
        "compare": compare if len(compare) > 1 else [],
        "verdict": verdict,
    }


# -- a service graph's tiers and routes ------------------------------------------------------
FAILED_SHARE = 0.01  # a bin where more than this share of a tier's attempts failed: saturated
SATURATED_UTILIZATION = 0.95
BUSY_UTILIZATION = 0.8


def route_calls(summary: dict) -> dict[str, list[str]]:
    """Each route's tiers in call order (entry tier first), from summary["routes"]."""
    routes = summary.get("routes") or {}
    return {name: list(r.get("amplification") or {}) for name, r in routes.items()}


def call_edges(summary: dict) -> dict[tuple[str, str], list[str]]:
    """(caller, callee) -> the routes making that call, one entry per edge of the graph."""
    edges: dict[tuple[str, str], list[str]] = {}
    for route, calls in route_calls(summary).items():
        for caller, callee in zip(calls, calls[1:], strict=False):
            edges.setdefault((caller, callee), []).append(route)
    return edges


def call_depths(summary: dict) -> dict[str, int]:
    """Each tier's depth in the graph: 0 for an entry tier, else its latest place in any route's
    call order (so every caller is drawn left of the tiers it calls, when the graph allows)."""
    depths = {name: 0 for name in summary.get("tiers") or {}}
    for calls in route_calls(summary).values():
        for place, tier in enumerate(calls):
            depths[tier] = max(depths.get(tier, 0), place)
    return depths


def _column(ts, name: str):
    """A timeseries column as a float list, or None when the run lacks it."""
    if ts is None or name not in ts.columns:
        return None
    return [float(v) for v in ts[name]]


def tier_failed(ts, tier: str) -> list[float]:
    """Per bin: the tier's attempts that failed (timed out, rejected, or refused by its rate
    limit), NaN counted as none."""
    parts = [_column(ts, f"{tier}.{key}") for key in ("timed_out", "rejected", "limited")]
    parts = [p for p in parts if p is not None]
    if not parts:
        return []
    return [sum(v for v in values if math.isfinite(v)) for values in zip(*parts, strict=True)]


def tier_state(ts, tier: str) -> tuple[str, float | None]:
    """A tier's worst state over the run, and the first moment (seconds) of it if it saturated.

    "saturated": some bin in which more than 1% of its attempts failed, or its utilisation
    reached 0.95; "busy": not that, but its utilisation reached 0.8, or a provider refused
    calls by its rate limit; "healthy" otherwise. The one rule both graph.png's colours and
    the report's sentence on how the failure spread use, so they never disagree.
    """
    t_s = _column(ts, "t_s") or []
    attempts = _column(ts, f"{tier}.attempts") or [0.0] * len(t_s)
    utilization = _column(ts, f"{tier}.utilization") or [math.nan] * len(t_s)
    failed = tier_failed(ts, tier) or [0.0] * len(t_s)
    for t, tried, lost, busy in zip(t_s, attempts, failed, utilization, strict=True):
        if (tried > 0 and lost > FAILED_SHARE * tried) or busy >= SATURATED_UTILIZATION:
            return "saturated", t
    peak = max((u for u in utilization if math.isfinite(u)), default=0.0)
    limited = sum(v for v in _column(ts, f"{tier}.limited") or [] if math.isfinite(v))
    return ("busy" if peak >= BUSY_UTILIZATION or limited > 0 else "healthy"), None


def saturation_order(summary: dict, ts) -> list[tuple[str, float]]:
    """(tier, first saturated moment) of every tier that saturated, earliest first. Tiers
    that saturated in the same bin are listed deepest first: failures are answered up the
    chain, so a callee's failure shows at its callers in the same bin."""
    depths = call_depths(summary)
    onsets = []
    for tier in summary.get("tiers") or {}:
        state, t = tier_state(ts, tier)
        if state == "saturated":
            onsets.append((t, -depths.get(tier, 0), tier))
    return [(tier, t) for t, _, tier in sorted(onsets)]


def _moment(summary: dict, t_s: float) -> str:
    """'11 Jan 18:20 UTC' (or an offset into the run when it has no start)."""
    start = _start(summary)
    if start is None:
        return f"{seconds(t_s)} into the run"
    return (start + timedelta(seconds=float(t_s))).strftime("%d %b %H:%M UTC").lstrip("0")


def spread_sentence(summary: dict, ts) -> str:
    """How the failure spread through the tiers, in the order they saturated: 'sms saturated
    first (11 Jan 18:20 UTC); then api (15 Jan 14:10 UTC)', tiers of one bin named together;
    or 'No tier saturated ...' when none did."""
    order = saturation_order(summary, ts)
    if not order:
        return "No tier saturated (no bin with over 1% of a tier's attempts failed or 95% use)."
    (first, first_t), rest = order[0], order[1:]
    groups: list[tuple[float, list[str]]] = []  # (moment, tiers that saturated then)
    for tier, t in rest:
        if groups and groups[-1][0] == t:
            groups[-1][1].append(tier)
        else:
            groups.append((t, [tier]))
    text = f"{first} saturated first ({_moment(summary, first_t)})"
    for t, names in groups:
        named = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        if t == first_t and summary.get("bin_s"):
            text += f"; then {named} in the same {seconds(summary['bin_s'])} bin"
        else:
            text += f"; then {named} ({_moment(summary, t)})"
    return text + "."


def tier_rows(summary: dict) -> list[list[str]]:
    """The tier table: header, then one row per tier (the entry tier first, then by depth)."""
    tiers = summary.get("tiers") or {}
    depths = call_depths(summary)
    rows = [
        [
            "tier",
            "kind",
            "utilisation",
            "queue max",
            "wait mean",
            "attempts",
            "rejected",
            "timed out",
            "limited",
        ]
    ]
    for name in sorted(tiers, key=lambda n: depths.get(n, 0)):
        t = tiers[name]
        rows.append(
            [
                name,
                t.get("kind", "pool"),
                ratio(t.get("utilization"), 1),
                count((t.get("queue") or {}).get("max")),
                seconds((t.get("wait_s") or {}).get("mean")),
                count(t.get("attempts")),
                count(t.get("rejected")),
                count(t.get("timed_out")),
                count(t.get("limited")) if t.get("kind") == "provider" else "–",
            ]
        )
    return rows


def route_rows(summary: dict) -> list[list[str]]:
    """The route table: fresh requests, success ratio, and attempts per fresh request at each
    tier it calls, in call order."""
    rows = [["route", "fresh", "success ratio", "amplification per tier (call order)"]]
    for name, r in (summary.get("routes") or {}).items():
        amplification = " → ".join(
            f"{tier} {value:.2f}×" for tier, value in (r.get("amplification") or {}).items()
        )
        rows.append(
            [name, count(r.get("fresh")), ratio(r.get("success_ratio")), amplification or "–"]
        )
    return rows
