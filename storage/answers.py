"""Answers: written idempotently (a job's answers are replaced, never appended) with the
offset invariant checked in the database, and read back joined with their provenance.

Invariant for every stored answer: `document.text[char_start:char_end] == answer.text`.
"""

from __future__ import annotations

import math
import itertools
from collections.abc import Collection, Iterator, Mapping, Sequence

from sqlalchemy import Text, case, cast, delete, func, select, text, tuple_, update
from sqlalchemy.orm import Session

from docqa.core.answer import Answer
from docqa.storage.columns import utcnow
from docqa.storage.errors import NotFound
from docqa.storage.models import AnswerRow, Document, Job, JobStatus, SubmissionJob
from docqa.storage.records import ResultRecord, answer_from_row
from docqa.storage.transactions import CHUNK, Transactions

# PostgreSQL advisory lock held while a job's answers are written, so answer ids become
# visible in increasing order (see `iter_results`).
PG_ANSWERS_LOCK_KEY = 0x646F6361  # "doca"


class Answers(Transactions):
    """Completing jobs with their answers; reading answers and exports."""

    def complete(self, job_id: int, answers: Sequence[Answer], *, model_label: str) -> None:
        """Store a job's answers (replacing any earlier ones) and mark it done, in one transaction.

        `model_label` is "model@revision" or the model alone. Refuses (ValueError, nothing
        written) answers whose ranks repeat, whose numbers are not finite, or whose
        offsets do not select their text in the stored document: the invariant
        `document.text[char_start:char_end] == answer.text` holds for every stored answer.
        A job that was marked failed meanwhile (its lease ran out) becomes done.
        Raises NotFound for a job that does not exist.
        """
        refused = self.complete_many([(job_id, answers)], model_label=model_label)
        if job_id in refused:
            error = refused[job_id]
            raise error

    def complete_many(
        self, results: Sequence[tuple[int, Sequence[Answer]]], *, model_label: str
    ) -> dict[int, ValueError | NotFound]:
        """`complete` for many jobs in one transaction (a worker's whole batch): one lock, one
        insert, one update, instead of a transaction per job.

        Jobs whose answers are refused (the checks of `complete`) or that do not exist are
        left untouched and returned with the error; every other job is stored and done.
        """
        if not isinstance(model_label, str) or not model_label:
            raise ValueError("model_label must be a non-empty string")
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
        if not checked:
            return refused
        now = utcnow()
        with self._write() as session:
            # In id order, so two workers completing overlapping batches cannot deadlock;
            # two deliveries of one job completing at once take turns here.
            lock = select(Job.id, Job.document_id).where(Job.id.in_(checked)).order_by(Job.id)
            if self._postgres:
                lock = lock.with_for_update()
            documents = dict(session.execute(lock).all())
            for job_id in list(checked):
                if job_id not in documents:
                    refused[job_id] = NotFound(f"job {job_id} does not exist")
                    del checked[job_id]
                elif checked[job_id]:
                    try:
                        _check_offsets(session, job_id, documents[job_id], checked[job_id])
                    except ValueError as exc:
                        refused[job_id] = exc
                        del checked[job_id]
            if not checked:
                return refused
            if self._postgres:
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_ANSWERS_LOCK_KEY})
            session.execute(delete(AnswerRow).where(AnswerRow.job_id.in_(checked)))
            rows = [
                {
                    "job_id": job_id,
                    "rank": a.rank,
                    "text": a.text,
                    "score": a.score,
                    "char_start": a.char_start,
                    "char_end": a.char_end,
                    "window_index": a.window_index,
                    "window_char_start": a.window_char_start,
                    "window_char_end": a.window_char_end,
                    "token_start": a.token_start,
                    "token_end": a.token_end,
                    "start_logit": a.start_logit,
                    "end_logit": a.end_logit,
                    "null_start_logit": a.null_start_logit,
                    "null_end_logit": a.null_end_logit,
                    "sort_margin": NO_MARGIN if a.margin is None else a.margin,
                    "model": model_label,
                    "created_at": now,
                }
                for job_id in sorted(checked)
                for a in sorted(checked[job_id], key=lambda a: a.rank)
            ]
            for i in range(0, len(rows), CHUNK):
                session.execute(self._insert(AnswerRow).values(rows[i : i + CHUNK]))
            session.execute(
                update(Job)
                .where(Job.id.in_(checked))
                .values(status=JobStatus.DONE, error=None, finished_at=now, leased_until=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        return refused

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
        """Answers joined with their jobs and documents, in `order`:

        - "answer" (default): by increasing answer id. To follow new results, poll again
          with after_answer_id (or after) set to the last answer_id seen: answer ids become
          visible in increasing order (SQLite writes one transaction at a time; on
          PostgreSQL `complete` serialises answer writes), so no answer is skipped. A job
          answered again gets new answer ids and shows up again.
        - "reference": by the reference pipeline's score, highest first.
        - "margin": by margin (comparable across windows and documents), highest first;
          answers without one (the null answer, answers stored before schema 0003) last.

        Reads `batch` rows per short transaction (keyset paging), holding nothing open
        while the caller consumes them; `after` is a record's `cursor(order)` to resume
        after it. Filters combine: submission, job, document ids, question text, the job's
        model, answer rank (None: every rank), document metadata equal to the given
        strings (`where`, top-level keys; numbers and booleans compare as their JSON text,
        e.g. "2024", "true"). Documents replaced by a newer version are left out unless
        all_versions.
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        key = _order_key(order)
        position = _parse_cursor(order, after if after is not None else (after_answer_id or None))
        while True:
            stmt = self._result_columns(key).limit(batch)
            stmt = self._filtered(
                stmt, document_ids=document_ids, question=question, model=model, rank=rank, where=where,
                all_versions=all_versions, submission_id=submission_id, job_id=job_id, document_id=document_id,
            )
            if key is None:
                if position is not None:
                    stmt = stmt.where(AnswerRow.id > position[1])
                stmt = stmt.order_by(AnswerRow.id)
            else:
                # Best first, newest first among equals: one row comparison, so the
                # (key, id) index is walked backwards from the cursor, not sorted.
                if position is not None:
                    stmt = stmt.where(tuple_(key, AnswerRow.id) < tuple_(*position))
                stmt = stmt.order_by(key.desc(), AnswerRow.id.desc())
            with self._read() as session:
                rows = session.execute(stmt).all()
            records = [_record(row) for row in rows]
            yield from records
            if len(records) < batch:
                return
            last = rows[-1]
            position = (None if key is None else last[-1], records[-1].answer_id)

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
        unless `order` says "reference": which documents answer this question best.
        Answers without a margin (stored before schema 0003, or the null answer) come last."""
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

    @staticmethod
    def _result_columns(key=None):
        columns = [
            AnswerRow, Job.document_id, Job.question, Job.params, Document.external_id, Document.source,
            Document.sha256, Document.meta, Document.version, Document.superseded_at,
        ]
        if key is not None:
            columns.append(key)
        return (
            select(*columns)
            .join(Job, AnswerRow.job_id == Job.id)
            .join(Document, Job.document_id == Document.id)
        )

    def _filtered(
        self, stmt, *, document_ids=None, question=None, model=None, rank=None, where=None, all_versions=False,
        submission_id=None, job_id=None, document_id=None,
    ):
        if document_ids is not None:
            stmt = stmt.where(Job.document_id.in_(sorted(set(document_ids))))
        if document_id is not None:
            stmt = stmt.where(Job.document_id == document_id)
        if job_id is not None:
            stmt = stmt.where(AnswerRow.job_id == job_id)
        if submission_id is not None:
            stmt = stmt.where(
                AnswerRow.job_id.in_(select(SubmissionJob.job_id).where(SubmissionJob.submission_id == submission_id))
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
            stmt = stmt.where(Document.superseded_at.is_(None))
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


# Answers without a margin sort below every real one (AnswerRow.sort_margin).
NO_MARGIN = -1e308
ORDERS = ("answer", "reference", "margin")


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
        return str(record.answer_id)
    value = record.score if order == "reference" else (record.margin if record.margin is not None else NO_MARGIN)
    return f"{value!r}:{record.answer_id}"


def _parse_cursor(order: str, cursor) -> tuple[float | None, int] | None:
    if cursor is None or cursor == "" or cursor == 0:
        return None
    text_cursor = str(cursor)
    try:
        if order == "answer":
            return None, int(text_cursor)
        value, _, answer_id = text_cursor.rpartition(":")
        return float(value), int(answer_id)
    except ValueError:
        raise ValueError(
            f"cursor {text_cursor!r} does not fit order {order!r}: pass the cursor of a page read in the same order"
        ) from None


def _record(row) -> ResultRecord:
    a, doc_id, question, params, external_id, source, digest, meta, version, superseded_at = row[:10]
    return ResultRecord.from_row(
        a, document_id=doc_id, question=question, external_id=external_id, source=source, sha256=digest,
        metadata=meta, params=params, version=version, superseded=superseded_at is not None,
    )


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


def _check_offsets(session: Session, job_id: int, document_id: int, answers: Sequence[Answer]) -> None:
    # substr counts characters (code points) on SQLite and on a UTF8 PostgreSQL
    # database, like Python str indices; only the answers' spans leave the database.
    columns = [Document.length] + [
        func.substr(Document.text, a.char_start + 1, a.char_end - a.char_start) for a in answers
    ]
    row = session.execute(select(*columns).where(Document.id == document_id)).one()
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
