"""The `{{name}}` module (scaffolded by `modhost new`).

- `GET /{{name}}`: the notes, oldest first.
- `POST /{{name}}` with `{"text": "..."}`: stores a note; 201 with it, or 400.
- `{{namespace}}:{{name}}/api.count` (`../../wit/{{namespace}}/{{name}}.wit`): for other modules.

Its notes live in its own database (`migrations/`); every request runs in a fresh
instance, so nothing is kept in memory.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import sql

import modhost_guest
from modhost_guest import HttpError, Response, params, records
from notes import validate


def unavailable(error):
    return HttpError(Response.error(503, "unavailable", f"the database is unavailable: {error}"))


def handle(request):
    match (request.method, request.segments()):
        case ("GET", ["{{name}}"]):
            return list_notes()
        case ("POST", ["{{name}}"]):
            return create(request)
        case (method, ["{{name}}"]):
            return Response.method_not_allowed(method)
        case _:
            return Response.not_found(request.path)


def list_notes():
    try:
        rows = records(sql.query("SELECT id, text FROM notes ORDER BY id", []))
    except Err as error:
        raise unavailable(error.value)
    return Response.json(200, {"notes": rows})


def create(request):
    body = request.json()
    text, problem = validate(body.get("text") if isinstance(body, dict) else None)
    if problem:
        return Response.validation("the note is not valid", {"text": problem})
    try:
        rows = records(
            sql.query(
                "INSERT INTO notes (id, text, created_at) "
                "SELECT COALESCE(MAX(id), 0) + 1, $1, $2 FROM notes RETURNING id",
                params(text, modhost_guest.unix_time()),
            )
        )
    except Err as error:
        raise unavailable(error.value)
    return Response.json(201, {"id": rows[0]["id"], "text": text})


class Api(exports.Api):
    """`{{namespace}}:{{name}}/api`, for other modules."""

    def count(self):
        try:
            rows = sql.query("SELECT COUNT(*) FROM notes", [])
        except Err as error:
            raise Err(f"the database is unavailable: {error.value}")
        return rows.rows[0][0].value


IncomingHandler = modhost_guest.http_module(handle)
