// tierflow live view: polls /api/live every second and draws it; /?user=ID (or the search
// box) shows one user from /api/user/ID. Plain JavaScript, charts as inline SVG.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const TIER_COLORS = ["#7c8da3", "#38bdf8", "#34d399", "#fbbf24", "#c084fc", "#f472b6", "#fb923c", "#a3e635"];
const $ = (id) => document.getElementById(id);

function tierColor(t) { return TIER_COLORS[t % TIER_COLORS.length]; }
function int(n) { return n == null || !isFinite(n) ? "–" : Math.round(n).toLocaleString("en-US"); }
function dec(n, digits) { return n == null || !isFinite(n) ? "–" : Number(n).toFixed(digits); }
function money(n) { return n == null || !isFinite(n) ? "–" : Number(n).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }); }
function ms(n) {
  if (n == null || !isFinite(n)) return "–";
  if (n === 0) return "0";
  if (n >= 1000) return (n / 1000).toFixed(2) + " s";
  if (n >= 10) return n.toFixed(0) + " ms";
  return n.toFixed(1) + " ms";
}
function rate(n) {
  if (n == null || !isFinite(n)) return "–";
  if (n >= 10000) return (n / 1000).toFixed(1) + "k";
  return Math.round(n).toLocaleString("en-US");
}
function when(t) { return t ? String(t).replace("T", " ").replace(/\.\d+/, "").replace("Z", "") : "–"; }
function clock(t) { const s = when(t); return s.length > 10 ? s.slice(11) : s; }
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null) continue;
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}
function tierBadge(t) {
  if (t == null) return el("span", { class: "tier", style: "background:#2b3647;color:#dbe3ee" }, "new");
  return el("span", { class: "tier", style: "background:" + tierColor(t) }, String(t));
}
function userLink(id) {
  const a = el("a", { href: "?user=" + encodeURIComponent(id), "data-user": id }, id);
  a.addEventListener("click", (e) => { e.preventDefault(); openUser(id); });
  return a;
}

// ---- time-series charts -------------------------------------------------------------------

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  // Four grid steps of a round size.
  for (const m of [1, 2, 4, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// series: [{name, values (numbers or null), color}]; t: Unix ms per point.
function lineChart(node, t, series, format) {
  node.replaceChildren();
  // Drawn at the element's own size, so text and dots keep their shape.
  const W = Math.max(300, Math.round(node.getBoundingClientRect().width) || 600), H = 210, L = 52, R = 8, T = 10, B = 22;
  node.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const n = t.length;
  const all = series.flatMap((s) => s.values.filter((v) => v != null && isFinite(v)));
  node.setAttribute("data-points", String(n));
  if (n < 2 || all.length === 0) {
    node.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "waiting for data…"));
    return;
  }
  const max = niceMax(Math.max(...all));
  const t0 = t[0], t1 = t[n - 1], span = Math.max(1, t1 - t0);
  const x = (tm) => L + ((tm - t0) / span) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    node.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "gridline" }));
    node.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  const seconds = Math.round(span / 1000);
  node.append(svg("text", { x: L, y: H - 5 }, seconds >= 120 ? "−" + Math.round(seconds / 60) + " min" : "−" + seconds + " s"));
  node.append(svg("text", { x: W - R, y: H - 5, "text-anchor": "end" }, "now"));
  for (const s of series) {
    let d = "", pen = false, drawn = 0, peak = 0, last = null;
    s.values.forEach((v, i) => {
      if (v == null || !isFinite(v)) { pen = false; return; }
      d += (pen ? "L" : "M") + x(t[i]).toFixed(1) + "," + y(v).toFixed(1);
      pen = true; drawn++; peak = Math.max(peak, v); last = v;
    });
    if (!d) continue;
    if (s.fill) {
      const first = s.values.findIndex((v) => v != null);
      node.append(svg("path", { d: d + "L" + x(t[n - 1]).toFixed(1) + "," + y(0) + "L" + x(t[first]).toFixed(1) + "," + y(0) + "Z", class: "area", fill: s.color }));
    }
    // A point with no drawn neighbour (a lone batch) would be invisible as a path: a dot.
    s.values.forEach((v, i) => {
      const lone = v != null && isFinite(v) && (i === 0 || s.values[i - 1] == null) && (i === n - 1 || s.values[i + 1] == null);
      if (lone) node.append(svg("circle", { cx: x(t[i]).toFixed(1), cy: y(v).toFixed(1), r: 3, fill: s.color, class: "dot" }));
    });
    node.append(svg("path", {
      d, class: "line", stroke: s.color, "data-series": s.name, "data-points": String(drawn),
      "data-max": String(peak), "data-last": last == null ? "" : String(last),
    }));
  }
}

