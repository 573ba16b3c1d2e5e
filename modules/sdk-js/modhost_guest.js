// The JavaScript module SDK: what `modhost_guest` (modules/sdk) is to Rust modules and
// modules/sdk-python to Python ones. Import it with a relative path from the module's
// main file (componentize-js follows relative imports when it builds):
//
//   import { httpModule, Response } from "../sdk-js/modhost_guest.js";
//   export const incomingHandler = httpModule(handle);   // handle(Request) -> Response
//
// - `httpModule(handle)`: the `wasi:http/incoming-handler` export, serving with
//   `handle`; a thrown `HttpError` answers with its response, anything else with 500.
//   Requests behave as in the Rust SDK: raw path segments and query values (decoding
//   is the caller's), an empty body is no JSON, a header the host refuses is left out.
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

  /** The path's non-empty segments: `/orders/7` → ["orders", "7"]. */
  segments() {
    return this.path.split("/").filter((part) => part);
  }

  /** The first value of query parameter `name`, or null; percent-decoding is left to
   * the caller (as in the Rust SDK). */
  queryParam(name) {
    for (const pair of this.query ? this.query.split("&") : []) {
      const at = pair.indexOf("=");
      const [key, value] = at < 0 ? [pair, ""] : [pair.slice(0, at), pair.slice(at + 1)];
      if (key === name) return value;
    }
    return null;
  }

  /** The first value of header `name` (any case) as text, or null (also when it is not
   * UTF-8). */
  header(name) {
    const wanted = name.toLowerCase();
    const found = this.headers.find(([key]) => key.toLowerCase() === wanted);
    if (!found) return null;
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(found[1]);
    } catch {
      return null;
    }
  }

  /** The body as JSON; throws an `HttpError` with a 400 answer when it is not (an
   * empty body is not). */
  json() {
    try {
      return JSON.parse(decoder.decode(this.body));
    } catch (error) {
      throw new HttpError(Response.error(400, "invalid_json", `request body: ${error.message}`));
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

/** The `wasi:http/incoming-handler` export, serving every request with `handle`. A
 * thrown `HttpError` answers with its response; anything else thrown, or an answer
 * that is no `Response`, answers 500 (the error goes to the module's stderr, which the
 * host logs as the module's output). */
export function httpModule(handle) {
  return {
    handle(incoming, responseOut) {
      let response;
      let outgoing;
      try {
        try {
          response = handle(read(incoming));
        } catch (error) {
          if (!(error instanceof HttpError)) throw error;
          response = error.response;
        }
        if (!(response instanceof Response)) throw new TypeError("the handler returned no Response");
        outgoing = prepare(response);
      } catch (error) {
        console.error(`the module failed: ${error}\n${error?.stack ?? ""}`);
        response = Response.error(500, "internal", "the module failed");
        outgoing = prepare(response);
      }
      write(outgoing, response.body, responseOut);
    },
  };
}

function read(incoming) {
  const method = incoming.method();
  const name = method.tag === "other" ? method.val.toUpperCase() : method.tag.toUpperCase();
  const target = incoming.pathWithQuery() ?? "/";
  const mark = target.indexOf("?");
  const [path, query] = mark < 0 ? [target, ""] : [target.slice(0, mark), target.slice(mark + 1)];
  const fields = incoming.headers();
  const headers = fields.entries();
  fields[Symbol.dispose]();
  // modhost hands modules whole bodies with an exact content-length; without one (or
  // with 0) there is no body, and not opening the stream saves the host work.
  const hasBody = headers.some(([key, value]) => {
    const lower = key.toLowerCase();
    return (lower === "content-length" && decoder.decode(value) !== "0") || lower === "transfer-encoding";
  });
  let body = new Uint8Array();
  if (hasBody) {
    const chunks = [];
    let incomingBody;
    let stream;
    try {
      incomingBody = incoming.consume();
      stream = incomingBody.stream();
      for (;;) {
        try {
          chunks.push(stream.blockingRead(READ_CHUNK));
        } catch (error) {
          if (error?.payload?.tag === "closed") break;
          throw error;
        }
      }
    } catch (error) {
      throw new HttpError(Response.error(400, "bad_request", `reading request body: ${JSON.stringify(error?.payload ?? String(error))}`));
    } finally {
      // The stream is the body's child: it goes first.
      stream?.[Symbol.dispose]();
      incomingBody?.[Symbol.dispose]();
    }
    body = concat(chunks);
  }
  return new Request(name, path, query, headers, body);
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

/** The `outgoing-response` for `response`: a header the host refuses (forbidden or
 * malformed) is left out rather than losing the answer, as in the Rust SDK; a status
 * it refuses throws. */
function prepare(response) {
  const fields = new Fields();
  for (const [key, value] of response.headers) {
    try {
      fields.append(key, value);
    } catch {
      // left out
    }
  }
  const outgoing = new OutgoingResponse(fields);
  try {
    outgoing.setStatusCode(response.status);
  } catch {
    throw new RangeError(`${response.status} is not an HTTP status`);
  }
  return outgoing;
}

function write(outgoing, data, responseOut) {
  const body = outgoing.body();
  ResponseOutparam.set(responseOut, { tag: "ok", val: outgoing });
  const stream = body.write();
  for (let at = 0; at < data.length; at += WRITE_CHUNK) {
    stream.blockingWriteAndFlush(data.subarray(at, at + WRITE_CHUNK));
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
