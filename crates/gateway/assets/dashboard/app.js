// The pgpilot dashboard: polls the monitoring API and renders it. Pool statistics are sampled every
// 2 s and kept in the page for the charts (10 minutes); features that are not enabled (the API
// answers 404) are shown as such. All data goes through textContent: nothing from the API is parsed
// as HTML.
"use strict";

const POLL_MS = 2000;
const SLOW_POLL_MS = 10000;
const HISTORY_MS = 10 * 60 * 1000;
const TOKEN_KEY = "pgpilot.apiToken";

const state = {
  token: localStorage.getItem(TOKEN_KEY) || "",
  paused: false,
  sort: "total_time",
  updates: 0,
  poolHistory: new Map(), // pool key -> [[t, utilization %]]
  tpsHistory: [],
  lagHistory: new Map(), // server -> [[t, seconds]]
  prevPools: null, // {t, transactions}
  prevCalls: null, // {t, calls}
  slowTick: 0,
  health: null,
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// ---------- helpers ----------

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k === "style") Object.assign(e.style, v); // CSSOM: allowed by the page's CSP, unlike style attributes
    else if (k.startsWith("data-")) e.setAttribute(k, String(v));
    else if (k === "title") e.title = String(v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}

function replaceRows(tbody, rows, columns, emptyText) {
  while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
  if (rows.length === 0) {
    tbody.appendChild(el("tr", {}, el("td", { class: "empty", colspan: columns }, emptyText)));
    return;
  }
  for (const r of rows) tbody.appendChild(r);
}

const intFmt = new Intl.NumberFormat("en-US");
const fmtInt = (n) => (n === undefined || n === null ? "–" : intFmt.format(Math.round(n)));

function fmtMs(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms)) return "–";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 100) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}

function fmtRate(v) {
  if (v === undefined || v === null) return "–";
  if (v >= 100) return fmtInt(v);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

const fmtPct = (f, digits = 1) => (f === undefined || f === null ? "–" : `${(f * 100).toFixed(digits)}%`);

function fmtBytes(b) {
  if (b === undefined || b === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) {
    b /= 1024;
    i++;
  }
  return `${i === 0 ? b : b.toFixed(1)} ${units[i]}`;
}

function level(value, warning, critical) {
  if (value >= critical) return "critical";
  if (value >= warning) return "warning";
  return "ok";
}

function setKpi(id, value, sub, cls) {
  const v = $(id);
  v.textContent = value;
  v.className = "kpi-value" + (cls && cls !== "ok" ? ` ${cls}` : "");
  $(`${id}-sub`).textContent = sub || "";
}

function pushHistory(list, point) {
  list.push(point);
  const cutoff = Date.now() - HISTORY_MS;
  while (list.length && list[0][0] < cutoff) list.shift();
}

// ---------- API ----------

// `missing`: what a 404 stands for (null; or, with { missingBody: true }, { missing: body } so the
// caller can say why, as the advisor's 404 does).
async function api(path, options, missing) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const res = await fetch(path, Object.assign({ headers, cache: "no-store" }, options || {}));
  if (res.status === 401) {
    askForToken(true);
    throw new ApiError(401, "the API wants a bearer token");
  }
  if (res.status === 404) {
    if (!(missing && missing.missingBody)) return null;
    return { missing: await res.json().catch(() => ({})) };
  }
  if (!res.ok) throw new ApiError(res.status, `${path}: HTTP ${res.status}`);
  return res.json();
}

function askForToken(rejected) {
  const dialog = $("token-dialog");
  if (dialog.open) return;
  $("token-input").value = "";
  if (rejected) showBanner(state.token ? "The API token was refused: enter a valid one." : "The API needs a token.");
  if (typeof dialog.showModal === "function") dialog.showModal();
}

function showBanner(text) {
  const b = $("banner");
  b.textContent = text;
  b.hidden = !text;
}

// ---------- renderers ----------

