// Unit tests of the call's state machine (node --test; never served: the static route and
// the package data leave *.test.js out).
import { test } from "node:test";
import assert from "node:assert/strict";
import { duration, formatRef, initial, LIVE, saved, STATES, transition } from "./machine.js";

/** @param {...any} events */
function run(...events) {
  let s = initial("video");
  for (const e of events) s = transition(s, e);
  return s;
}

const START = { type: "start", media: "video", at: 1000 };
const RUNG = { type: "rung", callId: "c1", callRef: "K7Q2M9XD", at: 2000 };

test("the happy path: idle → checking → ringing → connecting → in-call → ended", () => {
  const names = [];
  let s = initial("video");
  for (const e of [
    START,
    RUNG,
    { type: "checked", verdict: "ok" },
    { type: "answered", staffName: "Ann", at: 5000 },
    { type: "connected", at: 6000 },
    { type: "hangup", by: "them", at: 66000 },
  ]) {
    s = transition(s, e);
    names.push(s.name);
  }
  assert.deepEqual(names, ["checking", "ringing", "ringing", "connecting", "in-call", "ended"]);
  assert.equal(s.staffName, "Ann");
  assert.equal(s.check, "ok");
  assert.equal(s.reason, "remote");
  assert.equal(duration(s, 99999), 60);
  assert.equal(s.callRef, "K7Q2M9XD");
});

test("ringing starts the connection check; its verdict is kept", () => {
  const s = run(START, RUNG);
  assert.equal(s.check, "running");
  assert.equal(transition(s, { type: "checked", verdict: "blocked" }).check, "blocked");
});

test("reconnecting comes and goes without resetting the timer", () => {
  const inCall = run(START, RUNG, { type: "answered", at: 3 }, { type: "connected", at: 4000 });
  const lost = transition(inCall, { type: "ice-lost" });
  assert.equal(lost.name, "reconnecting");
  const back = transition(lost, { type: "connected", at: 9000 });
  assert.equal(back.name, "in-call");
  assert.equal(back.connectedAt, 4000);
});

test("the other side's reconnecting is a flag, cleared when connected", () => {
  const inCall = run(START, RUNG, { type: "answered", at: 3 }, { type: "connected", at: 4 });
  const peer = transition(inCall, { type: "peer", reconnecting: true });
  assert.equal(peer.name, "in-call");
  assert.equal(peer.peerReconnecting, true);
  assert.equal(transition(peer, { type: "peer", reconnecting: false }).peerReconnecting, false);
  const lost = transition(peer, { type: "ice-lost" });
  assert.equal(transition(lost, { type: "connected", at: 5 }).peerReconnecting, false);
});

test("closed and nobody available lead to the callback form; inactive fails", () => {
  const closed = run(START, { type: "refused", reason: "closed", nextOpen: 1700000000 });
  assert.equal(closed.name, "callback");
  assert.equal(closed.reason, "closed");
  assert.equal(closed.nextOpen, 1700000000);
  assert.equal(run(START, { type: "refused", reason: "unavailable" }).reason, "unavailable");
  assert.equal(run(START, { type: "refused", reason: "inactive" }).name, "failed");
});

test("nobody answering offers a callback; sending it ends with the reference", () => {
  const s = run(START, RUNG, { type: "unanswered", reason: "missed" });
  assert.equal(s.name, "callback");
  assert.equal(s.reason, "noanswer");
  const sent = transition(s, { type: "callback-sent", callRef: "AAAA-BBBB", at: 10 });
  assert.equal(sent.name, "ended");
  assert.equal(sent.reason, "callback");
  assert.equal(sent.callRef, "AAAA-BBBB");
  assert.equal(duration(sent, 100), null);
});

test("a blocked network can ask for a callback while it rings", () => {
  const s = run(START, RUNG, { type: "checked", verdict: "blocked" }, { type: "ask-callback" });
  assert.equal(s.name, "callback");
  assert.equal(s.reason, "blocked");
  assert.equal(s.callId, "c1");
});

test("cancel while ringing ends the call; cancel while checking goes back to idle", () => {
  const ended = run(START, RUNG, { type: "cancel", at: 5 });
  assert.equal(ended.name, "ended");
  assert.equal(ended.reason, "cancelled");
  assert.equal(run(START, { type: "cancel", at: 5 }).name, "idle");
});

test("hang up by me or by them", () => {
  const inCall = run(START, RUNG, { type: "answered", at: 3 }, { type: "connected", at: 4 });
  assert.equal(transition(inCall, { type: "hangup", by: "me", at: 5 }).reason, "hangup");
  assert.equal(transition(inCall, { type: "hangup", by: "them", at: 5 }).reason, "remote");
  const reconnecting = transition(inCall, { type: "ice-lost" });
  assert.equal(transition(reconnecting, { type: "hangup", by: "me", at: 5 }).name, "ended");
});

test("fail from any live state; never out of an ended one", () => {
  for (const s of [run(START), run(START, RUNG), run(START, RUNG, { type: "answered", at: 1 })]) {
    const failed = transition(s, { type: "fail", error: "boom", at: 7 });
    assert.equal(failed.name, "failed");
    assert.equal(failed.error, "boom");
  }
  const ended = run(START, RUNG, { type: "cancel", at: 5 });
  assert.equal(transition(ended, { type: "fail", error: "late", at: 9 }), ended);
});

test("events that do not apply return the very same state", () => {
  const idle = initial("voice");
  for (const e of [RUNG, { type: "connected", at: 1 }, { type: "hangup", by: "me", at: 1 }, { type: "ice-lost" }]) {
    assert.equal(transition(idle, e), idle);
  }
  const ringing = run(START, RUNG);
  assert.equal(transition(ringing, { type: "ice-lost" }), ringing);
  assert.equal(transition(ringing, { type: "connected", at: 1 }), ringing);
  assert.equal(transition(ringing, START), ringing);
});

test("reset after the end keeps the chosen media", () => {
  const ended = run({ type: "start", media: "voice", at: 1 }, RUNG, { type: "cancel", at: 2 });
  const again = transition(ended, { type: "reset" });
  assert.equal(again.name, "idle");
  assert.equal(again.media, "voice");
  assert.equal(again.callId, null);
});

test("saved() keeps only live calls, and resume() brings them back", () => {
  assert.equal(saved(initial()), null);
  const ringing = run(START, RUNG);
  const keep = saved(ringing);
  assert.ok(keep);
  assert.equal(transition(initial(), { type: "resume", saved: keep, at: 1 }).name, "ringing");
  const inCall = run(START, RUNG, { type: "answered", staffName: "Ann", at: 3 }, { type: "connected", at: 4 });
  const back = transition(initial(), { type: "resume", saved: /** @type {any} */ (saved(inCall)), at: 9 });
  assert.equal(back.name, "reconnecting");
  assert.equal(back.connectedAt, 4);
  assert.equal(back.staffName, "Ann");
  assert.equal(saved(run(START, RUNG, { type: "cancel", at: 5 })), null);
  assert.equal(transition(initial(), { type: "resume", saved: /** @type {any} */ (null), at: 1 }).name, "idle");
});

test("every state is listed and LIVE ones are states", () => {
  for (const name of LIVE) assert.ok(STATES.includes(/** @type {any} */ (name)));
});

test("call references are shown in two groups of four", () => {
  assert.equal(formatRef("k7q2m9xd"), "K7Q2-M9XD");
  assert.equal(formatRef("K7Q2-M9XD"), "K7Q2-M9XD");
  assert.equal(formatRef(null), null);
});
