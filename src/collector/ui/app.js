// edgewatch collector UI: plain JavaScript over the JSON API (/api/alerts, /api/alerts/{id},
// /api/sensors, /api/timeline). Pages: "/" alerts (filters from and to the URL query, chart,
// table), "/alerts/<id>" one alert, "/sensors". The "live" box re-reads the data every 5 s.
"use strict";

const FILTERS = ["sensor", "category", "severity", "src_ip", "dest_ip", "since", "until"];
const PAGE = 50;
const COLORS = ["#2458c6", "#d9480f", "#2b8a3e", "#862e9c", "#e8590c", "#0b7285", "#c2255c", "#5c940d", "#495057"];
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

function ago(us) {
  if (!us) return "";
  const s = Math.max(0, Math.round(Date.now() / 1000 - us / 1e6));
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

// "10.0.0.1:80", "[fd00::1]:80", or the bare address when the port is absent.
function hostPort(ip, port) {
  if (port == null) return ip;
  return (ip.includes(":") ? "[" + ip + "]" : ip) + ":" + port;
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
// Alerts

function alertsPage() {
  const params = query();
  const form = el("form", { id: "filters" });
  const inputs = {};
  const labels = { sensor: "sensor", category: "category", severity: "severity", src_ip: "source IP",
    dest_ip: "destination IP", since: "since (RFC 3339)", until: "until (RFC 3339)" };
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
  form.append(el("button", { type: "button", class: "plain", onclick: () => navigate("/") }, "Clear"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const k of FILTERS) if (inputs[k].value.trim()) q.set(k, inputs[k].value.trim());
    navigate("/" + (q.toString() ? "?" + q : ""));
  });

  const legend = el("div", { class: "legend", id: "legend" });
  const chart = svg("svg", { id: "chart", viewBox: "0 0 1000 180", preserveAspectRatio: "none" });
  const summary = el("p", { id: "summary" }, "Loading...");
  const tbody = el("tbody");
  const table = el("table", { id: "alerts" },
    el("thead", {}, el("tr", {}, ...["time", "sensor", "category", "severity", "score", "source", "destination", "proto", "flows"].map((h) => el("th", {}, h)))),
    tbody);
  const prev = el("button", { type: "button", class: "plain", id: "prev" }, "Newer");
  const next = el("button", { type: "button", class: "plain", id: "next" }, "Older");
  const pager = el("div", { class: "pager" }, prev, next, el("span", { id: "page" }));
  main.replaceChildren(form, el("div", { class: "chart" }, chart, legend), summary, table, pager);

  const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  const fq = filterQuery(params);
  const pageUrl = (off) => { const q = filterQuery(params); if (off > 0) q.set("offset", off); return "/" + (q.toString() ? "?" + q : ""); };
  prev.addEventListener("click", () => navigate(pageUrl(Math.max(0, offset - PAGE))));
  next.addEventListener("click", () => navigate(pageUrl(offset + PAGE)));

  // The chart groups every matching alert: re-read it every 30 s, not at every refresh.
  let chartAt = 0;
  async function load() {
    const q = new URLSearchParams(fq);
    q.set("limit", PAGE);
    q.set("offset", offset);
    try {
      const withChart = Date.now() - chartAt >= 30000;
      const [page, timeline] = await Promise.all([getJSON("/api/alerts?" + q), withChart ? getJSON("/api/timeline?" + fq) : null]);
      summary.textContent = page.total + " alerts" + (fq.toString() ? " matching the filters" : "") +
        (page.total ? ", showing " + (page.alerts.length ? offset + 1 : 0) + "-" + (offset + page.alerts.length) : "");
      summary.dataset.total = page.total;
      tbody.replaceChildren(...page.alerts.map(alertRow));
      prev.disabled = offset === 0;
      next.disabled = offset + page.alerts.length >= page.total;
      if (timeline) {
        drawChart(chart, legend, timeline);
        chartAt = Date.now();
      }
    } catch (e) {
      summary.replaceChildren(el("span", { class: "error" }, "Cannot load alerts: " + e.message));
    }
  }
  load();
  schedule(load);
}

function alertRow(a) {
  const src = hostPort(a.src_ip, a.src_port);
  const dst = hostPort(a.dest_ip, a.dest_port);
  const tr = el("tr", { class: "alert-row", "data-alert-id": a.alert_id, "data-sensor": a.sensor_id, "data-category": a.alert.category },
    el("td", {}, a.timestamp.replace("T", " ")),
    el("td", {}, a.sensor_id),
    el("td", {}, a.alert.category),
    el("td", { class: "sev-" + a.alert.severity }, a.alert.severity),
    el("td", {}, a.alert.score.toFixed(3)),
    el("td", {}, src),
    el("td", {}, dst),
    el("td", {}, a.proto),
    el("td", {}, a.count));
  tr.addEventListener("click", () => navigate("/alerts/" + encodeURIComponent(a.alert_id)));
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
    const rows = [
      ["time", a.timestamp], ["sensor", a.sensor_id], ["category", a.alert.category], ["signature", a.alert.signature],
      ["severity", a.alert.severity], ["score", a.alert.score], ["model", a.alert.model.name + " " + a.alert.model.version],
      ["source", hostPort(a.src_ip, a.src_port)],
      ["destination", hostPort(a.dest_ip, a.dest_port)], ["protocol", a.proto],
      ["flows", a.count], ["flow id", a.flow_id], ["community id", a.community_id || ""],
      ["packets to server / client", a.flow.pkts_toserver + " / " + a.flow.pkts_toclient],
      ["bytes to server / client", a.flow.bytes_toserver + " / " + a.flow.bytes_toclient],
      ["flow start / end", a.flow.start + " / " + a.flow.end], ["alert id", a.alert_id],
    ];
    const dl = el("dl", {});
    for (const [k, v] of rows) dl.append(el("dt", {}, k), el("dd", {}, v));
    main.replaceChildren(
      el("div", { id: "alert-detail" },
        el("p", {}, el("a", { href: "/?sensor=" + encodeURIComponent(a.sensor_id) }, "All alerts of " + a.sensor_id)),
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
    el("thead", {}, el("tr", {}, ...["sensor", "status", "last seen", "version", "model", "mode", "packets", "drops", "outbox depth", "alerts published", "uptime"].map((h) => el("th", {}, h)))),
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
  document.getElementById("nav-alerts").classList.toggle("active", path === "/" || path.startsWith("/alerts/"));
  document.getElementById("nav-sensors").classList.toggle("active", path === "/sensors");
  if (path === "/sensors") sensorsPage();
  else if (path.startsWith("/alerts/")) alertPage(decodeURIComponent(path.slice("/alerts/".length)));
  else alertsPage();
}

window.addEventListener("popstate", render);
render();