function poolKey(p) {
  return `${p.database}/${p.user}@${p.server}`;
}

function renderPools(stats, now) {
  const pools = stats.pools || [];
  let transactions = 0;
  let active = 0;
  let waiting = 0;
  const rows = pools
    .slice()
    .sort((a, b) => poolKey(a).localeCompare(poolKey(b)))
    .map((p) => {
      transactions += p.transactions;
      active += p.clients_active;
      waiting += p.clients_waiting;
      const key = poolKey(p);
      if (!state.poolHistory.has(key)) state.poolHistory.set(key, []);
      pushHistory(state.poolHistory.get(key), [now, p.utilization * 100]);
      const lvl = level(p.utilization, 0.8, 0.95);
      const meter = el("span", { class: `meter ${lvl}` }, el("span", { style: { width: `${Math.min(100, p.utilization * 100).toFixed(1)}%` } }));
      return el(
        "tr",
        { "data-pool": key },
        el("td", {}, p.database),
        el("td", {}, p.user),
        el("td", {}, p.server),
        el("td", {}, p.role),
        el("td", {}, p.pool_mode),
        el("td", { class: "num" }, fmtInt(p.pool_size)),
        el("td", { class: "num", "data-test": "servers-active" }, fmtInt(p.servers_active)),
        el("td", { class: "num" }, fmtInt(p.servers_idle)),
        el("td", { class: "num", "data-test": "clients-waiting" }, fmtInt(p.clients_waiting)),
        el("td", {}, meter, fmtPct(p.utilization, 0)),
        el("td", { class: "num", "data-test": "transactions" }, fmtInt(p.transactions)),
        el("td", { class: "num", "data-test": "queries" }, fmtInt(p.queries)),
        el("td", { class: "num" }, fmtMs(p.avg_wait_us / 1000)),
        el("td", { class: "num" }, fmtMs(p.avg_xact_us / 1000)),
      );
    });
  replaceRows($("pools").tBodies[0], rows, 14, "No pools yet: they open with the first client of each database and user.");
  $("pools-note").textContent = `${fmtInt(stats.clients)} clients of max_client_conn ${fmtInt(stats.max_client_conn)}`;

  const prev = state.prevPools;
  if (prev && now > prev.t && transactions >= prev.transactions) {
    const tps = ((transactions - prev.transactions) * 1000) / (now - prev.t);
    pushHistory(state.tpsHistory, [now, tps]);
    setKpi("kpi-tps", fmtRate(tps), `${fmtInt(transactions)} in total`);
  } else {
    setKpi("kpi-tps", "–", `${fmtInt(transactions)} in total`);
  }
  state.prevPools = { t: now, transactions };
  setKpi("kpi-clients", fmtInt(stats.clients), `${fmtInt(active)} active · ${fmtInt(waiting)} waiting`, waiting > 0 ? "warning" : "ok");

  const series = [...state.poolHistory.entries()].map(([name, points]) => ({ name, points }));
  pgCharts.lineChart($("chart-utilization"), series, { windowMs: HISTORY_MS, yMax: 100, threshold: 80, format: (v) => `${v}%` });
  const legend = $("legend-utilization");
  while (legend.firstChild) legend.removeChild(legend.firstChild);
  series.forEach((s, i) => {
    legend.appendChild(el("span", {}, el("span", { class: "swatch", style: { background: pgCharts.PALETTE[i % pgCharts.PALETTE.length] } }), s.name));
  });
  pgCharts.lineChart($("chart-tps"), [{ name: "transactions/s", points: state.tpsHistory }], { windowMs: HISTORY_MS, format: (v) => fmtRate(v) });
}

