// The module's rules, on Node: `node --test test/`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { validate } from "../notes.js";

test("a note needs some text and not too much", () => {
  assert.deepEqual(validate("  milk  "), ["milk", null]);
  assert.deepEqual(validate("   "), [null, "is required"]);
  assert.deepEqual(validate(null), [null, "is required"]);
  assert.deepEqual(validate("x".repeat(501)), [null, "is longer than 500 characters"]);
});
