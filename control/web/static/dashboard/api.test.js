// node --test: ApiFail finds the field an API error names, dotted paths included, so the
// dashboard shows the message beside that field.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ApiFail } from "./api.js";

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
