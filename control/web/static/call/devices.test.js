// Unit tests of what the call page makes of a camera or microphone that is denied or missing
// (node --test; never served): a voice-only stream where the microphone still works, and the
// help text for the browser in use.
import { test } from "node:test";
import assert from "node:assert/strict";
import { classify, helpKey, open, problemKey } from "./devices.js";

/** @param {string} name */
function domError(name) {
  const e = new Error(name);
  e.name = name;
  return e;
}

/** A fake MediaStream with `video` camera tracks and one microphone track. */
function fakeStream(video) {
  const tracks = [{ kind: "audio" }, ...(video ? [{ kind: "video" }] : [])];
  return { getTracks: () => tracks, getAudioTracks: () => tracks.filter((t) => t.kind === "audio") };
}

/**
 * Run `fn` with a navigator whose getUserMedia fails with `cameraError` when asked for video
 * and with `micError` (if any) for audio alone.
 * @param {{cameraError?: string, micError?: string}} devs
 * @param {() => Promise<void>} fn
 */
async function withDevices(devs, fn) {
  const saved = Object.getOwnPropertyDescriptor(globalThis, "navigator");
  /** @type {any[]} */
  const asked = [];
  const mediaDevices = {
    /** @param {MediaStreamConstraints} c */
    async getUserMedia(c) {
      asked.push(c);
      if (c.video && devs.cameraError) throw domError(devs.cameraError);
      if (devs.micError) throw domError(devs.micError);
      return fakeStream(Boolean(c.video));
    },
  };
  Object.defineProperty(globalThis, "navigator", { value: { mediaDevices, userAgent: "test" }, configurable: true });
  try {
    await fn();
  } finally {
    if (saved) Object.defineProperty(globalThis, "navigator", saved);
    else delete (/** @type {any} */ (globalThis).navigator);
  }
  return asked;
}

test("no camera: the microphone alone, and the page says a voice call still works", async () => {
  const asked = await withDevices({ cameraError: "NotFoundError" }, async () => {
    const got = await open({ video: true });
    assert.ok(got.stream, "the microphone is open");
    assert.equal(got.video, false);
    assert.equal(got.problem, "no-camera");
    assert.equal(problemKey(got.problem), "call.perm_missing_camera");
  });
  assert.deepEqual(asked.map((c) => Boolean(c.video)), [true, false]);
});

test("camera denied, microphone allowed: voice only, with the browser's help", async () => {
  await withDevices({ cameraError: "NotAllowedError" }, async () => {
    const got = await open({ video: true });
    assert.ok(got.stream);
    assert.equal(got.video, false);
    assert.equal(got.problem, "denied-camera");
  });
});

test("no microphone at all: no stream, and the page says so", async () => {
  await withDevices({ cameraError: "NotFoundError", micError: "NotFoundError" }, async () => {
    const got = await open({ video: true });
    assert.equal(got.stream, null);
    assert.equal(got.problem, "no-mic");
    assert.equal(problemKey(got.problem), "call.perm_missing_mic");
  });
  await withDevices({ micError: "NotAllowedError" }, async () => {
    assert.equal((await open({ video: false })).problem, "denied");
  });
});

test("a camera in use by another app is not taken for a missing one", async () => {
  await withDevices({ cameraError: "NotReadableError" }, async () => {
    const got = await open({ video: true });
    assert.equal(got.stream, null);
    assert.equal(got.problem, "busy");
  });
  assert.equal(classify(domError("OverconstrainedError")), "no-camera");
  assert.equal(classify({ name: "PermissionDeniedError" }), "denied");
});

test("the help names the browser in use", () => {
  const chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
  const edge = chrome + " Edg/120.0";
  const firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
  const safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
  assert.equal(helpKey(chrome), "call.perm_help_chrome");
  assert.equal(helpKey(edge), "call.perm_help_edge");
  assert.equal(helpKey(firefox), "call.perm_help_firefox");
  assert.equal(helpKey(safari), "call.perm_help_safari");
  assert.equal(helpKey("curl/8"), "call.perm_help_other");
});
