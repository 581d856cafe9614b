// node --test: the delivery log's "Last answer" (hookanswer.js): the catalogue's sentence for
// the failure's code in the page's language with its params, the technical detail apart; the
// server's English text for deliveries stored before the codes, or with a code unknown here.
import assert from "node:assert/strict";
import { test } from "node:test";
import { translator } from "./i18n.js";
import { lastAnswer } from "./hookanswer.js";

const en = translator("en");
const de = translator("de");
/** @param {object} fields */
const delivery = (fields) => ({ last_status: null, last_error: null, last_error_code: null, last_error_params: {}, ...fields });

test("a status and the seconds waited go into the sentence, in the page's language", () => {
  const busy = delivery({ last_status: 503, last_error: "HTTP 503", last_error_code: "http_status", last_error_params: { status: 503 } });
  assert.deepEqual(lastAnswer(busy, en, "en"), { text: "Your endpoint answered HTTP 503", detail: null });
  assert.deepEqual(lastAnswer(busy, de, "de"), { text: "Ihr Endpunkt antwortete mit HTTP 503", detail: null });
  const slow = delivery({ last_error: "no answer within 2.5 s", last_error_code: "timeout", last_error_params: { seconds: 2.5 } });
  assert.equal(lastAnswer(slow, en, "en").text, "No answer within 2.5 s");
  assert.equal(lastAnswer(slow, de, "de").text, "Keine Antwort innerhalb von 2,5 s");
  const moved = delivery({ last_status: 302, last_error: "HTTP 302: redirects are not followed", last_error_code: "redirect", last_error_params: { status: 302 } });
  assert.match(lastAnswer(moved, de, "de").text, /^HTTP 302: eine Weiterleitung/);
});

test("the technical detail is kept apart, untranslated", () => {
  const down = delivery({
    last_error: "cannot connect: [Errno 111] Connection refused",
    last_error_code: "connect",
    last_error_params: { detail: "[Errno 111] Connection refused" },
  });
  assert.deepEqual(lastAnswer(down, de, "de"), { text: "Keine Verbindung zu Ihrem Endpunkt", detail: "[Errno 111] Connection refused" });
  assert.deepEqual(lastAnswer(down, en, "en"), { text: "Could not connect to your endpoint", detail: "[Errno 111] Connection refused" });
  const off = delivery({ last_error: "the endpoint is switched off", last_error_code: "off" });
  assert.deepEqual(lastAnswer(off, de, "de"), { text: "Nicht gesendet: Der Endpunkt ist ausgeschaltet", detail: null });
});

test("a refused address says why in the catalogue's words when it knows the reason", () => {
  const why = "crm.example is (or resolves to) 10.9.8.7, a private, loopback, link-local or other special-purpose address; webhooks go to public addresses only";
  const params = { reason: "url_private", host: "crm.example", address: "10.9.8.7", detail: why };
  const refused = delivery({ last_error: why, last_error_code: "refused", last_error_params: params });
  const got = lastAnswer(refused, de, "de");
  assert.equal(got.text, "Nicht gesendet: Diese Adresse ist nicht erlaubt");
  assert.match(String(got.detail), /^crm\.example ist \(oder verweist auf\) 10\.9\.8\.7, eine private/);
  const unknown = delivery({ last_error: why, last_error_code: "refused", last_error_params: { ...params, reason: "brand_new" } });
  assert.equal(lastAnswer(unknown, de, "de").detail, why);
});

test("deliveries stored before the codes, or with a code unknown here, show the server's text", () => {
  const old = delivery({ last_status: 503, last_error: "HTTP 503" });
  assert.deepEqual(lastAnswer(old, de, "de"), { text: "HTTP 503", detail: null });
  const legacy = delivery({ last_error: "queue full: this business has too many deliveries waiting", last_error_code: undefined, last_error_params: undefined });
  assert.equal(lastAnswer(legacy, de, "de").text, "queue full: this business has too many deliveries waiting");
  const newer = delivery({ last_error: "something new", last_error_code: "brand_new", last_error_params: { detail: "x" } });
  assert.deepEqual(lastAnswer(newer, de, "de"), { text: "something new", detail: null });
  assert.deepEqual(lastAnswer(delivery({ last_status: 200 }), de, "de"), { text: "HTTP 200", detail: null });
  assert.deepEqual(lastAnswer(delivery({}), de, "de"), { text: "", detail: null });
});
