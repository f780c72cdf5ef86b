"""Documents: stored once per distinct text (sha256), exactly as given."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import os

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from docqa.storage.columns import utcnow
from docqa.storage.identity import check_storable, text_sha256
from docqa.storage.models import Document, DocumentKey, DocumentVersion
from docqa.storage.records import DeletedCounts, DocumentRecord, StoredDocument
from docqa.storage.transactions import Transactions


def _mark_superseded_if_no_latest(session: Session, document_ids: Iterable[int], now) -> None:
    """Set superseded_at on those of `document_ids` that have versions but none latest."""
    for doc_id in sorted(set(document_ids)):
        rows = session.execute(select(DocumentVersion.latest).where(DocumentVersion.document_id == doc_id)).scalars().all()
        if rows and not any(rows):
            session.execute(
                update(Document).where(Document.id == doc_id, Document.superseded_at.is_(None)).values(superseded_at=now)
            )


class Documents(Transactions):
    """Adding and reading documents."""

    def add_document(
        self,
        text: str,
        *,
        source: str | None = None,
        external_id: str | None = None,
        metadata: Any = None,
        version_key: str | None = None,
    ) -> StoredDocument:
        """Store `text` exactly as given, once per distinct text; return (id, sha256, created).

        When the text is already stored, the existing row is returned unchanged (its
        first source, external id and metadata are kept) and created is False.

        With `version_key` ("id:<external id>" or "path:<absolute path>"), the text is
        also recorded as the key's latest version, in the same transaction: unchanged when
        the key's latest version already has this text, else version n+1 (the previous
        latest document becomes superseded unless it is latest under another key).
        Concurrent calls for one key take turns (a PostgreSQL advisory lock per key; SQLite
        writes one transaction at a time), so a key ends with exactly one latest version.
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
            created = new_id is not None
            if new_id is None:
                # Lost the race or resubmitted: the row is committed (PostgreSQL waited for
                # the other insert before doing nothing), so this statement sees it.
                new_id = session.execute(select(Document.id).where(Document.sha256 == digest)).scalar_one()
            if version_key is None:
                return StoredDocument(new_id, digest, created)
            version, changed = self._record_version(session, version_key, new_id)
            return StoredDocument(new_id, digest, created, version, changed)

    def _record_version(self, session: Session, key: str, document_id: int) -> tuple[int, bool]:
        """Make `document_id` the latest version of `key`; (its version number, whether the
        key had another text before)."""
        if not key:
            raise ValueError("a version key must not be empty")
        # One row per key, locked for the rest of the transaction: producers of one key
        # take turns (SQLite writes one transaction at a time anyway).
        session.execute(self._insert(DocumentKey).values(key=key, last_version=0).on_conflict_do_nothing())
        lock = select(DocumentKey.last_version).where(DocumentKey.key == key)
        if self._postgres:
            lock = lock.with_for_update()
        last_version = session.execute(lock).scalar_one()
        latest = session.execute(
            select(DocumentVersion.id, DocumentVersion.version, DocumentVersion.document_id).where(
                DocumentVersion.key == key, DocumentVersion.latest.is_(True)
            )
        ).one_or_none()
        if latest is not None and latest.document_id == document_id:
            return latest.version, False
        version = last_version + 1
        now = utcnow()
        session.execute(update(DocumentKey).where(DocumentKey.key == key).values(last_version=version))
        if latest is not None:
            session.execute(update(DocumentVersion).where(DocumentVersion.id == latest.id).values(latest=False))
        session.add(DocumentVersion(key=key, version=version, document_id=document_id, latest=True, created_at=now))
        session.flush()
        session.execute(update(Document).where(Document.id == document_id).values(version=version, superseded_at=None))
        if latest is not None:
            _mark_superseded_if_no_latest(session, [latest.document_id], now)
        return version, latest is not None

    def document(self, document_id: int) -> DocumentRecord | None:
        with self._read() as session:
            row = session.get(Document, document_id)
            if row is None:
                return None
            return DocumentRecord.from_row(row)

    def document_superseded(self, document_id: int) -> bool | None:
        """Whether a newer version replaced this document under every id or path it had
        (None: no such document)."""
        with self._read() as session:
            row = session.get(Document, document_id)
            return None if row is None else row.superseded_at is not None

    def resolve_documents(self, ref: str | int) -> list[int]:
        """Ids of the documents `ref` names: an internal id, an external (JSONL) id, or a
        source path, in that order of preference; [] when none matches."""
        with self._read() as session:
            if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
                if session.get(Document, int(ref)) is not None:
                    return [int(ref)]
            text_ref = str(ref)
            # Every version of the document an id or a path names (results then show the
            # latest unless all versions are asked for).
            by_id = select(Document.id).where(Document.external_id == text_ref).union(
                select(DocumentVersion.document_id).where(DocumentVersion.key == f"id:{text_ref}")
            )
            by_path = select(Document.id).where(Document.source == text_ref).union(
                select(DocumentVersion.document_id).where(DocumentVersion.key == f"path:{os.path.abspath(text_ref)}")
            )
            for stmt in (by_id, by_path):
                ids = sorted(set(session.execute(stmt).scalars()))
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

        from docqa.storage.models import AnswerRow, Job, PlanRow, SubmissionJob, TokensRow

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
                # Keys whose latest version goes: their highest remaining version becomes
                # latest again (deleting one submission's version restores the one before).
                orphaned = sorted(
                    set(
                        session.execute(
                            select(DocumentVersion.key).where(
                                DocumentVersion.document_id.in_(ids), DocumentVersion.latest.is_(True)
                            )
                        ).scalars()
                    )
                )
                # Foreign keys cascade (answers, submission links, jobs, versions); said
                # explicitly so a database without enforced foreign keys loses nothing less.
                session.execute(delete(AnswerRow).where(AnswerRow.job_id.in_(jobs)))
                session.execute(delete(SubmissionJob).where(SubmissionJob.job_id.in_(jobs)))
                session.execute(delete(PlanRow).where(PlanRow.job_id.in_(jobs)))
                session.execute(delete(TokensRow).where(TokensRow.document_id.in_(ids)))
                session.execute(delete(Job).where(Job.document_id.in_(ids)))
                session.execute(delete(DocumentVersion).where(DocumentVersion.document_id.in_(ids)))
                session.execute(delete(Document).where(Document.id.in_(ids)))
                for key in orphaned:
                    self._restore_latest(session, key)
        return counts

    def _restore_latest(self, session: Session, key: str) -> None:
        lock = select(DocumentKey.last_version).where(DocumentKey.key == key)
        if self._postgres:
            lock = lock.with_for_update()
        session.execute(lock)
        if session.execute(
            select(DocumentVersion.id).where(DocumentVersion.key == key, DocumentVersion.latest.is_(True))
        ).first() is not None:
            return
        row = session.execute(
            select(DocumentVersion.id, DocumentVersion.document_id, DocumentVersion.version)
            .where(DocumentVersion.key == key)
            .order_by(DocumentVersion.version.desc())
            .limit(1)
        ).one_or_none()
        if row is None:  # no version is left: nothing of the key remains
            session.execute(delete(DocumentKey).where(DocumentKey.key == key))
            return
        session.execute(update(DocumentVersion).where(DocumentVersion.id == row.id).values(latest=True))
        session.execute(
            update(Document).where(Document.id == row.document_id).values(version=row.version, superseded_at=None)
        )
