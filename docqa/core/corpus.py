"""What a corpus question returns (`Client.ask_corpus`, `docqa ask --corpus`, POST /v1/ask).
Imports no torch."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from docqa.core.answer import Answer

# The most passages one corpus question may read.
MAX_CORPUS_WINDOWS = 512


class CorpusAnswer(BaseModel):
    """One answer of one document to a corpus question: the document it is reported under
    (documents sharing a text share the answer), the answer with its provenance (offsets
    into the document's text, the job's window index, score and margin as a job over the
    whole text gives them), and the best retrieval score among the text's passages read."""

    model_config = ConfigDict(extra="forbid")

    document_id: int
    document_key: str
    path: str | None
    external_id: str | None
    metadata: Any = None
    version: int | None
    latest: bool
    text_id: int
    retrieval_score: float
    answer: Answer


class CorpusResult(BaseModel):
    """A corpus question's answers, ranked across documents by margin (the null answer
    last), with what it took: passages retrieved, texts and windows read, and the time
    spent retrieving and reading, in milliseconds."""

    model_config = ConfigDict(extra="forbid")

    question: str
    model: str
    answers: list[CorpusAnswer]
    passages: int
    texts: int
    windows: int
    retrieval_ms: float
    reading_ms: float
    errors: list[str] = []
