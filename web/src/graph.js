// A time-series line graph on a <canvas>, with its legend as text list items.
// No chart library: a few lines of 2D context drawing.

const COLORS = ["#1f5fa8", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490", "#a16207", "#be185d"];

export class Graph {
  // canvas: the <canvas>; legend: the <ul> for series names; windowMs: how much history to keep.
  constructor(canvas, legend, { windowMs = 5 * 60 * 1000, fixedMax = null, unit = "" } = {}) {
    this.canvas = canvas;
    this.legend = legend;
    this.windowMs = windowMs;
    this.fixedMax = fixedMax;
    this.unit = unit;
    this.series = new Map();
  }

  // Adds one sample of the series `name` at time `t` (ms).
  add(name, t, value) {
    if (!Number.isFinite(value)) return;
    let points = this.series.get(name);
    if (!points) {
      points = [];
      this.series.set(name, points);
    }
    points.push([t, value]);
    while (points.length && points[0][0] < t - this.windowMs) points.shift();
  }

  draw(now) {
    const c = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * ratio));
    const h = Math.max(1, Math.round(c.clientHeight * ratio));
    if (c.width !== w || c.height !== h) {
      c.width = w;
      c.height = h;
    }
    const g = c.getContext("2d");
    g.clearRect(0, 0, w, h);
    let max = this.fixedMax;
    if (max === null) {
      max = 0;
      for (const points of this.series.values()) for (const [, v] of points) max = Math.max(max, v);
      max = niceCeiling(max);
    }
    const left = 44 * ratio, bottom = h - 14 * ratio, top = 6 * ratio, right = w - 4 * ratio;
    g.font = `${11 * ratio}px system-ui, sans-serif`;
    g.fillStyle = "#5b6570";
    g.strokeStyle = "#d5dae0";
    g.lineWidth = 1;
    for (const frac of [0, 0.5, 1]) {
      const y = bottom - (bottom - top) * frac;
      g.beginPath();
      g.moveTo(left, y);
      g.lineTo(right, y);
      g.stroke();
      g.fillText(formatNumber(max * frac), 2 * ratio, y + 4 * ratio);
    }
    g.fillText(`-${Math.round(this.windowMs / 60000)} min`, left, h - 2 * ratio);
    g.fillText("now", right - 22 * ratio, h - 2 * ratio);
    const x = (t) => left + (right - left) * (1 - (now - t) / this.windowMs);
    const y = (v) => bottom - (bottom - top) * (max > 0 ? Math.min(v, max) / max : 0);
    const names = [...this.series.keys()].sort();
    g.lineWidth = 1.5 * ratio;
    names.forEach((name, i) => {
      const points = this.series.get(name);
      g.strokeStyle = COLORS[i % COLORS.length];
      g.beginPath();
      points.forEach(([t, v], j) => (j ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
      g.stroke();
    });
    // The legend: name and latest value, as text.
    const items = names.map((name, i) => {
      const li = document.createElement("li");
      li.style.setProperty("--swatch", COLORS[i % COLORS.length]);
      const points = this.series.get(name);
      const last = points.length ? points[points.length - 1][1] : NaN;
      li.textContent = `${name}: ${formatNumber(last)}${this.unit}`;
      return li;
    });
    this.legend.replaceChildren(...items);
  }
}

function niceCeiling(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export function formatNumber(v) {
  if (!Number.isFinite(v)) return "-";
  if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (Math.abs(v) >= 100) return v.toFixed(0);
  return v.toFixed(1);
}
