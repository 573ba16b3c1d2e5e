// The `{{name}}` module (scaffolded by `modhost new`).
//
// - `GET /{{name}}`: the notes, oldest first.
// - `POST /{{name}}` with `{"text": "..."}`: stores a note; 201 with it, or 400.
// - `{{namespace}}:{{name}}/api.count` (`../../wit/{{namespace}}/{{name}}.wit`): for other modules.
//
// Its notes live in its own database (`migrations/`); every request runs in a fresh
// instance, so nothing is kept in memory.

import { query } from "modhost:sql/sql@2.0.0";
import { HttpError, Response, httpModule, params, records, unixTime } from "../sdk-js/modhost_guest.js";
import { validate } from "./notes.js";

function unavailable(error) {
  return new HttpError(Response.error(503, "unavailable", `the database is unavailable: ${JSON.stringify(error?.payload ?? String(error))}`));
}

function handle(request) {
  const segments = request.segments();
  if (segments.length === 1 && segments[0] === "{{name}}") {
    if (request.method === "GET") return listNotes();
    if (request.method === "POST") return create(request);
    return Response.methodNotAllowed(request.method);
  }
  return Response.notFound(request.path);
}

function listNotes() {
  let rows;
  try {
    rows = records(query("SELECT id, text FROM notes ORDER BY id", []));
  } catch (error) {
    throw unavailable(error);
  }
  return Response.json(200, { notes: rows });
}

function create(request) {
  const body = request.json();
  const [text, problem] = validate(body && typeof body === "object" ? body.text : null);
  if (problem) return Response.validation("the note is not valid", { text: problem });
  let rows;
  try {
    rows = records(
      query(
        "INSERT INTO notes (id, text, created_at) SELECT COALESCE(MAX(id), 0) + 1, $1, $2 FROM notes RETURNING id",
        params(text, unixTime()),
      ),
    );
  } catch (error) {
    throw unavailable(error);
  }
  return Response.json(201, { id: rows[0].id, text });
}

export const incomingHandler = httpModule(handle);

/** `{{namespace}}:{{name}}/api`, for other modules. */
export const api = {
  count() {
    try {
      return BigInt(records(query("SELECT COUNT(*) AS n FROM notes", []))[0].n);
    } catch (error) {
      throw `the database is unavailable: ${JSON.stringify(error?.payload ?? String(error))}`;
    }
  },
};
