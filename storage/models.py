"""The SQL schema: what users submitted (documents), what is computed (texts, jobs,
answers), and what links them.

    submissions --< submission_documents >-- documents --< document_jobs >-- jobs --< answers
         |                                       |                            |
         +----------< submission_jobs >----------|------------------------- --+
                                                 v                            v
                                               texts --< text_tokens        job_plans

A document is one submitted item (an id, a path, or an unnamed text; a version under its
key; its metadata); a text is content, stored once. Jobs, tokens and answers belong to
texts, so documents that share a text share that work; answers are reported per document
through `document_jobs`. The job table is the source of truth for work (the broker only
delivers job ids). Invariants the rows keep:

- `TextRow.text` is exactly what was submitted; `TextRow.sha256` is the sha256 hex of its
  UTF-8 encoding and is unique, so one text is stored once.
- A job's identity is (text, question, model, revision, answer parameters); the unique
  constraint `uq_jobs_identity` makes asking it again find the existing job.
- For every answer row, `text[char_start:char_end] == answer text` (Python str indices,
  end exclusive) in its job's text; token indices index that text's own tokenization, end
  inclusive.
- Each job has at most one set of answers: (job_id, rank) is unique, rank is 0-based.
- A text is referred to by at least one document; a job by at least one document link.

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


class TextRow(Base):
    """A text, stored once however many documents have it (by sha256), exactly as given.

    Compute hangs off texts: tokens, jobs and answers. A text is removed only when no
    document refers to it any more.
    """

    __tablename__ = "texts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    text: Mapped[str] = mapped_column(Text)
    # len(text): Python str characters (code points).
    length: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    jobs: Mapped[list[Job]] = relationship(back_populates="text_row")


class Document(Base):
    """One submitted item: its key, its version under that key, where it came from, its
    metadata, and the text it had.

    `key` is "id:<external id>" (a JSONL / Client / HTTP id), "path:<real file path>", or
    "anon:<sha256 of source and text>" for an item with neither (stdin, an unnamed text):
    such a document is the same document only when both its source and its text are.
    Versions count 1, 2, ... per id or path key (NULL for "anon:" keys); exactly one row
    per key is `latest` (a partial unique index says so). Going back to an earlier text
    adds a new version pointing at the stored text, whose answers exist.
    """

    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("key", "version", name="uq_documents_key"),
        Index("ix_documents_text_id", "text_id"),
        Index("ix_documents_source", "source"),
        Index(
            "uq_documents_latest_key",
            "key",
            unique=True,
            sqlite_where=sql_text("latest"),
            postgresql_where=sql_text("latest"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # No cascade: a text goes only once no document refers to it (Documents.delete_documents).
    text_id: Mapped[int] = mapped_column(ForeignKey("texts.id"))
    key: Mapped[str] = mapped_column(Text)
    version: Mapped[int | None] = mapped_column(Integer)
    latest: Mapped[bool] = mapped_column(Boolean)
    # Where it came from, as given: a file path, "stdin", "<file>.jsonl:<line>", "document <n>".
    source: Mapped[str | None] = mapped_column(Text)
    # The JSONL / Client / HTTP "id", if it had one.
    external_id: Mapped[str | None] = mapped_column(Text)
    # `metadata` is reserved by declarative classes; the column keeps the plain name.
    meta: Mapped[Any | None] = mapped_column("metadata", JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When a newer version of its key replaced it (NULL while latest).
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    text_row: Mapped[TextRow] = relationship()


class DocumentKey(Base):
    """An id or path key's last version number: numbers are never reused while the key has
    versions stored; concurrent producers of one key lock this row in turn."""

    __tablename__ = "document_keys"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    last_version: Mapped[int] = mapped_column(Integer)


class DocumentJob(Base):
    """Document `document_id` asked the question job `job_id` answers (for its text).

    Answers are reported once per such link, under the document's own id, path, metadata
    and version. `id` grows with creation: a follower reads new links after the last one
    it saw (on PostgreSQL links and answers are written under one advisory lock, so ids
    become visible in increasing order).
    """

    __tablename__ = "document_jobs"
    __table_args__ = (
        UniqueConstraint("document_id", "job_id", name="uq_document_jobs_document_id"),
        Index("ix_document_jobs_job_id", "job_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))


class Job(Base):
    """One question about one text, answered with one model and parameters: computed once
    however many documents have the text (DocumentJob links them)."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint(
            "text_id",
            "question_sha256",
            "model",
            "revision",
            "params_digest",
            name="uq_jobs_identity",
        ),
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_parent_id", "parent_id"),
        # Workers claim the queued jobs a caller waits for first: few rows, found at once.
        Index("ix_jobs_urgent", "priority", "id", sqlite_where=sql_text("status = 'queued' AND priority > 0"),
              postgresql_where=sql_text("status = 'queued' AND priority > 0")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text_id: Mapped[int] = mapped_column(ForeignKey("texts.id", ondelete="CASCADE"))
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
    # Its first loss (the worker died or stopped renewing the lease) came while it ran in a
    # batch with other jobs: that attempt is no evidence against it (see Leases.requeue_expired).
    lost_in_batch: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sql_text("false"))
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
    # Its windows (from its plan; NULL where it has none): what messages and claims are sized by.
    n_windows: Mapped[int | None] = mapped_column(Integer)
    # A part runs the windows [window_start, window_end) of its parent, a job with more windows
    # than one run takes (docqa.worker.parts). Parts are jobs for claims, leases, fences and
    # the sweeper, but have no document links; their parent is running with no worker until
    # the last part is merged into its answers. Its identity digest includes its range.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    window_start: Mapped[int | None] = mapped_column(Integer)
    window_end: Mapped[int | None] = mapped_column(Integer)
    # Higher runs first: 0 bulk work, 1 a caller waiting for the answer (HTTP ?wait=, Client.ask).
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    text_row: Mapped[TextRow] = relationship(back_populates="jobs")
    answers: Mapped[list[AnswerRow]] = relationship(
        back_populates="job", order_by="AnswerRow.rank", cascade="all, delete-orphan"
    )


