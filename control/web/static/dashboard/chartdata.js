// The Analytics section's numbers, with no DOM: the API's answer (GET /v1/dashboard/analytics,
// the same as GET /v1/analytics) turned into what the charts and their tables draw. Unit-tested
// with `node --test` (chartdata.test.js).
//
// The API answers only the periods that had calls; a chart gets every period of the range (a
// day, an ISO week from Monday or a month, in UTC, as the API counts them), with 0 calls,
// minutes and bytes where there were none and no answered rate (a gap). When grouped by link
// or staff member, each key is a series of its own.

export const DAY = 86400;
export const FIGURES = /** @type {const} */ (["calls", "answered_rate", "minutes", "bytes"]);

/**
 * @typedef {"day" | "week" | "month"} Period
 * @typedef {{start: number, date: string, calls: number, answered: number,
 *   answered_rate: number | null, minutes: number, bytes: number}} Usage
 * @typedef {Usage & {key: string | null, name: string | null}} Bucket
 * @typedef {{period: Period, by: "none" | "link" | "staff", since: number, until: number,
 *   buckets: Bucket[], totals: Usage}} Answer
 * @typedef {{calls: number[], answered: number[], minutes: number[], bytes: number[]}} Sums
 * @typedef {{key: string | null, name: string | null, byStart: Map<number, Bucket>}} Series
 */

/**
 * The Unix time at which the UTC period holding `ts` starts (control/quality.py bucket_start).
 * @param {number} ts
 * @param {Period} period
 */
export function periodStart(ts, period) {
  const day = Math.floor(ts / DAY);
  if (period === "day") return day * DAY;
  if (period === "week") return (day - ((day + 3) % 7 + 7) % 7) * DAY; // 1970-01-01 was a Thursday
  const d = new Date(day * DAY * 1000);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1) / 1000;
}

/**
 * The start of the period after the one starting at `start`.
 * @param {number} start
 * @param {Period} period
 */
export function nextStart(start, period) {
  if (period === "day") return start + DAY;
  if (period === "week") return start + 7 * DAY;
  const d = new Date(start * 1000);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) / 1000;
}

/**
 * Every period start from the one holding `since` up to before `until`.
 * @param {number} since
 * @param {number} until
 * @param {Period} period
 */
export function periodStarts(since, until, period) {
  const out = [];
  for (let s = periodStart(since, period); s < until && out.length < 1000; s = nextStart(s, period)) out.push(s);
  return out;
}

/**
 * The answer's series: one per key in the order of first appearance (by none: one, key null).
 * @param {Answer} answer
 * @returns {Series[]}
 */
export function seriesOf(answer) {
  /** @type {Map<string | null, Series>} */
  const byKey = new Map();
  for (const b of answer.buckets) {
    let s = byKey.get(b.key);
    if (!s) {
      s = { key: b.key, name: b.name, byStart: new Map() };
      byKey.set(b.key, s);
    }
    s.byStart.set(b.start, b);
  }
  const all = [...byKey.values()];
  // the busiest first (the first colour), then by name; calls nobody answered last
  const calls = (/** @type {Series} */ s) => [...s.byStart.values()].reduce((n, b) => n + b.calls, 0);
  return all.sort((a, b) => Number(a.key === null) - Number(b.key === null) || calls(b) - calls(a) || String(a.name).localeCompare(String(b.name)));
}

/**
 * One figure of one series at each period start: 0 where there were no calls (the rate: null).
 * Answered rate is in percent.
 * @param {Series} series
 * @param {number[]} starts
 * @param {typeof FIGURES[number]} figure
 * @returns {(number | null)[]}
 */
export function valuesOf(series, starts, figure) {
  return starts.map((s) => {
    const b = series.byStart.get(s);
    if (figure === "answered_rate") return b && b.answered_rate !== null ? Math.round(b.answered_rate * 1000) / 10 : null;
    return b ? b[figure] : 0;
  });
}

/**
 * The figure summed over some buckets (the answered rate as answered / calls, 0..1 or null).
 * @param {Bucket[]} buckets
 * @param {typeof FIGURES[number]} figure
 * @returns {number | null}
 */
export function total(buckets, figure) {
  if (figure === "answered_rate") {
    const calls = buckets.reduce((n, b) => n + b.calls, 0);
    return calls ? Math.round((buckets.reduce((n, b) => n + b.answered, 0) / calls) * 10000) / 10000 : null;
  }
  const sum = buckets.reduce((n, b) => n + b[figure], 0);
  return figure === "minutes" ? Math.round(sum * 100) / 100 : sum;
}

/**
 * Bytes for people, in powers of 1000: "950 B", "1.2 kB", "3.4 MB", "1 GB".
 * @param {number} bytes
 * @param {string} lang
 */
export function humanBytes(bytes, lang) {
  const units = ["B", "kB", "MB", "GB", "TB", "PB"];
  let v = bytes;
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  const digits = i === 0 || Math.abs(v) >= 100 ? 0 : 1;
  return `${new Intl.NumberFormat(lang, { maximumFractionDigits: digits }).format(v)} ${units[i]}`;
}
