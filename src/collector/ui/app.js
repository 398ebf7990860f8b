// edgewatch collector UI: plain JavaScript over the JSON API (/api/incidents, /api/alerts,
// /api/alerts/{id}, /api/sensors, /api/timeline). Pages: "/" incidents (one row per attacker,
// victim and class; a row opens to its alerts), "/alerts" every alert, "/alerts/<id>" one
// alert, "/sensors". Filters live in the URL query, and so does the opened incident (open=), so a
// view can be bookmarked or linked. The "live" box re-reads the data every 5 s.
"use strict";

const FILTERS = ["sensor", "class", "category", "severity", "src_ip", "dest_ip", "since", "until"];
const PAGE = 50;
// Alerts listed inside an opened incident; the rest are a link away (the Alerts page).
const INCIDENT_ALERTS = 50;
// How the API writes an absent address (many sources, many hosts).
const ABSENT = "*";
const COLORS = ["#2458c6", "#d9480f", "#2b8a3e", "#862e9c", "#e8590c", "#0b7285", "#c2255c", "#5c940d", "#495057"];
// The evidence numbers an alert may carry (alert.context.edgewatch.evidence), in display order.
const EVIDENCE = [
  ["window_s", "window", " s"], ["flows", "flows"], ["targets", "targets"], ["hosts", "hosts"],
  ["ports", "ports"], ["unanswered", "unanswered"], ["sessions", "sessions"],
  ["sessions_per_min", "sessions/min"], ["logins", "logins"], ["connections", "connections"],
  ["mean_duration_s", "mean duration", " s"], ["mean_bytes_per_s", "mean bytes/s"],
  ["packets_per_s", "packets/s"], ["bytes_per_s", "bytes/s"], ["sources", "sources"],
];
const main = document.getElementById("main");
let timer = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: "application/json" } });
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return r.json();
}