class PartResult(Base):
    """A finished part's windows: their layouts, candidates, null scores and the logits the
    merge reads (docqa.worker.parts.encode_windows), kept until the parent is merged."""

    __tablename__ = "job_part_results"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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
    # Offsets into the job's text: Python str indices, end exclusive.
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    # The window the span came from, and that window's character range; NULL for the
    # null answer.
    window_index: Mapped[int | None] = mapped_column(Integer)
    window_char_start: Mapped[int | None] = mapped_column(Integer)
    window_char_end: Mapped[int | None] = mapped_column(Integer)
    # Token indices into the text's tokenization (no special tokens), end inclusive.
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
    # Distinct texts among its documents, and those it stored first.
    texts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    new_texts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What made it, beyond the command: a schedule's source name (`docqa schedule`).
    label: Mapped[str | None] = mapped_column(Text)


class SubmissionDocument(Base):
    """A document a submission gave (new, a new version, or unchanged)."""

    __tablename__ = "submission_documents"
    __table_args__ = (Index("ix_submission_documents_document_id", "document_id"),)

    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True)


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
    # Its torch intra-op threads and the cores it may use (NULL: registered before 0007).
    threads: Mapped[int | None] = mapped_column(Integer)
    cores: Mapped[int | None] = mapped_column(Integer)


class Leader(Base):
    """Who holds a fleet-wide role (e.g. the reconciler) and until when (a renewable lease)."""

    __tablename__ = "leaders"

    role: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    until: Mapped[datetime] = mapped_column(UTCDateTime)


class TokensRow(Base):
    """A text's tokenization under one tokenizer, made once by the producer.

    `tokenizer` is the sha256 of the tokenizer's definition (`core.windows.tokenizer_key`);
    `data` is `core.windows.encode_tokens` of the tokens (ids, offsets, word ids).
    """

    __tablename__ = "text_tokens"

    text_id: Mapped[int] = mapped_column(ForeignKey("texts.id", ondelete="CASCADE"), primary_key=True)
    tokenizer: Mapped[str] = mapped_column(String(64), primary_key=True)
    n_tokens: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlanRow(Base):
    """A job's windows, fixed at submit: JSON [[token_start, token_end, char_start, char_end], ...]
    (token ends exclusive, into its text's tokens under `tokenizer`)."""

    __tablename__ = "job_plans"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tokenizer: Mapped[str] = mapped_column(String(64))
    question_tokens: Mapped[int] = mapped_column(Integer)
    windows: Mapped[str] = mapped_column(Text)


class PassageRow(Base):
    """A passage of a text: the unit corpus questions retrieve (`docqa.core.passages`), fixed
    when the text is stored. Its full-text index is the dialect's own, kept beside it by
    `docqa.storage.passages`: PostgreSQL a `tsv` tsvector column (GIN-indexed) of this
    table; SQLite the FTS5 table `passages_fts` (rowid = id). Neither is mapped here."""

    __tablename__ = "passages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text_id: Mapped[int] = mapped_column(ForeignKey("texts.id", ondelete="CASCADE"), index=True)
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
