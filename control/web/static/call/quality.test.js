// The quality level from getStats readings, and the relay check's verdicts (node --test).
import { test } from "node:test";
import assert from "node:assert/strict";
import { compare, level, reduce, watch } from "./quality.js";
import { check, perTransport, transportOf, verdict } from "./check.js";

test("levels from round trip and loss", () => {
  assert.equal(level({ rttMs: 40, lossPct: 0 }), "good");
  assert.equal(level({ rttMs: 400, lossPct: 1 }), "fair");
  assert.equal(level({ rttMs: 100, lossPct: 5 }), "fair");
  assert.equal(level({ rttMs: 900, lossPct: 0 }), "poor");
  assert.equal(level({ rttMs: 50, lossPct: 20 }), "poor");
  assert.equal(level({ rttMs: null, lossPct: null }), "unknown");
});

test("a stats report: the selected pair's round trip, inbound packets and losses", () => {
  const stats = [
    { type: "transport", id: "T", selectedCandidatePairId: "P1" },
    { type: "candidate-pair", id: "P0", nominated: true, state: "succeeded", currentRoundTripTime: 0.9 },
    { type: "candidate-pair", id: "P1", nominated: true, state: "succeeded", currentRoundTripTime: 0.05 },
    { type: "inbound-rtp", kind: "audio", packetsReceived: 900, packetsLost: 10 },
    { type: "inbound-rtp", kind: "video", packetsReceived: 100, packetsLost: 0 },
  ];
  assert.deepEqual(reduce(stats), { rttMs: 50, received: 1000, lost: 10 });
  const noPair = [{ type: "remote-inbound-rtp", roundTripTime: 0.2 }];
  assert.equal(reduce(noPair).rttMs, 200);
});

test("watch: poor while ICE is disconnected or failed, though the last numbers were good", async () => {
  const stats = [
    { type: "transport", id: "T", selectedCandidatePairId: "P1" },
    { type: "candidate-pair", id: "P1", nominated: true, state: "succeeded", currentRoundTripTime: 0.05 },
    { type: "inbound-rtp", kind: "audio", packetsReceived: 900, packetsLost: 0 },
  ];
  /** @param {string} ice */
  const first = (ice) =>
    new Promise((resolve) => {
      const pc = /** @type {any} */ ({ connectionState: "connected", iceConnectionState: ice, getStats: async () => new Map(stats.map((s, i) => [String(i), s])) });
      const stop = watch(pc, (q) => {
        stop();
        resolve(q.level);
      });
    });
  assert.equal(await first("connected"), "good");
  assert.equal(await first("disconnected"), "poor");
  assert.equal(await first("failed"), "poor");
});

test("loss is measured between readings", () => {
  const a = { rttMs: 50, received: 1000, lost: 0 };
  const b = { rttMs: 50, received: 1090, lost: 10 };
  const q = compare(a, b);
  assert.equal(q.lossPct, 10);
  assert.equal(q.level, "poor");
  assert.equal(compare(null, b).lossPct, null);
  assert.equal(compare(null, b).level, "good");
});

test("transports of TURN URLs", () => {
  assert.equal(transportOf("turn:relay.example:3478?transport=udp"), "udp");
  assert.equal(transportOf("turn:relay.example:3478"), "udp");
  assert.equal(transportOf("turn:relay.example:3478?transport=tcp"), "tcp");
  assert.equal(transportOf("turns:relay.example:5349?transport=tcp"), "tls");
  assert.equal(transportOf("stun:relay.example:3478"), null);
  const servers = [
    { urls: ["stun:r:3478", "turn:r:3478?transport=udp", "turn:r:3478?transport=tcp"], username: "u", credential: "p" },
    { urls: "turns:r:5349", username: "u", credential: "p" },
  ];
  const per = perTransport(servers);
  assert.deepEqual([...per.keys()], ["udp", "tcp", "tls"]);
  assert.deepEqual(per.get("tcp"), { urls: ["turn:r:3478?transport=tcp"], username: "u", credential: "p" });
});

test("verdicts: ok, partial, blocked", async () => {
  assert.equal(verdict({ udp: "ok", tcp: "ok" }, 10).verdict, "ok");
  assert.equal(verdict({ udp: "fail", tcp: "ok" }, 10).verdict, "partial");
  assert.equal(verdict({ udp: "fail" }, 10).verdict, "blocked");
  assert.equal(verdict({}, 10).verdict, "blocked");
  const v = verdict({ udp: "ok" }, 12.4);
  assert.deepEqual(v, { verdict: "ok", transports: { udp: "ok", tcp: "skipped", tls: "skipped" }, ms: 12 });
  const servers = [{ urls: ["turn:r:1?transport=udp", "turn:r:1?transport=tcp"] }];
  const got = await check(servers, async (s) => (String(s.urls).includes("tcp") ? "ok" : "fail"));
  assert.equal(got.verdict, "partial");
  assert.equal(got.transports.udp, "fail");
});
