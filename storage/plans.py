"""Tokens and window plans the producer made: stored once per text (tokens) and per job
(plans), read by workers and `docqa windows`."""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

# docqa.core.windows (numpy) is imported where tokens are encoded or decoded: commands
# that only count or list (docqa status) import neither numpy nor torch.
from docqa.storage.columns import utcnow
from docqa.storage.models import Job, PlanRow, TokensRow
from docqa.storage.transactions import Transactions, chunks

if TYPE_CHECKING:
    from docqa.core.windows import DocumentTokens, WindowPlan

log = logging.getLogger(__name__)


class Plans(Transactions):
    """Text tokens (per tokenizer) and job window plans."""

    def has_tokens(self, text_id: int, tokenizer: str) -> bool:
        with self._read() as session:
            return session.get(TokensRow, (text_id, tokenizer)) is not None

    def add_tokens(self, text_id: int, tokenizer: str, tokens: DocumentTokens) -> int:
        """Store a text's tokens under `tokenizer` (once: a second store is a no-op).
        Returns the stored size in bytes."""
        return self.add_tokens_many(tokenizer, [(text_id, tokens)])

    def add_tokens_many(self, tokenizer: str, texts: Iterable[tuple[int, DocumentTokens]]) -> int:
        """Store several texts' tokens under `tokenizer` in one transaction (a text that has
        them already keeps its own). Returns the bytes of what was given."""
        from docqa.core.windows import encode_tokens

        now = utcnow()
        # In text order whatever order the caller gives: two producers storing tokens of the
        # same texts never wait on each other's rows in opposite orders (deadlock).
        rows: list[dict[str, Any]] = [
            {"text_id": text_id, "tokenizer": tokenizer, "n_tokens": len(tokens), "data": encode_tokens(tokens),
             "created_at": now} for text_id, tokens in sorted(texts, key=lambda item: item[0])
        ]
        if not rows:
            return 0
        with self._write() as session:
            for chunk in chunks(rows, 64):  # blobs: keep one statement's parameters modest
                session.execute(self._insert(TokensRow).values(list(chunk)).on_conflict_do_nothing())
        return sum(len(row["data"]) for row in rows)

    def tokens_for(self, text_ids: Collection[int], tokenizer: str) -> dict[int, DocumentTokens]:
        """The stored tokens of those texts under `tokenizer` (texts without are absent)."""
        from docqa.core.windows import decode_tokens

        out: dict[int, DocumentTokens] = {}
        ids = sorted(set(text_ids))
        with self._read() as session:
            for chunk in chunks(ids):
                rows = session.execute(
                    select(TokensRow.text_id, TokensRow.data).where(
                        TokensRow.text_id.in_(chunk), TokensRow.tokenizer == tokenizer
                    )
                ).all()
                for text_id, data in rows:
                    try:
                        out[text_id] = decode_tokens(bytes(data))
                    except (ValueError, zlib.error) as exc:  # damaged: the worker tokenizes instead
                        log.warning("stored tokens of text %s are unreadable (%s); tokenizing it again", text_id, exc)
        return out

    def add_plans(self, plans: Iterable[tuple[int, WindowPlan]]) -> None:
        """Fix jobs' window plans (a job that has one keeps it)."""
        plans = list(plans)
        rows = [
            {"job_id": job_id, "tokenizer": p.tokenizer, "question_tokens": p.question_tokens,
             "windows": json.dumps([list(w) for w in p.windows], separators=(",", ":"))}
            for job_id, p in plans
        ]
        if not rows:
            return
        by_count: dict[int, list[int]] = {}  # jobs.n_windows, what messages and claims are sized by
        for job_id, p in plans:
            by_count.setdefault(len(p.windows), []).append(job_id)
        with self._write() as session:
            for chunk in chunks(rows):
                session.execute(self._insert(PlanRow).values(list(chunk)).on_conflict_do_nothing())
            for n, ids in by_count.items():
                for id_chunk in chunks(ids):
                    session.execute(update(Job).where(Job.id.in_(id_chunk), Job.n_windows.is_(None)).values(n_windows=n)
                                    .execution_options(synchronize_session=False))

    def plans_for(self, job_ids: Collection[int]) -> dict[int, WindowPlan]:
        """The window plans of those jobs (jobs without one are absent)."""
        from docqa.core.windows import WindowPlan

        out: dict[int, WindowPlan] = {}
        ids = sorted(set(job_ids))
        with self._read() as session:
            for chunk in chunks(ids):
                for row in session.execute(select(PlanRow).where(PlanRow.job_id.in_(chunk))).scalars():
                    try:
                        windows = _windows(row.windows)
                    except (ValueError, TypeError) as exc:  # damaged: the worker windows the job itself
                        log.warning("the window plan of job %s is unreadable (%s); ignoring it", row.job_id, exc)
                        continue
                    out[row.job_id] = WindowPlan(row.tokenizer, row.question_tokens, windows)
        return out

    def plans_of_documents(
        self, document_ids: Collection[int], *, question: str | None = None, model: str | None = None
    ) -> list[tuple[int, int, str, str, WindowPlan | None]]:
        """(job id, document id, question, model, plan or None) for the jobs those documents
        asked, by job id then document id; filtered by exact question text and model."""
        from docqa.core.windows import WindowPlan
        from docqa.storage.identity import text_sha256
        from docqa.storage.models import DocumentJob, Job

        stmt = (
            select(Job.id, DocumentJob.document_id, Job.question, Job.model, PlanRow.tokenizer,
                   PlanRow.question_tokens, PlanRow.windows)
            .join(DocumentJob, DocumentJob.job_id == Job.id)
            .outerjoin(PlanRow, PlanRow.job_id == Job.id)
            .where(DocumentJob.document_id.in_(sorted(set(document_ids))))
            .order_by(Job.id, DocumentJob.document_id)
        )
        if question is not None:
            stmt = stmt.where(Job.question_sha256 == text_sha256(question))
        if model is not None:
            stmt = stmt.where(Job.model == model)
        with self._read() as session:
            rows = session.execute(stmt).all()
        out: list[tuple[int, int, str, str, WindowPlan | None]] = []
        for job_id, doc_id, q, m, tokenizer, q_tokens, windows in rows:
            plan = None
            if tokenizer is not None:
                plan = WindowPlan(tokenizer, q_tokens, _windows(windows))
            out.append((job_id, doc_id, q, m, plan))
        return out


def _windows(stored: str) -> tuple[tuple[int, int, int, int], ...]:
    """A stored plan's windows: (token start, token end, character start, character end)
    each. ValueError or TypeError when the JSON holds something else."""
    return tuple((int(ts), int(te), int(cs), int(ce)) for ts, te, cs, ce in json.loads(stored))
