// Line charts as plain SVG: a few series over optimizer steps, y axis with round ticks, and the
// latest value of each series in the legend. Each series is downsampled to at most ~2 points per
// horizontal pixel (min and max of each bucket, so spikes stay visible), so a run with thousands
// of steps draws as fast as one with fifty.

import { h, value } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const PAD = { l: 52, r: 12, t: 10, b: 26 };

function svg(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/**
 * Keeps at most 2·buckets points of `points` (sorted by x): first, last, and each bucket's
 * minimum and maximum in x order.
 */
export function downsample(points, buckets) {
  if (points.length <= 2 * buckets) return points;
  const out = [];
  const size = points.length / buckets;
  for (let b = 0; b < buckets; b++) {
    const from = Math.floor(b * size), to = Math.min(points.length, Math.floor((b + 1) * size));
    let lo = from, hi = from;
    for (let i = from; i < to; i++) {
      if (points[i].y < points[lo].y) lo = i;
      if (points[i].y > points[hi].y) hi = i;
    }
    if (lo === hi) out.push(points[lo]);
    else if (lo < hi) out.push(points[lo], points[hi]);
    else out.push(points[hi], points[lo]);
  }
  if (out[0] !== points[0]) out.unshift(points[0]);
  if (out[out.length - 1] !== points[points.length - 1]) out.push(points[points.length - 1]);
  return out;
}

/** Round tick values (1, 2, 5 × 10^k apart) from one at or below min to one at or above max. */
export function ticks(min, max, count = 5) {
  if (min === max) { min -= 1; max += 1; }
  const raw = (max - min) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw);
  const out = [];
  const last = Math.ceil(max / step - 1e-9) * step;
  for (let v = Math.floor(min / step + 1e-9) * step; v <= last + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/**
 * Labels for round ticks with as many digits as their spacing needs (9.995e-4 and 9.990e-4, not
 * 9.99e-4 twice); exponent form for the whole axis when its largest tick is under 0.01.
 */
export function tickLabels(ts) {
  const step = ts.length > 1 ? ts[1] - ts[0] : 1;
  const stepExp = Math.floor(Math.log10(step) + 1e-9);
  const big = Math.max(...ts.map(Math.abs));
  if (big > 0 && (big < 1e-2 || big >= 1e6)) {
    const smallest = Math.min(...ts.filter(t => t !== 0).map(Math.abs));
    const digits = Math.min(6, Math.max(0, Math.floor(Math.log10(smallest) + 1e-9) - stepExp));
    return ts.map(t => (t === 0 ? '0' : t.toExponential(digits)));
  }
  return ts.map(t => t.toFixed(Math.min(6, Math.max(0, -stepExp))));
}

export class LineChart {
  /** names: the series, e.g. ['train.loss', 'val.loss']; wide: spans the whole row of a grid. */
  constructor(title, names, { wide = false } = {}) {
    this.names = names;
    // Drawing units ≈ CSS pixels at the usual widths, so labels keep their size.
    [this.w, this.h] = wide ? [1100, 260] : [540, 220];
    this.svg = svg('svg', { viewBox: `0 0 ${this.w} ${this.h}`, role: 'img', 'aria-label': title });
    this.legend = h('div', { class: 'legend' });
    this.el = h('div', { class: wide ? 'card chart wide' : 'card chart', 'data-chart': title }, h('h2', {}, title), this.svg, this.legend);
    this.draw(new Map());
  }

  /** series: Map name → [{x: step, y: value}] sorted by x. */
  draw(series) {
    const svgEl = this.svg, W = this.w, H = this.h;
    svgEl.replaceChildren();
    const all = this.names.flatMap(n => series.get(n) || []);
    this.legend.replaceChildren(...this.names.map((n, i) => {
      const pts = series.get(n) || [];
      const last = pts[pts.length - 1];
      return h('span', { 'data-series': n, 'data-count': pts.length },
        h('span', { class: `swatch s${i}` }), n, last ? ` ${value(last.y)} @ ${last.x}` : ' –');
    }));
    if (all.length === 0) {
      svgEl.append(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' }, 'no points yet'));
      return;
    }
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const p of all) {
      if (p.x < x0) x0 = p.x; if (p.x > x1) x1 = p.x;
      if (p.y < y0) y0 = p.y; if (p.y > y1) y1 = p.y;
    }
    const yt = ticks(y0, y1);
    y0 = Math.min(y0, yt[0]); y1 = Math.max(y1, yt[yt.length - 1]);
    if (y0 === y1) { y0 -= 1; y1 += 1; }
    if (x0 === x1) { x1 = x0 + 1; }
    const px = x => PAD.l + ((x - x0) / (x1 - x0)) * (W - PAD.l - PAD.r);
    const py = y => H - PAD.b - ((y - y0) / (y1 - y0)) * (H - PAD.t - PAD.b);

    const labels = tickLabels(yt);
    yt.forEach((t, i) => {
      svgEl.append(svg('line', { x1: PAD.l, x2: W - PAD.r, y1: py(t), y2: py(t), class: 'gridline' }));
      svgEl.append(svg('text', { x: PAD.l - 6, y: py(t) + 3, 'text-anchor': 'end' }, labels[i]));
    });
    for (const t of ticks(x0, x1, 6).filter(t => Number.isInteger(t) && t >= x0 && t <= x1)) {
      svgEl.append(svg('text', { x: px(t), y: H - 8, 'text-anchor': 'middle' }, String(t)));
    }
    svgEl.append(svg('line', { x1: PAD.l, x2: PAD.l, y1: PAD.t, y2: H - PAD.b, class: 'axis' }));
    svgEl.append(svg('line', { x1: PAD.l, x2: W - PAD.r, y1: H - PAD.b, y2: H - PAD.b, class: 'axis' }));

    const colors = ['#2563eb', '#ea580c', '#16a34a'];
    this.names.forEach((n, i) => {
      const pts = series.get(n) || [];
      if (pts.length === 0) return;
      const drawn = downsample(pts, Math.floor((W - PAD.l - PAD.r) / 2));
      const d = drawn.map((p, j) => `${j ? 'L' : 'M'}${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join('');
      svgEl.append(svg('path', { d, fill: 'none', stroke: colors[i % colors.length], 'stroke-width': 1.6, 'data-series': n, 'data-count': pts.length, 'data-drawn': drawn.length }));
      // A lone point (one validation pass) is a dot, since a one-point path draws nothing.
      if (pts.length === 1 || n.startsWith('val.')) {
        for (const p of drawn.slice(-50)) svgEl.append(svg('circle', { cx: px(p.x), cy: py(p.y), r: 2.5, fill: colors[i % colors.length] }));
      }
    });
  }
}
