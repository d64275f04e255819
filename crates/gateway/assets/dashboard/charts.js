// Small SVG charts for the pgpilot dashboard: a time-series line chart and a stacked bar.
// No library, no build step: every element is created with the DOM API.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

// A palette that reads on light and dark backgrounds.
const PALETTE = ["#4f8cff", "#2ec4a6", "#f5a524", "#e5484d", "#a36bff", "#2bb5d8", "#ff7ab6", "#8fa1b3"];

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

// series: [{name, color?, points: [[timeMs, value], ...]}]
// opts: {windowMs, yMax (fixed) or undefined (auto), format(v) -> label, height}
function lineChart(svg, series, opts) {
  const width = svg.clientWidth || 600;
  const height = opts.height || 180;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  clear(svg);
  const pad = { l: 48, r: 8, t: 8, b: 20 };
  const now = Date.now();
  const t0 = now - opts.windowMs;
  let ymax = opts.yMax;
  if (ymax === undefined) {
    let m = 0;
    for (const s of series) for (const [, v] of s.points) if (v > m) m = v;
    ymax = niceMax(m);
  }
  const x = (t) => pad.l + ((t - t0) / opts.windowMs) * (width - pad.l - pad.r);
  const y = (v) => pad.t + (1 - Math.min(v, ymax) / ymax) * (height - pad.t - pad.b);
  const fmt = opts.format || ((v) => String(v));
  for (let i = 0; i <= 4; i++) {
    const v = (ymax * i) / 4;
    svg.appendChild(svgEl("line", { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: "grid" }));
    const label = svgEl("text", { x: pad.l - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" });
    label.textContent = fmt(v);
    svg.appendChild(label);
  }
  for (const ago of [0, opts.windowMs / 2, opts.windowMs]) {
    const label = svgEl("text", { x: x(now - ago), y: height - 4, class: "axis", "text-anchor": ago === 0 ? "end" : ago === opts.windowMs ? "start" : "middle" });
    label.textContent = ago === 0 ? "now" : `-${Math.round(ago / 60000)} min`;
    svg.appendChild(label);
  }
  series.forEach((s, i) => {
    const pts = s.points.filter(([t]) => t >= t0);
    if (pts.length === 0) return;
    const color = s.color || PALETTE[i % PALETTE.length];
    const d = pts.map(([t, v], j) => `${j ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join("");
    if (series.length === 1) {
      const area = `${d}L${x(pts[pts.length - 1][0]).toFixed(1)},${y(0)}L${x(pts[0][0]).toFixed(1)},${y(0)}Z`;
      svg.appendChild(svgEl("path", { d: area, fill: color, "fill-opacity": 0.12, stroke: "none" }));
    }
    const path = svgEl("path", { d, fill: "none", stroke: color, "stroke-width": 2, "stroke-linejoin": "round" });
    const title = svgEl("title");
    title.textContent = s.name;
    path.appendChild(title);
    svg.appendChild(path);
  });
  if (opts.threshold !== undefined && opts.threshold <= ymax) {
    svg.appendChild(svgEl("line", { x1: pad.l, x2: width - pad.r, y1: y(opts.threshold), y2: y(opts.threshold), class: "threshold" }));
  }
}

// parts: [{name, value, color}] drawn as one horizontal stacked bar.
function stackedBar(svg, parts) {
  const width = svg.clientWidth || 300;
  const height = 18;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  clear(svg);
  const total = parts.reduce((a, p) => a + p.value, 0);
  if (total <= 0) {
    svg.appendChild(svgEl("rect", { x: 0, y: 0, width, height, rx: 4, class: "empty-bar" }));
    return;
  }
  let at = 0;
  for (const p of parts) {
    if (p.value <= 0) continue;
    const w = (p.value / total) * width;
    const r = svgEl("rect", { x: at, y: 0, width: Math.max(w, 1), height });
    r.style.fill = p.color;
    const title = svgEl("title");
    title.textContent = `${p.name}: ${p.value}`;
    r.appendChild(title);
    svg.appendChild(r);
    at += w;
  }
}

window.pgCharts = { lineChart, stackedBar, PALETTE };
