"""Submitting documents and questions: store documents, create jobs, hand new jobs on.

The same code serves both modes: embedded (`docqa run`) passes no `enqueue` and runs
the jobs in process afterwards; distributed (`docqa submit`) passes a function that
puts job ids on the broker. Every submitted item is a document of its own; jobs that
already exist (same text, question, model and parameters) are not created or enqueued
again, whichever document asked them first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable

from docqa.core.settings import CPU_BATCH_WINDOWS
from docqa.core.text import plural
from docqa.producer.documents import InputError, SourceDocument, check_question
from docqa.storage.submissions import SubmissionCounts
from docqa.core.params import AnswerParams

if TYPE_CHECKING:
    from docqa.producer.chunking import Chunker
    from docqa.storage.repository import Repository

# Documents are stored one at a time (versions), then handled a group at a time: one
# transaction for the group's jobs, one for their links to the submission, and with a
# chunker one tokenizer call over the cores, one transaction for tokens and one for
# plans. Up to this many documents or characters, whichever comes first (a larger
# document is a group alone).
GROUP_DOCUMENTS = 32
GROUP_CHARACTERS = 2_000_000


@dataclass
class SubmitReport:
    documents: int = 0  # documents read without error (each one counts, whatever its text)
    new_documents: int = 0  # not in the store before: a new id, path or unnamed text, or a new version
    changed_documents: int = 0  # an id or path that came with new content: a new version
    texts: int = 0  # distinct texts among the documents
    new_texts: int = 0  # texts no document in the store had before
    questions: int = 0  # (document, question) pairs asked
    jobs: int = 0  # distinct jobs those need: one per (text, question)
    new_jobs: int = 0
    existing_jobs: int = 0  # jobs the store had before this submission (answered or on their way)
    enqueued_messages: int = 0
    errors: list[str] = field(default_factory=list)  # one sentence per input that could not be used
    new_job_ids: list[int] = field(default_factory=list)
    unsent_job_ids: list[int] = field(default_factory=list)  # stored, but the broker refused the message
    send_error: str | None = None  # why the broker refused, once
    submission_id: int | None = None
    seconds: float = 0.0
    tokens: int = 0  # tokens of the texts tokenized here (chunker given)
    token_bytes: int = 0  # what storing them took

    @property
    def shared_documents(self) -> int:
        """Documents whose text another document of this submission had first."""
        return self.documents - self.texts

    def summary(self) -> str:
        """'5 documents (5 new; 2 distinct texts: 3 documents repeat another's text; 2 new
        texts), 5 questions: 2 jobs (2 new, 0 in the store before)'."""
        changed = f", {self.changed_documents} changed" if self.changed_documents else ""
        shared = (f": {plural(self.shared_documents, 'document repeats', 'documents repeat')} another's text"
                  if self.shared_documents else "")
        return (
            f"{plural(self.documents, 'document')} ({self.new_documents} new{changed}; "
            f"{plural(self.texts, 'distinct text')}{shared}; {self.new_texts} new), "
            f"{plural(self.questions, 'question')} asked: {plural(self.jobs, 'job')} "
            f"({self.new_jobs} new, {self.existing_jobs} in the store before)"
        )


@dataclass
class _Group:
    """Stored documents waiting for their jobs: (document, text id, text, text new, questions)."""

    items: list[tuple[int, int, str, bool, list[str]]] = field(default_factory=list)
    characters: int = 0

    def full(self) -> bool:
        return len(self.items) >= GROUP_DOCUMENTS or self.characters >= GROUP_CHARACTERS


