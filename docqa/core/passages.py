"""Passages: the unit corpus questions retrieve. Fixed per text when it is stored, so they
depend on neither the model nor the question (a job's windows depend on both: the context
a window holds is max_seq_len less the question's tokens).

A passage is a character range of its text, cut after whitespace about PASSAGE_CHARS
characters on; a text's passages cover it end to end. At read time the engine runs the
windows of the real question that overlap the retrieved passages.
"""

from __future__ import annotations

import re

# About a third of a 384-token window's context in English prose: a hit points at one to
# three windows.
PASSAGE_CHARS = 500
# A passage may end this many characters early at whitespace, rather than mid-word.
_SLACK = 120

# Words a full-text query is built from: letters and digits in any script.
_WORD = re.compile(r"\w+", re.UNICODE)
# Words too common to select anything (PostgreSQL's english configuration drops them itself).
STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have how in is it of on or that the their this "
    "to was were what when where which who whom whose why will with".split()
)


def split_passages(text: str, size: int = PASSAGE_CHARS) -> list[tuple[int, int]]:
    """(char_start, char_end) ranges covering `text` end to end, each at most `size`
    characters, ending after whitespace where there is some in its last _SLACK characters."""
    if size < 1:
        raise ValueError(f"passage size must be at least 1, got {size}")
    ranges: list[tuple[int, int]] = []
    start, n = 0, len(text)
    while start < n:
        end = min(start + size, n)
        if end < n:
            cut = max(text.rfind(" ", end - _SLACK, end), text.rfind("\n", end - _SLACK, end))
            if cut > start:
                end = cut + 1
        ranges.append((start, end))
        start = end
    return ranges


def query_words(question: str) -> list[str]:
    """The question's distinct words, lower-cased, stopwords left out, in order."""
    words = (w.lower() for w in _WORD.findall(question))
    return list(dict.fromkeys(w for w in words if w not in STOPWORDS))


def fts5_query(question: str) -> str | None:
    """An SQLite FTS5 query matching passages holding any of the question's words (each a
    quoted string: no word can act as an FTS5 operator). None: the question has no words."""
    words = query_words(question)
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
