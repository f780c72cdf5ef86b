"""What identifies stored things: texts by sha256, documents by key; text the store refuses.

A text is identified by the sha256 hex of its UTF-8 encoding, exactly as given (no
normalisation: offsets must point into what the user gave). A question is identified
the same way inside a job's identity. A document is identified by its key: its id, its
file's real path, or, with neither, its source and its text together.
"""

from __future__ import annotations

import hashlib
import os


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


def id_key(external_id: str) -> str:
    """The key of a document submitted with an id (JSONL, Client, HTTP)."""
    return f"id:{external_id}"


def path_key(path: str) -> str:
    """The key of a document read from the file at `path`: its real path (symlinks
    resolved, as the producer reads it), so any spelling of the path names it."""
    return f"path:{os.path.realpath(path)}"


def anonymous_key(source: str, text_digest: str) -> str:
    """The key of a document with neither id nor path (stdin, an unnamed text): one per
    (source, text), so the same input again is the same document, never a new version."""
    return "anon:" + hashlib.sha256(f"{source}\n{text_digest}".encode("utf-8")).hexdigest()


def is_versioned(key: str) -> bool:
    """Whether documents under `key` have versions (ids and paths do; unnamed ones do not)."""
    return not key.startswith("anon:")