class _Submission:
    """One submission's state while its documents are read: see `submit`."""

    def __init__(self, repo: Repository, report: SubmitReport, *, submission_id: int, model, revision, params,
                 enqueue, chunk, chunk_windows, chunker: Callable[[], Chunker | None] | None, priority=0) -> None:
        self.repo, self.report = repo, report
        self.submission_id = submission_id  # started already: report.submission_id
        self.model, self.revision, self.params = model, revision, params
        self.enqueue, self.chunk, self.chunk_windows, self.chunker = enqueue, chunk, chunk_windows, chunker
        self.group = _Group()
        self.pending: list[int] = []  # new job ids not sent yet
        self.pending_windows = 0
        self.priority = priority
        self.texts_seen: set[int] = set()
        self.jobs_seen: set[int] = set()

    def add(self, doc: SourceDocument, asked: list[str]) -> None:
        """Store one document (its version key row-locked, alone); its jobs wait for the group."""
        stored = self.repo.add_document(doc.text, source=doc.source, external_id=doc.external_id,
                                        metadata=doc.metadata, version_key=doc.version_key)
        r = self.report
        r.documents += 1
        r.new_documents += int(stored.created)
        r.changed_documents += int(stored.changed)
        if stored.text_id not in self.texts_seen:
            self.texts_seen.add(stored.text_id)
            r.texts += 1
            r.new_texts += int(stored.text_created)
        self.group.items.append((stored.id, stored.text_id, doc.text, stored.text_created, asked))
        self.group.characters += len(doc.text)
        if self.group.full():
            self.flush_group()

    def flush_group(self) -> None:
        """The group's jobs (one transaction), its links to the submission, tokens and plans
        for new jobs, then send the new jobs."""
        items, self.group = self.group.items, _Group()
        if not items:
            return
        stored = self.repo.add_jobs_many([(doc, asked) for doc, _t, _text, _new, asked in items], model=self.model,
                                         revision=self.revision, params=self.params)
        self.repo.add_submission_jobs(self.submission_id, _job_ids(stored))
        self.repo.add_submission_documents(self.submission_id, [doc for doc, *_rest in items])
        for jobs in stored:
            self.count(jobs)
        planned = _new_jobs_by_text(items, stored)
        windows = self.plan(planned) if planned and self.chunker is not None else {}
        if self.priority > 0:  # a caller waits: its jobs (new, or queued already) go first
            self.repo.prioritize(_job_ids(stored), self.priority)
        # Sent once their plans are stored, so a worker finds them.
        self.send([job_id for _text, _new, jobs in planned.values() for job_id, _q in jobs], windows)

    def count(self, jobs) -> None:
        r = self.report
        r.questions += len(jobs)
        for job in jobs:
            if job.id in self.jobs_seen:
                continue
            self.jobs_seen.add(job.id)
            r.jobs += 1
            if job.created:
                r.new_jobs += 1
                r.new_job_ids.append(job.id)
            else:
                r.existing_jobs += 1

    def plan(self, planned: dict[int, tuple[str, bool, list[tuple[int, str]]]]) -> dict[int, int]:
        """Tokens (one tokenizer call for the texts that need them) and window plans; returns
        each planned job's window count."""
        ch = self.chunker() if self.chunker is not None else None
        if ch is None:
            return {}
        tokens = self.tokens(ch, planned)
        plans = [(job_id, ch.plan(tokens[text_id], q, self.params))
                 for text_id, (_text, _new, jobs) in planned.items() for job_id, q in jobs]
        self.repo.add_plans([(job_id, p) for job_id, p in plans if p is not None])
        return {job_id: len(p.windows) for job_id, p in plans if p is not None}

    def tokens(self, ch, planned: dict[int, tuple[str, bool, list[tuple[int, str]]]]) -> dict:
        """Each planned text's tokens under `ch`: stored ones reused, the others made in one
        tokenizer call and stored."""
        # Stored tokens are reused; a text new to the store has none to look up.
        known = [text_id for text_id, (_text, new, _jobs) in planned.items() if not new]
        tokens = self.repo.tokens_for(known, ch.key) if known else {}
        missing = [text_id for text_id in planned if text_id not in tokens]
        if missing:
            made = dict(zip(missing, ch.tokenize_many([planned[text_id][0] for text_id in missing])))
            self.report.token_bytes += self.repo.add_tokens_many(ch.key, made.items())
            self.report.tokens += sum(len(t) for t in made.values())
            tokens.update(made)
        return tokens

    def send(self, job_ids: list[int], windows: dict[int, int]) -> None:
        """Messages of at most `chunk` jobs and `chunk_windows` windows (a job without a plan
        counts one; a longer job goes alone)."""
        for job_id in job_ids:
            n = windows.get(job_id, 1)
            if self.pending and self.pending_windows + n > self.chunk_windows:
                self.flush()
            self.pending.append(job_id)
            self.pending_windows += n
            if len(self.pending) >= self.chunk:
                self.flush()

    def flush(self) -> None:
        """Send the pending job ids as one message (unless the broker refused one already)."""
        r = self.report
        if self.enqueue is not None and self.pending and r.send_error is None:
            try:
                self.enqueue(list(self.pending))
            except Exception as exc:  # broker down: the store keeps the jobs, queued
                r.send_error = f"{type(exc).__name__}: {exc}"
            else:
                r.enqueued_messages += 1
        if r.send_error is not None:
            r.unsent_job_ids += self.pending
        self.pending.clear()
        self.pending_windows = 0

    def read(self, documents: Iterable[SourceDocument], common: list[str],
             progress: Callable[[SourceDocument], None] | None, max_question_chars: int | None) -> None:
        """Store each document that has questions to ask; on KeyboardInterrupt between
        documents, the ones stored so far get their jobs before it goes on up."""
        try:
            for doc in documents:
                if progress is not None:
                    progress(doc)
                asked = _questions_of(doc, common, max_question_chars, self.report.errors)
                if asked:
                    self.add(doc, asked)
        except KeyboardInterrupt:
            self.finish()
            raise

    def finish(self) -> None:
        self.flush_group()
        self.flush()


