"""Submitting documents and questions: store documents, create jobs, hand new jobs on.

The same code serves both modes: embedded (`docqa run`) passes no `enqueue` and runs
the jobs in process afterwards; distributed (`docqa submit`) passes a function that
puts job ids on the broker. Jobs that already exist (same document text, question,
model and parameters) are not created or enqueued again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from docqa.producer.documents import InputError, SourceDocument, check_question
from docqa.storage.submissions import SubmissionCounts
from docqa.core.params import AnswerParams

# Documents are stored one at a time (versions), then handled a group at a time: one
# transaction for the group's jobs, one for their links to the submission, and with a
# chunker one tokenizer call over the cores, one transaction for tokens and one for
# plans. Up to this many documents or characters, whichever comes first (a larger
# document is a group alone).
GROUP_DOCUMENTS = 32
GROUP_CHARACTERS = 2_000_000


@dataclass
class SubmitReport:
    documents: int = 0  # documents read without error
    new_documents: int = 0
    changed_documents: int = 0  # an id or path that came with new content: a new version
    jobs: int = 0  # jobs the input asked for
    new_jobs: int = 0
    existing_jobs: int = 0
    enqueued_messages: int = 0
    errors: list[str] = field(default_factory=list)  # one sentence per input that could not be used
    new_job_ids: list[int] = field(default_factory=list)
    unsent_job_ids: list[int] = field(default_factory=list)  # stored, but the broker refused the message
    send_error: str | None = None  # why the broker refused, once
    submission_id: int | None = None
    seconds: float = 0.0
    tokens: int = 0  # tokens of the documents tokenized here (chunker given)
    token_bytes: int = 0  # what storing them took


def submit(
    documents: Iterable[SourceDocument],
    questions: list[str],
    *,
    repo,
    model: str,
    revision: str | None,
    params: AnswerParams,
    enqueue: Callable[[list[int]], None] | None = None,
    chunk: int = 64,
    progress: Callable[[SourceDocument], None] | None = None,
    command: str = "submit",
    max_question_chars: int | None = None,
    label: str | None = None,
    chunker=None,
) -> SubmitReport:
    """Store each document and its jobs as one submission; enqueue new jobs in chunks of
    `chunk` job ids (`enqueue` sends one message and records that it was sent).

    A document that could not be read, or that has no questions, is reported in
    `errors` and skipped; a question over `max_question_chars` is reported and skipped;
    the others go on. With a `chunker` (a function giving a producer.chunking.Chunker or
    None, called when first needed), the document of a new job is tokenized once per
    tokenizer and each new job's windows are planned and stored, for workers to read.
    Documents are stored one at a time and their jobs made a group at a time
    (GROUP_DOCUMENTS / GROUP_CHARACTERS); new jobs are sent once their plans are stored.
    When the broker refuses a message the jobs stay stored and queued
    (`unsent_job_ids`, `send_error`): a worker's reconciler sends them once the broker is
    back, or `docqa requeue` does.
    """
    started = time.perf_counter()
    report = SubmitReport()
    report.submission_id = repo.start_submission(command=command, model=model, revision=revision, label=label)
    pending: list[int] = []
    clean_questions = [q for q in (q.strip() for q in questions) if q]

    group: list[tuple[int, str, bool, list[str]]] = []  # (document, text, created, questions asked)
    group_chars = [0]

    def send(job_ids: list[int]) -> None:
        for job_id in job_ids:
            pending.append(job_id)
            if len(pending) >= chunk:
                flush()

    def flush_group() -> None:
        """Jobs for the group's documents (one transaction), their links to the submission
        (one more), tokens and plans for the new ones, then send them."""
        if not group:
            return
        stored = repo.add_jobs_many([(doc_id, asked) for doc_id, _text, _created, asked in group], model=model,
                                    revision=revision, params=params)
        repo.add_submission_jobs(report.submission_id, [job.id for jobs in stored for job in jobs])
        planned = []  # (document, text, created, [(new job, question)])
        for (doc_id, text, created, asked), jobs in zip(group, stored):
            new_jobs = [(job_id, q) for (job_id, new), q in zip(jobs, asked) if new]
            report.jobs += len(jobs)
            report.new_jobs += len(new_jobs)
            report.existing_jobs += len(jobs) - len(new_jobs)
            report.new_job_ids += [job_id for job_id, _q in new_jobs]
            if new_jobs:  # a document whose jobs all exist costs nothing more
                planned.append((doc_id, text, created, new_jobs))
        group.clear()
        group_chars[0] = 0
        if planned and chunker is not None:
            plan(planned)
        # Sent once their plans are stored, so a worker finds them.
        send([job_id for _doc_id, _text, _created, jobs in planned for job_id, _q in jobs])

    def plan(planned: list[tuple[int, str, bool, list[tuple[int, str]]]]) -> None:
        """Tokens (one tokenizer call for the documents that need them) and window plans."""
        ch = chunker()
        if ch is None:
            return
        texts = {doc_id: text for doc_id, text, _created, _jobs in planned}
        # Stored tokens are reused; a document new to the store has none to look up.
        known = {doc_id for doc_id, _text, created, _jobs in planned if not created}
        tokens = repo.tokens_for(known, ch.key) if known else {}
        missing = [doc_id for doc_id in texts if doc_id not in tokens]
        if missing:
            made = dict(zip(missing, ch.tokenize_many([texts[doc_id] for doc_id in missing])))
            report.token_bytes += repo.add_tokens_many(ch.key, made.items())
            report.tokens += sum(len(t) for t in made.values())
            tokens.update(made)
        plans = [(job_id, ch.plan(tokens[doc_id], q, params))
                 for doc_id, _text, _created, jobs in planned for job_id, q in jobs]
        repo.add_plans([(job_id, p) for job_id, p in plans if p is not None])

    def flush() -> None:
        if enqueue is not None and pending and report.send_error is None:
            try:
                enqueue(list(pending))
            except Exception as exc:  # broker down: the store keeps the jobs, queued
                report.send_error = f"{type(exc).__name__}: {exc}"
            else:
                report.enqueued_messages += 1
        if report.send_error is not None:
            report.unsent_job_ids += pending
        pending.clear()

    try:
        for doc in documents:
            if progress is not None:
                progress(doc)
            if doc.error is not None:
                report.errors.append(doc.error)
                continue
            asked = list(dict.fromkeys(clean_questions + [q.strip() for q in doc.questions if q.strip()]))
            kept = []
            for q in asked:
                try:
                    check_question(q, max_question_chars, doc.source)
                except InputError as exc:
                    report.errors.append(str(exc))
                else:
                    kept.append(q)
            asked = kept
            if not asked:
                report.errors.append(
                    f"{doc.source}: no questions (give -q/--questions, or \"questions\" in the JSONL line)")
                continue
            stored_doc = repo.add_document(
                doc.text, source=doc.source, external_id=doc.external_id, metadata=doc.metadata,
                version_key=doc.version_key,
            )
            doc_id = stored_doc.id
            report.documents += 1
            report.new_documents += int(stored_doc.created)
            report.changed_documents += int(stored_doc.changed)
            group.append((doc_id, doc.text, stored_doc.created, asked))
            group_chars[0] += len(doc.text)
            if len(group) >= GROUP_DOCUMENTS or group_chars[0] >= GROUP_CHARACTERS:
                flush_group()
    except KeyboardInterrupt:
        # Ctrl-C between documents: the documents stored so far get their jobs (one group
        # at most was waiting) and are sent as usual before the interrupt goes on up.
        flush_group()
        flush()
        raise
    flush_group()
    flush()
    repo.finish_submission(
        report.submission_id,
        SubmissionCounts(
            report.documents, report.new_documents, report.jobs, report.new_jobs, len(report.errors),
            report.changed_documents,
        ),
    )
    report.seconds = time.perf_counter() - started
    return report