function routeBar(s) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "route");
  svg.setAttribute("width", "90");
  svg.setAttribute("height", "10");
  const parts = [
    { name: "primary", value: s.primary_calls, color: "var(--primary)" },
    { name: "replica", value: s.replica_calls, color: "var(--replica)" },
    { name: "cache", value: s.cache_hits, color: "var(--cache)" },
  ];
  const total = parts.reduce((a, p) => a + p.value, 0) || 1;
  let x = 0;
  for (const p of parts) {
    if (!p.value) continue;
    const w = (p.value / total) * 90;
    const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    r.setAttribute("x", x);
    r.setAttribute("width", Math.max(w, 1));
    r.setAttribute("height", 10);
    r.style.fill = p.color;
    const t = document.createElementNS("http://www.w3.org/2000/svg", "title");
    t.textContent = `${p.name}: ${fmtInt(p.value)}`;
    r.appendChild(t);
    svg.appendChild(r);
    x += w;
  }
  return svg;
}

function renderStatements(data, now) {
  const rows = (data.statements || []).map((s) => {
    const sql = el("td", { class: "sql", title: "click to show it all" }, el("span", { class: "text" }, s.query));
    sql.addEventListener("click", () => sql.classList.toggle("open"));
    return el(
      "tr",
      { "data-fingerprint": s.fingerprint },
      sql,
      el("td", {}, s.database),
      el("td", {}, s.user),
      el("td", { class: "num", "data-test": "calls" }, fmtInt(s.calls)),
      el("td", { class: "num", "data-test": "total" }, fmtMs(s.total_time_ms)),
      el("td", { class: "num" }, fmtMs(s.mean_time_ms)),
      el("td", { class: "num", "data-test": "p95" }, fmtMs(s.p95_ms)),
      el("td", { class: "num" }, fmtMs(s.p99_ms)),
      el("td", { class: "num" }, fmtMs(s.max_time_ms)),
      el("td", { class: "num", "data-test": "errors" }, fmtInt(s.errors)),
      el("td", { class: "num" }, fmtInt(s.rows)),
      el("td", {}, routeBar(s)),
    );
  });
  replaceRows($("statements").tBodies[0], rows, 12, "No statements recorded yet.");
  const sum = data.summary || {};
  $("statements-note").textContent = `${fmtInt(sum.tracked)} of at most ${fmtInt(sum.max_statements)} statements tracked · ${fmtInt(sum.calls)} calls`;

  const prev = state.prevCalls;
  if (prev && now > prev.t && sum.calls >= prev.calls) {
    setKpi("kpi-sps", fmtRate(((sum.calls - prev.calls) * 1000) / (now - prev.t)), `${fmtInt(sum.calls)} in total`);
  } else {
    setKpi("kpi-sps", "–", `${fmtInt(sum.calls)} in total`);
  }
  state.prevCalls = { t: now, calls: sum.calls };

  const parts = [
    { name: "Primary", value: sum.primary_calls || 0, color: "var(--primary)" },
    { name: "Replicas", value: sum.replica_calls || 0, color: "var(--replica)" },
    { name: "Cache", value: sum.cache_hits || 0, color: "var(--cache)" },
  ];
  pgCharts.stackedBar($("routing-bar"), parts);
  const total = parts.reduce((a, p) => a + p.value, 0);
  const legend = $("routing");
  while (legend.firstChild) legend.removeChild(legend.firstChild);
  for (const p of parts) {
    legend.appendChild(
      el("span", { "data-test": `routing-${p.name.toLowerCase()}` }, el("span", { class: "swatch", style: { background: p.color } }), `${p.name} ${total ? fmtPct(p.value / total, 1) : "–"} (${fmtInt(p.value)})`),
    );
  }
}

