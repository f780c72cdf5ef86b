"""`Answer`: one answer with its provenance, as every layer passes it around. Imports no torch."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field, model_validator


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
    # The window's raw logits at CLS (the "no answer" position).
    null_start_logit: float | None = None
    null_end_logit: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _derived_fields_are_not_input(cls, data: Any) -> Any:
        # `margin` is in every dump; reading a dump back recomputes it instead.
        if isinstance(data, dict) and "margin" in data:
            data = {k: v for k, v in data.items() if k != "margin"}
        return data

    @computed_field  # type: ignore[prop-decorator]  # in model_dump and JSON output, never read back in
    @property
    def margin(self) -> float | None:
        """start_logit + end_logit - null_start_logit - null_end_logit: the log-odds, in the
        model's own units, of this span against "no answer" in its window. Unlike `score`
        (a softmax within one window, so its size depends on the window's other tokens)
        it compares across windows and documents. None for the null answer."""
        s, e, null_s, null_e = self.start_logit, self.end_logit, self.null_start_logit, self.null_end_logit
        if s is None or e is None or null_s is None or null_e is None:
            return None
        return s + e - null_s - null_e


class QuestionAnswers(BaseModel):
    """The answers to one question about one document, best first (`docqa.ask`).

    `error` says why the question could not be answered (then `answers` is empty);
    `windows` is how many token windows the document was read in; `model` is the label
    of the model that answered (`model@revision`, `+bfloat16` when not float32).
    """

    model_config = ConfigDict(extra="forbid")

    question: str
    answers: list[Answer]
    windows: int
    error: str | None = None
    model: str

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def best(self) -> Answer | None:
        """The best answer, or None when there is none."""
        return self.answers[0] if self.answers else None
