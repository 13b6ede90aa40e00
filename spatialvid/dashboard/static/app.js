// SpatialVID Stream live dashboard: polls /api/panels and redraws every panel.
// Every number is rendered from the rows its SQL returned; the raw value is kept in
// data-value so that what the page shows can be checked against the SQL.
"use strict";

const params = new URLSearchParams(location.search);
let generation = 0;
let selectedClip = null;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") {
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    return Math.abs(v) < 1 ? v.toFixed(4) : v.toFixed(3);
  }
  if (typeof v === "boolean") return v ? "yes" : "no";
  return String(v);
}

function raw(v) { return v === null || v === undefined ? "" : (typeof v === "string" ? v : JSON.stringify(v)); }

function table(columns, rows, opts = {}) {
  const t = el("table", { class: "data" });
  t.append(el("tr", {}, ...columns.map((c) => el("th", { text: c }))));
  rows.forEach((r, i) => {
    const tr = el("tr", { "data-row": String(i) });
    r.forEach((v, j) => {
      const td = el("td", { "data-col": columns[j], "data-value": raw(v), text: fmt(v) });
      if (columns[j] === "passed" && typeof v === "boolean") td.className = v ? "good" : "bad";
      tr.append(td);
    });
    if (opts.onRow) opts.onRow(tr, r);
    t.append(tr);
  });
  return t;
}

function sqlBox(p) {
  const params = Object.keys(p.params || {}).length ? "\n-- parameters: " + JSON.stringify(p.params) : "";
  return el("details", {}, el("summary", { text: "SQL" }), el("pre", { text: p.sql + params }));
}

// A small SVG line chart of (minute, series, value) rows.
function lineChart(rows) {
  const W = 420, H = 150, P = 28;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H);
  if (!rows.length) return svg;
  const xs = [...new Set(rows.map((r) => String(r[0])))].sort();
  const series = {};
  for (const [x, s, v] of rows) (series[s] = series[s] || {})[String(x)] = Number(v);
  const ymax = Math.max(1e-9, ...rows.map((r) => Number(r[2])));
  const X = (i) => P + (xs.length > 1 ? (i * (W - 2 * P)) / (xs.length - 1) : (W - 2 * P) / 2);
  const Y = (v) => H - P + 8 - (v / ymax) * (H - P - 8);
  const colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3"];
  Object.entries(series).forEach(([name, pts], k) => {
    const d = xs.map((x, i) => (x in pts ? `${i ? "L" : "M"}${X(i)},${Y(pts[x])}` : "")).join(" ").replace(/^ *L/, "M");
    const path = document.createElementNS(svg.namespaceURI, "path");
    path.setAttribute("d", d); path.setAttribute("fill", "none");
    path.setAttribute("stroke", colors[k % colors.length]); path.setAttribute("stroke-width", "2");
    svg.append(path);
    const label = document.createElementNS(svg.namespaceURI, "text");
    label.setAttribute("x", W - P - 80); label.setAttribute("y", 12 + 11 * k);
    label.setAttribute("fill", colors[k % colors.length]); label.textContent = name;
    svg.append(label);
  });
  const top = document.createElementNS(svg.namespaceURI, "text");
  top.setAttribute("x", 2); top.setAttribute("y", 12); top.textContent = fmt(ymax);
  svg.append(top);
  return svg;
}

function bars(columns, rows, labelCol, valueCol) {
  const li = columns.indexOf(labelCol), vi = columns.indexOf(valueCol);
  const max = Math.max(1e-9, ...rows.map((r) => Number(r[vi]) || 0));
  const wrap = el("div");
  for (const r of rows) {
    const w = Math.round((200 * (Number(r[vi]) || 0)) / max);
    wrap.append(el("div", {}, el("span", { class: "bar", style: `width:${w}px` }), " " + r[li] + " " + fmt(r[vi])));
  }
  return wrap;
}

function render(name, p) {
  const sec = document.querySelector(`[data-panel="${name}"]`);
  if (!sec) return;
  sec.replaceChildren(el("h2", { text: p.title }));
  if (p.error) { sec.append(el("p", { class: "error-msg", text: p.error }), sqlBox(p)); return; }
  if (name === "totals") {
    const big = el("div", { class: "big" });
    p.columns.forEach((c, j) => big.append(el("div", {}, el("div", { class: "n", "data-col": c, "data-value": raw(p.rows[0][j]), text: fmt(p.rows[0][j]) }), el("div", { class: "l", text: c.replace("_", " ") }))));
    sec.append(big, sqlBox(p));
    return;
  }
  if (p.kind === "series") {
    sec.append(lineChart(p.rows), el("details", {}, el("summary", { text: "data" }), table(p.columns, p.rows)), sqlBox(p));
    return;
  }
  if (name === "pass_rates") sec.append(bars(p.columns, p.rows, "filter", "pass_rate"));
  if (name === "funnel") sec.append(bars(p.columns, p.rows, "step", "hours"));
  const onRow = name === "latest_clips" ? (tr, r) => {
    const has = r[p.columns.indexOf("has_trajectory")];
    if (has) { tr.className = "pick"; tr.addEventListener("click", () => showTrajectory(r[0])); }
  } : null;
  sec.append(table(p.columns, p.rows, { onRow }), sqlBox(p));
  if (name === "latest_clips" && selectedClip === null) {
    const first = p.rows.find((r) => r[p.columns.indexOf("has_trajectory")]);
    if (first) showTrajectory(first[0]);
  }
}

function renderLag(lag) {
  const sec = document.querySelector('[data-panel="lag"]');
  sec.replaceChildren(el("h2", { text: "Consumer lag (Kafka)" }));
  if (!lag.length) { sec.append(el("p", { class: "hint", text: "no Kafka configured for this dashboard" })); return; }
  const cols = ["group", "topic", "committed", "end", "lag"];
  sec.append(table(cols, lag.map((l) => cols.map((c) => (c in l ? l[c] : l.error || null)))));
}

function showTrajectory(clip) {
  selectedClip = clip;
  const img = document.getElementById("trajectory-img");
  img.hidden = false;
  img.alt = "trajectory of " + clip;
  img.dataset.clip = clip;
  img.src = "/api/trajectory.png?clip=" + encodeURIComponent(clip);
  document.querySelector("#trajectory .hint").textContent = clip;
}

async function refresh() {
  const status = document.getElementById("status");
  let wait = Number(params.get("refresh")) || 2;
  try {
    const resp = await fetch("/api/panels", { cache: "no-store" });
    const data = await resp.json();
    if (data.error) throw new Error(data.error);
    for (const [name, p] of Object.entries(data.panels)) render(name, p);
    renderLag(data.lag || []);
    generation += 1;
    status.className = "";
    status.dataset.generation = String(generation);
    status.textContent = `database ${data.database} · updated ${new Date().toLocaleTimeString()} · queries ${data.query_s}s`;
    if (!params.get("refresh")) wait = data.refresh_s || wait;
  } catch (err) {
    status.className = "error";
    status.textContent = "cannot reach the warehouse: " + err.message + " (retrying)";
  }
  setTimeout(refresh, wait * 1000);
}

refresh();