function renderHealth(h) {
  state.health = h;
  const pill = $("status");
  pill.textContent = h.status;
  pill.className = `pill ${h.status}`;
  const checks = (h.checks || []).slice().sort((a, b) => rank(b.status) - rank(a.status));
  const list = $("health");
  while (list.firstChild) list.removeChild(list.firstChild);
  for (const c of checks) {
    list.appendChild(el("li", { "data-status": c.status }, el("span", { class: `dot ${c.status}` }), el("span", {}, c.message)));
  }
  const r = h.rates || {};
  $("health-note").textContent = r.window_seconds ? `rates over the last ${Math.round(r.window_seconds)} s` : "";
  const t = h.thresholds || {};
  setKpi("kpi-errors", fmtPct(r.error_rate, 2), `${fmtInt(r.errors)} of ${fmtInt(r.statements)} · ${fmtRate(r.slow_queries_per_second)} slow/s`, level(r.error_rate || 0, t.error_rate_warning ?? 0.01, t.error_rate_critical ?? 0.05));
  renderServers(h.servers || []);
}

function rank(s) {
  return s === "critical" ? 2 : s === "warning" ? 1 : 0;
}

function renderServers(servers) {
  const box = $("servers");
  while (box.firstChild) box.removeChild(box.firstChild);
  if (servers.length === 0) {
    box.appendChild(el("p", { class: "empty" }, "No probe results yet (server_probe_interval)."));
    return;
  }
  const list = el("ul", { class: "checks" });
  for (const s of servers) {
    const usable = (s.max_connections || 0) - (s.superuser_reserved_connections || 0);
    const usage = s.connections !== null && s.connections !== undefined && usable > 0 ? s.connections / usable : null;
    const lvl = !s.up ? "critical" : usage === null ? "ok" : level(usage, 0.8, 0.95);
    const text = s.up ? `${s.server} (${s.role}): ${fmtInt(s.connections)} / ${fmtInt(s.max_connections)} backends` : `${s.server} (${s.role}): ${s.error || "down"}`;
    const meter = usage === null ? null : el("span", { class: `meter ${lvl}` }, el("span", { style: { width: `${Math.min(100, usage * 100).toFixed(1)}%` } }));
    list.appendChild(el("li", { "data-server": s.server }, el("span", { class: `dot ${lvl}` }), el("span", {}, meter, text)));
  }
  box.appendChild(list);
}

function lagRow(r) {
  return el(
    "tr",
    { "data-server": r.server },
    el("td", {}, r.database || "–"),
    el("td", {}, r.server),
    el("td", {}, r.state || "–"),
    el("td", { class: "num", "data-test": "lag" }, r.lag_seconds === null || r.lag_seconds === undefined ? "–" : fmtMs(r.lag_seconds * 1000)),
    el("td", { class: "num" }, fmtBytes(r.lag_bytes)),
    el("td", { class: "num" }, r.reads_routed === undefined ? "–" : fmtInt(r.reads_routed)),
    el("td", { class: "num" }, r.outstanding === undefined ? "–" : fmtInt(r.outstanding)),
  );
}

function renderLag(rows, source) {
  const now = Date.now();
  let max = null;
  for (const r of rows) {
    if (r.lag_seconds === null || r.lag_seconds === undefined) continue;
    max = max === null ? r.lag_seconds : Math.max(max, r.lag_seconds);
    if (!state.lagHistory.has(r.server)) state.lagHistory.set(r.server, []);
    pushHistory(state.lagHistory.get(r.server), [now, r.lag_seconds]);
  }
  replaceRows($("replicas").tBodies[0], rows.map(lagRow), 7, "No replicas configured.");
  const series = [...state.lagHistory.entries()].map(([name, points]) => ({ name, points }));
  pgCharts.lineChart($("chart-lag"), series, { windowMs: HISTORY_MS, format: (v) => `${v}s`, threshold: 1 });
  const t = (state.health && state.health.thresholds) || {};
  const warn = parseSeconds(t.replica_lag_warning, 1);
  const crit = parseSeconds(t.replica_lag_critical, 30);
  if (max === null) setKpi("kpi-lag", rows.length ? "–" : "none", rows.length ? "not measured yet" : "no replicas");
  else setKpi("kpi-lag", fmtMs(max * 1000), source, level(max, warn, crit));
}

