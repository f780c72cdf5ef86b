"""How a question is answered: `AnswerParams`, the parameters that are part of a job's identity.

Declared once here; the CLI flags, the DOCQA_* variables, `Settings` fields, `--help`
texts and the job identity digest all follow from these fields. Imports no torch.
"""

from __future__ import annotations

import hashlib
import json

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The fields AnswerParams had when the first jobs were stored: they are always part of a
# job's identity. A field added later counts only when it differs from its default, so
# adding a parameter keeps every stored job's identity (and answers) valid.
IDENTITY_FIELDS_V1 = frozenset(
    {"max_seq_len", "doc_stride", "top_k", "max_answer_len", "handle_impossible_answer", "align_to_words", "merge_by_text"}
)


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
        description="merge equal answer texts across windows (pipeline behaviour); "
        "false (`--keep-occurrences`) keeps separate occurrences apart",
    )
    pair_template: Literal["checkpoint", "transformers-5.2"] = Field(
        "checkpoint",
        description="how question and context are joined: as the checkpoint's tokenizer.json says "
        "(checkpoint), or as transformers 5.2.0's tokenizer classes did (transformers-5.2: differs for "
        "XLM-RoBERTa, ALBERT, XLNet and ElectraTokenizer checkpoints; README: Model families)",
    )

    @model_validator(mode="after")
    def _check_stride(self) -> "AnswerParams":
        if self.doc_stride >= self.max_seq_len:
            raise ValueError(
                f"doc_stride ({self.doc_stride}) must be smaller than max_seq_len ({self.max_seq_len})"
            )
        return self

    @property
    def n_candidates(self) -> int:
        """Spans each window proposes before the merge: the reference keeps 2*top_k+10 when
        it aligns to words (alignment can make spans collide), else top_k."""
        return self.top_k * 2 + 10 if self.align_to_words else self.top_k

    def canonical_json(self) -> str:
        """Stable JSON (sorted keys, no spaces): the form stored with a job and hashed.

        Holds the first fields always and a later field only when it is not at its
        default (see IDENTITY_FIELDS_V1).
        """
        values = self.model_dump(mode="json")
        kept = {
            name: value
            for name, value in values.items()
            if name in IDENTITY_FIELDS_V1 or value != type(self).model_fields[name].default
        }
        return json.dumps(kept, sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """sha256 hex of `canonical_json()`: part of the job identity."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()
