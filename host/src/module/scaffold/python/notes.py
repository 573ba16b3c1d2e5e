"""The module's rules, in plain Python: tested without the host (tests/)."""

MAX_TEXT = 500


def validate(text):
    """The note's text, trimmed, and None; or None and the problem with it."""
    text = text.strip() if isinstance(text, str) else ""
    if not text:
        return None, "is required"
    if len(text) > MAX_TEXT:
        return None, f"is longer than {MAX_TEXT} characters"
    return text, None