// Durations in the config serialize as humantime strings ("1s", "500ms", "2m").
function parseSeconds(text, fallback) {
  if (typeof text === "number") return text;
  if (typeof text !== "string") return fallback;
  let total = 0;
  const re = /([\d.]+)\s*(ms|s|m|h)/g;
  let m;
  let any = false;
  while ((m = re.exec(text))) {
    any = true;
    total += parseFloat(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
  }
  return any ? total : fallback;
}

function renderReplicas(data) {
  if (data === null) {
    replaceRows($("replicas").tBodies[0], [], 7, "Replica lag is not measured by this pgpilot.");
    setKpi("kpi-lag", "–", "not measured");
    return;
  }
  const rows = (data.replicas || [])
    .filter((r) => r.role !== "primary")
    .map((r) => Object.assign({}, r, { state: r.banned ? "banned" : r.state }));
  renderLag(rows, "measured by the router");
}

function renderCache(c) {
  const box = $("cache");
  while (box.firstChild) box.removeChild(box.firstChild);
  if (c === null || !c.enabled) {
    box.appendChild(el("p", { class: "empty" }, c === null ? "The result cache is not enabled in this pgpilot." : "The result cache is off."));
    setKpi("kpi-cache", "off", "result cache not enabled");
    return;
  }
  const lookups = c.hits + c.misses;
  box.appendChild(el("div", { class: "big-number", "data-test": "cache-hit-rate" }, lookups ? fmtPct(c.hit_rate) : "–"));
  box.appendChild(el("p", { class: "muted" }, `${fmtInt(c.hits)} hits · ${fmtInt(c.misses)} misses · ${fmtInt(c.entries)} entries · ${fmtBytes(c.bytes)}`));
  const reasons = Object.entries(c.bypasses || {}).sort((a, b) => b[1] - a[1]);
  if (reasons.length) {
    const list = el("ul", { class: "checks" });
    for (const [reason, n] of reasons.slice(0, 8)) list.appendChild(el("li", {}, el("span", { class: "dot" }), el("span", {}, `${reason}: ${fmtInt(n)} bypassed`)));
    box.appendChild(list);
  }
  setKpi("kpi-cache", lookups ? fmtPct(c.hit_rate) : "–", `${fmtInt(c.hits)} hits of ${fmtInt(lookups)}`, lookups ? level(1 - c.hit_rate, 0.2, 0.5) : "ok");
}

function renderAdvisor(report) {
  const box = $("advisor");
  while (box.firstChild) box.removeChild(box.firstChild);
  if (report === null || report.missing) {
    box.appendChild(el("p", { class: "empty" }, advisorAbsence(report && report.missing)));
    $("advisor-note").textContent = (report && report.missing && report.missing.database) || "";
    return;
  }
  const when = report.generated_at_unix ? new Date(report.generated_at_unix * 1000).toLocaleString() : "";
  const failed = report.last_error ? ` · last refresh failed: ${report.last_error}` : "";
  $("advisor-note").textContent = `${report.database || ""} · ${when}${failed}`;
  const list = el("ul", { class: "findings" });
  const order = { critical: 0, warning: 1, info: 2 };
  const findings = (report.findings || []).slice().sort((a, b) => (order[a.severity] ?? 3) - (order[b.severity] ?? 3));
  for (const f of findings) {
    list.appendChild(
      el("li", { "data-severity": f.severity }, el("span", { class: `sev ${f.severity}` }, f.severity), el("strong", {}, f.title), f.object ? el("span", { class: "muted" }, ` · ${f.object}`) : null, f.fix ? el("span", { class: "fix" }, f.fix) : null),
    );
  }
  for (const s of report.index_suggestions || []) {
    list.appendChild(el("li", { "data-severity": "index" }, el("span", { class: "sev warning" }, "index"), el("strong", {}, s.rationale || `Index on ${s.table}`), el("code", {}, s.create_statement)));
  }
  if (!list.firstChild) list.appendChild(el("li", {}, "No findings: the last run found nothing to fix."));
  box.appendChild(list);
}

// Why there is no report: the advisor's own words (off, no such database, a run that failed and
// why, the first run under way).
function advisorAbsence(missing) {
  if (!missing) return "No advisor report yet. Run `pgpilot advise` to check the database.";
  if (missing.status === "running") return "The advisor's first check of the database is running; its report shows here when done.";
  if (missing.status === "failed") return `The advisor could not check the database: ${missing.error}`;
  return `No advisor report: ${missing.error || "the advisor is not available"}`;
}

function renderSlow(data) {
  const rows = (data.slow_queries || []).map((q) =>
    el(
      "tr",
      { "data-fingerprint": q.fingerprint },
      el("td", { class: "num" }, new Date(q.at_unix_ms).toLocaleTimeString()),
      el("td", { class: "sql" }, el("span", { class: "text" }, q.query)),
      el("td", {}, q.database),
      el("td", {}, q.user),
      el("td", {}, q.client),
      el("td", {}, q.server),
      el("td", { class: "num", "data-test": "duration" }, fmtMs(q.duration_ms)),
      el("td", { class: "num" }, fmtInt(q.rows)),
      el("td", {}, q.error || ""),
    ),
  );
  replaceRows($("slow").tBodies[0], rows, 9, "No slow statements.");
  $("slow-note").textContent = `slower than ${fmtMs(data.log_min_duration_ms)} (log_min_duration)`;
}

// ---------- polling ----------

async function settle(promise, render) {
  try {
    render(await promise);
    return true;
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) console.warn(e);
    return e instanceof ApiError && e.status === 401 ? "auth" : false;
  }
}

