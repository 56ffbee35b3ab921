// Number, time and size formatting shared by the pages.

const numberFormat = new Intl.NumberFormat();

export function int(n) {
  return n === null || n === undefined ? '—' : numberFormat.format(n);
}

/** 12345 -> "12.3k", 2_400_000 -> "2.4M". */
export function compact(n) {
  if (n === null || n === undefined) return '—';
  const abs = Math.abs(n);
  const trim = (x) => x.replace(/\.0$/, '');
  if (abs < 1000) return String(Math.round(n));
  if (abs < 1e6) return trim((n / 1e3).toFixed(abs < 1e4 ? 1 : 0)) + 'k';
  if (abs < 1e9) return trim((n / 1e6).toFixed(abs < 1e7 ? 1 : 0)) + 'M';
  return trim((n / 1e9).toFixed(1)) + 'B';
}

export function duration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.round((ms % 60_000) / 1000);
  return `${minutes}m ${String(seconds).padStart(2, '0')}s`;
}

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export function usd(x) {
  if (x === null || x === undefined) return '—';
  if (x > 0 && x < 0.01) return '< $0.01';
  return '$' + x.toFixed(2);
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const secondsFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const gutterFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
const stampFormat = new Intl.DateTimeFormat(undefined, {
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
  hourCycle: 'h23',
});
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short' });
const dayYearFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });

export const clock = (ts) => timeFormat.format(ts);
export const clockSeconds = (ts) => secondsFormat.format(ts);
/** "14:02", for tight spaces. */
export const clock24 = (ts) => gutterFormat.format(ts);
/** "Nov 3, 14:02:11": a trace's time, compact but unambiguous across days. */
export const stamp = (ts) => stampFormat.format(ts);
export const dateTime = (ts) => fullFormat.format(ts);

/** The local calendar day of a timestamp, as a sortable key "YYYY-MM-DD". */
export function dayKey(ts) {
  const d = new Date(ts);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
}

export function dayLabel(key, now = Date.now()) {
  const [y, m, d] = key.split('-').map(Number);
  const date = new Date(y, m - 1, d);
  if (key === dayKey(now)) return 'Today';
  if (key === dayKey(now - 86_400_000)) return 'Yesterday';
  return new Date(now).getFullYear() === y ? dayFormat.format(date) : dayYearFormat.format(date);
}

export function ago(ts, now = Date.now()) {
  if (!ts) return 'never';
  const seconds = Math.max(0, Math.round((now - ts) / 1000));
  if (seconds < 45) return 'just now';
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86_400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86_400)} d ago`;
}

/** "14 min 3 s" from a number of seconds. */
export function wait(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  const minutes = Math.floor(s / 60);
  const rest = s % 60;
  if (minutes === 0) return `${rest} s`;
  return rest === 0 ? `${minutes} min` : `${minutes} min ${rest} s`;
}
