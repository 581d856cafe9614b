// Unit tests of the console's ring (node --test; never served): armed by one click, the
// title, the sound, and the desktop notification that repeats at most every REPEAT_MS while
// the tab is in the background. The browser's objects are small fakes on globalThis.
import { test } from "node:test";
import assert from "node:assert/strict";
import { REPEAT_MS, Ringer } from "./ring.js";

/** @type {any} */
const g = globalThis;

class FakeNotification {
  /** @type {string} */
  static permission = "default";
  /** @type {FakeNotification[]} */
  static shown = [];
  static asked = 0;
  static async requestPermission() {
    FakeNotification.asked += 1;
    FakeNotification.permission = "granted";
    return "granted";
  }
  /** @param {string} title @param {{body: string}} opts */
  constructor(title, opts) {
    this.title = title;
    this.body = opts.body;
    this.closed = false;
    FakeNotification.shown.push(this);
  }
  close() {
    this.closed = true;
  }
}

class FakeAudioContext {
  constructor() {
    this.state = "suspended";
    this.currentTime = 0;
    this.destination = {};
    this.oscillators = 0;
  }
  async resume() {
    this.state = "running";
  }
  createGain() {
    return { gain: { value: 0, setValueAtTime() {} }, connect() {} };
  }
  createOscillator() {
    this.oscillators += 1;
    return { frequency: { value: 0 }, connect() {}, start() {}, stop() {} };
  }
}

/** A fresh fake browser, a fake clock, and intervals that run only when the test says. */
function browser() {
  FakeNotification.permission = "default";
  FakeNotification.shown = [];
  FakeNotification.asked = 0;
  g.window = g;
  g.document = { title: "Staff console", hidden: false };
  g.Notification = FakeNotification;
  g.AudioContext = FakeAudioContext;
  const clock = { now: 1_000_000 };
  /** @type {Map<number, () => void>} */
  const intervals = new Map();
  let next = 1;
  const saved = { setInterval: g.setInterval, clearInterval: g.clearInterval, now: Date.now };
  g.setInterval = (/** @type {() => void} */ fn) => {
    intervals.set(next, fn);
    return next++;
  };
  g.clearInterval = (/** @type {number} */ id) => void intervals.delete(id);
  Date.now = () => clock.now;
  /** Let `ms` pass, running the ring's interval (3 s) as the browser would. */
  const pass = (/** @type {number} */ ms) => {
    for (let t = 0; t < ms; t += 3000) {
      clock.now += 3000;
      for (const fn of intervals.values()) fn();
    }
  };
  const restore = () => {
    Date.now = saved.now;
    g.setInterval = saved.setInterval;
    g.clearInterval = saved.clearInterval;
  };
  return { clock, intervals, pass, restore };
}

test("one click arms it: audio unlocked and the notification permission asked once", async () => {
  const b = browser();
  try {
    const r = new Ringer();
    assert.equal(r.armed, false);
    assert.equal(await r.arm(), true);
    assert.equal(r.armed, true);
    assert.equal(FakeNotification.asked, 1);
    await r.arm(); // permission granted now: not asked again
    assert.equal(FakeNotification.asked, 1);
  } finally {
    b.restore();
  }
});

test("ringing in the foreground: the title alternates and it sounds, no notification", async () => {
  const b = browser();
  try {
    const r = new Ringer();
    await r.arm();
    r.start("Ringing: Sales", "Incoming call", "Sales");
    assert.equal(r.ringing, true);
    assert.equal(g.document.title, "Ringing: Sales");
    b.pass(3000);
    assert.equal(g.document.title, "Staff console");
    b.pass(3000);
    assert.equal(g.document.title, "Ringing: Sales");
    assert.equal(r.ctx?.oscillators, 3 * 2); // two tones per ring, three rings
    assert.deepEqual(FakeNotification.shown, []);
    r.start("Ringing: Sales", "Incoming call", "Sales"); // a second call: still one timer
    assert.equal(b.intervals.size, 1);
    r.stop();
    assert.equal(r.ringing, false);
    assert.equal(g.document.title, "Staff console");
    assert.equal(b.intervals.size, 0);
  } finally {
    b.restore();
  }
});

test("in the background the notification repeats, at most once every REPEAT_MS", async () => {
  const b = browser();
  try {
    const r = new Ringer();
    await r.arm();
    g.document.hidden = true;
    r.start("Ringing: Sales", "Incoming call", "A visitor is calling on Sales");
    assert.equal(FakeNotification.shown.length, 1);
    assert.equal(FakeNotification.shown[0].title, "Incoming call");
    assert.equal(FakeNotification.shown[0].body, "A visitor is calling on Sales");
    b.pass(REPEAT_MS - 3000); // rings every 3 s, but no second notification yet
    assert.equal(FakeNotification.shown.length, 1);
    b.pass(3000);
    assert.equal(FakeNotification.shown.length, 2);
    assert.equal(FakeNotification.shown[0].closed, true); // one on screen at a time
    b.pass(REPEAT_MS);
    assert.equal(FakeNotification.shown.length, 3);
    g.document.hidden = false; // back in the tab: no more notifications
    b.pass(2 * REPEAT_MS);
    assert.equal(FakeNotification.shown.length, 3);
    r.stop();
    assert.equal(FakeNotification.shown[2].closed, true);
  } finally {
    b.restore();
  }
});

test("not armed: the title still changes, silence, and no notification without permission", () => {
  const b = browser();
  try {
    g.document.hidden = true;
    const r = new Ringer();
    r.start("Ringing: Sales", "Incoming call", "Sales");
    b.pass(2 * REPEAT_MS);
    assert.equal(r.ctx, null);
    assert.deepEqual(FakeNotification.shown, []);
    assert.ok(["Ringing: Sales", "Staff console"].includes(g.document.title));
    r.stop();
    assert.equal(g.document.title, "Staff console");
  } finally {
    b.restore();
  }
});
