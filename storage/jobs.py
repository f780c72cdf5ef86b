"""Jobs: created once per identity (document, question, model, revision, answer
parameters), counted, listed, failed with a reason."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import and_, func, select, update

from docqa.core.params import AnswerParams
from docqa.storage.columns import utcnow
from docqa.storage.errors import NotFound
from docqa.storage.identity import check_storable, text_sha256
from docqa.storage.models import Document, Job, JobStatus
from docqa.storage.records import Failure, JobRecord, StoredJob, document_label
from docqa.storage.transactions import Transactions, chunks


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
        """Create a queued job per question unless its identity exists; one (id, created) per question.

        The result is aligned with `questions`; a question repeated in the list gets the
        same id, created only at its first occurrence. Raises NotFound for an unknown
        document and ValueError for a question the store cannot keep unchanged.
        """
        if not isinstance(model, str) or not model:
            raise ValueError("model must be a non-empty string (hub id or local folder)")
        if not isinstance(params, AnswerParams):
            raise TypeError(f"params must be AnswerParams, not {type(params).__name__}")
        stored_revision = "" if revision is None else revision
        digests: list[str] = []
        for question in questions:
            if not isinstance(question, str):
                raise TypeError(f"questions must be str, not {type(question).__name__}")
            check_storable(question, "question")
            digests.append(text_sha256(question))
        if not digests:
            return []
        question_of = dict(zip(digests, questions))
        unique = list(dict.fromkeys(digests))
        params_json = params.canonical_json()
        params_digest = params.digest()
        identity = and_(
            Job.document_id == document_id,
            Job.model == model,
            Job.revision == stored_revision,
            Job.params_digest == params_digest,
        )
        ids: dict[str, int] = {}
        created: set[str] = set()
        with self._write() as session:
            if session.execute(select(Document.id).where(Document.id == document_id)).first() is None:
                raise NotFound(f"document {document_id} does not exist; store it before adding jobs")
            now = utcnow()
            for chunk in chunks(unique):
                rows = [
                    {
                        "document_id": document_id,
                        "question": question_of[digest],
                        "question_sha256": digest,
                        "model": model,
                        "revision": stored_revision,
                        "params": params_json,
                        "params_digest": params_digest,
                        "status": JobStatus.QUEUED,
                        "attempts": 0,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for digest in chunk
                ]
                stmt = (
                    self._insert(Job)
                    .values(rows)
                    .on_conflict_do_nothing(
                        index_elements=[
                            Job.document_id,
                            Job.question_sha256,
                            Job.model,
                            Job.revision,
                            Job.params_digest,
                        ]
                    )
                    .returning(Job.question_sha256, Job.id)
                )
                for digest, job_id in session.execute(stmt):
                    ids[digest] = job_id
                    created.add(digest)
            missing = [digest for digest in unique if digest not in ids]
            for chunk in chunks(missing):
                stmt = select(Job.question_sha256, Job.id).where(identity, Job.question_sha256.in_(chunk))
                for digest, job_id in session.execute(stmt):
                    ids[digest] = job_id
        result: list[StoredJob] = []
        for digest in digests:
            result.append(StoredJob(ids[digest], digest in created))
            created.discard(digest)
        return result

    def fail(self, job_id: int, error: str) -> bool:
        """Mark a job failed with `error` (a sentence a person can act on); return whether it changed.

        A job already done stays done (a late failure report from a stale delivery must
        not hide answers that exist); False is returned then.
        """
        if not isinstance(error, str) or not error.strip():
            raise ValueError("error must be a non-empty sentence saying what went wrong")
        now = utcnow()
        with self._write() as session:
            stmt = select(Job.status).where(Job.id == job_id)
            if self._postgres:
                stmt = stmt.with_for_update()
            status = session.execute(stmt).scalar_one_or_none()
            if status is None:
                raise NotFound(f"job {job_id} does not exist")
            if status == JobStatus.DONE:
                return False
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(status=JobStatus.FAILED, error=error, finished_at=now, leased_until=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
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
            found = {status: n for status, n in session.execute(select(Job.status, func.count()).group_by(Job.status))}
        return {status.value: found.get(status, 0) for status in JobStatus}

    def failures(self, limit: int = 100) -> list[Failure]:
        """Failed jobs, by job id, with what identifies their document and why they failed."""
        stmt = (
            select(Job.id, Job.question, Job.error, Document.id, Document.external_id, Document.source)
            .join(Document, Job.document_id == Document.id)
            .where(Job.status == JobStatus.FAILED)
            .order_by(Job.id)
            .limit(limit)
        )
        with self._read() as session:
            rows = session.execute(stmt).all()
        return [
            Failure(
                job_id=job_id,
                document=document_label(doc_id, external_id, source),
                question=question,
                error=error if error is not None else "failed without a recorded reason",
            )
            for job_id, question, error, doc_id, external_id, source in rows
        ]