// ---- tier flow ----------------------------------------------------------------------------

function drawFlow(snap) {
  const node = $("flow-sankey");
  node.replaceChildren();
  const flows = snap.flow || [];
  const total = flows.reduce((a, f) => a + f.users, 0);
  node.setAttribute("data-total", String(total));
  if (!total) {
    node.append(svg("text", { x: 260, y: 150, "text-anchor": "middle", class: "empty" }, "no tier changes yet"));
    drawMatrix(snap);
    return;
  }
  const W = 520, H = 300, NW = 14, GAP = 10, X0 = 100, X1 = W - 100 - NW;
  const key = (t) => (t == null ? "new" : String(t));
  const leftKeys = [], rightKeys = [];
  const out = {}, inn = {};
  for (const f of flows) {
    const l = key(f.from), r = key(f.to);
    out[l] = (out[l] || 0) + f.users; inn[r] = (inn[r] || 0) + f.users;
  }
  if (out["new"]) leftKeys.push("new");
  for (let t = 0; t < snap.tiers; t++) { if (out[t]) leftKeys.push(String(t)); if (inn[t]) rightKeys.push(String(t)); }
  const scale = (keys) => (H - GAP * Math.max(0, keys.length - 1)) / total;
  const sl = scale(leftKeys), sr = scale(rightKeys);
  const place = (keys, sizes, s) => { let yy = 0; const pos = {}; for (const k of keys) { pos[k] = { y: yy, c: yy }; yy += sizes[k] * s + GAP; } return pos; };
  const lp = place(leftKeys, out, sl), rp = place(rightKeys, inn, sr);
  const sorted = flows.slice().sort((a, b) => (a.from == null ? -1 : a.from) - (b.from == null ? -1 : b.from) || a.to - b.to);
  for (const f of sorted) {
    const l = lp[key(f.from)], r = rp[key(f.to)];
    const hl = f.users * sl, hr = f.users * sr;
    const xa = X0 + NW, xb = X1, xm = (xa + xb) / 2;
    const d = `M${xa},${l.c} C${xm},${l.c} ${xm},${r.c} ${xb},${r.c} L${xb},${r.c + hr} C${xm},${r.c + hr} ${xm},${l.c + hl} ${xa},${l.c + hl} Z`;
    const band = svg("path", { d, class: "band", fill: tierColor(f.to), "data-from": key(f.from), "data-to": key(f.to), "data-users": String(f.users) });
    band.append(svg("title", {}, `${key(f.from)} → ${f.to}: ${f.users} users`));
    node.append(band);
    l.c += hl; r.c += hr;
  }
  for (const k of leftKeys) {
    const h = Math.max(1, out[k] * sl);
    node.append(svg("rect", { x: X0, y: lp[k].y, width: NW, height: h, rx: 2, fill: k === "new" ? "#4b5a70" : tierColor(+k) }));
    node.append(svg("text", { x: X0 - 8, y: lp[k].y + h / 2 + 4, "text-anchor": "end", class: "node-label" }, (k === "new" ? "new" : "tier " + k) + " · " + int(out[k])));
  }
  for (const k of rightKeys) {
    const h = Math.max(1, inn[k] * sr);
    node.append(svg("rect", { x: X1, y: rp[k].y, width: NW, height: h, rx: 2, fill: tierColor(+k) }));
    node.append(svg("text", { x: X1 + NW + 8, y: rp[k].y + h / 2 + 4, class: "node-label" }, "tier " + k + " · " + int(inn[k])));
  }
  drawMatrix(snap);
}

