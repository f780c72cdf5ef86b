"""The SQL schema: documents, question jobs and their answers.

The job table is the source of truth for work (the broker only delivers job ids).
Invariants the rows keep:

- `Document.text` is exactly what was submitted; `Document.sha256` is the sha256 hex of
  its UTF-8 encoding and is unique, so one text is stored once.
- A job's identity is (document, question, model, revision, answer parameters); the
  unique constraint `uq_jobs_identity` makes submitting it again find the existing job.
- For every answer row, `document.text[char_start:char_end] == text` (Python str indices,
  end exclusive); token indices index the document's own tokenization, end inclusive.
- Each job has at most one set of answers: (job_id, rank) is unique, rank is 0-based.

All timestamps are timezone-aware UTC. Keep this module and `migrations/` in step:
`tests/storage/test_migrations.py` compares them.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    LargeBinary,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text as sql_text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from docqa.storage.columns import StrEnumType, UTCDateTime, utcnow

# Explicit constraint names: the migrations use the same names, and PostgreSQL needs a
# name to drop or alter a constraint later.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class JobStatus(enum.StrEnum):
    """Where a job is. Stored as its lowercase value in a VARCHAR(16) column.

    queued -> running -> done | failed; running -> queued again when its lease runs out
    (the worker died) and it has attempts left.
    """

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Document(Base):
    """A document's text, stored once per distinct text (by sha256)."""

    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    text: Mapped[str] = mapped_column(Text)
    # Where the text came from: a file path, "stdin" or "jsonl:<file>:<line>".
    source: Mapped[str | None] = mapped_column(Text)
    # The JSONL record's "id", if it had one.
    external_id: Mapped[str | None] = mapped_column(Text)
    # `metadata` is reserved by declarative classes; the column keeps the plain name.
    meta: Mapped[Any | None] = mapped_column("metadata", JSON(none_as_null=True))
    # len(text): Python str characters (code points).
    length: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The version number this text was last recorded as under its key (see
    # DocumentVersion); NULL for a document submitted without an id or a file path.
    version: Mapped[int | None] = mapped_column(Integer)
    # Set while none of the document's version rows is latest: newer content replaced it.
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    jobs: Mapped[list[Job]] = relationship(back_populates="document")


class DocumentKey(Base):
    """A version key's last version number: numbers are never reused while the key has
    versions stored; concurrent producers of one key lock this row in turn."""

    __tablename__ = "document_keys"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    last_version: Mapped[int] = mapped_column(Integer)


class DocumentVersion(Base):
    """Version `version` of the document named `key` had this document's text.

    `key` is "id:<external id>" or "path:<absolute file path>". Versions count 1, 2, ...
    per key; exactly one row per key is `latest` (a partial unique index). Reverting to an
    earlier text adds a new version pointing at the existing document (its answers exist).
    """

    __tablename__ = "document_versions"
    __table_args__ = (
        UniqueConstraint("key", "version", name="uq_document_versions_key"),
        Index("ix_document_versions_document_id", "document_id"),
        Index(
            "uq_document_versions_latest_key",
            "key",
            unique=True,
            sqlite_where=sql_text("latest"),
            postgresql_where=sql_text("latest"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    latest: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """One question about one document, answered with one model and parameters."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint(
            "document_id",
            "question_sha256",
            "model",
            "revision",
            "params_digest",
            name="uq_jobs_identity",
        ),
        Index("ix_jobs_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    question: Mapped[str] = mapped_column(Text)
    # sha256 hex of the question's UTF-8: keeps the unique index small for long questions.
    question_sha256: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(Text)
    # "" when no revision was given: NULLs never collide in a unique constraint.
    revision: Mapped[str] = mapped_column(Text, default="")
    # AnswerParams.canonical_json() and its sha256 hex.
    params: Mapped[str] = mapped_column(Text)
    params_digest: Mapped[str] = mapped_column(String(64))
    status: Mapped[JobStatus] = mapped_column(StrEnumType(JobStatus), default=JobStatus.QUEUED)
    # Deliveries that reached a worker (incremented by every claim).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Why the job failed, as a sentence a person can act on; NULL unless failed.
    error: Mapped[str | None] = mapped_column(Text)
    # The worker that claimed it last (hostname/pid label).
    worker: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A running job whose lease is in the past belongs to a worker presumed dead.
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a broker message for this job was last sent (NULL: never, e.g. embedded mode).
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    document: Mapped[Document] = relationship(back_populates="jobs")
    answers: Mapped[list[AnswerRow]] = relationship(
        back_populates="job", order_by="AnswerRow.rank", cascade="all, delete-orphan"
    )


class AnswerRow(Base):
    """One ranked answer of a job, with its provenance (see `docqa.core.answer.Answer`)."""

    __tablename__ = "answers"
    __table_args__ = (
        UniqueConstraint("job_id", "rank", name="uq_answers_job_id_rank"),
        # Best-first pages (results --order margin|reference) walk these backwards.
        Index("ix_answers_sort_margin", "sort_margin", "id"),
        Index("ix_answers_score", "score", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    # Probability-like score of the reference pipeline (double precision everywhere).
    score: Mapped[float] = mapped_column(Double)
    # Offsets into the document text: Python str indices, end exclusive.
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    # The window the span came from, and that window's character range; NULL for the
    # null answer.
    window_index: Mapped[int | None] = mapped_column(Integer)
    window_char_start: Mapped[int | None] = mapped_column(Integer)
    window_char_end: Mapped[int | None] = mapped_column(Integer)
    # Token indices into the document's tokenization (no special tokens), end inclusive.
    token_start: Mapped[int | None] = mapped_column(Integer)
    token_end: Mapped[int | None] = mapped_column(Integer)
    start_logit: Mapped[float | None] = mapped_column(Double)
    end_logit: Mapped[float | None] = mapped_column(Double)
    # The window's raw logits at CLS ("no answer"); NULL for the null answer and for
    # answers stored before schema 0003.
    null_start_logit: Mapped[float | None] = mapped_column(Double)
    null_end_logit: Mapped[float | None] = mapped_column(Double)
    # The margin (start + end - null start - null end logits), or NO_MARGIN where there is
    # none: NOT NULL so an index orders answers by it.
    sort_margin: Mapped[float] = mapped_column(Double, default=-1e308, server_default="-1e308")
    # "model@revision", or the model alone when there is no revision.
    model: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="answers")


class StoreInfo(Base):
    """Facts about the store itself; `store_id` is written once, by migration 0002."""

    __tablename__ = "store_info"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Submission(Base):
    """What one `docqa run` / `docqa submit` / client submit asked for."""

    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    command: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(Text)
    revision: Mapped[str] = mapped_column(Text, default="")
    documents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    new_documents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    jobs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    new_jobs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    input_errors: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Documents whose id or path came with new content (a new version).
    changed_documents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What made it, beyond the command: a schedule's source name (`docqa schedule`).
    label: Mapped[str | None] = mapped_column(Text)


class SubmissionJob(Base):
    """A job a submission asked for (new or already known)."""

    __tablename__ = "submission_jobs"
    __table_args__ = (Index("ix_submission_jobs_job_id", "job_id"),)

    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)


class WorkerRow(Base):
    """A worker process: its globally unique name, where it runs, what it serves, when seen."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(Text)
    pid: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(Text)
    queue: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Leader(Base):
    """Who holds a fleet-wide role (e.g. the reconciler) and until when (a renewable lease)."""

    __tablename__ = "leaders"

    role: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    until: Mapped[datetime] = mapped_column(UTCDateTime)


class TokensRow(Base):
    """A document's tokenization under one tokenizer, made once by the producer.

    `tokenizer` is the sha256 of the tokenizer's definition (`core.windows.tokenizer_key`);
    `data` is `core.windows.encode_tokens` of the tokens (ids, offsets, word ids).
    """

    __tablename__ = "document_tokens"

    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True)
    tokenizer: Mapped[str] = mapped_column(String(64), primary_key=True)
    n_tokens: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlanRow(Base):
    """A job's windows, fixed at submit: JSON [[token_start, token_end, char_start, char_end], ...]
    (token ends exclusive, into the document's tokens under `tokenizer`)."""

    __tablename__ = "job_plans"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tokenizer: Mapped[str] = mapped_column(String(64))
    question_tokens: Mapped[int] = mapped_column(Integer)
    windows: Mapped[str] = mapped_column(Text)