async function tick() {
  if (state.paused) return;
  const now = Date.now();
  const slow = state.slowTick++ % (SLOW_POLL_MS / POLL_MS) === 0;
  const jobs = [
    settle(api("/api/v1/monitoring/pool-stats"), (d) => renderPools(d, now)),
    settle(api(`/api/v1/monitoring/statements?sort=${encodeURIComponent(state.sort)}&limit=15`), (d) => renderStatements(d, now)),
    settle(api("/api/v1/monitoring/health"), renderHealth),
    settle(api("/api/v1/monitoring/slow-queries?limit=15"), renderSlow),
    settle(api("/api/v1/monitoring/replicas"), renderReplicas),
    settle(api("/api/v1/cache/stats"), renderCache),
  ];
  if (slow) jobs.push(settle(api("/api/v1/advisor/findings", null, { missingBody: true }), renderAdvisor));
  const results = await Promise.all(jobs);
  if (results.includes("auth")) {
    // Refused for want of a token: the slow items are due again as soon as one is given.
    state.slowTick = 0;
    return;
  }
  if (results.every((r) => r === false)) {
    showBanner("pgpilot does not answer: is it running?");
    $("status").textContent = "unreachable";
    $("status").className = "pill critical";
    return;
  }
  showBanner("");
  state.updates++;
  document.body.dataset.updates = String(state.updates);
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function start() {
  $("sort").addEventListener("change", (e) => {
    state.sort = e.target.value;
    tick();
  });
  $("pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("pause").textContent = state.paused ? "Resume" : "Pause";
    if (!state.paused) tick();
  });
  $("token-button").addEventListener("click", () => askForToken(false));
  $("token-cancel").addEventListener("click", () => $("token-dialog").close());
  $("token-forget").addEventListener("click", () => {
    state.token = "";
    localStorage.removeItem(TOKEN_KEY);
    $("token-dialog").close();
  });
  const save = () => {
    state.token = $("token-input").value.trim();
    if (state.token) localStorage.setItem(TOKEN_KEY, state.token);
    else localStorage.removeItem(TOKEN_KEY);
    $("token-dialog").close();
    showBanner("");
    tick();
  };
  $("token-save").addEventListener("click", save);
  $("token-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter") save();
  });
  window.addEventListener("resize", () => tick());
  tick();
  setInterval(tick, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