function drawMatrix(snap) {
  const table = $("flow-matrix");
  table.replaceChildren();
  const tiers = snap.tiers || 0;
  const cell = {};
  for (const f of snap.flow || []) cell[(f.from == null ? "new" : f.from) + ">" + f.to] = f.users;
  const head = el("tr", {}, el("th", {}, "from \\ to"));
  for (let t = 0; t < tiers; t++) head.append(el("th", { class: "num" }, tierBadge(t)));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  for (const from of ["new", ...Array.from({ length: tiers }, (_, i) => i)]) {
    const row = el("tr", {}, el("th", {}, from === "new" ? tierBadge(null) : tierBadge(from)));
    for (let t = 0; t < tiers; t++) {
      const v = cell[from + ">" + t] || 0;
      const cls = v === 0 ? "zero" : from === "new" ? "new" : t > from ? "up" : "down";
      row.append(el("td", { class: cls, "data-from": String(from), "data-to": String(t), "data-users": String(v) }, v ? int(v) : "·"));
    }
    body.append(row);
  }
  table.append(body);
}

function drawTierDist(snap) {
  const box = $("tier-dist");
  box.replaceChildren();
  const net = snap.net_users || [];
  const max = Math.max(1, ...net.map((v) => Math.abs(v)));
  net.forEach((v, t) => {
    const fill = el("div", { class: "bar-fill", style: `width:${(100 * Math.abs(v)) / max}%;background:${v < 0 ? "var(--bad)" : tierColor(t)}` });
    box.append(el("div", { class: "bar-row", "data-tier": String(t), "data-users": String(v) },
      el("span", {}, tierBadge(t)), el("div", { class: "bar-track" }, fill), el("span", { class: "bar-value" }, int(v))));
  });
  if (!net.length) box.append(el("div", { class: "dim" }, "no tier changes yet"));
  const fromStart = /beginning/.test(snap.reader || "");
  $("tier-dist-note").textContent = fromStart ? "from every tier change published" : "net moves since this view started";
}

// ---- campaigns ----------------------------------------------------------------------------

function drawCampaigns(snap) {
  const rows = (snap.campaigns || []).slice().sort((a, b) => (b.sent + b.held_out) - (a.sent + a.held_out) || a.campaign.localeCompare(b.campaign));
  const node = $("campaign-bars");
  node.replaceChildren();
  const withTriggers = rows.filter((r) => r.sent + r.held_out > 0);
  const rowH = 30, H = Math.max(60, withTriggers.length * rowH + 10), W = 520, L = 140, R = 70;
  node.setAttribute("viewBox", `0 0 ${W} ${H}`);
  node.setAttribute("data-campaigns", String(withTriggers.length));
  if (!withTriggers.length) node.append(svg("text", { x: W / 2, y: 35, "text-anchor": "middle", class: "empty" }, "no triggers yet"));
  const max = Math.max(1, ...withTriggers.map((r) => r.sent + r.held_out));
  withTriggers.forEach((r, i) => {
    const y = 5 + i * rowH, w = (W - L - R) / max;
    node.append(svg("text", { x: L - 8, y: y + 17, "text-anchor": "end", class: "node-label", fill: "#dbe3ee" }, r.campaign));
    node.append(svg("rect", { x: L, y: y + 4, width: Math.max(r.sent ? 1 : 0, r.sent * w), height: 18, rx: 3, fill: "var(--sent)", "data-campaign": r.campaign, "data-sent": String(r.sent) }));
    node.append(svg("rect", { x: L + r.sent * w, y: y + 4, width: Math.max(r.held_out ? 1 : 0, r.held_out * w), height: 18, rx: 3, fill: "var(--held)", "data-held": String(r.held_out) }));
    node.append(svg("text", { x: L + (r.sent + r.held_out) * w + 6, y: y + 17 }, int(r.sent) + " / " + int(r.held_out)));
  });
  const body = $("campaigns").tBodies[0];
  body.replaceChildren();
  for (const r of rows) {
    body.append(el("tr", { "data-campaign": r.campaign },
      el("td", {}, r.campaign),
      el("td", { class: "num sent" }, int(r.sent)),
      el("td", { class: "num held" }, int(r.held_out)),
      el("td", { class: "num" }, int(r.outcomes_treated)),
      el("td", { class: "num" }, int(r.outcomes_control)),
      el("td", { class: "num" }, money(r.revenue_treated)),
      el("td", { class: "num" }, money(r.revenue_control)),
      el("td", { class: "num" }, int(r.suppressed_here))));
  }
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: "8", class: "dim" }, "no campaign records yet")));
}