def _job_ids(stored) -> list[int]:
    """The ids of a group's jobs, document by document."""
    return [job.id for jobs in stored for job in jobs]


def _new_jobs_by_text(items, stored) -> dict[int, tuple[str, bool, list[tuple[int, str]]]]:
    """Text id -> (text, text new, [(job id, question)] of the jobs just created), for the
    texts that have any: a document whose jobs all exist costs nothing more."""
    planned: dict[int, tuple[str, bool, list[tuple[int, str]]]] = {}
    for (_doc, text_id, text, text_new, asked), jobs in zip(items, stored):
        new_jobs = [(job.id, q) for job, q in zip(jobs, asked) if job.created]
        if new_jobs:
            planned.setdefault(text_id, (text, text_new, []))[2].extend(new_jobs)
    return planned


def submit(
    documents: Iterable[SourceDocument],
    questions: list[str],
    *,
    repo: Repository,
    model: str,
    revision: str | None,
    params: AnswerParams,
    enqueue: Callable[[list[int]], None] | None = None,
    chunk: int = 64,
    chunk_windows: int | None = None,
    progress: Callable[[SourceDocument], None] | None = None,
    command: str = "submit",
    max_question_chars: int | None = None,
    label: str | None = None,
    chunker: Callable[[], Chunker | None] | None = None,
    priority: int = 0,
) -> SubmitReport:
    """Store each document and its jobs as one submission; enqueue new jobs in messages of at
    most `chunk` job ids and `chunk_windows` windows (default CPU_BATCH_WINDOWS; `enqueue`
    sends one message and records that it was sent).

    Every document read is a document of its own (its id, path or source; its metadata);
    its text is stored once, and a job is made once per (text, question), so a document
    whose text another one has costs a row, not a forward pass or a tokenization. A
    document that could not be read, or that has no questions, is reported in `errors`
    and skipped; a question over `max_question_chars` is reported and skipped; the others
    go on. With a `chunker` (a function giving a producer.chunking.Chunker or None, called
    when first needed), each new job's text is tokenized once per tokenizer and its
    windows planned and stored, for workers to read. Documents are stored one at a time
    and their jobs made a group at a time (GROUP_DOCUMENTS / GROUP_CHARACTERS); new jobs
    are sent once their plans are stored. When the broker refuses a message the jobs stay
    stored and queued (`unsent_job_ids`, `send_error`): a worker's reconciler sends them
    once the broker is back, or `docqa requeue` does. On KeyboardInterrupt between
    documents, the documents stored so far get their jobs, sent as usual, before it goes on.
    With `priority` 1 or more, the jobs (new, or queued already) are claimed before bulk work
    by every worker's next run: a caller is waiting for them.
    """
    started = time.perf_counter()
    report = SubmitReport()
    submission_id = repo.start_submission(command=command, model=model, revision=revision, label=label)
    report.submission_id = submission_id
    state = _Submission(repo, report, submission_id=submission_id, model=model, revision=revision, params=params,
                        enqueue=enqueue, chunk=chunk,
                        chunk_windows=CPU_BATCH_WINDOWS if chunk_windows is None else chunk_windows, chunker=chunker,
                        priority=priority)
    common = [q for q in (q.strip() for q in questions) if q]
    state.read(documents, common, progress, max_question_chars)
    state.finish()
    repo.finish_submission(submission_id, _counts(report))
    report.seconds = time.perf_counter() - started
    return report


def _counts(report: SubmitReport) -> SubmissionCounts:
    """What the store records of a finished submission."""
    return SubmissionCounts(
        documents=report.documents, new_documents=report.new_documents, jobs=report.jobs, new_jobs=report.new_jobs,
        input_errors=len(report.errors), changed_documents=report.changed_documents, texts=report.texts,
        new_texts=report.new_texts,
    )


def _questions_of(doc: SourceDocument, common: list[str], max_chars: int | None, errors: list[str]) -> list[str]:
    """The questions to ask `doc` (the common ones, then its own, once each), or [] with the
    reason in `errors` when it cannot be used."""
    if doc.error is not None:
        errors.append(doc.error)
        return []
    kept = []
    for q in dict.fromkeys(common + [q.strip() for q in doc.questions if q.strip()]):
        try:
            check_question(q, max_chars, doc.source)
        except InputError as exc:
            errors.append(str(exc))
        else:
            kept.append(q)
    if not kept:
        errors.append(f"{doc.source}: no questions (give -q/--questions, or \"questions\" in the JSONL line)")
    return kept
