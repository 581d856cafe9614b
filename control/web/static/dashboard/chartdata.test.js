// node --test: the Analytics section's numbers (chartdata.js): UTC periods as the API counts
// them, every period of the range filled in, series per key, totals and human-readable bytes.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DAY, humanBytes, nextStart, periodStart, periodStarts, seriesOf, total, valuesOf } from "./chartdata.js";

const TUE = 1699920000; // Tuesday 2023-11-14 00:00 UTC

test("periods start as the API's buckets do (UTC, weeks from Monday)", () => {
  assert.equal(periodStart(TUE + 5000, "day"), TUE);
  assert.equal(periodStart(TUE + 5000, "week"), TUE - DAY); // Monday 2023-11-13
  assert.equal(periodStart(TUE, "month"), 1698796800); // 2023-11-01
  assert.equal(periodStart(0, "week"), -3 * DAY); // 1970-01-01 was a Thursday
  assert.equal(nextStart(1698796800, "month"), 1701388800); // 2023-12-01
  assert.equal(nextStart(1701388800, "month"), 1704067200); // 2024-01-01
  assert.deepEqual(periodStarts(TUE, TUE + 3 * DAY, "day"), [TUE, TUE + DAY, TUE + 2 * DAY]);
  assert.deepEqual(periodStarts(TUE + 1, TUE + 2, "week"), [TUE - DAY]);
  assert.equal(periodStarts(1698796800, 1698796800 + 365 * DAY, "month").length, 12);
});

const bucket = (start, key, name, calls, answered, minutes, bytes) => ({
  start,
  date: "",
  key,
  name,
  calls,
  answered,
  answered_rate: calls ? Math.round((answered / calls) * 10000) / 10000 : null,
  minutes,
  bytes,
});

test("series per key, every period filled in, totals", () => {
  const answer = {
    period: "day",
    by: "staff",
    since: TUE,
    until: TUE + 3 * DAY,
    buckets: [
      bucket(TUE, "ann", "Ann", 1, 1, 2, 1000),
      bucket(TUE, null, null, 2, 0, 0, 0),
      bucket(TUE + 2 * DAY, "ann", "Ann", 2, 2, 3.5, 5000),
      bucket(TUE + 2 * DAY, "ben", "Ben", 1, 1, 1, 10),
    ],
    totals: bucket(TUE, null, null, 6, 4, 6.5, 6010),
  };
  const series = seriesOf(answer);
  assert.deepEqual(series.map((s) => s.name), ["Ann", "Ben", null]); // the unanswered last
  const starts = periodStarts(answer.since, answer.until, "day");
  assert.deepEqual(valuesOf(series[0], starts, "calls"), [1, 0, 2]);
  assert.deepEqual(valuesOf(series[0], starts, "answered_rate"), [100, null, 100]);
  assert.deepEqual(valuesOf(series[2], starts, "answered_rate"), [0, null, null]);
  assert.deepEqual(valuesOf(series[1], starts, "bytes"), [0, 0, 10]);
  assert.equal(total(answer.buckets, "calls"), 6);
  assert.equal(total(answer.buckets, "answered_rate"), 0.6667);
  assert.equal(total(answer.buckets, "minutes"), 6.5);
  assert.equal(total([], "answered_rate"), null);
});

test("bytes for people", () => {
  assert.equal(humanBytes(0, "en"), "0 B");
  assert.equal(humanBytes(999, "en"), "999 B");
  assert.equal(humanBytes(1234, "en"), "1.2 kB");
  assert.equal(humanBytes(3_456_789, "de"), "3,5 MB");
  assert.equal(humanBytes(250_000_000, "en"), "250 MB");
  assert.equal(humanBytes(2e15, "en"), "2 PB");
});
