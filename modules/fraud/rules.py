"""The scoring rules: plain Python, no host calls, so they are tested on their own
(tests/test_rules.py) and read as the policy a fraud team owns.

Each rule adds points and names itself; the sum decides the verdict.
"""

from dataclasses import dataclass

#: From this score an order is charged but flagged for a person to look at.
REVIEW_FROM = 50
#: From this score an order is not charged.
REJECT_FROM = 80
#: An order this large (in cents) is worth a second look on its own.
LARGE_ORDER_CENTS = 100_000
#: One line with this many of one product looks like reselling.
BULK_QUANTITY = 20

UNKNOWN_CUSTOMER = 50
DISPOSABLE_EMAIL = 40
PER_FAILED_SETTLEMENT = 40
LARGE_ORDER = 20
BULK = 10


@dataclass
class Facts:
    """What the module knows about an order when it scores it."""

    customer_known: bool
    disposable_email: bool
    failed_settlements: int
    total_cents: int
    largest_quantity: int


def score(facts):
    """The order's score and the rules that raised it, in the order they were applied."""
    points = 0
    reasons = []
    if not facts.customer_known:
        points += UNKNOWN_CUSTOMER
        reasons.append("unknown-customer")
    elif facts.disposable_email:
        points += DISPOSABLE_EMAIL
        reasons.append("disposable-email")
    if facts.failed_settlements > 0:
        points += PER_FAILED_SETTLEMENT * facts.failed_settlements
        reasons.append("failed-settlements")
    if facts.total_cents >= LARGE_ORDER_CENTS:
        points += LARGE_ORDER
        reasons.append("large-order")
    if facts.largest_quantity >= BULK_QUANTITY:
        points += BULK
        reasons.append("bulk-quantity")
    return points, reasons


def verdict(points):
    """`approve`, `review` or `reject` for a score."""
    if points >= REJECT_FROM:
        return "reject"
    if points >= REVIEW_FROM:
        return "review"
    return "approve"


def email_domain(email):
    """The domain of an address, lower-cased; "" when it has none."""
    _, at, domain = email.rpartition("@")
    return domain.strip().lower() if at else ""
