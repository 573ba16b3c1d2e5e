// The JavaScript module SDK: what `modhost_guest` (modules/sdk) is to Rust modules and
// modules/sdk-python to Python ones. Import it with a relative path from the module's
// main file (componentize-js follows relative imports when it builds):
//
//   import { httpModule, Response } from "../sdk-js/modhost_guest.js";
//   export const incomingHandler = httpModule(handle);   // handle(Request) -> Response
//
// - `httpModule(handle)`: the `wasi:http/incoming-handler` export, serving with
//   `handle`; a thrown `HttpError` answers with its response, anything else with 500.
// - `Request`, `Response`: a request read whole (the gateway bounds its size), and an
//   answer with the JSON error shape every module of the shop uses.
// - `params(...)`, `records(rows)`: JavaScript values to `modhost:sql` values and back
//   (WIT's 64-bit integers are BigInts in JavaScript; `records` gives Numbers where
//   they are exact).
// - `newId(prefix)`, `unixTime()`: ids and time from the host (wasi:random, clocks).

import {
  Fields,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from "wasi:http/types@0.2.12";

// The most a response body write may carry at once (wasi:io's blocking write limit).
const WRITE_CHUNK = 4096;
// How much to ask for per read of a request body.
const READ_CHUNK = 65536n;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One HTTP request: method, path, query, headers and the whole body. */
export class Request {
  constructor(method, path, query, headers, body) {
    this.method = method;
    this.path = path;
    this.query = query;
    this.headers = headers;
    this.body = body;
  }

  /** The path's non-empty segments, percent-decoded: `/orders/7` → ["orders", "7"]. */
  segments() {
    return this.path.split("/").filter((part) => part).map(decodeURIComponent);
  }

  /** The first value of query parameter `name`, or null. */
  queryParam(name) {
    return this.query.get(name);
  }

  /** The first value of header `name` (any case) as text, or null. */
  header(name) {
    const wanted = name.toLowerCase();
    const found = this.headers.find(([key]) => key.toLowerCase() === wanted);
    return found ? decoder.decode(found[1]) : null;
  }

  /** The body as JSON; throws an `HttpError` with a 400 answer when it is not. */
  json() {
    try {
      return JSON.parse(this.body.length ? decoder.decode(this.body) : "null");
    } catch (error) {
      throw new HttpError(Response.error(400, "invalid_json", `the body is not JSON: ${error.message}`));
    }
  }
}

/** An HTTP answer. */
export class Response {
  constructor(status, headers = [], body = new Uint8Array()) {
    this.status = status;
    this.headers = headers;
    this.body = body;
  }

  /** `value` as a JSON body. */
  static json(status, value) {
    return new Response(status, [["content-type", encoder.encode("application/json")]], encoder.encode(JSON.stringify(value)));
  }

  /** `{"error": {code, message, ...details}}`, the shape every shop module uses. */
  static error(status, code, message, details = {}) {
    return Response.json(status, { error: { ...details, code, message } });
  }

  /** 400 naming each field and its problem: `problems = {field: problem}`. */
  static validation(message, problems) {
    return Response.error(400, "validation", message, { fields: problems });
  }

  /** 404 saying what was not found. */
  static notFound(what) {
    return Response.error(404, "not_found", what);
  }

  /** 405 for a method a route does not take. */
  static methodNotAllowed(method) {
    return Response.error(405, "method_not_allowed", `${method} is not allowed here`);
  }
}

/** Thrown inside a handler to answer with `response` at once. */
export class HttpError extends Error {
  constructor(response) {
    super(`HTTP ${response.status}`);
    this.response = response;
  }
}

/** The `wasi:http/incoming-handler` export, serving every request with `handle`. */
export function httpModule(handle) {
  return {
    handle(incoming, responseOut) {
      let response;
      try {
        response = handle(read(incoming));
      } catch (error) {
        if (error instanceof HttpError) {
          response = error.response;
        } else {
          console.error(`the module failed: ${error}\n${error?.stack ?? ""}`);
          response = Response.error(500, "internal", "the module failed");
        }
      }
      write(response, responseOut);
    },
  };
}

function read(incoming) {
  const method = incoming.method();
  const name = method.tag === "other" ? method.val.toUpperCase() : method.tag.toUpperCase();
  const target = incoming.pathWithQuery() ?? "/";
  const [path, query = ""] = target.split("?", 2);
  const headers = incoming.headers().entries();
  // modhost hands modules whole bodies with an exact content-length; without one (or
  // with 0) there is no body, and not opening the stream saves the host work.
  const hasBody = headers.some(([key, value]) => {
    const lower = key.toLowerCase();
    return (lower === "content-length" && decoder.decode(value) !== "0") || lower === "transfer-encoding";
  });
  let body = new Uint8Array();
  if (hasBody) {
    const chunks = [];
    const stream = incoming.consume().stream();
    for (;;) {
      try {
        chunks.push(stream.blockingRead(READ_CHUNK));
      } catch (error) {
        if (error?.payload?.tag === "closed") break;
        throw error;
      }
    }
    body = concat(chunks);
  }
  return new Request(name, path, new URLSearchParams(query), headers, body);
}

function concat(chunks) {
  const total = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
  const whole = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    whole.set(chunk, at);
    at += chunk.length;
  }
  return whole;
}

function write(response, responseOut) {
  const outgoing = new OutgoingResponse(Fields.fromList(response.headers));
  outgoing.setStatusCode(response.status);
  const body = outgoing.body();
  ResponseOutparam.set(responseOut, { tag: "ok", val: outgoing });
  const stream = body.write();
  for (let at = 0; at < response.body.length; at += WRITE_CHUNK) {
    stream.blockingWriteAndFlush(response.body.subarray(at, at + WRITE_CHUNK));
  }
  stream[Symbol.dispose]();
  OutgoingBody.finish(body, undefined);
}

/** JavaScript values as `modhost:sql` parameters: null, boolean, number, bigint, string, Uint8Array. */
export function params(...values) {
  return values.map((value) => {
    if (value === null || value === undefined) return { tag: "null" };
    if (typeof value === "boolean") return { tag: "boolean", val: value };
    if (typeof value === "bigint") return { tag: "integer", val: value };
    if (typeof value === "number") {
      return Number.isInteger(value) ? { tag: "integer", val: BigInt(value) } : { tag: "real", val: value };
    }
    if (typeof value === "string") return { tag: "text", val: value };
    if (value instanceof Uint8Array) return { tag: "blob", val: value };
    throw new TypeError(`no SQL value for ${typeof value}`);
  });
}

/** A `modhost:sql` result as a list of objects, column name → JavaScript value. */
export function records(rows) {
  const plain = (value) => {
    if (value.tag === "null") return null;
    if (typeof value.val === "bigint" && Number.isSafeInteger(Number(value.val))) return Number(value.val);
    return value.val;
  };
  return rows.rows.map((row) => Object.fromEntries(rows.columns.map((column, i) => [column, plain(row[i])])));
}

/** A new random id: `prefix_` and 24 hex digits (the host's wasi:random). */
export function newId(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `${prefix}_${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** Seconds since the Unix epoch, from the host's wall clock. */
export function unixTime() {
  return Math.floor(Date.now() / 1000);
}
