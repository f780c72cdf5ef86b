"""Documents: stored once per distinct text (sha256), exactly as given."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from docqa.storage.columns import utcnow
from docqa.storage.identity import check_storable, text_sha256
from docqa.storage.models import Document
from docqa.storage.records import DeletedCounts, DocumentRecord, StoredDocument
from docqa.storage.transactions import Transactions


class Documents(Transactions):
    """Adding and reading documents."""

    def add_document(
        self,
        text: str,
        *,
        source: str | None = None,
        external_id: str | None = None,
        metadata: Any = None,
    ) -> StoredDocument:
        """Store `text` exactly as given, once per distinct text; return (id, sha256, created).

        When the text is already stored, the existing row is returned unchanged (its
        first source, external id and metadata are kept) and created is False.
        Raises ValueError for text the store cannot keep unchanged (NUL, lone surrogates).
        """
        if not isinstance(text, str):
            raise TypeError(f"document text must be str, not {type(text).__name__}")
        check_storable(text, "document text")
        digest = text_sha256(text)
        with self._write() as session:
            stmt = (
                self._insert(Document)
                .values(
                    sha256=digest,
                    text=text,
                    source=source,
                    external_id=external_id,
                    meta=metadata,
                    length=len(text),
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=[Document.sha256])
                .returning(Document.id)
            )
            new_id = session.execute(stmt).scalar_one_or_none()
            if new_id is not None:
                return StoredDocument(new_id, digest, True)
            # Lost the race or resubmitted: the row is committed (PostgreSQL waited for
            # the other insert before doing nothing), so this statement sees it.
            existing = session.execute(select(Document.id).where(Document.sha256 == digest)).scalar_one()
            return StoredDocument(existing, digest, False)

    def document(self, document_id: int) -> DocumentRecord | None:
        with self._read() as session:
            row = session.get(Document, document_id)
            if row is None:
                return None
            return DocumentRecord.from_row(row)

    def resolve_documents(self, ref: str | int) -> list[int]:
        """Ids of the documents `ref` names: an internal id, an external (JSONL) id, or a
        source path, in that order of preference; [] when none matches."""
        with self._read() as session:
            if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
                if session.get(Document, int(ref)) is not None:
                    return [int(ref)]
            text_ref = str(ref)
            for column in (Document.external_id, Document.source):
                ids = sorted(session.execute(select(Document.id).where(column == text_ref)).scalars())
                if ids:
                    return ids
        return []

    def documents_of_submission(self, submission_id: int) -> list[int]:
        """Ids of the documents a submission asked about."""
        from docqa.storage.models import Job, SubmissionJob

        stmt = (
            select(Job.document_id)
            .join(SubmissionJob, SubmissionJob.job_id == Job.id)
            .where(SubmissionJob.submission_id == submission_id)
            .distinct()
        )
        with self._read() as session:
            return sorted(session.execute(stmt).scalars())

    def delete_documents(self, document_ids: Iterable[int], *, dry_run: bool = False) -> DeletedCounts:
        """Remove documents with their jobs and answers (and their links to submissions).

        A job of a deleted document that a worker is running ends without writing answers
        (its completion finds no job). With dry_run, only counts what would go.
        """
        from sqlalchemy import delete, func

        from docqa.storage.models import AnswerRow, Job, SubmissionJob

        ids = sorted(set(document_ids))
        if not ids:
            return DeletedCounts(0, 0, 0)
        with self._write() as session:
            jobs = select(Job.id).where(Job.document_id.in_(ids))
            counts = DeletedCounts(
                documents=session.execute(select(func.count()).select_from(Document).where(Document.id.in_(ids))).scalar_one(),
                jobs=session.execute(select(func.count()).select_from(Job).where(Job.document_id.in_(ids))).scalar_one(),
                answers=session.execute(
                    select(func.count()).select_from(AnswerRow).where(AnswerRow.job_id.in_(jobs))
                ).scalar_one(),
            )
            if not dry_run:
                # Foreign keys cascade (answers, submission links, jobs); said explicitly so a
                # database without enforced foreign keys loses nothing less.
                session.execute(delete(AnswerRow).where(AnswerRow.job_id.in_(jobs)))
                session.execute(delete(SubmissionJob).where(SubmissionJob.job_id.in_(jobs)))
                session.execute(delete(Job).where(Job.document_id.in_(ids)))
                session.execute(delete(Document).where(Document.id.in_(ids)))
        return counts
