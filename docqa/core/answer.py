"""`Answer`: one answer with its provenance, as every layer passes it around. Imports no torch."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Answer(BaseModel):
    """One answer with its provenance.

    Offsets index the document text exactly as stored (Python str indices, end
    exclusive): `document_text[char_start:char_end] == text` always holds.
    Token indices index the document's own tokenization (no special tokens),
    end inclusive. The null answer (handle_impossible_answer) has text "", offsets
    0/0 and no window or token span.
    """

    model_config = ConfigDict(extra="forbid")

    rank: int
    text: str
    score: float
    char_start: int
    char_end: int
    window_index: int | None = None
    window_char_start: int | None = None
    window_char_end: int | None = None
    token_start: int | None = None
    token_end: int | None = None
    start_logit: float | None = None
    end_logit: float | None = None
