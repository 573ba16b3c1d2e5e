"""The module's rules, on plain CPython: `python3 -m unittest discover -s tests`."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from notes import validate  # noqa: E402


class ValidateTest(unittest.TestCase):
    def test_a_note_needs_some_text_and_not_too_much(self):
        self.assertEqual(validate("  milk  "), ("milk", None))
        self.assertEqual(validate("   "), (None, "is required"))
        self.assertEqual(validate(None), (None, "is required"))
        self.assertEqual(validate("x" * 501), (None, "is longer than 500 characters"))


if __name__ == "__main__":
    unittest.main()
