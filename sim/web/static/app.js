// The workbench page: controls from /api/scenario, runs through /api/run, Plotly charts on
// one time axis. Scenario text is only ever set as text (textContent) or escaped for Plotly.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { scenario: null, controls: [], last: null, previous: null, seq: 0, timer: null, timings: [] };
window.workbench = state; // read by the browser tests (redraw timings, last payload)

const COLOURS = { queue: "#1f5f99", limit: "#7f8c8d", demand: "#222", offered: "#d35400", capacity: "#1e8449",
  p50: "#5d6d7e", p99: "#8e44ad", slo: "#c0392b", ok: "#27ae60", timedout: "#e67e22", rejected: "#c0392b",
  dropped: "#8e44ad", previous: "rgba(90,100,110,0.38)" };
const TIER_COLOURS = ["#1f5f99", "#d35400", "#1e8449", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d"];

// Plotly reads a little HTML in its strings: escape what comes from the scenario.
function esc(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

const GONE = "the workbench server is not answering (was it stopped?)";

async function post(path, body) {
  let response;
  try {
    response = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (err) {
    return { status: 0, data: { error: GONE } };
  }
  let data = null;
  try { data = await response.json(); } catch (err) { data = { error: `HTTP ${response.status}` }; }
  return { status: response.status, data };
}

async function init() {
  const response = await fetch("/api/scenario");
  const scenario = await response.json();
  state.scenario = scenario;
  $("title").textContent = scenario.title;
  document.title = `${scenario.title} · outage-sim workbench`;
  $("subtitle").textContent = `${scenario.file} · ${scenario.name} · engine in the file: ${scenario.engine}` +
    (scenario.scale !== 1 ? ` · scale ${scenario.scale}` : "") + (scenario.graph ? " · service graph" : "");
  buildControls(scenario.controls);
  $("reset").addEventListener("click", resetControls);
  $("zoom").addEventListener("click", zoomToOutage);
  $("full").addEventListener("click", () => Plotly.relayout("charts", { "xaxis.autorange": true }));
  $("exact").addEventListener("click", () => run("des"));
  $("save").addEventListener("click", save);
  $("lead").textContent = "Simulating the scenario…";
  run("auto");
}

function buildControls(controls) {
  const form = $("controls");
  const groups = {};
  for (const spec of controls) {
    if (!groups[spec.group]) {
      const fieldset = document.createElement("fieldset");
      const legend = document.createElement("legend");
      legend.textContent = spec.group;
      fieldset.appendChild(legend);
      form.appendChild(fieldset);
      groups[spec.group] = fieldset;
    }
    const row = document.createElement("div");
    row.className = "control";
    const id = "c-" + spec.key.replace(/[^\w-]/g, "_");
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = spec.label;
    label.title = `${spec.key}: ${spec.help || ""}`;
    let input;
    if (spec.kind === "choice") {
      input = document.createElement("select");
      for (const choice of spec.choices || []) {
        const option = document.createElement("option");
        option.value = option.textContent = choice;
        input.appendChild(option);
      }
    } else {
      input = document.createElement("input");
      input.type = spec.kind === "flag" ? "checkbox" : (spec.kind === "integer" || spec.kind === "number") ? "number" : "text";
      if (input.type === "number") {
        input.step = spec.step || (spec.kind === "integer" ? 1 : "any");
        if (spec.min !== undefined) input.min = spec.min;
        if (spec.max !== undefined) input.max = spec.max;
      }
    }
    if (input.type === "text" || input.type === "number") input.placeholder = spec.kind === "duration" ? "never" : "none";
    input.id = id;
    input.dataset.key = spec.key;
    input.title = label.title;
    const unit = document.createElement("div");
    unit.className = "unit";
    unit.textContent = [spec.unit, spec.key].filter(Boolean).join(" · ");
    const error = document.createElement("div");
    error.className = "err";
    row.append(label, input, unit, error);
    groups[spec.group].appendChild(row);
    state.controls.push({ spec, input, row, error });
    setValue(input, spec);
    input.addEventListener(spec.kind === "flag" || spec.kind === "choice" ? "change" : "input", () => schedule());
  }
}

function setValue(input, spec) {
  if (spec.kind === "flag") input.checked = Boolean(spec.value);
  else input.value = spec.value === null || spec.value === undefined ? "" : String(spec.value);
}

function resetControls() {
  for (const c of state.controls) setValue(c.input, c.spec);
  schedule(0);
}

// One control's value as the TOML value of its override, or undefined when as in the file.
function controlValue(c) {
  const { spec, input } = c;
  if (spec.kind === "flag") return input.checked === Boolean(spec.value) ? undefined : input.checked;
  const text = input.value.trim();
  const start = spec.value === null || spec.value === undefined ? "" : String(spec.value);
  if (text === "" || text === start) return undefined;
  if (spec.kind === "integer") return /^-?\d+$/.test(text) ? parseInt(text, 10) : text;
  if (spec.kind === "number") return Number.isFinite(Number(text)) ? Number(text) : text;
  if (spec.kind === "count_or_inf") return /^\d+$/.test(text.replace(/_/g, "")) ? parseInt(text.replace(/_/g, ""), 10) : text;
  return text; // durations keep their units ("10s"); choices are strings
}

function overrides() {
  const out = {};
  for (const c of state.controls) {
    const value = controlValue(c);
    c.row.classList.toggle("changed", value !== undefined);
    if (value !== undefined) out[c.spec.key] = value;
  }
  return out;
}

function schedule(delay = 350) {
  clearTimeout(state.timer);
  state.timer = setTimeout(() => run("auto"), delay);
}

function showError(message, key) {
  for (const c of state.controls) { c.error.textContent = ""; c.row.classList.remove("invalid"); }
  const box = $("error");
  if (!message) { box.hidden = true; box.textContent = ""; return; }
  const beside = key && state.controls.find((c) => key === c.spec.key || key.startsWith(c.spec.key + "."));
  if (beside) { beside.error.textContent = message; beside.row.classList.add("invalid"); }
  box.textContent = message;
  box.hidden = false;
}

async function run(engine) {
  const seq = ++state.seq;
  const started = performance.now();
  const body = { overrides: overrides(), engine };
  setBusy(true, engine === "des" ? "running the DES…" : "running…");
  const poll = setInterval(() => pollProgress(seq), 400);
  let reply;
  try {
    reply = await post("/api/run", body);
  } finally {
    clearInterval(poll);
  }
  if (seq !== state.seq) return; // a newer run was asked for: this answer is stale
  setBusy(false);
  if (reply.status === 409) return;
  if (reply.status !== 200) { showError(reply.data.error || `HTTP ${reply.status}`, reply.data.key); $("status").textContent = "not run"; return; }
  showError(null);
  const answered = performance.now();
  state.previous = state.last;
  state.last = reply.data;
  render();
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
  const drawn = performance.now();
  const timing = { engine: reply.data.engine, cached: reply.data.cached, request_ms: answered - started,
    draw_ms: drawn - answered, total_ms: drawn - started, wall_s: reply.data.wall_s };
  state.timings.push(timing);
  $("status").textContent = `${reply.data.engine === "des" ? "DES (exact)" : "fluid engine (expected counts)"} · ` +
    `simulated in ${reply.data.wall_s.toFixed(2)} s${reply.data.cached ? " (cached)" : ""} · redrawn in ${(timing.total_ms / 1000).toFixed(2)} s`;
}

async function pollProgress(seq) {
  if (seq !== state.seq) return;
  let progress;
  try {
    progress = await (await fetch("/api/progress")).json();
  } catch (err) {
    return; // the run's own request reports a server that stopped answering
  }
  const bar = $("progress");
  if (progress.running && progress.fraction !== null) { bar.hidden = false; bar.value = progress.fraction; }
  $("status").textContent = progress.running ? `running ${progress.engine === "des" ? "the DES" : "the fluid engine"}` +
    (progress.fraction ? ` · ${(progress.fraction * 100).toFixed(0)}%` : "…") : $("status").textContent;
}

function setBusy(busy, text) {
  document.body.classList.toggle("busy", busy);
  $("exact").disabled = busy && text === "running the DES…";
  if (busy) $("status").textContent = text;
  else $("progress").hidden = true;
}

function render() {
  const data = state.last;
  const head = data.headline;
  const lead = $("lead");
  lead.textContent = head.lead;
  lead.className = "lead " + (head.bad ? "bad" : "good");
  const cards = $("cards");
  cards.replaceChildren();
  const before = state.previous ? Object.fromEntries(state.previous.headline.cards.map((c) => [c[0], c[1]])) : {};
  for (const [label, value, note] of head.cards) {
    const card = document.createElement("div");
    card.className = "card" + (state.previous && before[label] !== value ? " changed" : "");
    for (const [cls, text] of [["label", label], ["value", value], ["note", note]]) {
      const part = document.createElement("div");
      part.className = cls;
      part.textContent = text;
      card.appendChild(part);
    }
    if (state.previous && before[label] !== undefined && before[label] !== value) {
      const was = document.createElement("div");
      was.className = "note was";
      was.textContent = `was ${before[label]}`;
      card.appendChild(was);
    }
    cards.appendChild(card);
  }
  $("why").textContent = head.why ? `Why: ${head.why}` : "";
  const warnings = $("warnings");
  warnings.replaceChildren();
  for (const text of data.summary.warnings || []) {
    const item = document.createElement("li");
    item.textContent = text;
    warnings.appendChild(item);
  }
  $("command").textContent = data.command;
  $("zoom").disabled = !(data.summary.outages || []).length;
  drawCharts();
}

// x values: dates when the scenario has a start, else hours into the run.
function xs(data, seconds) {
  const start = data.summary.start ? Date.parse(data.summary.start) : null;
  if (start !== null) return seconds.map((t) => new Date(start + t * 1000).toISOString());
  return seconds.map((t) => t / 3600);
}

function perSecond(values, bin) { return values.map((v) => (v === null ? null : v / bin)); }

function drawCharts() {
  const data = state.last, prev = state.previous, s = data.series, bin = data.summary.bin_s;
  const x = xs(data, s.t_s.map((t) => t + bin / 2));
  const px = prev ? xs(prev, prev.series.t_s.map((t) => t + prev.summary.bin_s / 2)) : null;
  const rows = [
    { name: "events", height: 0.05 },
    { name: "queue", title: "queue (requests waiting)" },
    { name: "load", title: "requests / s" },
    { name: "latency", title: "client latency (s)", log: true },
    { name: "outcomes", title: "attempts / s" },
  ];
  if (data.tiers.length) rows.push({ name: "tierq", title: "queue per tier" }, { name: "tieru", title: "utilisation per tier" });
  const traces = [];
  const axis = (name) => { const i = rows.findIndex((r) => r.name === name); return i === 0 ? "" : String(i + 1); };
  const add = (row, trace) => traces.push({ type: "scatter", mode: "lines", xaxis: "x" + axis(row), yaxis: "y" + axis(row),
    legend: row === "events" ? "legend" : "legend" + axis(row), hovertemplate: "%{y:,.4~g}", ...trace });
  const previous = (row, values, name) => {
    if (!prev || !values) return;
    add(row, { x: px, y: values, name: `previous: ${name}`, line: { color: COLOURS.previous, width: 2.5 } });
  };
  previous("queue", prev && prev.series.queue, "queue");
  add("queue", { x, y: s.queue, name: "queue (bin end)", line: { color: COLOURS.queue, width: 1.6 }, fill: "tozeroy", fillcolor: "rgba(31,95,153,0.10)" });
  if (data.queue_limit !== null) add("queue", { x: [x[0], x[x.length - 1]], y: [data.queue_limit, data.queue_limit], name: `queue limit ${data.queue_limit.toLocaleString()}`, line: { color: COLOURS.limit, dash: "dash", width: 1 }, hoverinfo: "skip" });
  previous("load", prev && prev.series.offered_rps, "offered load");
  add("load", { x, y: s.demand_rps, name: "fresh demand", line: { color: COLOURS.demand, width: 1.2 } });
  add("load", { x, y: s.offered_rps, name: "offered load (with retries)", line: { color: COLOURS.offered, width: 1.4 } });
  add("load", { x, y: s.capacity_rps, name: "capacity", line: { color: COLOURS.capacity, width: 2, shape: "hv" } });
  previous("latency", prev && prev.series.latency_p99, "p99");
  add("latency", { x, y: s.latency_p50, name: "p50 (clients)", line: { color: COLOURS.p50, width: 1.2 } });
  add("latency", { x, y: s.latency_p99, name: "p99 (clients)", line: { color: COLOURS.p99, width: 1.5 } });
  const slo = data.summary.slo || {};
  if (slo.latency_p99_s) add("latency", { x: [x[0], x[x.length - 1]], y: [slo.latency_p99_s, slo.latency_p99_s], name: `SLO p99 ${slo.latency_p99_s} s`, line: { color: COLOURS.slo, dash: "dot", width: 1 }, hoverinfo: "skip" });
  previous("outcomes", prev && perSecond(prev.series.succeeded, prev.summary.bin_s), "succeeded");
  for (const [key, name, colour] of [["succeeded", "succeeded", COLOURS.ok], ["timed_out", "timed out", COLOURS.timedout], ["rejected", "rejected", COLOURS.rejected]]) {
    add("outcomes", { x, y: perSecond(s[key], bin), name, stackgroup: "outcomes", line: { color: colour, width: 0.5 } });
  }
  add("outcomes", { x, y: perSecond(s.fresh, bin), name: "fresh requests", line: { color: COLOURS.demand, width: 1.2 } });
  data.tiers.forEach((tier, i) => {
    const colour = TIER_COLOURS[i % TIER_COLOURS.length];
    if (s[`${tier}.queue`]) add("tierq", { x, y: s[`${tier}.queue`], name: esc(tier), line: { color: colour }, legendgroup: tier });
    if (s[`${tier}.utilization`]) add("tieru", { x, y: s[`${tier}.utilization`], name: esc(tier), line: { color: colour }, legendgroup: tier, showlegend: false });
  });
  const events = data.summary.timeline || [];
  const eventX = xs(data, events.map((e) => e.t_s));
  traces.push({ type: "scatter", mode: "markers", x: eventX, y: events.map(() => 0), xaxis: "x", yaxis: "y", showlegend: false,
    marker: { symbol: events.map((e) => (e.kind === "capacity" ? "triangle-up" : e.kind.startsWith("surge") ? "diamond" : "x")), size: 9,
      color: events.map((e) => (e.kind === "capacity" ? COLOURS.capacity : e.kind.startsWith("surge") ? COLOURS.offered : COLOURS.slo)) },
    text: events.map((e) => esc(e.label)), hovertemplate: "%{text}<extra></extra>" });
  const layout = { height: 180 * (rows.length - 1) + 60, margin: { l: 70, r: 230, t: 10, b: 40 }, hovermode: "x unified",
    font: { family: "system-ui, sans-serif", size: 11 }, plot_bgcolor: "#fff", shapes: [], annotations: [] };
  const gap = 0.025, total = rows.reduce((sum, r) => sum + (r.height || 1), 0);
  let top = 1;
  rows.forEach((row, i) => {
    const height = ((row.height || 1) / total) * (1 - gap * (rows.length - 1));
    const domain = [Math.max(0, top - height), top];
    const n = i === 0 ? "" : String(i + 1);
    layout["xaxis" + n] = { domain: [0, 1], anchor: "y" + n, matches: i ? "x" : undefined, showticklabels: i === rows.length - 1,
      type: data.summary.start ? "date" : "linear", title: i === rows.length - 1 && !data.summary.start ? { text: "hours into the run" } : undefined,
      showgrid: i !== 0, gridcolor: "#eceff2", showspikes: true, spikemode: "across", spikethickness: 1, spikecolor: "#999" };
    layout["yaxis" + n] = { domain, anchor: "x" + n, title: row.title ? { text: row.title, font: { size: 11 } } : undefined,
      type: row.log ? "log" : "linear", rangemode: row.log ? undefined : "tozero", gridcolor: "#eceff2", zeroline: false,
      visible: i !== 0, fixedrange: i === 0, tickformat: "~s", dtick: row.log ? 1 : undefined, range: i === 0 ? [-1, 1] : undefined };
    if (i > 0) layout["legend" + n] = { x: 1.01, xanchor: "left", y: domain[1], yanchor: "top", font: { size: 10 }, bgcolor: "rgba(255,255,255,0)" };
    top = domain[0] - gap;
  });
  layout.annotations.push({ xref: "paper", yref: "y", x: 0, y: 0, xanchor: "right", text: "events ", showarrow: false, font: { size: 10, color: "#5f6b76" } });
  for (const outage of data.summary.outages || []) {
    const [x0, x1] = xs(data, [outage.start_s, outage.end_s]);
    layout.shapes.push({ type: "rect", xref: "x", yref: "paper", x0, x1, y0: 0, y1: 1, fillcolor: "rgba(192,57,43,0.10)", line: { width: 0 }, layer: "below" });
    layout.annotations.push({ xref: "x", yref: "paper", x: x0, y: 1, xanchor: "left", yanchor: "top", text: "outage", showarrow: false, font: { size: 10, color: COLOURS.slo } });
  }
  for (const outage of (prev && prev.summary.outages) || []) {
    const [x0, x1] = xs(prev, [outage.start_s, outage.end_s]);
    layout.shapes.push({ type: "rect", xref: "x", yref: "paper", x0, x1, y0: 0, y1: 1, fillcolor: "rgba(0,0,0,0)", line: { width: 1, dash: "dot", color: COLOURS.previous }, layer: "below" });
  }
  const keep = document.getElementById("charts").layout;
  if (keep && keep.xaxis && !keep.xaxis.autorange && keep.xaxis.range) layout.xaxis.range = keep.xaxis.range.slice();
  Plotly.react("charts", traces, layout, { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"] });
}

function zoomToOutage() {
  const data = state.last;
  const outages = (data && data.summary.outages) || [];
  if (!outages.length) return;
  const first = outages[0];
  const pad = Math.max(first.duration_s * 0.5, 6 * data.summary.bin_s, 3600);
  const start = Math.max(0, first.start_s - pad), end = Math.min(data.summary.duration_s, first.end_s + pad);
  const [x0, x1] = xs(data, [start, end]);
  Plotly.relayout("charts", { "xaxis.range": [x0, x1] });
}

async function save() {
  const engine = state.last ? state.last.engine : "auto";
  const reply = await post("/api/save", { overrides: overrides(), engine });
  if (reply.status !== 200) { showError(reply.data.error, reply.data.key); return; }
  const blob = new Blob([reply.data.toml], { type: "application/toml" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = reply.data.filename;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  $("command").textContent = `${reply.data.command}\n# or, the saved file (downloaded as ${reply.data.filename}):\n${reply.data.saved_command}`;
}

init().catch((err) => showError(`the page could not start: ${err}`));
