"""Typed data that crosses process boundaries: answer parameters, job messages, answers.

Everything here is a pydantic model serialized as JSON (never pickle: a pickle on a
shared broker is remote code execution). This module imports no torch, so producers
and storage can use it without loading the model stack.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1


class AnswerParams(BaseModel):
    """How a question is answered; part of a job's identity.

    Defaults are those of the transformers 5.2.0 question-answering pipeline.
    Lengths are in tokens of the model's tokenizer.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_seq_len: int = Field(384, ge=8, description="tokens per window: [CLS] question [SEP] context [SEP]")
    doc_stride: int = Field(128, ge=0, description="context tokens two neighbouring windows share")
    top_k: int = Field(1, ge=1, description="answers returned per question")
    max_answer_len: int = Field(15, ge=1, description="longest answer span, in tokens")
    handle_impossible_answer: bool = Field(False, description="allow the empty (null) answer")
    align_to_words: bool = Field(True, description="widen spans to whole words")
    merge_by_text: bool = Field(
        True,
        description="merge candidates whose text is equal ignoring case (reference behaviour); "
        "False keeps separate occurrences apart",
    )

    @model_validator(mode="after")
    def _check_stride(self) -> "AnswerParams":
        if self.doc_stride >= self.max_seq_len:
            raise ValueError(
                f"doc_stride ({self.doc_stride}) must be smaller than max_seq_len ({self.max_seq_len})"
            )
        return self

    def canonical_json(self) -> str:
        """Stable JSON (sorted keys, no spaces): the form stored with a job and hashed."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """sha256 hex of `canonical_json()`: part of the job identity."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


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


class JobMessage(BaseModel):
    """What goes on the broker: only identifiers. The SQL job row is the source of truth."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    job_ids: list[int]

    @model_validator(mode="after")
    def _check_version(self) -> "JobMessage":
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"message schema_version {self.schema_version} is not supported "
                f"(this worker reads version {SCHEMA_VERSION})"
            )
        return self
