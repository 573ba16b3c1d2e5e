"""The `fraud` module: scores each order before it is charged.

A Python team owns it; the shop's Rust modules call it through `shop:fraud/api`
(wit/shop/fraud.wit) like any other module, and it calls `users` in turn.

- `assess` (called by `orders` between reserving stock and charging the card): looks the
  customer up through `shop:users/api`, reads what this module has learnt about them,
  scores the order with `rules.py`, and records the assessment — publishing
  `fraud.flagged` in the same transaction when the verdict is not `approve`.
- `payments.failed` (a charge that did not settle): counts against the order's
  customer, once per charge, in the handler's transaction.
- `GET /fraud/assessments/{order_id}`: an order's assessment, or 404.
- `GET /fraud/customers/{id}`: a customer's history: failed settlements, assessments,
  flagged orders.

Nothing is kept in memory between requests or calls: HTTP requests get a fresh
instance, and the calls from orders reuse warm ones (`instances = "reuse"`).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import api
from wit_world.imports import publisher, sql, users

import modhost_guest
from modhost_guest import HttpError, Response, params, records
import rules

FLAGGED = "fraud.flagged"
VERDICTS = {
    "approve": api.Verdict.APPROVE,
    "review": api.Verdict.REVIEW,
    "reject": api.Verdict.REJECT,
}


def unavailable(what, error):
    return Err(api.AssessError_Unavailable(f"{what}: {error}"))


def stored(order_id):
    """The assessment already made for `order_id`, as a record, or None."""
    rows = records(
        sql.query(
            "SELECT id, order_id, customer_id, total_cents, currency, score, verdict, "
            "reasons, assessed_at FROM assessments WHERE order_id = $1",
            params(order_id),
        )
    )
    return rows[0] if rows else None


def as_assessment(row):
    return api.Assessment(
        id=row["id"],
        order_id=row["order_id"],
        score=row["score"],
        verdict=VERDICTS[row["verdict"]],
        reasons=json.loads(row["reasons"]),
    )


def facts_about(request):
    """What the module knows about the order's customer, from `users` and its own data."""
    try:
        user = users.get(request.customer_id)
    except Err as error:
        raise unavailable("users cannot be asked", error.value)
    try:
        disposable = False
        if user is not None:
            domain = rules.email_domain(user.email)
            found = sql.query(
                "SELECT domain FROM disposable_domains WHERE domain = $1", params(domain)
            )
            disposable = bool(found.rows)
        history = records(
            sql.query(
                "SELECT failed_settlements FROM customer_history WHERE customer_id = $1",
                params(request.customer_id),
            )
        )
    except Err as error:
        raise unavailable("the fraud database is unavailable", error.value)
    return rules.Facts(
        customer_known=user is not None,
        disposable_email=disposable,
        failed_settlements=history[0]["failed_settlements"] if history else 0,
        total_cents=request.total_cents,
        largest_quantity=max(line.quantity for line in request.lines),
    )


def record(request, assessment_id, points, verdict, reasons):
    """Stores the assessment, and publishes `fraud.flagged` for a flagged one, in one
    transaction; rolled back when anything in it fails."""
    tx = sql.begin()
    try:
        tx.execute(
            "INSERT INTO assessments (id, order_id, customer_id, total_cents, currency, "
            "score, verdict, reasons, assessed_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            params(
                assessment_id,
                request.order_id,
                request.customer_id,
                request.total_cents,
                request.currency,
                points,
                verdict,
                json.dumps(reasons),
                modhost_guest.unix_time(),
            ),
        )
        if verdict != "approve":
            payload = {
                "assessment_id": assessment_id,
                "order_id": request.order_id,
                "customer_id": request.customer_id,
                "score": points,
                "verdict": verdict,
                "reasons": reasons,
            }
            publisher.publish_in(tx, FLAGGED, request.order_id, json.dumps(payload).encode(), [])
    except BaseException:
        sql.Transaction.rollback(tx)
        raise
    sql.Transaction.commit(tx)