// ---- latest lists -------------------------------------------------------------------------

function drawLatest(snap) {
  const changes = $("latest-changes").tBodies[0];
  changes.replaceChildren();
  for (const c of snap.latest_tier_changes || []) {
    changes.append(el("tr", { "data-user": c.user_id },
      el("td", {}, clock(c.processing_time)),
      el("td", {}, userLink(c.user_id)),
      el("td", {}, tierBadge(c.from_tier), el("span", { class: "arrow" }, "→"), tierBadge(c.to_tier)),
      el("td", { class: "num" }, dec(c.churn_risk, 3)),
      el("td", { class: "num" }, money(c.expected_value)),
      el("td", { class: "dim" }, when(c.event_time))));
  }
  if (!changes.rows.length) changes.append(el("tr", {}, el("td", { colspan: "6", class: "dim" }, "none yet")));
  const triggers = $("latest-triggers").tBodies[0];
  triggers.replaceChildren();
  for (const t of snap.latest_triggers || []) {
    triggers.append(el("tr", { "data-user": t.user_id },
      el("td", {}, clock(t.processing_time)),
      el("td", {}, userLink(t.user_id)),
      el("td", {}, t.campaign),
      el("td", { class: "dim rule", title: t.rule }, t.rule),
      el("td", { class: "arm-" + t.arm }, t.arm === "treated" ? "sent" : "held out"),
      el("td", { class: "num" }, tierBadge(t.tier))));
  }
  if (!triggers.rows.length) triggers.append(el("tr", {}, el("td", { colspan: "6", class: "dim" }, "none yet")));
}

// ---- the whole snapshot -------------------------------------------------------------------

function render(snap) {
  $("source").textContent = snap.source;
  const status = $("status");
  status.textContent = snap.status;
  status.className = "pill" + (/finished|stopp/.test(snap.status) ? " warn" : "");
  $("reader").textContent = snap.reader;
  const cur = snap.current || {};
  $("kpi-events").textContent = rate(cur.events_per_sec);
  $("kpi-outputs").textContent = rate(cur.outputs_per_sec);
  $("kpi-p50").textContent = ms(cur.batch_p50_ms);
  $("kpi-p99").textContent = ms(cur.batch_p99_ms);
  $("kpi-lag").textContent = int(cur.lag);
  $("kpi-total").textContent = int(snap.totals.events_in);
  $("kpi-dead").textContent = int(snap.totals.dead_letters);
  const flowTotal = (snap.flow || []).reduce((a, f) => a + f.users, 0);
  $("kpi-changes").textContent = int(flowTotal);
  const sent = (snap.campaigns || []).reduce((a, c) => a + c.sent, 0);
  const held = (snap.campaigns || []).reduce((a, c) => a + c.held_out, 0);
  $("kpi-triggers").textContent = int(sent) + " / " + int(held);
  const s = snap.series;
  lineChart($("chart-throughput"), s.t_ms, [
    { name: "events_per_sec", values: s.events_per_sec, color: "var(--events)", fill: true },
    { name: "outputs_per_sec", values: s.outputs_per_sec, color: "var(--outputs)" },
  ], rate);
  lineChart($("chart-latency"), s.t_ms, [
    { name: "batch_p50_ms", values: s.batch_p50_ms, color: "var(--p50)" },
    { name: "batch_p99_ms", values: s.batch_p99_ms, color: "var(--p99)" },
  ], ms);
  lineChart($("chart-lag"), s.t_ms, [{ name: "lag", values: s.lag, color: "var(--lag)", fill: true }], int);
  drawFlow(snap);
  drawTierDist(snap);
  drawCampaigns(snap);
  drawLatest(snap);
  document.body.setAttribute("data-live", "ok");
  document.body.setAttribute("data-updates", String(+(document.body.getAttribute("data-updates") || 0) + 1));
}

