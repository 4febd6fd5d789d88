// The flowrun dashboard: polls /ui/api/live every POLL_MS and the dead letters every DEAD_LETTERS_MS.
// Everything shown is set with textContent: payloads and error messages are data, never markup.
"use strict";

const POLL_MS = 1500;
const DEAD_LETTERS_MS = 3000;
const CHART_SECONDS = 300; // the charts show up to this much, at least CHART_MIN_SECONDS
const CHART_MIN_SECONDS = 60;
const api = (path) => "api/" + path;
let overview = null;
let selected = null; // [saga, key] whose timeline is shown
const opened = new Set(); // dead letters whose details are open

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function table(headers, rows) {
  const head = el("tr", {}, ...headers.map((h) => el("th", h.num ? { class: "num" } : {}, h.label ?? h)));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows));
}

function stateBadge(state) {
  return el("span", { class: "state " + state }, state);
}

async function getJson(path) {
  const resp = await fetch(api(path), { cache: "no-store" });
  if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
  return resp.json();
}

function renderFlows(counts) {
  const root = document.getElementById("flows");
  root.replaceChildren();
  for (const saga of overview.sagas) {
    const live = counts[saga.name] || {};
    root.append(el("h2", {}, "Saga " + saga.name + " ", el("span", { class: "muted" }, "keyed by " + saga.key)));
    root.append(el("p", {}, "starts on ", el("code", {}, saga.start.on), " in ", stateBadge(saga.start.state),
      saga.start.emit.length ? " emitting " + saga.start.emit.join(", ") : ""));
    const rows = [];
    for (const state of saga.states) {
      const transitions = state.transitions.length ? state.transitions : [null];
      transitions.forEach((t, i) => {
        const first = i === 0;
        rows.push(el("tr", { "data-state": state.name },
          el("td", {}, first ? stateBadge(state.name) : "", first && state.terminal ? el("span", { class: "terminal" }, " end") : null),
          el("td", { class: "num" }, first ? (live[state.name] ?? 0) : ""),
          el("td", {}, t ? el("code", {}, t.event) : el("span", { class: "muted" }, "—")),
          el("td", {}, t && t.goto ? "→ " + t.goto : t && t.compensate ? "→ compensating" : ""),
          el("td", {}, t ? t.emit.join(", ") : ""),
          el("td", {}, t && t.completes ? "completes " + t.completes : t && t.compensate ? "compensates" : ""),
        ));
      });
    }
    root.append(table(["state", { label: "now", num: true }, "on", "goes to", "emits", "step"], rows));
    if (saga.steps.length) {
      root.append(el("h3", {}, "Compensations (newest step first)"));
      root.append(table(["step", "undone by", "confirmed by"], saga.steps.map((s) =>
        el("tr", {}, el("td", {}, s.name), el("td", {}, el("code", {}, s.compensate)), el("td", {}, s.confirmed_by ?? "—")))));
    }
  }
}

function renderInstances(sagas) {
  const root = document.getElementById("instances");
  root.replaceChildren();
  for (const [name, snap] of Object.entries(sagas)) {
    const counts = el("div", { class: "counts" }, ...Object.entries(snap.counts).map(([s, n]) =>
      el("span", {}, stateBadge(s), " " + n)));
    const note = snap.counted_all ? "" : " (newest " + snap.counted + " counted)";
    root.append(el("h3", {}, name + note), counts);
    root.append(table(["id", "state", "updated", { label: "took (s)", num: true }], snap.recent.map((r) => {
      const row = el("tr", { class: "instance", "data-key": r.key, "data-state": r.state, on: { click: () => showTimeline(name, r.key) } },
        el("td", {}, el("code", {}, r.key)), el("td", {}, stateBadge(r.state)), el("td", {}, r.updated.slice(11, 23)),
        el("td", { class: "num" }, r.seconds.toFixed(3)));
      if (selected && selected[0] === name && selected[1] === r.key) row.classList.add("selected");
      return row;
    })));
  }
}

async function showTimeline(saga, key) {
  selected = [saga, key];
  history.replaceState(null, "", "#" + encodeURIComponent(saga) + "/" + encodeURIComponent(key)); // a link to it
  const root = document.getElementById("timeline");
  try {
    const t = await getJson("instances/" + encodeURIComponent(saga) + "/" + encodeURIComponent(key));
    root.className = "";
    root.replaceChildren(
      el("p", {}, el("code", {}, t.key), " ", stateBadge(t.state), t.reason ? " — " + t.reason : ""),
      table(["time", { label: "+s", num: true }, "", "event", "data"], t.events.map((e) =>
        el("tr", { class: "event" }, el("td", {}, e.time.slice(11, 23)), el("td", { class: "num" }, e.after.toFixed(3)),
          el("td", { class: "muted" }, e.kind === "emitted" ? "out" : "in"),
          el("td", {}, el("code", {}, e.subject), e.ignored ? el("div", { class: "muted" }, e.ignored) : null),
          el("td", {}, el("pre", { class: "data" }, JSON.stringify(e.data)))))));
  } catch (err) {
    root.replaceChildren(el("span", { class: "error" }, String(err)));
  }
}

