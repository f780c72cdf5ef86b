"""Plain, detached values the repository returns (no ORM objects escape a transaction).

Character offsets are Python str indices into the stored document text, end exclusive;
token indices are end inclusive. Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from docqa.storage.models import JobStatus
from docqa.core.params import AnswerParams


class StoredDocument(NamedTuple):
    """Result of `Repository.add_document`: created is False when the text was already stored."""

    id: int
    sha256: str
    created: bool


class StoredJob(NamedTuple):
    """One entry of `Repository.add_jobs`: created is False when the job already existed."""

    id: int
    created: bool


class Failure(NamedTuple):
    """A failed job for a report: `document` is its external id and/or source, else "document <id>"."""

    job_id: int
    document: str
    question: str
    error: str


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a worker now holds under a lease, with everything needed to run it.

    `revision` is None when the job has none (stored as ""). `attempts` counts this
    claim (the first claim gives 1).
    """

    job_id: int
    document_id: int
    sha256: str
    text: str
    question: str
    model: str
    revision: str | None
    params: AnswerParams
    attempts: int


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    id: int
    sha256: str
    text: str
    source: str | None
    external_id: str | None
    meta: Any
    length: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job row; `revision` is None when the job has none."""

    id: int
    document_id: int
    question: str
    model: str
    revision: str | None
    params: AnswerParams
    status: JobStatus
    attempts: int
    error: str | None
    worker: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    leased_until: datetime | None


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """One answer joined with its job and document: a row of an export."""

    answer_id: int
    document_id: int
    document_external_id: str | None
    document_source: str | None
    sha256: str
    job_id: int
    question: str
    rank: int
    text: str
    score: float
    char_start: int
    char_end: int
    window_index: int | None
    window_char_start: int | None
    window_char_end: int | None
    token_start: int | None
    token_end: int | None
    start_logit: float | None
    end_logit: float | None
    model: str