async function poll() {
  try {
    const response = await fetch("api/live", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
  } catch (e) {
    const status = $("status");
    status.textContent = "disconnected";
    status.className = "pill off";
  }
}

// ---- one user -----------------------------------------------------------------------------

function openUser(id) {
  id = (id || "").trim();
  const url = new URL(window.location.href);
  if (id) url.searchParams.set("user", id); else url.searchParams.delete("user");
  history.replaceState(null, "", url);
  $("search-input").value = id;
  if (id) loadUser(id); else $("user-view").hidden = true;
}

async function loadUser(id) {
  const view = $("user-view");
  view.hidden = false;
  view.setAttribute("data-user", id);
  view.replaceChildren(el("div", { class: "dim" }, "loading " + id + "…"));
  try {
    const response = await fetch("api/user/" + encodeURIComponent(id), { cache: "no-store" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || "HTTP " + response.status);
    renderUser(view, body);
    view.setAttribute("data-loaded", "ok");
  } catch (e) {
    view.replaceChildren(userHead(id), el("p", { class: "error", id: "user-error" }, String(e.message || e)));
    view.setAttribute("data-loaded", "error");
  }
}

function userHead(id, extra) {
  const close = el("button", { class: "close", type: "button" }, "close");
  close.addEventListener("click", () => openUser(""));
  return el("div", { class: "head" }, el("h2", {}, "User " + id), ...(extra || []), close);
}

function kpi(label, value, attrs) {
  return el("div", Object.assign({ class: "kpi" }, attrs || {}), el("div", { class: "label" }, label), el("div", { class: "value" }, value));
}

function renderUser(view, u) {
  const m = u.model || {};
  const published = u.published || {};
  const head = userHead(u.user_id, [
    el("span", {}, "published ", tierBadge(published.tier), published.since ? el("span", { class: "dim small" }, " since " + when(published.since)) : ""),
    el("span", { class: "dim small" }, "newest event " + when(u.newest_event) + " · first seen " + when(u.first_seen)),
  ]);

  const probs = el("div", { class: "probs", id: "user-probabilities" });
  (m.tier_probabilities || []).forEach((p, t) => {
    probs.append(el("div", { class: "bar-row", "data-tier": String(t) },
      el("span", {}, tierBadge(t)),
      el("div", { class: "bar-track" }, el("div", { class: "bar-fill", style: `width:${(100 * p).toFixed(1)}%;background:${tierColor(t)}` })),
      el("span", { class: "bar-value" }, (100 * p).toFixed(1) + "%")));
  });
  const reasons = el("ul", { class: "reasons" });
  for (const r of m.reason_codes || []) {
    reasons.append(el("li", {}, el("code", {}, r.feature), " ", el("span", { class: r.contribution >= 0 ? "pos" : "neg" }, (r.contribution >= 0 ? "+" : "") + dec(r.contribution, 3))));
  }
  const scores = el("div", { id: "user-scores", "data-tier": String(m.tier), "data-churn-risk": String(m.churn_risk), "data-expected-value": String(m.expected_value) },
    el("div", { class: "scores" },
      kpi("model tier", tierBadge(m.tier)),
      kpi("churn risk", dec(m.churn_risk, 3), { id: "user-churn" }),
      kpi("p(return)", dec(m.p_return, 3)),
      kpi("expected value", money(m.expected_value), { id: "user-expected" })),
    probs,
    el("h3", {}, "reason codes"), reasons,
    el("div", { class: "dim small" }, "model " + (m.model_version || "?") + " · as of " + when(u.as_of)));

  const lifetime = u.lifetime || {};
  const left = el("div", {}, el("h3", {}, "scores now"), scores,
    el("h3", {}, "lifetime"),
    el("div", { class: "small" }, `${int(lifetime.orders)} orders on ${int(lifetime.purchase_days)} days · net spend ${money(lifetime.net_spend)} · first purchase ${when(lifetime.first_purchase)}`));

  const right = el("div", {}, el("h3", {}, "windows"), windowsTable(u.windows || []));
  const history = Array.isArray(u.history) ? u.history : null;
  if (history) {
    right.append(el("h3", {}, "tier history"), tierHistory(history));
    right.append(el("h3", {}, "campaign triggers"), triggerHistory(history));
  }
  const featureList = el("div", { class: "features" });
  for (const [name, value] of Object.entries(u.features || {})) {
    featureList.append(el("div", {}, el("code", {}, name), el("span", {}, dec(value, 4))));
  }
  const features = el("details", { id: "user-features" }, el("summary", {}, `features (${Object.keys(u.features || {}).length}, spec ${u.feature_spec || "?"})`), featureList);
  view.replaceChildren(head, el("div", { class: "cols" }, left, right), features);
}

function windowsTable(windows) {
  const table = el("table", { class: "data", id: "user-windows" });
  const head = el("tr", {}, el("th", {}, "window"));
  for (const w of windows) head.append(el("th", { class: "num", "data-horizon": w.horizon }, w.horizon));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  const types = windows.length ? Object.keys(windows[0].counts || {}) : [];
  const row = (name, cell, cls) => {
    const tr = el("tr", { "data-row": name }, el("th", {}, name));
    for (const w of windows) {
      const v = cell(w);
      tr.append(el("td", { class: "num" + (cls && v !== "0" && v !== "0.00" ? " " + cls : "") }, v));
    }
    body.append(tr);
  };
  for (const t of types) row(t, (w) => int(w.counts[t]));
  row("revenue", (w) => money(w.revenue));
  row("refunds", (w) => money(w.refunds));
  row("sessions", (w) => int(w.sessions));
  row("categories (est.)", (w) => dec(w.categories, 1));
  table.append(body);
  return table;
}

function tierHistory(history) {
  const table = el("table", { class: "data", id: "user-tier-history" },
    el("thead", {}, el("tr", {}, el("th", {}, "event time"), el("th", {}, "move"), el("th", {}, "causing event"), el("th", { class: "num" }, "churn"), el("th", { class: "num" }, "expected"))));
  const body = el("tbody");
  for (const h of history) {
    if (h.type !== "tier_changed" || !h.record) continue;
    const r = h.record;
    body.append(el("tr", {},
      el("td", {}, when(r.event_time)),
      el("td", {}, tierBadge(r.from_tier), el("span", { class: "arrow" }, "→"), tierBadge(r.to_tier)),
      el("td", {}, el("code", {}, r.causing_event_id || "–")),
      el("td", { class: "num" }, dec(r.scores && r.scores.churn_risk, 3)),
      el("td", { class: "num" }, money(r.scores && r.scores.expected_value))));
  }
  if (!body.rows.length) body.append(el("tr", {}, el("td", { colspan: "5", class: "dim" }, "no tier changes")));
  table.append(body);
  return table;
}

function triggerHistory(history) {
  const table = el("table", { class: "data", id: "user-triggers" },
    el("thead", {}, el("tr", {}, el("th", {}, "time"), el("th", {}, "campaign"), el("th", {}, "what"), el("th", {}, "detail"))));
  const body = el("tbody");
  // Newest first by event time (the stored order is the order batches were written in).
  const at = (h) => ((h.type === "campaign_outcome" ? h.record?.purchased_at : h.record?.event_time) || "");
  const sorted = history
    .filter((h) => h.type === "campaign_triggered" || h.type === "campaign_control" || h.type === "campaign_outcome")
    .sort((a, b) => (at(a) < at(b) ? 1 : at(a) > at(b) ? -1 : 0));
  for (const h of sorted) {
    const r = h.record || {};
    if (h.type === "campaign_triggered" || h.type === "campaign_control") {
      body.append(el("tr", { "data-type": h.type },
        el("td", {}, when(r.event_time)),
        el("td", {}, r.campaign),
        el("td", { class: h.type === "campaign_triggered" ? "arm-treated" : "arm-control" }, h.type === "campaign_triggered" ? "sent" : "held out"),
        el("td", { class: "dim" }, `rule ${r.rule || "?"} · tier ${r.tier == null ? "?" : r.tier}`)));
    } else if (h.type === "campaign_outcome") {
      body.append(el("tr", { "data-type": h.type },
        el("td", {}, when(r.purchased_at)),
        el("td", {}, r.campaign),
        el("td", { class: "pos" }, "purchase (" + (r.arm || "?") + ")"),
        el("td", { class: "dim" }, `${money(r.revenue)} ${r.currency || ""} · ${dec((r.delay_ms || 0) / 3600000, 1)} h after the trigger`)));
    }
  }
  if (!body.rows.length) body.append(el("tr", {}, el("td", { colspan: "4", class: "dim" }, "no triggers")));
  table.append(body);
  return table;
}

// ---- start --------------------------------------------------------------------------------

$("search").addEventListener("submit", (e) => { e.preventDefault(); openUser($("search-input").value); });
const wanted = new URLSearchParams(window.location.search).get("user");
if (wanted) openUser(wanted);
poll();
setInterval(poll, 1000);
