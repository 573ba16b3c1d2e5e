"""The Python module SDK: what `modhost_guest` (modules/sdk) is to Rust modules.

A module built with componentize-py gets bindings for its WIT world in `wit_world`
(modhost builds it with `wasi:http/types` named `wasi_http_types` and `wasi:io/streams`
named `wasi_io_streams`, whatever else the world holds, so this file can rely on them).

- `http_module(handle)` makes the class componentize-py looks for to serve routes:
  `IncomingHandler = http_module(handle)`, where `handle(Request) -> Response`.
- `Request` and `Response`: a request read whole (the gateway bounds its size), and an
  answer with the JSON error shape every module of the shop uses.
- `params(...)` and `records(rows)`: Python values to `modhost:sql` values and back.
- `new_id(prefix)`, `unix_time()`: ids and time from the host (wasi:random, wasi:clocks).
"""

import json
import os
import time
import traceback

__all__ = [
    "Request",
    "Response",
    "HttpError",
    "http_module",
    "params",
    "records",
    "new_id",
    "unix_time",
]

# The most a response body write may carry at once (wasi:io's blocking write limit).
_WRITE_CHUNK = 4096
# How much to ask for per read of a request body.
_READ_CHUNK = 64 * 1024


class Request:
    """One HTTP request: method, path, query, headers and the whole body."""

    def __init__(self, method, path, query, headers, body):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body

    def segments(self):
        """The path's non-empty segments: `/orders/7` → ["orders", "7"]."""
        return [part for part in self.path.split("/") if part]

    def query_param(self, name):
        """The first value of query parameter `name`, or None; percent-decoding is left
        to the caller (as in the Rust SDK)."""
        for pair in self.query.split("&") if self.query else []:
            key, _, value = pair.partition("=")
            if key == name:
                return value
        return None

    def header(self, name):
        """The first value of header `name` (any case) as text, or None (also when it is
        not UTF-8)."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                try:
                    return value.decode("utf-8")
                except UnicodeDecodeError:
                    return None
        return None

    def json(self):
        """The body as JSON; raises `HttpError` with a 400 answer when it is not (an
        empty body is not)."""
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise HttpError(Response.error(400, "invalid_json", f"request body: {error}"))


class Response:
    """An HTTP answer."""

    def __init__(self, status, headers=None, body=b""):
        self.status = status
        self.headers = headers or []
        self.body = body

    @staticmethod
    def json(status, value):
        """`value` as a JSON body."""
        body = json.dumps(value, separators=(",", ":")).encode()
        return Response(status, [("content-type", b"application/json")], body)

    @staticmethod
    def error(status, code, message, **details):
        """`{"error": {"code", "message", ...details}}`, the shape every shop module uses."""
        error = dict(details)
        error["code"] = code
        error["message"] = message
        return Response.json(status, {"error": error})

    @staticmethod
    def validation(message, problems):
        """400 naming each field and its problem: `problems = {"field": "problem"}`."""
        return Response.error(400, "validation", message, fields=problems)

    @staticmethod
    def not_found(what):
        """404 saying what was not found."""
        return Response.error(404, "not_found", what)

    @staticmethod
    def method_not_allowed(method):
        """405 for a method a route does not take."""
        return Response.error(405, "method_not_allowed", f"{method} is not allowed here")


class HttpError(Exception):
    """Raised inside a handler to answer with `response` at once."""

    def __init__(self, response):
        super().__init__(response.status)
        self.response = response


def http_module(handle):
    """The `IncomingHandler` class componentize-py exports, serving with `handle`.

    A handler that raises `HttpError` answers with its response; any other exception,
    or an answer that is no `Response`, answers 500 (with no detail: the traceback goes
    to the module's stderr, which the host logs as the module's output)."""
    from wit_world import exports

    class IncomingHandler(exports.IncomingHandler):
        def handle(self, request, response_out):
            _serve(request, response_out, handle)

    return IncomingHandler


def _serve(incoming, response_out, handle):
    try:
        try:
            response = handle(_read(incoming))
        except HttpError as refused:
            response = refused.response
        if not isinstance(response, Response):
            raise TypeError(f"the handler returned {type(response).__name__}, not a Response")
        outgoing = _outgoing(response)
    except Exception:  # noqa: BLE001 - the one place every failure becomes an answer
        traceback.print_exc()
        response = Response.error(500, "internal", "the module failed")
        outgoing = _outgoing(response)
    _write(outgoing, response.body, response_out)


def _method_name(method):
    from wit_world.imports import wasi_http_types as types

    if isinstance(method, types.Method_Other):
        return method.value.upper()
    return type(method).__name__.removeprefix("Method_").upper()


def _read(incoming):
    from componentize_py_types import Err
    from wit_world.imports import wasi_io_streams as streams

    method = _method_name(incoming.method())
    target = incoming.path_with_query() or "/"
    path, _, query = target.partition("?")
    with incoming.headers() as fields:
        headers = fields.entries()
    # modhost hands modules whole bodies with an exact content-length; without one (or
    # with 0) there is no body, and not opening the stream saves the host work.
    has_body = any(
        (name.lower() == "content-length" and value != b"0") or name.lower() == "transfer-encoding"
        for name, value in headers
    )
    chunks = []
    if has_body:
        try:
            with incoming.consume() as body:
                with body.stream() as stream:
                    while True:
                        try:
                            chunks.append(stream.blocking_read(_READ_CHUNK))
                        except Err as error:
                            if isinstance(error.value, streams.StreamError_Closed):
                                break
                            raise
        except Err as error:
            raise HttpError(Response.error(400, "bad_request", f"reading request body: {error.value}"))
    return Request(method, path, query, headers, b"".join(chunks))


def _outgoing(response):
    """The `outgoing-response` for `response`: a header the host refuses (forbidden or
    malformed) is left out rather than losing the answer, as in the Rust SDK; a status
    it refuses raises."""
    from componentize_py_types import Err
    from wit_world.imports import wasi_http_types as types

    fields = types.Fields()
    for name, value in response.headers:
        try:
            fields.append(name, value)
        except Err:
            pass
    outgoing = types.OutgoingResponse(fields)
    try:
        outgoing.set_status_code(response.status)
    except Err:
        raise ValueError(f"{response.status} is not an HTTP status")
    return outgoing


def _write(outgoing, data, response_out):
    from componentize_py_types import Ok
    from wit_world.imports import wasi_http_types as types

    body = outgoing.body()
    types.ResponseOutparam.set(response_out, Ok(outgoing))
    with body.write() as stream:
        for start in range(0, len(data), _WRITE_CHUNK):
            stream.blocking_write_and_flush(data[start : start + _WRITE_CHUNK])
    types.OutgoingBody.finish(body, None)


def params(*values):
    """Python values as `modhost:sql` parameters: None, bool, int, float, str, bytes."""
    from wit_world.imports import sql

    converted = []
    for value in values:
        if value is None:
            converted.append(sql.Value_Null())
        elif isinstance(value, bool):
            converted.append(sql.Value_Boolean(value))
        elif isinstance(value, int):
            converted.append(sql.Value_Integer(value))
        elif isinstance(value, float):
            converted.append(sql.Value_Real(value))
        elif isinstance(value, str):
            converted.append(sql.Value_Text(value))
        elif isinstance(value, (bytes, bytearray)):
            converted.append(sql.Value_Blob(bytes(value)))
        else:
            raise TypeError(f"no SQL value for {type(value).__name__}")
    return converted


def records(rows):
    """A `modhost:sql` result as a list of dicts, column name → Python value."""
    from wit_world.imports import sql

    def plain(value):
        return None if isinstance(value, sql.Value_Null) else value.value

    return [dict(zip(rows.columns, map(plain, row))) for row in rows.rows]


def new_id(prefix):
    """A new random id, `prefix_` and 24 hex digits (the host's wasi:random)."""
    return f"{prefix}_{os.urandom(12).hex()}"


def unix_time():
    """Seconds since the Unix epoch, from the host's wall clock."""
    return int(time.time())