class Api(exports.Api):
    def assess(self, request):
        if not request.lines:
            raise Err(api.AssessError_Invalid("an order has at least one line"))
        if request.total_cents == 0:
            raise Err(api.AssessError_Invalid("an order costs something"))
        try:
            existing = stored(request.order_id)
        except Err as error:
            raise unavailable("the fraud database is unavailable", error.value)
        if existing is not None:
            return as_assessment(existing)

        points, reasons = rules.score(facts_about(request))
        verdict = rules.verdict(points)
        assessment_id = modhost_guest.new_id("frd")
        try:
            record(request, assessment_id, points, verdict, reasons)
        except Err as error:
            if isinstance(error.value, sql.Error_ConstraintViolation):
                # The same order assessed twice at once: the first one recorded wins.
                existing = stored(request.order_id)
                if existing is not None:
                    return as_assessment(existing)
            raise unavailable("the assessment could not be recorded", error.value)
        return api.Assessment(
            id=assessment_id,
            order_id=request.order_id,
            score=points,
            verdict=VERDICTS[verdict],
            reasons=reasons,
        )


class Subscriber(exports.Subscriber):
    def handle(self, event, tx):
        if event.topic != "payments.failed":
            raise Err(f"fraud does not subscribe to {event.topic}")
        try:
            failed = json.loads(event.payload)
            receipt_id, order_id = failed["receipt_id"], failed["order_id"]
        except (ValueError, KeyError, TypeError) as error:
            raise Err(f"payments.failed {event.id} is malformed: {error}")
        try:
            assessed = records(
                tx.query("SELECT customer_id FROM assessments WHERE order_id = $1", params(order_id))
            )
            if not assessed:
                return  # an order placed before the module scored orders: nothing to learn
            counted = tx.query(
                "INSERT INTO counted_failures (receipt_id) VALUES ($1) "
                "ON CONFLICT (receipt_id) DO NOTHING RETURNING receipt_id",
                params(receipt_id),
            )
            if not counted.rows:
                return  # this charge was counted already
            tx.execute(
                "INSERT INTO customer_history (customer_id, failed_settlements) VALUES ($1, 1) "
                "ON CONFLICT (customer_id) DO UPDATE "
                "SET failed_settlements = customer_history.failed_settlements + 1",
                params(assessed[0]["customer_id"]),
            )
        except Err as error:
            raise Err(f"recording the failed settlement of {order_id}: {error.value}")


def handle(request):
    match (request.method, request.segments()):
        case ("GET", ["fraud", "assessments", order_id]):
            return assessment(order_id)
        case ("GET", ["fraud", "customers", customer_id]):
            return customer(customer_id)
        case (method, ["fraud", ("assessments" | "customers"), _]):
            return Response.method_not_allowed(method)
        case _:
            return Response.not_found(f"no such resource: {request.path}")


def database(call):
    try:
        return call()
    except Err as error:
        raise HttpError(Response.error(503, "unavailable", f"the fraud database is unavailable: {error.value}"))


def assessment(order_id):
    row = database(lambda: stored(order_id))
    if row is None:
        return Response.not_found(f"no assessment of order {order_id}")
    row["reasons"] = json.loads(row["reasons"])
    return Response.json(200, row)


def customer(raw_id):
    if not (raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= 18):
        return Response.error(400, "invalid_id", "a customer id is a positive integer")
    customer_id = int(raw_id)
    history = database(
        lambda: records(
            sql.query(
                "SELECT failed_settlements FROM customer_history WHERE customer_id = $1",
                params(customer_id),
            )
        )
    )
    counts = database(
        lambda: records(
            sql.query(
                "SELECT COUNT(*) AS assessed, "
                "COALESCE(SUM(CASE WHEN verdict = 'approve' THEN 0 ELSE 1 END), 0) AS flagged "
                "FROM assessments WHERE customer_id = $1",
                params(customer_id),
            )
        )
    )
    return Response.json(
        200,
        {
            "customer_id": customer_id,
            "failed_settlements": history[0]["failed_settlements"] if history else 0,
            "assessments": counts[0]["assessed"],
            "flagged": counts[0]["flagged"],
        },
    )


IncomingHandler = modhost_guest.http_module(handle)
