// The catalogue: both languages have every key, the block the server reads is strict JSON,
// placeholders match across languages, and the pinned English accessible names are there.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { clock, duration, MESSAGES, normalise, t } from "./i18n.js";
import { MESSAGES as DASHBOARD } from "./dashboard/i18n.js"; // the second volume joins MESSAGES

test("English and German have the same keys and placeholders", () => {
  assert.deepEqual(Object.keys(MESSAGES.de).sort(), Object.keys(MESSAGES.en).sort());
  /** @type {Record<string, string>} */
  const en = MESSAGES.en;
  /** @type {Record<string, string>} */
  const de = MESSAGES.de;
  for (const key of Object.keys(en)) {
    const holes = (/** @type {string} */ s) => (s.match(/\{\w+\}/g) || []).sort().join();
    assert.equal(holes(de[key]), holes(en[key]), key);
  }
});

test("each volume's marked block is strict JSON (the server parses it)", () => {
  /** @param {string} file */
  const read = (file) => {
    const src = readFileSync(new URL(file, import.meta.url), "utf8");
    const block = src.split("// <catalogue>")[1].split("// </catalogue>")[0].trim();
    return JSON.parse(block.replace(/^export const MESSAGES =/, "").replace(/;$/, ""));
  };
  const first = read("./i18n.js");
  assert.deepEqual(read("./dashboard/i18n.js"), DASHBOARD);
  // the second volume joined the first: MESSAGES is both, and no key is in both files
  for (const lang of ["en", "de"]) {
    const both = { ...first[lang], ...DASHBOARD[lang] };
    assert.equal(Object.keys(both).length, Object.keys(first[lang]).length + Object.keys(DASHBOARD[lang]).length);
    assert.deepEqual(MESSAGES[lang], both);
  }
});

test("the pinned English names", () => {
  const pinned = {
    "button.video": "Video call",
    "button.voice": "Voice call",
    "call.share": "Share screen",
    "call.mute": "Mute",
    "call.camera": "Camera",
    "call.hangup": "Hang up",
    "console.answer": "Answer",
    "console.decline": "Decline",
    "console.available": "Available",
  };
  for (const [key, name] of Object.entries(pinned)) assert.equal(t("en", key), name);
});

test("placeholders, fallbacks, languages, durations", () => {
  assert.equal(t("en", "call.ringing", { business: "Acme" }), "Calling Acme…");
  assert.equal(t("de", "call.ringing", { business: "Acme" }), "Acme wird angerufen…");
  assert.equal(t("de", "no.such.key"), "no.such.key");
  assert.equal(normalise("de-AT"), "de");
  assert.equal(normalise("fr"), null);
  assert.equal(duration(65), "1 min 05 s");
  assert.equal(duration(3725), "1 h 02 min");
  assert.equal(clock(42), "0:42");
  assert.equal(clock(3729), "1:02:09");
});

test("a count of one takes the key's .one wording where the catalogue has one", () => {
  assert.equal(t("en", "dash.privacy.erased", { n: 1 }), "Erased from 1 call.");
  assert.equal(t("en", "dash.privacy.erased", { n: 3 }), "Erased from 3 calls.");
  assert.equal(t("de", "dash.privacy.erased", { n: 1 }), "Aus einem Anruf gelöscht.");
  assert.equal(t("de", "dash.privacy.erased", { n: 0 }), "Aus 0 Anrufen gelöscht.");
  assert.equal(t("en", "dash.privacy.found", { n: 1 }), "Calls found: 1"); // no .one: the key itself
});
