"""The scoring rules, on plain CPython: `python3 -m unittest discover -s tests`."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import rules  # noqa: E402


def facts(**changed):
    base = dict(
        customer_known=True,
        disposable_email=False,
        failed_settlements=0,
        total_cents=5_000,
        largest_quantity=1,
    )
    base.update(changed)
    return rules.Facts(**base)


class ScoreTest(unittest.TestCase):
    def test_an_ordinary_order_is_approved(self):
        self.assertEqual(rules.score(facts()), (0, []))
        self.assertEqual(rules.verdict(0), "approve")

    def test_an_unknown_customer_is_reviewed(self):
        points, reasons = rules.score(facts(customer_known=False))
        self.assertEqual(reasons, ["unknown-customer"])
        self.assertEqual(rules.verdict(points), "review")

    def test_one_failed_settlement_alone_is_approved_two_are_rejected(self):
        one, _ = rules.score(facts(failed_settlements=1))
        two, reasons = rules.score(facts(failed_settlements=2))
        self.assertEqual(rules.verdict(one), "approve")
        self.assertEqual(rules.verdict(two), "reject")
        self.assertEqual(reasons, ["failed-settlements"])

    def test_rules_add_up(self):
        points, reasons = rules.score(
            facts(disposable_email=True, total_cents=100_000, largest_quantity=25)
        )
        self.assertEqual(points, 70)
        self.assertEqual(reasons, ["disposable-email", "large-order", "bulk-quantity"])
        self.assertEqual(rules.verdict(points), "review")

    def test_the_email_check_only_applies_to_known_customers(self):
        _, reasons = rules.score(facts(customer_known=False, disposable_email=True))
        self.assertEqual(reasons, ["unknown-customer"])

    def test_verdict_thresholds(self):
        self.assertEqual(rules.verdict(49), "approve")
        self.assertEqual(rules.verdict(50), "review")
        self.assertEqual(rules.verdict(79), "review")
        self.assertEqual(rules.verdict(80), "reject")

    def test_email_domain(self):
        self.assertEqual(rules.email_domain("Ada@Mailinator.COM "), "mailinator.com")
        self.assertEqual(rules.email_domain("no-at-sign"), "")


if __name__ == "__main__":
    unittest.main()