function fmtTime(us) {
  if (!us) return "never";
  return new Date(us / 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

// An alert's time as written ("2024-05-01T12:00:00.000001+0000"), for display.
function fmtEve(ts) {
  return ts ? ts.replace("T", " ").replace(/(\+0000|Z)$/, "Z") : "";
}

function ago(us) {
  if (!us) return "";
  const s = Math.max(0, Math.round(Date.now() / 1000 - us / 1e6));
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

// "10.0.0.1:80", "[fd00::1]:80", the bare address when the port is absent, "many" when the
// address is (a flood from many sources, a scan of many hosts).
function hostPort(ip, port) {
  if (ip == null || ip === ABSENT) return "many";
  if (port == null) return ip;
  return (ip.includes(":") ? "[" + ip + "]" : ip) + ":" + port;
}

// edgewatch's own part of an alert (alert.context.edgewatch). Alerts stored before the
// incident layout carry these fields elsewhere: they read as one final record.
function ew(a) {
  const c = a.alert && a.alert.context && a.alert.context.edgewatch;
  if (c) return c;
  const sig = (a.alert && a.alert.signature) || "";
  return {
    sensor_id: a.sensor_id, alert_id: a.alert_id, update: 0, final: true,
    class: sig.startsWith("EDGEWATCH anomalous traffic: ") ? sig.slice(29) : "",
    score: a.alert.score, model: a.alert.model || { name: "", version: "" }, count: a.count,
    first_seen: a.timestamp, last_seen: a.timestamp, evidence: {},
  };
}

function fmtNumber(v) {
  return Number.isInteger(v) ? String(v) : v.toFixed(v >= 100 ? 0 : 2);
}

// The evidence numbers as labelled spans (each with data-ev, for tests and styling).
function evidence(ev) {
  const out = el("span", { class: "evidence" });
  for (const [key, label, unit] of EVIDENCE) {
    if (ev[key] == null) continue;
    out.append(el("span", { class: "ev", "data-ev": key }, label + " ", el("b", {}, fmtNumber(ev[key]) + (unit || ""))));
  }
  if (ev.top_sources && ev.top_sources.length) {
    out.append(el("span", { class: "ev", "data-ev": "top_sources" }, "top sources ",
      el("b", {}, ev.top_sources.map((s) => s.ip + " (" + s.packets + ")").join(", "))));
  }
  return out;
}

// "2", or "2 final" for an alert's last record.
function updateText(e) {
  return e.update + (e.final ? " final" : "");
}

function query() {
  return new URLSearchParams(location.search);
}

function filterQuery(params) {
  const q = new URLSearchParams();
  for (const k of FILTERS) {
    const v = params.get(k);
    if (v) q.set(k, v);
  }
  return q;
}

function schedule(fn) {
  clearInterval(timer);
  timer = setInterval(() => { if (document.getElementById("live").checked) fn(); }, 5000);
}

// ---------------------------------------------------------------------------------------------
// The filters, chart and pager that the incidents and alerts pages share

function filterForm(path, params) {
  const form = el("form", { id: "filters" });
  const inputs = {};
  const labels = { sensor: "sensor", class: "class", category: "category", severity: "severity",
    src_ip: "source IP (* many)", dest_ip: "destination IP (* many)", since: "since (RFC 3339)",
    until: "until (RFC 3339)" };
  for (const k of FILTERS) {
    let input;
    if (k === "severity") {
      input = el("select", { name: k }, el("option", { value: "" }, "any"),
        el("option", { value: "1" }, "1 high"), el("option", { value: "2" }, "2 medium"), el("option", { value: "3" }, "3 low"));
    } else {
      input = el("input", { name: k, type: "text", placeholder: k === "since" || k === "until" ? "2024-05-01T12:00:00Z" : "any" });
    }
    input.value = params.get(k) || "";
    inputs[k] = input;
    form.append(el("label", {}, labels[k], input));
  }
  form.append(el("button", { type: "submit" }, "Filter"));
  form.append(el("button", { type: "button", class: "plain", onclick: () => navigate(path) }, "Clear"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const k of FILTERS) if (inputs[k].value.trim()) q.set(k, inputs[k].value.trim());
    navigate(path + (q.toString() ? "?" + q : ""));
  });
  return form;
}

// A page of a list: filters, the chart, a summary line, the table and Newer/Older buttons.
// `fetchPage(offset)` returns {total, rows}; `noun` names the rows ("incidents").
function listPage({ path, noun, table, tbody, fetchPage }) {
  const params = query();
  const legend = el("div", { class: "legend", id: "legend" });
  const chart = svg("svg", { id: "chart", viewBox: "0 0 1000 180", preserveAspectRatio: "none" });
  const summary = el("p", { id: "summary" }, "Loading...");
  const prev = el("button", { type: "button", class: "plain", id: "prev" }, "Newer");
  const next = el("button", { type: "button", class: "plain", id: "next" }, "Older");
  const pager = el("div", { class: "pager" }, prev, next, el("span", { id: "page" }));
  main.replaceChildren(filterForm(path, params), el("div", { class: "chart" }, chart, legend), summary, table, pager);

  const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  const fq = filterQuery(params);
  const pageUrl = (off) => {
    const q = new URLSearchParams(location.search);
    if (off > 0) q.set("offset", off); else q.delete("offset");
    return path + (q.toString() ? "?" + q : "");
  };
  prev.addEventListener("click", () => navigate(pageUrl(Math.max(0, offset - PAGE))));
  next.addEventListener("click", () => navigate(pageUrl(offset + PAGE)));

  // The chart groups every matching alert: re-read it every 30 s, not at every refresh.
  let chartAt = 0;
  async function load() {
    try {
      const withChart = Date.now() - chartAt >= 30000;
      const [page, timeline] = await Promise.all([fetchPage(fq, offset), withChart ? getJSON("/api/timeline?" + fq) : null]);
      summary.textContent = page.total + " " + noun + (fq.toString() ? " matching the filters" : "") +
        (page.total ? ", showing " + (page.shown ? offset + 1 : 0) + "-" + (offset + page.shown) : "");
      summary.dataset.total = page.total;
      tbody.replaceChildren(...page.rows);
      prev.disabled = offset === 0;
      next.disabled = offset + page.shown >= page.total;
      if (timeline) {
        drawChart(chart, legend, timeline);
        chartAt = Date.now();
      }
    } catch (e) {
      summary.replaceChildren(el("span", { class: "error" }, "Cannot load " + noun + ": " + e.message));
    }
  }
  load();
  schedule(load);
  return load;
}

function headRow(names) {
  return el("thead", {}, el("tr", {}, ...names.map((h) => el("th", {}, h))));
}

// ---------------------------------------------------------------------------------------------
// Incidents

// An incident's key in the URL (open=): "src/dest/class"; addresses never hold a "/".
function incidentKey(i) {
  return i.src_ip + "/" + i.dest_ip + "/" + i.class;
}

// The query that selects one incident's alerts.
function incidentQuery(i, fq) {
  const q = new URLSearchParams(fq);
  q.set("src_ip", i.src_ip);
  q.set("dest_ip", i.dest_ip);
  q.set("class", i.class);
  return q;
}

function incidentsPage() {
  const tbody = el("tbody");
  const table = el("table", { id: "incidents" },
    headRow(["", "last seen", "class", "source", "destination", "alerts", "open", "flows", "severity", "score", "first seen"]),
    tbody);
  let load = null;
  const toggle = (key) => {
    const q = query();
    if (q.get("open") === key) q.delete("open"); else q.set("open", key);
    history.replaceState(null, "", "/" + (q.toString() ? "?" + q : ""));
    load();
  };
  load = listPage({
    path: "/", noun: "incidents", table, tbody,
    fetchPage: async (fq, offset) => {
      const q = new URLSearchParams(fq);
      q.set("limit", PAGE);
      q.set("offset", offset);
      const page = await getJSON("/api/incidents?" + q);
      const open = query().get("open");
      const rows = [];
      for (const i of page.incidents) {
        const key = incidentKey(i);
        rows.push(incidentRow(i, key === open, () => toggle(key)));
        if (key === open) rows.push(await incidentAlerts(i, fq));
      }
      return { total: page.total, shown: page.incidents.length, rows };
    },
  });
}

function incidentRow(i, open, onclick) {
  return el("tr", { class: "incident-row" + (open ? " open" : ""), "data-incident": incidentKey(i), "data-alerts": i.alerts, "data-class": i.class, onclick },
    el("td", { class: "toggle" }, open ? "▾" : "▸"),
    el("td", {}, fmtTime(i.last_us)),
    el("td", {}, i.class || "(none)"),
    el("td", {}, hostPort(i.src_ip)),
    el("td", {}, hostPort(i.dest_ip)),
    el("td", {}, i.alerts),
    el("td", {}, i.open),
    el("td", {}, i.count),
    el("td", { class: "sev-" + i.severity }, i.severity),
    el("td", {}, i.score.toFixed(3)),
    el("td", {}, fmtTime(i.first_us)));
}

// The row under an opened incident: its newest alerts with their evidence.
async function incidentAlerts(i, fq) {
  const q = incidentQuery(i, fq);
  const all = "/alerts?" + q;
  q.set("limit", INCIDENT_ALERTS);
  let content;
  try {
    const page = await getJSON("/api/alerts?" + q);
    const rows = page.alerts.map((a) => {
      const e = ew(a);
      const tr = el("tr", { class: "alert-row", "data-alert-id": e.alert_id, "data-update": e.update, "data-final": e.final, "data-sensor": e.sensor_id },
        el("td", {}, fmtEve(a.timestamp)),
        el("td", {}, e.sensor_id),
        el("td", {}, updateText(e)),
        el("td", { class: "sev-" + a.alert.severity }, a.alert.severity),
        el("td", {}, e.score.toFixed(3)),
        el("td", {}, hostPort(a.src_ip, a.src_port) + " → " + hostPort(a.dest_ip, a.dest_port) + " " + a.proto),
        el("td", {}, e.count),
        el("td", {}, evidence(e.evidence || {})));
      tr.addEventListener("click", () => navigate("/alerts/" + encodeURIComponent(e.alert_id)));
      return tr;
    });
    content = [el("table", { class: "incident-alerts" },
      headRow(["time", "sensor", "update", "severity", "score", "flow", "flows", "evidence"]),
      el("tbody", {}, ...rows))];
    if (page.total > page.alerts.length) {
      content.push(el("p", {}, el("a", { href: all }, "All " + page.total + " alerts of this incident")));
    }
  } catch (e) {
    content = [el("span", { class: "error" }, "Cannot load the incident's alerts: " + e.message)];
  }
  return el("tr", { class: "incident-detail" }, el("td", { colspan: 11 }, ...content));
}

// ---------------------------------------------------------------------------------------------
// Alerts

function alertsPage() {
  const tbody = el("tbody");
  const table = el("table", { id: "alerts" },
    headRow(["time", "sensor", "class", "category", "severity", "score", "source", "destination", "proto", "flows", "update"]),
    tbody);
  listPage({
    path: "/alerts", noun: "alerts", table, tbody,
    fetchPage: async (fq, offset) => {
      const q = new URLSearchParams(fq);
      q.set("limit", PAGE);
      q.set("offset", offset);
      const page = await getJSON("/api/alerts?" + q);
      return { total: page.total, shown: page.alerts.length, rows: page.alerts.map(alertRow) };
    },
  });
}

function alertRow(a) {
  const e = ew(a);
  const tr = el("tr", { class: "alert-row", "data-alert-id": e.alert_id, "data-sensor": e.sensor_id, "data-category": a.alert.category, "data-class": e.class, "data-update": e.update },
    el("td", {}, fmtEve(a.timestamp)),
    el("td", {}, e.sensor_id),
    el("td", {}, e.class),
    el("td", {}, a.alert.category),
    el("td", { class: "sev-" + a.alert.severity }, a.alert.severity),
    el("td", {}, e.score.toFixed(3)),
    el("td", {}, hostPort(a.src_ip, a.src_port)),
    el("td", {}, hostPort(a.dest_ip, a.dest_port)),
    el("td", {}, a.proto),
    el("td", {}, e.count),
    el("td", {}, updateText(e)));
  tr.addEventListener("click", () => navigate("/alerts/" + encodeURIComponent(e.alert_id)));
  return tr;
}

// Stacked bars: one bar per time bucket, one colour per category.
function drawChart(chart, legend, timeline) {
  const W = 1000, H = 180, PAD = 18;
  chart.replaceChildren();
  legend.replaceChildren();
  const buckets = timeline.buckets || [];
  if (!buckets.length) {
    const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#687083" });
    t.textContent = "no alerts";
    chart.append(t);
    return;
  }
  const step = timeline.bucket_s * 1e6;
  const categories = [...new Set(buckets.map((b) => b.category))].sort();
  const color = (c) => COLORS[categories.indexOf(c) % COLORS.length];
  const t0 = Math.min(...buckets.map((b) => b.t_us));
  const t1 = Math.max(...buckets.map((b) => b.t_us));
  const n = Math.round((t1 - t0) / step) + 1;
  const totals = new Array(n).fill(0);
  for (const b of buckets) totals[Math.round((b.t_us - t0) / step)] += b.count;
  const max = Math.max(...totals, 1);
  const bw = (W - 2 * PAD) / n;
  const stacked = new Array(n).fill(0);
  for (const b of buckets) {
    const i = Math.round((b.t_us - t0) / step);
    const h = (b.count / max) * (H - 2 * PAD);
    stacked[i] += h;
    const r = svg("rect", { x: PAD + i * bw + bw * 0.1, y: H - PAD - stacked[i], width: Math.max(bw * 0.8, 1), height: h, fill: color(b.category) });
    const title = svg("title");
    title.textContent = fmtTime(b.t_us) + " " + b.category + ": " + b.count;
    r.append(title);
    chart.append(r);
  }
  chart.append(svg("line", { x1: PAD, y1: H - PAD, x2: W - PAD, y2: H - PAD, stroke: "#999" }));
  const label = (x, text, anchor) => { const t = svg("text", { x, y: H - 3, "font-size": 11, fill: "#687083", "text-anchor": anchor }); t.textContent = text; chart.append(t); };
  label(PAD, fmtTime(t0), "start");
  label(W - PAD, fmtTime(t1 + step), "end");
  const top = svg("text", { x: PAD, y: 12, "font-size": 11, fill: "#687083" });
  top.textContent = max + " per " + timeline.bucket_s + " s";
  chart.append(top);
  for (const c of categories) legend.append(el("span", {}, el("i", { style: "background:" + color(c) }), c));
}

// ---------------------------------------------------------------------------------------------
// One alert

async function alertPage(id) {
  main.replaceChildren(el("p", {}, "Loading..."));
  try {
    const a = await getJSON("/api/alerts/" + encodeURIComponent(id));
    const e = ew(a);
    const incident = { src_ip: a.src_ip || ABSENT, dest_ip: a.dest_ip || ABSENT, class: e.class };
    const q = incidentQuery(incident, new URLSearchParams());
    q.set("open", incidentKey(incident));
    const rows = [
      ["time", fmtEve(a.timestamp)], ["sensor", e.sensor_id], ["class", e.class], ["category", a.alert.category],
      ["signature", a.alert.signature], ["severity", a.alert.severity], ["score", e.score],
      ["model", e.model.name + " " + e.model.version], ["update", updateText(e)],
      ["source", hostPort(a.src_ip, a.src_port)], ["destination", hostPort(a.dest_ip, a.dest_port)],
      ["protocol", a.proto], ["flows", e.count], ["first seen / last seen", fmtEve(e.first_seen) + " / " + fmtEve(e.last_seen)],
      ["evidence", evidence(e.evidence || {})],
      ["flow id", a.flow_id], ["community id", a.community_id || ""],
      ["packets to server / client", a.flow.pkts_toserver + " / " + a.flow.pkts_toclient],
      ["bytes to server / client", a.flow.bytes_toserver + " / " + a.flow.bytes_toclient],
      ["flow start / end", fmtEve(a.flow.start) + " / " + fmtEve(a.flow.end)], ["alert id", e.alert_id],
    ];
    const dl = el("dl", {});
    for (const [k, v] of rows) dl.append(el("dt", {}, k), el("dd", {}, v));
    main.replaceChildren(
      el("div", { id: "alert-detail" },
        el("p", {}, el("a", { href: "/?" + q }, "The incident"), " · ",
          el("a", { href: "/alerts?sensor=" + encodeURIComponent(e.sensor_id) }, "All alerts of " + e.sensor_id)),
        dl, el("h3", {}, "JSON"), el("pre", {}, JSON.stringify(a, null, 2))));
  } catch (e) {
    main.replaceChildren(el("p", { class: "error" }, "Cannot load alert " + id + ": " + e.message));
  }
}

// ---------------------------------------------------------------------------------------------
// Sensors

function sensorsPage() {
  const tbody = el("tbody");
  const summary = el("p", { id: "summary" }, "Loading...");
  main.replaceChildren(summary, el("table", { id: "sensors" },
    headRow(["sensor", "status", "last seen", "version", "model", "mode", "packets", "drops", "outbox depth", "alerts published", "uptime"]),
    tbody));
  async function load() {
    try {
      const { sensors } = await getJSON("/api/sensors");
      const online = sensors.filter((s) => s.status === "online").length;
      summary.textContent = sensors.length + " sensors, " + online + " online";
      tbody.replaceChildren(...sensors.map((s) => el("tr", { class: "sensor-row", "data-sensor-id": s.sensor_id, "data-status": s.status },
        el("td", {}, el("a", { href: "/?sensor=" + encodeURIComponent(s.sensor_id) }, s.sensor_id)),
        el("td", { class: s.status }, s.status),
        el("td", { title: fmtTime(s.last_seen_us) }, ago(s.last_seen_us)),
        el("td", {}, s.version), el("td", {}, s.model), el("td", {}, s.mode),
        el("td", {}, s.packets), el("td", {}, s.drops), el("td", {}, s.outbox_depth),
        el("td", {}, s.alerts_published), el("td", {}, s.uptime_s + " s"))));
    } catch (e) {
      summary.replaceChildren(el("span", { class: "error" }, "Cannot load sensors: " + e.message));
    }
  }
  load();
  schedule(load);
}

// ---------------------------------------------------------------------------------------------

function navigate(url) {
  history.pushState(null, "", url);
  render();
}

function render() {
  clearInterval(timer);
  const path = location.pathname;
  document.getElementById("nav-incidents").classList.toggle("active", path === "/");
  document.getElementById("nav-alerts").classList.toggle("active", path === "/alerts" || path.startsWith("/alerts/"));
  document.getElementById("nav-sensors").classList.toggle("active", path === "/sensors");
  if (path === "/sensors") sensorsPage();
  else if (path === "/alerts") alertsPage();
  else if (path.startsWith("/alerts/")) alertPage(decodeURIComponent(path.slice("/alerts/".length)));
  else incidentsPage();
}

window.addEventListener("popstate", render);
render();
