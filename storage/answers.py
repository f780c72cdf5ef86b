"""Answers: written idempotently (a job's answers are replaced, never appended) with the
offset invariant checked in the database, and read back per document with its provenance.

A job's answers are computed once for its text and reported once for every document that
asked the job's question. Invariant for every stored answer:
`text[char_start:char_end] == answer.text` for its job's text, hence for every document
that has that text.
"""

from __future__ import annotations

import math
import itertools
from collections.abc import Collection, Iterator, Mapping, Sequence

from sqlalchemy import Text, case, cast, delete, false, func, or_, select, text, tuple_, update
from sqlalchemy.orm import Session

from docqa.core.answer import Answer
from docqa.storage.columns import utcnow
from docqa.storage.errors import LeaseLost, NotFound
from docqa.storage.models import (
    AnswerRow, Document, DocumentJob, Job, JobStatus, SubmissionDocument, SubmissionJob, TextRow,
)
from docqa.storage.records import Fence, ResultRecord, answer_from_row
from docqa.storage.transactions import CHUNK, PG_RESULTS_LOCK_KEY, Transactions



class Answers(Transactions):
    """Completing jobs with their answers; reading answers and exports."""

    def complete(self, job_id: int, answers: Sequence[Answer], *, model_label: str, fence: Fence | None = None) -> None:
        """Store a job's answers (replacing any earlier ones) and mark it done, in one transaction.

        `model_label` is "model@revision" or the model alone. Refuses (ValueError, nothing
        written) answers whose ranks repeat, whose numbers are not finite, or whose
        offsets do not select their text in the job's stored text: the invariant
        `text[char_start:char_end] == answer.text` holds for every stored answer.
        With a `fence` (the claim a worker holds), writes only while that claim still holds
        the job's lease, else raises LeaseLost; without one (tools, tests), a job that was
        marked failed meanwhile becomes done. Raises NotFound for a job that does not exist.
        """
        refused = self.complete_many([(job_id, answers)], model_label=model_label, fence=fence)
        if job_id in refused:
            raise refused[job_id]

    def complete_many(
        self, results: Sequence[tuple[int, Sequence[Answer]]], *, model_label: str, fence: Fence | None = None,
    ) -> dict[int, ValueError | NotFound]:
        """`complete` for many jobs in one transaction (a worker's whole batch): one lock, one
        insert, one update, instead of a transaction per job.

        Jobs whose answers are refused (the checks of `complete`), that do not exist, or
        whose lease the fence no longer holds (LeaseLost) are left untouched and returned
        with the error; every other job is stored and done.
        """
        if not isinstance(model_label, str) or not model_label:
            raise ValueError("model_label must be a non-empty string")
        checked, refused = _valid_answers(results)
        if not checked:
            return refused
        with self._write() as session:
            texts = self._lock_held(session, checked, refused, fence)
            for job_id in [j for j in checked if checked[j]]:
                try:
                    _check_offsets(session, job_id, texts[job_id], checked[job_id])
                except ValueError as exc:
                    refused[job_id] = exc
                    del checked[job_id]
            if checked:
                self._write_answers(session, checked, model_label)
        return refused

    def _lock_held(self, session: Session, checked: dict, refused: dict, fence: Fence | None) -> dict[int, int]:
        """Lock the jobs of `checked` (id order: two workers completing overlapping batches
        cannot deadlock; two deliveries of one job take turns); move those that are gone, or
        whose lease `fence` no longer holds, to `refused`. Returns each kept job's text id.

        NO KEY UPDATE (key_share=True): a producer linking a document to the job takes a
        foreign key's KEY SHARE lock under the results lock this transaction asks for
        next; a FOR UPDATE here and the two would wait on each other."""
        lock = select(Job.id, Job.text_id, Job.status, Job.worker, Job.attempts).where(
            Job.id.in_(checked)).order_by(Job.id)
        if self._postgres:
            lock = lock.with_for_update(key_share=True)
        rows = {row.id: row for row in session.execute(lock)}
        for job_id in list(checked):
            row = rows.get(job_id)
            problem = NotFound(f"job {job_id} does not exist") if row is None else _fenced_out(job_id, row, fence)
            if problem is not None:
                refused[job_id] = problem
                del checked[job_id]
        return {job_id: rows[job_id].text_id for job_id in checked}

    def _write_answers(self, session: Session, checked: dict[int, list[Answer]], model_label: str) -> None:
        """Replace the jobs' answers and mark them done, under the results lock (PostgreSQL)
        so answer ids become visible in increasing order."""
        now = utcnow()
        if self._postgres:
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_RESULTS_LOCK_KEY})
        session.execute(delete(AnswerRow).where(AnswerRow.job_id.in_(checked)))
        rows = [_answer_row(job_id, a, model_label, now)
                for job_id in sorted(checked) for a in sorted(checked[job_id], key=lambda a: a.rank)]
        for i in range(0, len(rows), CHUNK):
            session.execute(self._insert(AnswerRow).values(rows[i : i + CHUNK]))
        session.execute(
            update(Job)
            .where(Job.id.in_(checked))
            .values(status=JobStatus.DONE, error=None, finished_at=now, leased_until=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )

    def answers_for_job(self, job_id: int) -> list[Answer]:
        """A job's stored answers, by rank (empty when it has none yet)."""
        with self._read() as session:
            rows = session.execute(
                select(AnswerRow).where(AnswerRow.job_id == job_id).order_by(AnswerRow.rank)
            ).scalars()
            return [answer_from_row(r) for r in rows]

    def iter_results(
        self,
        *,
        document_id: int | None = None,
        job_id: int | None = None,
        submission_id: int | None = None,
        document_ids: Collection[int] | None = None,
        question: str | None = None,
        model: str | None = None,
        rank: int | None = None,
        where: Mapping[str, str] | None = None,
        all_versions: bool = False,
        order: str = "answer",
        after: str | int | None = None,
        after_answer_id: int = 0,
        batch: int = 500,
    ) -> Iterator[ResultRecord]:
        """Answers per document: each answer of a job once for every document that asked the
        job's question, under that document's id, path, metadata and version, in `order`:

        - "answer" (default): by answer id, then document id;
        - "reference": by the reference pipeline's score, highest first;
        - "margin": by margin (comparable across windows and documents), highest first;
          answers without one (the null answer, answers stored before schema 0003) last.

        Reads `batch` rows per short transaction (keyset paging), holding nothing open
        while the caller consumes them; `after` is a record's `result_cursor(order)` to
        resume after it (a bare answer id, or after_answer_id, resumes after that answer).
        To follow results as they land, use `follow_results`. Filters combine: submission
        (its documents and the jobs it asked), job, document ids, question text, the job's
        model, answer rank (None: every rank), document metadata equal to the given strings
        (`where`, top-level keys; numbers and booleans compare as their JSON text, e.g.
        "2024", "true"). Versions a newer one replaced are left out unless all_versions.
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        key = _order_key(order)
        position = _parse_cursor(order, after if after is not None else (after_answer_id or None))
        filters = dict(document_ids=document_ids, question=question, model=model, rank=rank, where=where,
                       all_versions=all_versions, submission_id=submission_id, job_id=job_id, document_id=document_id)
        yield from self._pages(key, position, filters, batch)

    def _pages(self, key, position, filters: dict, batch: int, *conditions) -> Iterator[ResultRecord]:
        """iter_results' records after `position`, `batch` rows per read, with more conditions."""
        while True:
            stmt = _after(self._filtered(_result_columns(key), **filters), key, position)
            with self._read() as session:
                rows = session.execute(stmt.where(*conditions).limit(batch)).all()
            records = [_record(row) for row in rows]
            yield from records
            if len(records) < batch:
                return
            position = (None if key is None else rows[-1][-1], records[-1].answer_id, records[-1].document_id)

    def follow_results(
        self, position: FollowPosition | None = None, **filters,
    ) -> tuple[list[ResultRecord], FollowPosition]:
        """One pass of following results as they land: the records that became visible since
        `position` (None: all so far), in answer order, and the position to pass next time.

        A record appears when its answer is written (a job done) or when a document is
        linked to a job answered before (a document that shares an answered text). Both
        answer ids and link ids become visible in increasing order (SQLite writes one
        transaction at a time; on PostgreSQL answers and links are written under one
        advisory lock), so following by the two highest ids seen misses and repeats
        nothing. `filters` are those of iter_results (order and cursors excepted).
        """
        answers_seen, links_seen = position if position is not None else (0, 0)
        with self._read() as session:
            links_now = session.execute(select(func.max(DocumentJob.id))).scalar() or 0
        # New answers, for documents linked up to links_now (later links: the next pass).
        start = None if not answers_seen else (None, answers_seen, _LAST_DOCUMENT)
        out = list(self._pages(None, start, filters, 500, DocumentJob.id <= links_now))
        # Links made since the last pass to answers already seen then.
        if links_now > links_seen and answers_seen:
            out += self._pages(None, None, filters, 500, DocumentJob.id > links_seen, DocumentJob.id <= links_now,
                               AnswerRow.id <= answers_seen)
        last_answer = max([answers_seen] + [r.answer_id for r in out])
        return out, (last_answer, links_now)

    def top_results(
        self,
        *,
        question: str,
        top: int,
        model: str | None = None,
        rank: int | None = 0,
        document_ids: Collection[int] | None = None,
        where: Mapping[str, str] | None = None,
        all_versions: bool = False,
        order: str = "margin",
        submission_id: int | None = None,
    ) -> list[ResultRecord]:
        """The `top` answers to `question` across all documents, by margin (highest first)
        unless `order` says "reference": which documents answer this question best. Each
        document is an entry of its own: two documents with one text are two entries with
        equal scores. Answers without a margin (stored before schema 0003, or the null
        answer) come last."""
        if top < 1:
            raise ValueError(f"top must be at least 1, got {top}")
        if order == "answer":
            order = "margin"
        return list(
            itertools.islice(
                self.iter_results(
                    question=question, model=model, rank=rank, document_ids=document_ids, where=where,
                    all_versions=all_versions, order=order, submission_id=submission_id, batch=top,
                ),
                top,
            )
        )

    def _filtered(
        self, stmt, *, document_ids=None, question=None, model=None, rank=None, where=None, all_versions=False,
        submission_id=None, job_id=None, document_id=None,
    ):
        if document_ids is not None:
            ids = sorted(set(document_ids))
            stmt = stmt.where(DocumentJob.document_id.in_(ids) if ids else false())
        if document_id is not None:
            stmt = stmt.where(DocumentJob.document_id == document_id)
        if job_id is not None:
            stmt = stmt.where(AnswerRow.job_id == job_id)
        if submission_id is not None:
            stmt = stmt.where(
                DocumentJob.document_id.in_(
                    select(SubmissionDocument.document_id).where(SubmissionDocument.submission_id == submission_id)
                ),
                DocumentJob.job_id.in_(select(SubmissionJob.job_id).where(SubmissionJob.submission_id == submission_id)),
            )
        if question is not None:
            from docqa.storage.identity import text_sha256

            stmt = stmt.where(Job.question_sha256 == text_sha256(question))
        if model is not None:
            stmt = stmt.where(Job.model == model)
        if rank is not None:
            stmt = stmt.where(AnswerRow.rank == rank)
        for name, value in (where or {}).items():
            stmt = stmt.where(self._metadata_text(name) == str(value))
        if not all_versions:
            stmt = stmt.where(Document.latest)
        return stmt

    def _metadata_text(self, name: str):
        """The document metadata's top-level `name` as text (JSON text for numbers and booleans)."""
        if not isinstance(name, str) or not name or '"' in name or "\\" in name:
            raise ValueError(f"cannot filter on metadata key {name!r}: give a non-empty key without quotes or backslashes")
        if self._postgres:
            return Document.meta.op("->>")(name)
        path = '$."' + name + '"'
        kind = func.json_type(Document.meta, path)
        return case(
            (kind == "true", "true"),
            (kind == "false", "false"),
            else_=cast(func.json_extract(Document.meta, path), Text),
        )


# Where a follower of results stands: (highest answer id, highest document link id) seen.
FollowPosition = tuple[int, int]
# Answers without a margin sort below every real one (AnswerRow.sort_margin).
NO_MARGIN = -1e308
ORDERS = ("answer", "reference", "margin")
# A bare answer id as a cursor resumes after every document's record of that answer.
_LAST_DOCUMENT = 2**31 - 1  # the largest id an INTEGER column holds


def _result_columns(key=None):
    """Answers joined with the links of the documents that asked their jobs."""
    columns = [
        AnswerRow, Job.question, Job.params, Job.text_id, TextRow.sha256, Document.id,
        Document.external_id, Document.source, Document.meta, Document.version, Document.latest,
    ]
    if key is not None:
        columns.append(key)
    return (
        select(*columns)
        .join(Job, AnswerRow.job_id == Job.id)
        .join(TextRow, TextRow.id == Job.text_id)
        .join(DocumentJob, DocumentJob.job_id == Job.id)
        .join(Document, Document.id == DocumentJob.document_id)
    )


def _after(stmt, key, position):
    """Order `stmt` by `key` (None: answer id) and keep the rows after `position`."""
    if key is None:
        if position is not None:
            _value, answer_id, document_id = position
            stmt = stmt.where(AnswerRow.id >= answer_id,
                              or_(AnswerRow.id > answer_id, Document.id > document_id))
        return stmt.order_by(AnswerRow.id, Document.id)
    # Best first, newest first among equals, then by document: the (key, id) index is
    # walked backwards from the cursor, not sorted.
    if position is not None:
        value, answer_id, document_id = position
        stmt = stmt.where(tuple_(key, AnswerRow.id) <= tuple_(value, answer_id),
                          or_(tuple_(key, AnswerRow.id) < tuple_(value, answer_id), Document.id < document_id))
    return stmt.order_by(key.desc(), AnswerRow.id.desc(), Document.id.desc())


def _order_key(order: str):
    if order == "answer":
        return None
    if order == "reference":
        return AnswerRow.score
    if order == "margin":
        return AnswerRow.sort_margin
    raise ValueError(f"unknown order {order!r}: use one of {', '.join(ORDERS)}")


def result_cursor(record: ResultRecord, order: str = "answer") -> str:
    """The cursor that resumes an `iter_results(order=order)` listing after `record`."""
    if order == "answer":
        return f"{record.answer_id}:{record.document_id}"
    value = record.score if order == "reference" else (record.margin if record.margin is not None else NO_MARGIN)
    return f"{value!r}:{record.answer_id}:{record.document_id}"


def _parse_cursor(order: str, cursor) -> tuple[float | None, int, int] | None:
    """(order value, answer id, document id) from a cursor; a cursor without a document id
    (older releases, a bare answer id) resumes after all records of its answer."""
    if cursor is None or cursor == "" or cursor == 0:
        return None
    text_cursor = str(cursor)
    parts = text_cursor.split(":")
    try:
        if order == "answer" and len(parts) <= 2:
            return None, int(parts[0]), int(parts[1]) if len(parts) == 2 else _LAST_DOCUMENT
        if order != "answer" and len(parts) in (2, 3):
            # Descending: a cursor without a document id is below every document of its answer.
            return float(parts[0]), int(parts[1]), int(parts[2]) if len(parts) == 3 else -_LAST_DOCUMENT
    except ValueError:
        pass
    raise ValueError(
        f"cursor {text_cursor!r} does not fit order {order!r}: pass the cursor of a page read in the same order"
    )


def _record(row) -> ResultRecord:
    (a, question, params, text_id, digest, doc_id, external_id, source, meta, version, latest) = row[:11]
    return ResultRecord.from_row(
        a, document_id=doc_id, question=question, external_id=external_id, source=source, sha256=digest,
        metadata=meta, params=params, version=version, superseded=not latest, text_id=text_id,
    )


def _valid_answers(results) -> tuple[dict[int, list[Answer]], dict[int, ValueError | NotFound]]:
    """(answers that pass `_check_answers`, by job; the refused jobs with the reason)."""
    refused: dict[int, ValueError | NotFound] = {}
    checked: dict[int, list[Answer]] = {}
    for job_id, answers in results:
        if job_id in checked or job_id in refused:
            raise ValueError(f"job {job_id} appears twice in one complete_many call")
        try:
            rows = [a if isinstance(a, Answer) else Answer.model_validate(a) for a in answers]
            _check_answers(job_id, rows)
        except ValueError as exc:
            refused[job_id] = exc
            continue
        checked[job_id] = rows
    return checked, refused


def _fenced_out(job_id: int, row, fence: Fence | None) -> LeaseLost | None:
    """LeaseLost when `fence` no longer holds the job's lease (None without a fence)."""
    if fence is None or fence.holds(row.status, row.worker, job_id, row.attempts):
        return None
    return LeaseLost(job_id, row.status, row.worker)


def _answer_row(job_id: int, a: Answer, model_label: str, now) -> dict:
    return {
        "job_id": job_id, "rank": a.rank, "text": a.text, "score": a.score, "char_start": a.char_start,
        "char_end": a.char_end, "window_index": a.window_index, "window_char_start": a.window_char_start,
        "window_char_end": a.window_char_end, "token_start": a.token_start, "token_end": a.token_end,
        "start_logit": a.start_logit, "end_logit": a.end_logit, "null_start_logit": a.null_start_logit,
        "null_end_logit": a.null_end_logit, "sort_margin": NO_MARGIN if a.margin is None else a.margin,
        "model": model_label, "created_at": now,
    }


def _check_answers(job_id: int, answers: Sequence[Answer]) -> None:
    ranks = [a.rank for a in answers]
    if len(set(ranks)) != len(ranks):
        raise ValueError(f"job {job_id}: answer ranks repeat ({sorted(ranks)}); each rank must appear once")
    for a in answers:
        if a.rank < 0:
            raise ValueError(f"job {job_id}: answer rank {a.rank} is negative; ranks are 0-based")
        for name in ("score", "start_logit", "end_logit", "null_start_logit", "null_end_logit"):
            value = getattr(a, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(
                    f"job {job_id}: answer rank {a.rank} has {name} {value}; the model produced "
                    "non-finite numbers (try float32 instead of float16)"
                )
        if not 0 <= a.char_start <= a.char_end:
            raise ValueError(
                f"job {job_id}: answer rank {a.rank} has offsets {a.char_start}:{a.char_end}; "
                "need 0 <= char_start <= char_end"
            )
        if len(a.text) != a.char_end - a.char_start:
            raise ValueError(
                f"job {job_id}: answer rank {a.rank} text has {len(a.text)} characters but its "
                f"offsets {a.char_start}:{a.char_end} span {a.char_end - a.char_start}"
            )


def _check_offsets(session: Session, job_id: int, text_id: int, answers: Sequence[Answer]) -> None:
    # substr counts characters (code points) on SQLite and on a UTF8 PostgreSQL
    # database, like Python str indices; only the answers' spans leave the database.
    columns = [TextRow.length] + [
        func.substr(TextRow.text, a.char_start + 1, a.char_end - a.char_start) for a in answers
    ]
    row = session.execute(select(*columns).where(TextRow.id == text_id)).one()
    length, spans = row[0], row[1:]
    for a, span in zip(answers, spans):
        if a.char_end > length:
            raise ValueError(
                f"job {job_id}: answer rank {a.rank} ends at character {a.char_end} but the "
                f"document has {length} characters"
            )
        if span != a.text:
            raise ValueError(
                f"job {job_id}: answer rank {a.rank} text {a.text!r} is not the document text at "
                f"{a.char_start}:{a.char_end} ({span!r}); offsets must index the stored text"
            )
