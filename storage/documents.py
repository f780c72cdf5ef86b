"""Documents and their texts: every submitted item is a document of its own (its key,
version, source and metadata); its text is stored once however many documents have it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.orm import Session

from docqa.storage.columns import utcnow
from docqa.storage.identity import anonymous_key, check_storable, id_key, is_versioned, path_key, text_sha256
from docqa.storage.models import (
    AnswerRow, Document, DocumentJob, DocumentKey, Job, PassageRow, PlanRow, SubmissionDocument, SubmissionJob, TextRow, TokensRow,
)
from docqa.storage.records import DeletedCounts, DocumentRecord, StoredDocument
from docqa.storage.transactions import Transactions, chunks


# The largest id an INTEGER column holds (PostgreSQL's int4).
MAX_ID = 2**31 - 1


class Documents(Transactions):
    """Adding, finding, reading and deleting documents."""

    def add_document(
        self,
        text: str,
        *,
        source: str | None = None,
        external_id: str | None = None,
        metadata: Any = None,
        version_key: str | None = None,
    ) -> StoredDocument:
        """Store one submitted item; its text once per distinct text. One transaction.

        `version_key` names the document across submissions ("id:<external id>" or
        "path:<real path>", see `docqa.storage.identity`); without one, the document is
        named by its external id, else by its source and text together. Under a key, a text that differs from the
        latest version's is recorded as version n+1 (the previous version is superseded);
        the same text again is the same document, whose source and metadata take the
        values given now. Concurrent calls for one key take turns (a row lock on
        PostgreSQL; SQLite writes one transaction at a time), so a key ends with exactly
        one latest version. Raises ValueError for text the store cannot keep unchanged
        (NUL, lone surrogates).
        """
        if not isinstance(text, str):
            raise TypeError(f"document text must be str, not {type(text).__name__}")
        check_storable(text, "document text")
        digest = text_sha256(text)
        if version_key is not None:
            key = version_key
        else:
            key = id_key(external_id) if external_id is not None else anonymous_key(source or "", digest)
        if not key:
            raise ValueError("a version key must not be empty")
        with self._write() as session:
            text_id, text_created = self._store_text(session, text, digest)
            described = {"source": source, "external_id": external_id, "meta": metadata}
            if is_versioned(key):
                doc_id, version, created, changed = self._record_version(session, key, text_id, described)
            else:
                doc_id, created = self._record_unnamed(session, key, text_id, described)
                version, changed = None, False
            return StoredDocument(id=doc_id, sha256=digest, created=created, version=version, changed=changed,
                                  text_id=text_id, text_created=text_created)

    def _store_text(self, session: Session, text: str, digest: str) -> tuple[int, bool]:
        """(the text's id, whether this call stored it)."""
        stmt = (
            self._insert(TextRow)
            .values(sha256=digest, text=text, length=len(text), created_at=utcnow())
            .on_conflict_do_nothing(index_elements=[TextRow.sha256])
            .returning(TextRow.id)
        )
        text_id = session.execute(stmt).scalar_one_or_none()
        if text_id is not None:
            self._index_text(session, text_id, text)  # type: ignore[attr-defined]  # Passages, in Repository
            return text_id, True
        # Lost the race or stored before: the row is committed (PostgreSQL waited for the
        # other insert before doing nothing), so this statement sees it.
        return session.execute(select(TextRow.id).where(TextRow.sha256 == digest)).scalar_one(), False

    def _record_version(
        self, session: Session, key: str, text_id: int, described: dict[str, Any]
    ) -> tuple[int, int, bool, bool]:
        """Make `text_id` the text of `key`'s latest version: (document id, its version,
        whether the document is new, whether the key had another text before)."""
        # One row per key, locked for the rest of the transaction: producers of one key
        # take turns (SQLite writes one transaction at a time anyway).
        session.execute(self._insert(DocumentKey).values(key=key, last_version=0).on_conflict_do_nothing())
        lock = select(DocumentKey.last_version).where(DocumentKey.key == key)
        if self._postgres:
            lock = lock.with_for_update()
        last_version = session.execute(lock).scalar_one()
        latest = session.execute(
            select(Document.id, Document.version, Document.text_id).where(Document.key == key, Document.latest)
        ).one_or_none()
        if latest is not None and latest.text_id == text_id:
            session.execute(update(Document).where(Document.id == latest.id).values(**described))
            return latest.id, latest.version, False, False
        now = utcnow()
        if latest is not None:
            session.execute(update(Document).where(Document.id == latest.id).values(latest=False, superseded_at=now))
        version = last_version + 1
        session.execute(update(DocumentKey).where(DocumentKey.key == key).values(last_version=version))
        doc_id = session.execute(
            self._insert(Document)
            .values(text_id=text_id, key=key, version=version, latest=True, created_at=now, **described)
            .returning(Document.id)
        ).scalar_one()
        return doc_id, version, True, latest is not None

    def _record_unnamed(self, session: Session, key: str, text_id: int, described: dict[str, Any]) -> tuple[int, bool]:
        """The document with no id or path under `key` (its source and text): (id, created)."""
        doc_id = session.execute(
            self._insert(Document)
            .values(text_id=text_id, key=key, version=None, latest=True, created_at=utcnow(), **described)
            .on_conflict_do_nothing(index_elements=[Document.key], index_where=Document.latest)
            .returning(Document.id)
        ).scalar_one_or_none()
        if doc_id is not None:
            return doc_id, True
        doc_id = session.execute(select(Document.id).where(Document.key == key, Document.latest)).scalar_one()
        session.execute(update(Document).where(Document.id == doc_id).values(meta=described["meta"]))
        return doc_id, False

    def document(self, document_id: int) -> DocumentRecord | None:
        """A document with its text (None: no such document)."""
        with self._read() as session:
            row = session.execute(
                select(Document, TextRow.sha256, TextRow.text).join(TextRow, TextRow.id == Document.text_id)
                .where(Document.id == document_id)
            ).one_or_none()
            return None if row is None else DocumentRecord.from_row(*row)

    def text_of(self, text_id: int) -> str | None:
        """A stored text (None: no such text)."""
        with self._read() as session:
            return session.execute(select(TextRow.text).where(TextRow.id == text_id)).scalar_one_or_none()

    def document_superseded(self, document_id: int) -> bool | None:
        """Whether a newer version of its id or path replaced this document (None: no such document)."""
        with self._read() as session:
            latest = session.execute(select(Document.latest).where(Document.id == document_id)).scalar_one_or_none()
            return None if latest is None else not latest

    def resolve_documents(self, ref: str | int) -> list[int]:
        """Ids of the documents `ref` names, first of: an internal document id (that one
        version); an id (JSONL / Client / HTTP: every version); a file path, relative to
        this process's folder or absolute, any spelling, or as it was given at submit
        (every version). [] when none matches. Names docqa made up for documents that came
        without id or path ("stdin", "batch.jsonl:3", "document 2") are not references: the
        same one names unrelated documents of other submissions; use the document id."""
        text_ref = str(ref)
        with self._read() as session:
            if text_ref.isascii() and text_ref.isdigit() and int(text_ref) <= MAX_ID:
                if session.get(Document, int(text_ref)) is not None:
                    return [int(text_ref)]
            for condition in (
                Document.key == id_key(text_ref),
                Document.key == path_key(text_ref) if text_ref else None,
                and_(Document.source == text_ref, Document.key.startswith("path:", autoescape=True)),
            ):
                if condition is None:
                    continue
                ids = sorted(session.execute(select(Document.id).where(condition)).scalars())
                if ids:
                    return ids
        return []

    def resolve_path(self, path: str) -> list[int]:
        """Every version of the document read from the file at `path` ([] when none)."""
        with self._read() as session:
            return sorted(session.execute(select(Document.id).where(Document.key == path_key(path))).scalars())

    def resolve_external_id(self, external_id: str) -> list[int]:
        """Every version of the document submitted with this id ([] when none)."""
        with self._read() as session:
            return sorted(session.execute(select(Document.id).where(Document.key == id_key(external_id))).scalars())

    def documents_of_job(self, job_id: int) -> list[int]:
        """Ids of the documents that asked a job's question."""
        with self._read() as session:
            return sorted(session.execute(select(DocumentJob.document_id).where(DocumentJob.job_id == job_id)).scalars())

    def documents_of_submission(self, submission_id: int) -> list[int]:
        """Ids of the documents a submission gave."""
        stmt = select(SubmissionDocument.document_id).where(SubmissionDocument.submission_id == submission_id)
        with self._read() as session:
            return sorted(session.execute(stmt).scalars())

    def delete_documents(self, document_ids: Iterable[int], *, dry_run: bool = False) -> DeletedCounts:
        """Remove documents; then the jobs no remaining document asks (with their answers and
        plans) and the texts no remaining document has (with their tokens). Work another
        document still needs stays. A key whose latest version goes gets its highest
        remaining version back as latest.

        A job that a worker is running and that goes ends without writing answers (its
        completion finds no job). With dry_run, counts what would go and changes nothing.
        """
        ids = sorted(set(document_ids))
        if not ids:
            return DeletedCounts(documents=0, jobs=0, answers=0, texts=0)
        with self._write() as session:
            attempt = session.begin_nested()  # rolled back for a dry run
            ids = _existing(session, Document.id, ids)
            keys: set[str] = set()
            linked_jobs: set[int] = set()
            their_texts: set[int] = set()
            for chunk in chunks(ids):
                keys.update(session.execute(select(Document.key).where(Document.id.in_(chunk), Document.latest)).scalars())
                linked_jobs.update(
                    session.execute(select(DocumentJob.job_id).where(DocumentJob.document_id.in_(chunk))).scalars())
                their_texts.update(session.execute(select(Document.text_id).where(Document.id.in_(chunk))).scalars())
                # Foreign keys cascade; said explicitly so a database without enforced
                # foreign keys loses nothing less.
                for link_table in (DocumentJob, SubmissionDocument):
                    session.execute(delete(link_table).where(link_table.document_id.in_(chunk)))
                session.execute(delete(Document).where(Document.id.in_(chunk)))
            # What no remaining document needs: jobs without a link, texts without a document.
            jobs = _unreferenced(session, sorted(linked_jobs), DocumentJob.job_id)
            texts = _unreferenced(session, sorted(their_texts), Document.text_id)
            jobs = sorted(set(jobs) | _jobs_of_texts(session, texts))  # jobs without links, too
            answers = 0
            for chunk in chunks(jobs):
                answers += session.execute(
                    select(func.count()).select_from(AnswerRow).where(AnswerRow.job_id.in_(chunk))).scalar_one()
                for job_table in (AnswerRow, SubmissionJob, PlanRow, DocumentJob):
                    session.execute(delete(job_table).where(job_table.job_id.in_(chunk)))
                session.execute(delete(Job).where(Job.id.in_(chunk)))
            for chunk in chunks(texts):
                session.execute(delete(TokensRow).where(TokensRow.text_id.in_(chunk)))
                session.execute(delete(PassageRow).where(PassageRow.text_id.in_(chunk)))
                session.execute(delete(TextRow).where(TextRow.id.in_(chunk)))
            for key in sorted(keys):
                self._restore_latest(session, key)
            counts = DeletedCounts(documents=len(ids), jobs=len(jobs), answers=answers, texts=len(texts))
            if dry_run:
                attempt.rollback()
            else:
                attempt.commit()
        return counts

    def _restore_latest(self, session: Session, key: str) -> None:
        lock = select(DocumentKey.last_version).where(DocumentKey.key == key)
        if self._postgres:
            lock = lock.with_for_update()
        session.execute(lock)
        if session.execute(select(Document.id).where(Document.key == key, Document.latest)).first() is not None:
            return
        row = session.execute(
            select(Document.id).where(Document.key == key).order_by(Document.version.desc()).limit(1)
        ).scalar_one_or_none()
        if row is None:  # no version is left: nothing of the key remains
            session.execute(delete(DocumentKey).where(DocumentKey.key == key))
            return
        session.execute(update(Document).where(Document.id == row).values(latest=True, superseded_at=None))


def _existing(session: Session, column, ids: list[int]) -> list[int]:
    """Those of `ids` that exist in `column`'s table."""
    found: set[int] = set()
    for chunk in chunks(ids):
        found.update(session.execute(select(column).where(column.in_(chunk))).scalars())
    return sorted(found)


def _jobs_of_texts(session: Session, text_ids: list[int]) -> set[int]:
    found: set[int] = set()
    for chunk in chunks(text_ids):
        found.update(session.execute(select(Job.id).where(Job.text_id.in_(chunk))).scalars())
    return found


def _unreferenced(session: Session, ids: list[int], reference) -> list[int]:
    """Those of `ids` that no row refers to through the column `reference`."""
    referred: set[int] = set()
    for chunk in chunks(ids):
        referred.update(session.execute(select(reference).where(reference.in_(chunk)).distinct()).scalars())
    return [i for i in ids if i not in referred]
