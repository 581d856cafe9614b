// Unit tests of what the call page makes of a refused click (node --test; never served).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as api from "./api.js";
import { CallSession } from "./session.js";

/** @param {unknown} error */
async function refusedWith(error) {
  const session = new CallSession({ link: "abc", lang: "en", media: ["video", "voice"] });
  /** @type {any[]} */
  const seen = [];
  session.dispatch = (/** @type {any} */ e) => void seen.push(e);
  await session.refused(error);
  return seen;
}

test("a click refused by the click limits (429) fails as busy, with the wait", async () => {
  const [e] = await refusedWith(new api.ApiError(429, "throttled", "too many calls", null, 12));
  assert.equal(e.type, "fail");
  assert.equal(e.error, "busy:12");
  const [f] = await refusedWith(new api.ApiError(429, "tenant_ringing_limit", "x"));
  assert.equal(f.error, "busy:60"); // no Retry-After: a minute
});

test("the API client reads Retry-After into the error", async () => {
  const saved = globalThis.fetch;
  globalThis.fetch = async () =>
    new Response(JSON.stringify({ error: { code: "link_throttled", message: "slow down" } }), {
      status: 429,
      headers: { "Retry-After": "7", "Content-Type": "application/json" },
    });
  try {
    await assert.rejects(api.click("abc", { media: "video", lang: "en" }), (err) => {
      assert.ok(err instanceof api.ApiError);
      assert.equal(err.status, 429);
      assert.equal(err.code, "link_throttled");
      assert.equal(err.retryAfter, 7);
      return true;
    });
  } finally {
    globalThis.fetch = saved;
  }
});

test("asking for a call back while it rings shows the form, though the server's 'abandoned' comes first", async () => {
  const session = new CallSession({ link: "abc", lang: "en", media: ["voice"] });
  session.state = { ...session.state, name: "ringing", callId: "c1", check: "blocked" };
  session.creds = { token: "t", signal: "/v1/calls/c1/signal", iceServers: [], relayOnly: true };
  const saved = globalThis.fetch;
  /** @type {string[]} */
  const asked = [];
  globalThis.fetch = async (url) => {
    asked.push(String(url));
    // the signalling socket says the call was abandoned before the hangup's answer is back
    session.onStatus("abandoned", null);
    return new Response("{}", { status: 200, headers: { "Content-Type": "application/json" } });
  };
  try {
    await session.askCallback();
  } finally {
    globalThis.fetch = saved;
  }
  assert.deepEqual(asked, ["/v1/calls/c1/hangup"]);
  assert.equal(session.state.name, "callback");
  assert.equal(session.state.reason, "blocked");
  assert.equal(session.state.callId, "c1", "the request goes on the call");
});
