// Tokens over time as stacked bars, in inline SVG built with DOM calls (no library, no markup strings).

import { h, s } from './dom.js';
import { compact, dateTime, int } from './format.js';

export const SERIES = [
  { key: 'cacheRead', label: 'Cache read', cls: 'series-cache-read' },
  { key: 'cacheWrite', label: 'Cache write', cls: 'series-cache-write' },
  { key: 'input', label: 'Input', cls: 'series-input' },
  { key: 'output', label: 'Output', cls: 'series-output' },
];

const MINUTE = 60_000;
const BUCKETS = [MINUTE, 5 * MINUTE, 15 * MINUTE, 60 * MINUTE, 3 * 60 * MINUTE, 6 * 60 * MINUTE, 24 * 60 * MINUTE];
const MAX_BARS = 48;

const shortTime = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
const shortDay = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const shortDayTime = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });

/** Local-time bucket start (so day buckets begin at local midnight). */
function bucketStart(ts, size) {
  const offset = new Date(ts).getTimezoneOffset() * MINUTE;
  return Math.floor((ts - offset) / size) * size + offset;
}

/** points: [{ts, input, output, cacheRead, cacheWrite}] -> {size, bars:[{start, values, total}]} */
export function bucketize(points) {
  if (points.length === 0) return { size: MINUTE, bars: [] };
  const first = Math.min(...points.map((p) => p.ts));
  const last = Math.max(...points.map((p) => p.ts));
  const size = BUCKETS.find((b) => (last - first) / b < MAX_BARS) ?? BUCKETS.at(-1);
  const bars = new Map();
  for (const p of points) {
    const start = bucketStart(p.ts, size);
    const bar = bars.get(start) ?? { start, values: { cacheRead: 0, cacheWrite: 0, input: 0, output: 0 }, total: 0, calls: 0 };
    for (const { key } of SERIES) {
      bar.values[key] += p[key] ?? 0;
      bar.total += p[key] ?? 0;
    }
    bar.calls += 1;
    bars.set(start, bar);
  }
  // Fill the gaps so time runs evenly along the axis.
  const from = bucketStart(first, size);
  const to = bucketStart(last, size);
  const out = [];
  for (let t = from; t <= to; t += size) {
    out.push(bars.get(t) ?? { start: t, values: { cacheRead: 0, cacheWrite: 0, input: 0, output: 0 }, total: 0, calls: 0 });
  }
  return { size, bars: out };
}

function label(ts, size) {
  if (size >= 24 * 60 * MINUTE) return shortDay.format(ts);
  return size >= 60 * MINUTE ? shortDayTime.format(ts) : shortTime.format(ts);
}

/** The chart figure (legend + svg) for `points`, drawn `width` CSS pixels wide. */
export function tokenChart(points, width) {
  const { size, bars } = bucketize(points);
  const height = 168;
  const pad = { top: 10, right: 8, bottom: 22, left: 44 };
  const plotW = Math.max(40, width - pad.left - pad.right);
  const plotH = height - pad.top - pad.bottom;
  const max = Math.max(1, ...bars.map((b) => b.total));
  const svg = s('svg', {
    class: 'chart',
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': `Tokens over time: ${bars.length} ${bars.length === 1 ? 'bucket' : 'buckets'}, peak ${int(max)} tokens`,
  });
  for (const frac of [0, 0.5, 1]) {
    const y = pad.top + plotH - frac * plotH;
    svg.append(
      s('line', { class: 'chart-grid', x1: pad.left, x2: pad.left + plotW, y1: y, y2: y }),
      s('text', { class: 'chart-axis', x: pad.left - 6, y: y + 4, 'text-anchor': 'end' }, compact(Math.round(max * frac))),
    );
  }
  const slot = plotW / Math.max(1, bars.length);
  const barW = Math.max(2, Math.min(28, slot * 0.72));
  bars.forEach((bar, i) => {
    const x = pad.left + i * slot + (slot - barW) / 2;
    let y = pad.top + plotH;
    const group = s('g', { class: 'chart-bar' });
    const lines = SERIES.map(({ key, label: name }) => `${name}: ${int(bar.values[key])}`);
    group.append(s('title', {}, `${dateTime(bar.start)}\n${bar.calls} call(s), ${int(bar.total)} tokens\n${lines.join('\n')}`));
    for (const { key, cls } of SERIES) {
      const value = bar.values[key];
      if (!value) continue;
      const barH = Math.max(1, (value / max) * plotH);
      y -= barH;
      group.append(s('rect', { class: cls, x, y, width: barW, height: barH, rx: 1 }));
    }
    // A transparent full-height target, so hovering an empty-looking bar still shows its tooltip.
    group.append(s('rect', { class: 'chart-hit', x: pad.left + i * slot, y: pad.top, width: slot, height: plotH }));
    svg.append(group);
  });
  const last = bars.length - 1;
  // Three labels where they fit, the two ends on a phone.
  const ticks = last <= 0 ? [0] : last === 1 || width < 520 ? [0, last] : [0, Math.floor(last / 2), last];
  for (const i of ticks) {
    const x = pad.left + i * slot + slot / 2;
    const anchor = ticks.length > 1 && i === 0 ? 'start' : ticks.length > 1 && i === bars.length - 1 ? 'end' : 'middle';
    const tx = anchor === 'start' ? pad.left : anchor === 'end' ? pad.left + plotW : x;
    svg.append(s('text', { class: 'chart-axis', x: tx, y: height - 6, 'text-anchor': anchor }, label(bars[i].start, size)));
  }
  const legend = h(
    'ul',
    { class: 'chart-legend' },
    SERIES.map(({ label: name, cls }) => h('li', {}, h('span', { class: `swatch ${cls}` }), name)),
  );
  return h('figure', { class: 'chart-figure' }, svg, legend);
}
