"""Jobs: created once per identity (text, question, model, revision, answer parameters),
linked to every document that asks them, counted, listed, failed with a reason."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.exc import OperationalError

from docqa.core.params import AnswerParams
from docqa.storage.columns import utcnow
from docqa.storage.errors import NotFound
from docqa.storage.identity import check_storable, text_sha256
from docqa.storage.models import Document, DocumentJob, Job, JobStatus, SubmissionJob
from docqa.storage.records import Failure, Fence, JobRecord, StoredJob, document_label
from docqa.storage.parts import fail_parents_of
from docqa.storage.transactions import PG_RESULTS_LOCK_KEY, Transactions, chunks

log = logging.getLogger(__name__)

DEADLOCK_DETECTED = "40P01"  # PostgreSQL's SQLSTATE for a transaction it aborted as a deadlock
DEADLOCK_RETRIES = 3


class QueuedJob(NamedTuple):
    """A queued job as the reconciler sees it: what it needs to send it again."""

    id: int
    model: str
    revision: str | None
    attempts: int
    n_windows: int | None = None  # None: no plan (the worker windows it)
    priority: int = 0


def _digest(question: str, question_of: dict[str, str]) -> str:
    """The question's sha256 (remembered in question_of); errors for what the store cannot keep."""
    if not isinstance(question, str):
        raise TypeError(f"questions must be str, not {type(question).__name__}")
    check_storable(question, "question")
    digest = text_sha256(question)
    question_of[digest] = question
    return digest


def _check_model_and_params(model: str, params: AnswerParams) -> None:
    if not isinstance(model, str) or not model:
        raise ValueError("model must be a non-empty string (hub id or local folder)")
    if not isinstance(params, AnswerParams):
        raise TypeError(f"params must be AnswerParams, not {type(params).__name__}")


def _stored_jobs(
    asked: list[tuple[int, list[str]]], job_of: dict[tuple[int, str], int], created: set[int],
) -> list[list[StoredJob]]:
    """One list per request, aligned with its question digests; `created` is consumed."""
    out: list[list[StoredJob]] = []
    for doc, digests in asked:
        stored = []
        for digest in digests:
            job_id = job_of[doc, digest]
            stored.append(StoredJob(job_id, job_id in created))
            created.discard(job_id)  # reported created at its first occurrence only
        out.append(stored)
    return out


class _JobIdentity(NamedTuple):
    """What a job's identity holds besides its text and question."""

    model: str
    revision: str
    params: AnswerParams

    @property
    def params_digest(self) -> str:
        return self.params.digest()

    def row(self, text_id: int, question: str, digest: str, now: datetime) -> dict:
        return {
            "text_id": text_id, "question": question, "question_sha256": digest, "model": self.model,
            "revision": self.revision, "params": self.params.canonical_json(), "params_digest": self.params_digest,
            "status": JobStatus.QUEUED, "attempts": 0, "created_at": now, "updated_at": now,
        }


