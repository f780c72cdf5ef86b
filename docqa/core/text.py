"""Small helpers for the sentences docqa prints: counts with their noun, quoted inputs clipped."""

from __future__ import annotations

# Characters of a quoted input (a question, a path, a reason) kept in a message.
CLIP_CHARS = 80


def plural(n: int, singular: str, plural_form: str | None = None) -> str:
    """'1 document', '2 documents', '0 documents'; `plural_form` for irregular nouns
    (plural(n, "match", "matches"))."""
    noun = singular if n == 1 else (plural_form or singular + "s")
    return f"{n:,} {noun}"


def clip(text: str, limit: int = CLIP_CHARS) -> str:
    """`text` as it is when it has at most `limit` characters; else its first characters,
    an ellipsis and its full length, so a 10,000-character question does not flood a
    message: 'Who wrote ... (10,000 characters)'."""
    if len(text) <= limit:
        return text
    return f"{text[: max(1, limit - 1)]}… ({len(text):,} characters)"
