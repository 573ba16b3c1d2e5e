// The module's rules, in plain JavaScript: tested with Node, without the host (test/).

export const MAX_TEXT = 500;

/** The note's text, trimmed, and null; or null and the problem with it. */
export function validate(text) {
  const trimmed = typeof text === "string" ? text.trim() : "";
  if (!trimmed) return [null, "is required"];
  if (trimmed.length > MAX_TEXT) return [null, `is longer than ${MAX_TEXT} characters`];
  return [trimmed, null];
}