class Jobs(Transactions):
    """Creating jobs and reading their state; `fail` records why one could not be answered."""

    def add_jobs(
        self,
        document_id: int,
        questions: Sequence[str],
        *,
        model: str,
        revision: str | None,
        params: AnswerParams,
    ) -> list[StoredJob]:
        """Ask `questions` of a document: a queued job per question of its text unless that
        job exists (another document with the text, or an earlier submission, asked it), and
        the document's link to each job. One (id, created) per question.

        The result is aligned with `questions`; a question repeated in the list gets the
        same id, created only at its first occurrence. Raises NotFound for an unknown
        document and ValueError for a question the store cannot keep unchanged.
        """
        return self.add_jobs_many([(document_id, questions)], model=model, revision=revision, params=params)[0]

    def add_jobs_many(
        self,
        requests: Sequence[tuple[int, Sequence[str]]],
        *,
        model: str,
        revision: str | None,
        params: AnswerParams,
    ) -> list[list[StoredJob]]:
        """`add_jobs` for several (document id, questions) in one transaction (a producer's
        group of documents): one list per request, aligned with its questions. A job two
        requests need (two documents with one text) is created at its first occurrence only."""
        _check_model_and_params(model, params)
        question_of: dict[str, str] = {}
        asked = [(doc, [_digest(q, question_of) for q in questions]) for doc, questions in requests]
        if not any(digests for _doc, digests in asked):
            return [[] for _ in requests]
        identity = _JobIdentity(model, "" if revision is None else revision, params)
        job_of, created = self._insert_jobs_retrying(asked, question_of, identity)
        return _stored_jobs(asked, job_of, created)

    def _insert_jobs_retrying(
        self, asked: list[tuple[int, list[str]]], question_of: dict[str, str], identity: _JobIdentity,
    ) -> tuple[dict[tuple[int, str], int], set[int]]:
        """`_insert_jobs`, run again (up to DEADLOCK_RETRIES times) when PostgreSQL aborts it as a deadlock."""
        for attempt in range(DEADLOCK_RETRIES + 1):
            try:
                return self._insert_jobs(asked, question_of, identity)
            except OperationalError as exc:
                if attempt == DEADLOCK_RETRIES or getattr(exc.orig, "sqlstate", None) != DEADLOCK_DETECTED:
                    raise
                log.info("making jobs met another producer's in a deadlock; trying again (%d)", attempt + 1)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _insert_jobs(
        self, asked: list[tuple[int, list[str]]], question_of: dict[str, str], identity: _JobIdentity,
    ) -> tuple[dict[tuple[int, str], int], set[int]]:
        """One transaction of add_jobs_many: the job of each (document, question digest), and
        the ids of the jobs this call created."""
        with self._write() as session:
            text_of = self._texts_of(session, sorted({doc for doc, _digests in asked}))
            # Texts in id order whatever order the caller gives, so producers making jobs of
            # the same texts do not wait on each other's uncommitted rows in opposite orders
            # (PostgreSQL aborts one of them as a deadlock); a text's questions keep their
            # order, so its job ids follow the order they were asked in. Two producers asking
            # one text's questions in different orders can still meet: that deadlock is
            # retried by the caller.
            pairs = sorted(dict.fromkeys((text_of[doc], digest) for doc, digests in asked for digest in digests),
                           key=lambda pair: pair[0])
            ids, created = self._job_rows(session, pairs, question_of, identity)
            job_of = {(doc, digest): ids[text_of[doc], digest] for doc, digests in asked for digest in digests}
            self._link_documents(session, sorted(set((doc, job_id) for (doc, _digest), job_id in job_of.items())))
        return job_of, created

    @staticmethod
    def _texts_of(session, documents: list[int]) -> dict[int, int]:
        """Each document's text id; NotFound for a document that does not exist."""
        text_of: dict[int, int] = {}
        for chunk in chunks(documents):
            text_of.update(session.execute(select(Document.id, Document.text_id).where(Document.id.in_(chunk))).all())
        for doc in documents:
            if doc not in text_of:
                raise NotFound(f"document {doc} does not exist; store it before adding jobs")
        return text_of

    def _job_rows(
        self, session, pairs: list[tuple[int, str]], question_of: dict[str, str], identity: _JobIdentity,
    ) -> tuple[dict[tuple[int, str], int], set[int]]:
        """The job id of each (text, question digest), inserting those that do not exist; and
        the ids inserted."""
        ids: dict[tuple[int, str], int] = {}
        created: set[int] = set()
        now = utcnow()
        for chunk in chunks(pairs):
            rows = [identity.row(text_id, question_of[digest], digest, now) for text_id, digest in chunk]
            stmt = (
                self._insert(Job).values(rows)
                .on_conflict_do_nothing(index_elements=[Job.text_id, Job.question_sha256, Job.model, Job.revision,
                                                        Job.params_digest])
                .returning(Job.text_id, Job.question_sha256, Job.id)
            )
            for text_id, digest, job_id in session.execute(stmt):
                ids[text_id, digest] = job_id
                created.add(job_id)
        by_text: dict[int, list[str]] = {}
        for text_id, digest in pairs:
            if (text_id, digest) not in ids:  # jobs that existed already
                by_text.setdefault(text_id, []).append(digest)
        for text_id, digests in by_text.items():
            for digest_chunk in chunks(digests):
                stmt = select(Job.question_sha256, Job.id).where(
                    Job.text_id == text_id, Job.model == identity.model, Job.revision == identity.revision,
                    Job.params_digest == identity.params_digest, Job.question_sha256.in_(digest_chunk),
                )
                for digest, job_id in session.execute(stmt):
                    ids[text_id, digest] = job_id
        return ids, created

    def _link_documents(self, session, links: list[tuple[int, int]]) -> None:
        """Record that each document asked each job's question (once)."""
        if not links:
            return
        if self._postgres:
            # Links become visible in id order, as answers do (see Answers.follow_results).
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_RESULTS_LOCK_KEY})
        for chunk in chunks(links):
            session.execute(
                self._insert(DocumentJob)
                .values([{"document_id": doc, "job_id": job_id} for doc, job_id in chunk])
                .on_conflict_do_nothing(index_elements=[DocumentJob.document_id, DocumentJob.job_id])
            )

    def fail(self, job_id: int, error: str, *, fence: Fence | None = None) -> bool:
        """Mark a job failed with `error` (a sentence a person can act on); return whether it changed.

        A job already done stays done (a late failure report from a stale delivery must
        not hide answers that exist); False is returned then. With a `fence`, only while
        that worker's claim still holds the job's lease (else False, nothing written).
        """
        if not isinstance(error, str) or not error.strip():
            raise ValueError("error must be a non-empty sentence saying what went wrong")
        now = utcnow()
        with self._write() as session:
            stmt = select(Job.status, Job.worker, Job.attempts).where(Job.id == job_id)
            if self._postgres:
                stmt = stmt.with_for_update(key_share=True)
            row = session.execute(stmt).one_or_none()
            if row is None:
                raise NotFound(f"job {job_id} does not exist")
            if row.status == JobStatus.DONE or (fence is not None and not fence.holds(*row[:2], job_id, row.attempts)):
                return False
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(status=JobStatus.FAILED, error=error, finished_at=now, leased_until=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            fail_parents_of(session, [job_id], {job_id: error}, now)  # a failed part fails its job
            return True

    def job(self, job_id: int) -> JobRecord | None:
        with self._read() as session:
            row = session.get(Job, job_id)
            if row is None:
                return None
            return JobRecord.from_row(row)

    def job_statuses(self, job_ids: Iterable[int]) -> dict[int, JobStatus]:
        """Status of each given job that exists (unknown ids are absent)."""
        ids = sorted(set(job_ids))
        statuses: dict[int, JobStatus] = {}
        with self._read() as session:
            for chunk in chunks(ids):
                for job_id, status in session.execute(select(Job.id, Job.status).where(Job.id.in_(chunk))):
                    statuses[job_id] = status
        return statuses

    def queued_job_ids(
        self, limit: int | None = None, *, model: str | None = None, revision: str | None = None
    ) -> list[int]:
        """Ids of queued jobs, oldest first (ids grow with creation).

        With `model`, only that model's jobs: `revision` None or "" then means the model
        without a revision, as in `add_jobs`. Without `model`, all jobs (revision must
        then be None).
        """
        stmt = select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(Job.id)
        if model is not None:
            stmt = stmt.where(Job.model == model, Job.revision == ("" if revision is None else revision))
        elif revision is not None:
            raise ValueError("a revision filter needs a model")
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._read() as session:
            return list(session.execute(stmt).scalars())

    def counts(self) -> dict[str, int]:
        """Number of jobs per status; every status is present, in JobStatus order."""
        with self._read() as session:
            found = {status: n for status, n in
                     session.execute(select(Job.status, func.count()).where(WHOLE).group_by(Job.status))}
        return {status.value: found.get(status, 0) for status in JobStatus}

    def failures(self, limit: int = 100) -> list[Failure]:
        """Failed jobs, by job id, with the first document that asked each (and how many
        others did) and why they failed."""
        askers = (
            select(DocumentJob.job_id, func.min(DocumentJob.document_id).label("first"),
                   func.count().label("n")).group_by(DocumentJob.job_id).subquery()
        )
        stmt = (
            select(Job.id, Job.question, Job.error, askers.c.first, askers.c.n, Document.external_id,
                   Document.source)
            .outerjoin(askers, askers.c.job_id == Job.id)
            .outerjoin(Document, Document.id == askers.c.first)
            .where(Job.status == JobStatus.FAILED, WHOLE)
            .order_by(Job.id)
            .limit(limit)
        )
        with self._read() as session:
            rows = session.execute(stmt).all()
        return [
            Failure(
                job_id=job_id,
                document=_askers_label(first, n, external_id, source),
                question=question,
                error=error if error is not None else "failed without a recorded reason",
            )
            for job_id, question, error, first, n, external_id, source in rows
        ]

    def mark_sent(self, job_ids: Iterable[int], *, now: datetime | None = None) -> None:
        """Record that a broker message for these jobs was just sent."""
        now = utcnow() if now is None else now
        ids = sorted(set(job_ids))
        with self._write() as session:
            for chunk in chunks(ids):
                session.execute(
                    update(Job).where(Job.id.in_(chunk)).values(last_sent_at=now).execution_options(synchronize_session=False)
                )

    def unsent_queued(self, *, older_than: float, limit: int = 10_000, now: datetime | None = None) -> list[QueuedJob]:
        """Queued jobs with no message sent for `older_than` seconds (never sent: since created).

        The reconciler's input: a message lost by the broker, a producer killed between
        storing and sending, a failed send. Oldest first.
        """
        stmt = select(*_QUEUED).where(_unsent(older_than, now)).order_by(Job.id).limit(limit)
        with self._read() as session:
            return [_queued(row) for row in session.execute(stmt)]

    def count_unsent_queued(self, *, older_than: float, now: datetime | None = None) -> int:
        """How many jobs `unsent_queued` would find, counted in the database."""
        with self._read() as session:
            return int(session.execute(select(func.count()).select_from(Job).where(_unsent(older_than, now))).scalar_one())

    def queued_jobs(self, job_ids: Iterable[int]) -> list[QueuedJob]:
        """The given jobs that are queued, by id."""
        ids = sorted(set(job_ids))
        found: list[QueuedJob] = []
        with self._read() as session:
            for chunk in chunks(ids):
                stmt = select(*_QUEUED).where(Job.id.in_(chunk), Job.status == JobStatus.QUEUED)
                found += [_queued(row) for row in session.execute(stmt)]
        return sorted(found)

    def queued_job_count(self, *, exclude_model: str | None = None, exclude_revision: str = "") -> int:
        """Queued jobs, optionally leaving out those of one model and revision."""
        stmt = select(func.count()).select_from(Job).where(Job.status == JobStatus.QUEUED, WHOLE)
        if exclude_model is not None:
            stmt = stmt.where(~and_(Job.model == exclude_model, Job.revision == exclude_revision))
        with self._read() as session:
            return int(session.execute(stmt).scalar_one())

    def queued_by_model(self, submission_id: int | None = None) -> dict[str, int]:
        """Queued jobs (of one submission, or all) per model label ('model' or 'model@revision')."""
        from docqa.core.labels import model_label

        stmt = select(Job.model, Job.revision, func.count()).where(Job.status == JobStatus.QUEUED, WHOLE).group_by(
            Job.model, Job.revision
        )
        if submission_id is not None:
            stmt = stmt.where(Job.id.in_(select(SubmissionJob.job_id).where(SubmissionJob.submission_id == submission_id)))
        with self._read() as session:
            return {model_label(m, r or None): n for m, r, n in session.execute(stmt)}

    def oldest_queued_at(self) -> datetime | None:
        """When the oldest queued job was created (None when nothing is queued)."""
        with self._read() as session:
            return session.execute(select(func.min(Job.created_at)).where(Job.status == JobStatus.QUEUED, WHOLE)).scalar()

    def retry_failed(
        self,
        *,
        job_ids: Iterable[int] | None = None,
        document_id: int | None = None,
        submission_id: int | None = None,
        now: datetime | None = None,
    ) -> list[QueuedJob]:
        """Put failed jobs back in the queue with their attempts reset; return them.

        Filters combine (all given must hold); with none, every failed job is retried.
        """
        now = utcnow() if now is None else now
        conditions = [Job.status == JobStatus.FAILED, WHOLE]
        if job_ids is not None:
            conditions.append(Job.id.in_(sorted(set(job_ids))))
        if document_id is not None:
            conditions.append(Job.id.in_(select(DocumentJob.job_id).where(DocumentJob.document_id == document_id)))
        if submission_id is not None:
            conditions.append(
                Job.id.in_(select(SubmissionJob.job_id).where(SubmissionJob.submission_id == submission_id))
            )
        with self._write() as session:
            rows = session.execute(select(*_QUEUED).where(*conditions).order_by(Job.id)).all()
            ids = [row.id for row in rows]
            for chunk in chunks(ids):
                session.execute(
                    update(Job)
                    .where(Job.id.in_(chunk), Job.status == JobStatus.FAILED)
                    .values(status=JobStatus.QUEUED, attempts=0, lost_in_batch=False, error=None, finished_at=None,
                            worker=None, leased_until=None, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
        return [_queued(row)._replace(attempts=0) for row in rows]


def _askers_label(first: int | None, n: int | None, external_id: str | None, source: str | None) -> str:
    if first is None or n is None:  # both come from one outer-joined row: None together
        return "no document"
    label = document_label(first, external_id, source)
    return label if n == 1 else f"{label} and {n - 1} other document{'s' if n > 2 else ''}"


# What QueuedJob holds, as selected columns.
_QUEUED = (Job.id, Job.model, Job.revision, Job.attempts, Job.n_windows, Job.priority)
# Jobs a user asked for (parts of split jobs are not: they report through their job).
WHOLE = Job.parent_id.is_(None)


def _queued(row) -> QueuedJob:
    return QueuedJob(id=row.id, model=row.model, revision=row.revision if row.revision != "" else None,
                     attempts=row.attempts, n_windows=row.n_windows, priority=row.priority)


def _unsent(older_than: float, now: datetime | None):
    """Queued, with no message sent for `older_than` seconds (never sent: since created)."""
    cutoff = (utcnow() if now is None else now) - timedelta(seconds=older_than)
    stale = or_(Job.last_sent_at < cutoff, and_(Job.last_sent_at.is_(None), Job.created_at < cutoff))
    return and_(Job.status == JobStatus.QUEUED, stale)
