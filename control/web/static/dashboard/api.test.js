// node --test: ApiFail finds the field an API error names, dotted paths included, so the
// dashboard shows the message beside that field.
import assert from "node:assert/strict";
import { test } from "node:test";
import { translator } from "./i18n.js";
import { ApiFail, localize } from "./api.js";

test("a plain field", () => {
  const f = new ApiFail(422, "invalid", "email: must be an email address");
  assert.equal(f.field, "email");
  assert.equal(f.text, "must be an email address");
});

test("a pydantic path with the body prefix and a value error", () => {
  const f = new ApiFail(422, "invalid", "body.hours.timezone: Value error, unknown time zone 'Mars/Olympus'");
  assert.equal(f.field, "hours.timezone");
  assert.equal(f.text, "unknown time zone 'Mars/Olympus'");
  assert.equal(new ApiFail(422, "invalid", "body.media.0: Input should be 'voice' or 'video'").field, "media.0");
});

test("no field named", () => {
  const f = new ApiFail(409, "conflict", "could not mint a unique public id; try again");
  assert.equal(f.field, null);
  assert.equal(f.text, f.message);
});

// The body's machine-readable part: its field wins over the message's, and `localize` picks
// the catalogue's `err.<reason>` in the page's language, the server's text when it has none.

test("the body's field, reason and params are kept", () => {
  const f = new ApiFail(422, "invalid", "body.name: String should have at most 200 characters", {
    field: "name",
    reason: "string_too_long",
    params: { max_length: 200, nested: { no: 1 }, flag: true },
  });
  assert.equal(f.field, "name");
  assert.equal(f.reason, "string_too_long");
  assert.deepEqual(f.params, { max_length: 200, flag: "true" }); // scalars only
  assert.equal(f.text, "String should have at most 200 characters");
  const g = new ApiFail(422, "invalid", "hours: whatever", { field: "hours.timezone", reason: null });
  assert.equal(g.field, "hours.timezone");
  assert.equal(g.reason, null);
});

test("localize: the catalogue's text with its params, in German and English", () => {
  const f = new ApiFail(422, "invalid", "body.hours.timezone: Value error, unknown time zone 'Mars/Olympus'", {
    field: "hours.timezone",
    reason: "timezone_unknown",
    params: { zone: "Mars/Olympus" },
  });
  assert.equal(localize(f, translator("de")), "unbekannte Zeitzone „Mars/Olympus“");
  assert.equal(localize(f, translator("en")), "unknown time zone 'Mars/Olympus'");
  const r = new ApiFail(422, "invalid", "body.retention_months: Input should be greater than or equal to 1", {
    field: "retention_months",
    reason: "greater_than_equal",
    params: { ge: 1 },
  });
  assert.equal(localize(r, translator("de")), "muss mindestens 1 sein");
});

test("localize falls back to the server's text", () => {
  const unknown = new ApiFail(422, "invalid", "email: something new", { field: "email", reason: "brand_new_reason" });
  assert.equal(localize(unknown, translator("de")), "something new");
  const none = new ApiFail(409, "conflict", "could not mint a unique public id; try again");
  assert.equal(localize(none, translator("de")), "could not mint a unique public id; try again");
});