function renderConsumers(consumers) {
  document.getElementById("consumers").replaceChildren(table(
    ["service", "consumer", "stream", { label: "pending", num: true }, { label: "ack pending", num: true },
      { label: "redelivered", num: true }, { label: "delivered", num: true }],
    consumers.map((c) => c.error
      ? el("tr", {}, el("td", {}, c.service), el("td", {}, c.name), el("td", {}, c.stream), el("td", { class: "error", colspan: 4 }, c.error))
      : el("tr", { class: "consumer", "data-name": c.name }, el("td", {}, c.service), el("td", {}, c.name), el("td", {}, c.stream),
        el("td", { class: "num" }, c.pending), el("td", { class: "num" }, c.ack_pending),
        el("td", { class: "num" }, c.redelivered), el("td", { class: "num" }, c.delivered)))));
}

function chart(id, series, lines) {
  const svg = document.getElementById(id);
  const ns = "http://www.w3.org/2000/svg";
  const now = Date.now() / 1000;
  const points = series.filter((p) => p.t > now - CHART_SECONDS);
  const span = Math.max(CHART_MIN_SECONDS, Math.min(CHART_SECONDS, points.length ? now - points[0].t : 0));
  const top = Math.max(1e-9, ...points.flatMap((p) => lines.map((k) => p[k] ?? 0)));
  svg.replaceChildren();
  lines.forEach((key, i) => {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("class", i === 0 ? "a" : "b");
    line.setAttribute("points", points.filter((p) => p[key] !== null)
      .map((p) => [(600 * (1 - (now - p.t) / span)).toFixed(1), (115 - 100 * p[key] / top).toFixed(1)].join(","))
      .join(" "));
    svg.append(line);
  });
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", "4");
  label.setAttribute("y", "12");
  label.textContent = "max " + (top < 1e-6 ? 0 : +top.toPrecision(3)) + " · last " + Math.round(span) + " s";
  svg.append(label);
}

async function refreshLive() {
  try {
    const live = await getJson("live");
    const counts = Object.fromEntries(Object.entries(live.sagas).map(([n, s]) => [n, s.counts]));
    renderFlows(counts);
    renderInstances(live.sagas);
    renderConsumers(live.consumers);
    if (selected) showTimeline(...selected); // a pending instance moves on while it is shown
    chart("chart-settled", live.series, ["settled"]);
    chart("chart-latency", live.series, ["latency_avg", "latency_max"]);
    document.getElementById("status").textContent = "live · updated " + new Date().toLocaleTimeString();
  } catch (err) {
    document.getElementById("status").textContent = "not answering: " + err.message;
  }
}

async function replay(entry, button) {
  button.disabled = true;
  const resp = await fetch(api("deadletters/" + encodeURIComponent(entry.stream) + "/" + entry.id + "/replay"), {
    method: "POST",
    headers: { "X-Flowrun-Admin-Token": document.getElementById("token").value },
  });
  const body = await resp.json();
  button.textContent = resp.ok ? "replayed" : body.error;
  refreshDeadLetters();
}

async function refreshDeadLetters() {
  let body;
  try {
    body = await getJson("deadletters");
  } catch (err) {
    document.getElementById("deadletters").replaceChildren(el("span", { class: "error" }, String(err)));
    return;
  }
  const rows = [];
  for (const e of body.items) {
    const id = e.stream + "#" + e.id;
    const show = el("button", { on: { click: () => { opened.has(id) ? opened.delete(id) : opened.add(id); refreshDeadLetters(); } } },
      opened.has(id) ? "hide" : "show");
    const replayButton = overview.replay ? el("button", { class: "replay", on: { click: (ev) => replay(e, ev.target) } }, "replay") : null;
    rows.push(el("tr", { class: "deadletter", "data-id": e.id, "data-subject": e.subject },
      el("td", { class: "num" }, e.id), el("td", {}, e.time.slice(11, 19)), el("td", {}, e.service),
      el("td", {}, el("code", {}, e.subject)), el("td", {}, e.error),
      el("td", {}, e.replayed ? "replayed " + e.replayed.at.slice(11, 19) : ""), el("td", {}, show, " ", replayButton)));
    if (opened.has(id)) {
      rows.push(el("tr", {}, el("td", { colspan: 7 }, el("pre", {}, JSON.stringify(
        { consumer: e.consumer, original: e.original, attempts: e.attempts, headers: e.headers, payload: e.payload }, null, 1)))));
    }
  }
  document.getElementById("deadletters").replaceChildren(rows.length
    ? table([{ label: "id", num: true }, "time", "service", "subject", "error", "replay", ""], rows)
    : el("span", { class: "muted" }, "none"));
}

async function start() {
  overview = await getJson("overview");
  document.getElementById("admin").hidden = !overview.replay;
  const token = document.getElementById("token");
  token.value = sessionStorage.getItem("flowrun-admin-token") || "";
  token.addEventListener("change", () => sessionStorage.setItem("flowrun-admin-token", token.value));
  const linked = location.hash.slice(1).split("/").map(decodeURIComponent);
  if (linked.length === 2) showTimeline(linked[0], linked[1]);
  await Promise.all([refreshLive(), refreshDeadLetters()]);
  setInterval(refreshLive, POLL_MS);
  setInterval(refreshDeadLetters, DEAD_LETTERS_MS);
}

start().catch((err) => { document.getElementById("status").textContent = "failed: " + err.message; });
