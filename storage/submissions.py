"""Submissions: what one `run` / `submit` asked for, so it can be followed to its end."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, select, update

from docqa.storage.columns import utcnow
from docqa.storage.models import Job, JobStatus, Submission, SubmissionDocument, SubmissionJob
from docqa.storage.transactions import Transactions, chunks


class SubmissionCounts(NamedTuple):
    """What a submission amounted to. `jobs`: the distinct jobs its documents' questions
    needed (documents that share a text share jobs); `texts`: the distinct texts of its
    documents; `new_*`: those it stored first."""

    documents: int
    new_documents: int
    jobs: int
    new_jobs: int
    input_errors: int
    changed_documents: int = 0
    texts: int = 0
    new_texts: int = 0


class SubmissionRecord(NamedTuple):
    id: int
    command: str
    label: str | None
    model: str
    created_at: datetime
    finished_at: datetime | None
    documents: int
    new_documents: int
    changed_documents: int
    jobs: int
    new_jobs: int
    input_errors: int
    texts: int = 0
    new_texts: int = 0

    @classmethod
    def from_row(cls, row: Submission) -> SubmissionRecord:
        return cls(id=row.id, command=row.command, label=row.label, model=row.model, created_at=row.created_at,
                   finished_at=row.finished_at, documents=row.documents, new_documents=row.new_documents,
                   changed_documents=row.changed_documents, jobs=row.jobs, new_jobs=row.new_jobs,
                   input_errors=row.input_errors, texts=row.texts, new_texts=row.new_texts)


class Submissions(Transactions):
    """Recording submissions and their jobs; their progress."""

    def start_submission(self, *, command: str, model: str, revision: str | None, label: str | None = None) -> int:
        with self._write() as session:
            row = Submission(command=command, model=model, revision=revision or "", created_at=utcnow(), label=label)
            session.add(row)
            session.flush()
            return row.id

    def add_submission_jobs(self, submission_id: int, job_ids: Iterable[int]) -> None:
        """Link jobs (new or already known) to a submission; linking twice is harmless."""
        self._link_submission(SubmissionJob, SubmissionJob.job_id, submission_id, job_ids)

    def add_submission_documents(self, submission_id: int, document_ids: Iterable[int]) -> None:
        """Link documents (new, new versions or unchanged) to a submission; twice is harmless."""
        self._link_submission(SubmissionDocument, SubmissionDocument.document_id, submission_id, document_ids)

    def _link_submission(self, table, column, submission_id: int, ids: Iterable[int]) -> None:
        ids = sorted(set(ids))
        if not ids:
            return
        with self._write() as session:
            for chunk in chunks(ids):
                rows = [{"submission_id": submission_id, column.key: i} for i in chunk]
                session.execute(self._insert(table).values(rows).on_conflict_do_nothing())

    def finish_submission(self, submission_id: int, counts: SubmissionCounts) -> None:
        """Record what the submission amounted to, once all its documents were read."""
        with self._write() as session:
            session.execute(
                update(Submission)
                .where(Submission.id == submission_id)
                .values(finished_at=utcnow(), **counts._asdict())
            )

    def submission_exists(self, submission_id: int) -> bool:
        with self._read() as session:
            return session.get(Submission, submission_id) is not None

    def submission_progress(self, submission_id: int) -> dict[str, int]:
        """Its jobs by status; every status is present."""
        stmt = (
            select(Job.status, func.count())
            .join(SubmissionJob, SubmissionJob.job_id == Job.id)
            .where(SubmissionJob.submission_id == submission_id)
            .group_by(Job.status)
        )
        with self._read() as session:
            found = dict(session.execute(stmt).all())
        return {status.value: found.get(status, 0) for status in JobStatus}

    def last_labelled(self, label: str, *, finished: bool = False) -> SubmissionRecord | None:
        """The newest submission made under `label` (e.g. a schedule source), or None; with
        `finished`, the newest whose counts are written (one still storing has none yet)."""
        query = select(Submission).where(Submission.label == label)
        if finished:
            query = query.where(Submission.finished_at.is_not(None))
        with self._read() as session:
            row = session.execute(query.order_by(Submission.id.desc()).limit(1)).scalar_one_or_none()
            return None if row is None else SubmissionRecord.from_row(row)
