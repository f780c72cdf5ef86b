"""Plain, detached values the repository returns (no ORM objects escape a transaction).

Character offsets are Python str indices into the stored document text, end exclusive;
token indices are end inclusive. Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime
from collections.abc import Mapping
from typing import Any, NamedTuple

from docqa.core.answer import Answer
from docqa.core.params import AnswerParams
from docqa.storage.models import AnswerRow, Document, Job, JobStatus


class StoredDocument(NamedTuple):
    """Result of `Repository.add_document`.

    `created`: a new document (a new id, path or unnamed item, or a new version of one);
    `version`: its version under its id or path (None for an unnamed document); `changed`:
    its id or path had another text before (a new version was recorded); `text_id`: its
    text; `text_created`: this call stored the text (no document had it before).
    """

    id: int
    sha256: str
    created: bool
    version: int | None = None
    changed: bool = False
    text_id: int = 0
    text_created: bool = False


class StoredJob(NamedTuple):
    """One entry of `Repository.add_jobs`: created is False when the job already existed."""

    id: int
    created: bool


class Fence(NamedTuple):
    """The claim a worker writes under: its name and each job's attempts when it claimed it
    (the lease generation: every claim adds one). A write for a job goes through only while
    the job is running under this worker with that many attempts, so a worker whose lease
    was taken back (and maybe given to another) writes nothing."""

    worker: str
    attempts: Mapping[int, int]

    def holds(self, status, worker: str | None, job_id: int, attempts: int) -> bool:
        return status == JobStatus.RUNNING and worker == self.worker and self.attempts.get(job_id) == attempts


class DeletedCounts(NamedTuple):
    """What `Repository.delete_documents` removed (or, dry run, would remove): the documents,
    and the jobs, answers and texts that no remaining document needed."""

    documents: int
    jobs: int
    answers: int
    texts: int = 0


class Failure(NamedTuple):
    """A failed job for a report: `document` names the first document that asked it (its
    external id and/or source), with how many others did."""

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
    text_id: int
    sha256: str
    text: str
    question: str
    model: str
    revision: str | None
    params: AnswerParams
    attempts: int
    n_windows: int | None = None  # from its plan (None: none stored)
    # A part of a split job runs the windows [window_start, window_end) of job parent_id.
    parent_id: int | None = None
    window_start: int | None = None
    window_end: int | None = None

    @property
    def plan_job(self) -> int:
        """The job whose window plan this one runs: its parent's for a part."""
        return self.parent_id if self.parent_id is not None else self.job_id


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """A document with its text. `version` is None for a document without id or path;
    `latest` is False once a newer version of its id or path replaced it."""

    id: int
    sha256: str
    text: str
    source: str | None
    external_id: str | None
    meta: Any
    length: int
    created_at: datetime
    text_id: int = 0
    key: str = ""
    version: int | None = None
    latest: bool = True

    @classmethod
    def from_row(cls, row: Document, sha256: str, text: str) -> DocumentRecord:
        return cls(
            id=row.id,
            sha256=sha256,
            text=text,
            source=row.source,
            external_id=row.external_id,
            meta=row.meta,
            length=len(text),
            created_at=row.created_at,
            text_id=row.text_id,
            key=row.key,
            version=row.version,
            latest=row.latest,
        )


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job row; `revision` is None when the job has none."""

    id: int
    text_id: int
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

    @classmethod
    def from_row(cls, row: Job) -> JobRecord:
        return cls(
            id=row.id,
            text_id=row.text_id,
            question=row.question,
            model=row.model,
            revision=row.revision if row.revision != "" else None,
            params=AnswerParams.model_validate_json(row.params),
            status=row.status,
            attempts=row.attempts,
            error=row.error,
            worker=row.worker,
            created_at=row.created_at,
            updated_at=row.updated_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            leased_until=row.leased_until,
        )


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """One answer of one document: the answer of its job (computed once per text) under the
    id, path, metadata and version of a document that asked that job's question. Two
    documents with one text give two records with the same answer_id and job_id."""

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
    null_start_logit: float | None
    null_end_logit: float | None
    # start + end - null start - null end logits: comparable across windows and documents.
    margin: float | None
    model: str
    # The document's metadata (JSONL "metadata") and the job's answer parameters, so two
    # jobs that differ only in, say, top_k are told apart.
    document_metadata: Any = None
    params: Any = None
    # The version of its document (id or path) this answer belongs to (None: the document
    # was submitted without an id or path), and whether a newer version replaced it.
    document_version: int | None = None
    superseded: bool = False
    # The text the answer was computed on (shared by every document with that text).
    text_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (shallow: several times faster than dataclasses.asdict,
        whose deep copy dominated the time to serve a page of answers)."""
        return {name: getattr(self, name) for name in _RESULT_FIELD_NAMES}

    @classmethod
    def from_row(
        cls, a: AnswerRow, *, document_id: int, question: str, external_id: str | None, source: str | None, sha256: str,
        metadata: Any = None, params: str | None = None, version: int | None = None, superseded: bool = False,
        text_id: int | None = None,
    ) -> ResultRecord:
        """An answer row joined with what its job and document say."""
        return cls(
            answer_id=a.id,
            document_id=document_id,
            document_external_id=external_id,
            document_source=source,
            sha256=sha256,
            job_id=a.job_id,
            question=question,
            rank=a.rank,
            text=a.text,
            score=a.score,
            char_start=a.char_start,
            char_end=a.char_end,
            window_index=a.window_index,
            window_char_start=a.window_char_start,
            window_char_end=a.window_char_end,
            token_start=a.token_start,
            token_end=a.token_end,
            start_logit=a.start_logit,
            end_logit=a.end_logit,
            null_start_logit=a.null_start_logit,
            null_end_logit=a.null_end_logit,
            margin=answer_from_row(a).margin,
            model=a.model,
            document_metadata=metadata,
            params=None if params is None else json.loads(params),
            document_version=version,
            superseded=superseded,
            text_id=text_id,
        )


_RESULT_FIELD_NAMES = tuple(f.name for f in fields(ResultRecord))


def answer_from_row(r: AnswerRow) -> Answer:
    """The `Answer` an answer row stores (its provenance fields, without the job's)."""
    return Answer(
        rank=r.rank,
        text=r.text,
        score=r.score,
        char_start=r.char_start,
        char_end=r.char_end,
        window_index=r.window_index,
        window_char_start=r.window_char_start,
        window_char_end=r.window_char_end,
        token_start=r.token_start,
        token_end=r.token_end,
        start_logit=r.start_logit,
        end_logit=r.end_logit,
        null_start_logit=r.null_start_logit,
        null_end_logit=r.null_end_logit,
    )


def document_label(document_id: int, external_id: str | None, source: str | None) -> str:
    """What names a document in a report: its external id and/or source, else "document <id>"."""
    if external_id is not None and source is not None:
        return f"{external_id} ({source})"
    if external_id is not None:
        return external_id
    if source is not None:
        return source
    return f"document {document_id}"
