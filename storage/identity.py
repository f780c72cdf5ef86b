"""What identifies stored text: sha256 digests, and text the store refuses to hold.

A document is identified by the sha256 hex of its text encoded as UTF-8, exactly as
given (no normalisation: offsets must point into what the user gave). A question is
identified the same way inside a job's identity.
"""

from __future__ import annotations

import hashlib


def text_sha256(text: str) -> str:
    """sha256 hex digest (64 lowercase characters) of `text` encoded as UTF-8.

    Raises ValueError for text that has no UTF-8 form (lone surrogates, typically from
    a file decoded with errors="surrogateescape"), naming the first offending index.
    """
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"text is not valid Unicode at character {exc.start} "
            f"(lone surrogate {text[exc.start]!r}); decode the input as UTF-8 "
            "with errors='strict' or 'replace' before submitting it"
        ) from None
    return hashlib.sha256(data).hexdigest()


def check_storable(text: str, what: str) -> None:
    """Raise ValueError when `text` cannot be stored unchanged on every supported database.

    PostgreSQL text columns cannot hold U+0000. SQLite can, but refusing it on both keeps
    a store's behaviour independent of its configuration. `what` names the value in the
    message ("document text", "question").
    """
    index = text.find("\x00")
    if index >= 0:
        raise ValueError(
            f"{what} contains a NUL character (U+0000) at index {index}; the store cannot "
            "keep it unchanged (PostgreSQL refuses it). Remove NUL characters before submitting "
            "(binary files are not documents)"
        )
