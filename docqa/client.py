"""`docqa.Client`: submit documents and questions from Python, follow the submission, read
the answers with their provenance.

Two modes, one interface:

- embedded (the default with a SQLite store and no broker given): `submit` stores the
  documents and answers the new jobs in this process before it returns, as `docqa run`;
- distributed (a broker URL given, or a PostgreSQL store): `submit` stores documents and
  jobs and sends the jobs to their model's queue, as `docqa submit`; `docqa worker`
  processes answer them; `Submission.wait()` follows them to the end.

Settings come from the same DOCQA_* variables as the command line; arguments override.
Documents are read lazily: an iterable of a million documents is never held in memory.
"""

from __future__ import annotations

from docqa.core.errors import UsageError

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from docqa.core.filters import where_text
from docqa.core.settings import Settings

# Seconds between progress reads while waiting.
POLL_SECONDS = 0.5

class SubmitError(UsageError):
    """The submission could not be made at all (bad parameters, no questions, refused store)."""


@dataclass(frozen=True)
class Progress:
    """Jobs of a submission by status."""

    queued: int
    running: int
    done: int
    failed: int

    @property
    def total(self) -> int:
        return self.queued + self.running + self.done + self.failed

    @property
    def finished(self) -> bool:
        """No job left queued or running."""
        return self.queued == 0 and self.running == 0


@dataclass(frozen=True)
class SubmitSummary:
    """What `submit` stored; inputs it could not use.

    Every document counts, whatever its text; `texts` counts their distinct texts and
    `jobs` the distinct jobs their questions needed (documents that share a text share
    its jobs). `existing_jobs` were in the store before this submission.
    """

    documents: int
    new_documents: int
    jobs: int
    new_jobs: int
    existing_jobs: int
    errors: tuple[str, ...]
    # Documents whose id or path came with new content: a new version.
    changed_documents: int = 0
    texts: int = 0
    new_texts: int = 0
    questions: int = 0  # (document, question) pairs asked

    @classmethod
    def of(cls, report) -> SubmitSummary:
        """The summary of a producer's SubmitReport."""
        return cls(report.documents, report.new_documents, report.jobs, report.new_jobs, report.existing_jobs,
                   tuple(report.errors), report.changed_documents, report.texts, report.new_texts, report.questions)


class Submission:
    """One submission: its id, what it stored, its progress and its answers."""

    def __init__(self, client: Client, submission_id: int, summary: SubmitSummary | None = None) -> None:
        self.client = client
        self.id = submission_id
        self.summary = summary

    def __repr__(self) -> str:
        return f"<docqa Submission {self.id}>"

    def progress(self) -> Progress:
        return Progress(**self.client._repo.submission_progress(self.id))

    def wait(self, timeout: float | None = None) -> Progress:
        """Block until no job of the submission is queued or running; TimeoutError after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            progress = self.progress()
            if progress.finished:
                return progress
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"submission {self.id} not finished after {timeout} s: {progress.done} done, "
                    f"{progress.failed} failed, {progress.queued} queued, {progress.running} running"
                )
            time.sleep(POLL_SECONDS)

    def answers(self, *, rank: int | None = 0, all_versions: bool = True) -> Iterator:
        """This submission's answers (`ResultRecord`s with provenance), by answer id, one per
        document it gave and question it asked: each job's best (rank 0) unless `rank` says
        another, or None for every rank. Documents a later submission replaced with a newer
        version are included (marked superseded) unless all_versions=False."""
        return self.client.answers(submission=self.id, rank=rank, all_versions=all_versions)


class Client:
    """docqa from Python; see the module docstring. Cheap to create; the store is opened
    (and its schema created) on first use, the model loaded only when answering here."""

    def __init__(
        self,
        database_url: str | None = None,
        broker_url: str | None = None,
        *,
        embedded: bool | None = None,
        shared_sqlite: bool = False,
        settings: Settings | None = None,
        **overrides: Any,
    ) -> None:
        if database_url is not None:
            overrides["database_url"] = database_url
        if broker_url is not None:
            overrides["broker_url"] = broker_url
        if settings is None:
            self.settings = Settings(**overrides)
        else:  # built by the caller (e.g. `docqa serve`), overrides on top
            self.settings = settings.model_copy(update=overrides) if overrides else settings
        if embedded is None:
            embedded = broker_url is None and self.settings.database_url.startswith("sqlite")
        self.embedded = embedded
        self.shared_sqlite = shared_sqlite
        self._repo_value = None
        self._engine = None
        self._dispatcher = None
        self._chunkers: dict = {}

    # -- submitting -----------------------------------------------------------------
    def submit(
        self,
        documents: Iterable[str | os.PathLike | Mapping[str, Any]] | str | os.PathLike | Mapping[str, Any],
        questions: Iterable[str] | str = (),
        *,
        model: str | None = None,
        revision: str | None = None,
        retry_failed: bool = False,
        label: str | None = None,
        check_model: bool = True,
        priority: int | None = None,
        **answer_params: Any,
    ) -> Submission:
        """Store documents and one job per (document, question); answer them here (embedded)
        or send them to the workers (distributed). Returns the Submission.

        A document is a `str` (its text), a path (`pathlib.Path` or other PathLike: a file,
        a folder read recursively, or a .jsonl file) or a mapping `{"id", "text",
        "metadata"?, "questions"?}`. Questions asked of every document come from
        `questions`; a mapping may add its own. Inputs that cannot be used are listed in
        `submission.summary.errors`; the others are stored, each as a document of its own
        (named by its "id", its path, or for a plain text its position "document <n>").
        Jobs that exist already (same text, question, model and parameters, whichever
        document asked them) are not created or run again. `label` is recorded with the
        submission (`docqa schedule` names its source with it). Distributed, a model that
        no live worker serves and this host cannot load (a mistyped one) is refused with
        SubmitError before anything is stored, unless check_model=False.

        `priority` 1 (or more) has every worker's next run take these jobs before the bulk
        backlog: someone waits for them. Unset, a call with one text or mapping gets 1 and
        anything else (paths, several documents) 0.
        """
        from docqa.core.params import AnswerParams
        from docqa.producer.submit import submit

        settings = self.settings
        if model is not None or revision is not None:
            settings = settings.model_copy(update={"model": model or settings.model, "revision": revision})
        try:
            params = AnswerParams(**{**settings.answer_params().model_dump(), **answer_params})
        except ValueError as exc:
            raise SubmitError(f"invalid answer parameters: {exc}") from None
        from docqa.producer.documents import InputError, check_question, unstorable

        asked = [questions] if isinstance(questions, str) else list(questions)
        for q in asked:
            if not isinstance(q, str):
                raise SubmitError(f"questions must be str, not {type(q).__name__}")
            try:
                check_question(q, settings.max_question_chars)
            except InputError as exc:
                raise SubmitError(str(exc)) from None
            problem = unstorable(q, "a question")
            if problem is not None:
                raise SubmitError(problem)
        if isinstance(documents, (str, os.PathLike, Mapping)):
            documents = [documents]
        if priority is None:
            one = isinstance(documents, (list, tuple)) and len(documents) == 1
            priority = int(one and isinstance(documents[0], (str, Mapping)))
        if not any(q.strip() for q in asked) and isinstance(documents, (list, tuple)) and not any(
                isinstance(d, Mapping) and d.get("questions") for d in documents):
            raise SubmitError("no question to ask: pass questions=[...] (asked of every document), or "
                              "\"questions\" in a document mapping")
        repo = self._repo
        enqueue = None
        if not self.embedded:
            if settings.database_url.startswith("sqlite") and not self.shared_sqlite:
                raise SubmitError(
                    "a SQLite store with a broker: workers elsewhere cannot read that file; use the PostgreSQL "
                    "store the workers use, Client(embedded=True) to answer in this process, or "
                    "shared_sqlite=True if every worker runs on this host with this same file"
                )
            if check_model:
                from docqa.producer.models import UnservedModel, check_model_served

                try:
                    check_model_served(repo, settings.model, settings.revision,
                                       seen_within=settings.live_worker_seconds)
                except UnservedModel as exc:
                    raise SubmitError(str(exc).replace("--no-model-check", "check_model=False")) from None
            dispatcher = self._dispatch()
            enqueue = lambda ids: dispatcher.send(ids, settings.model, settings.revision)  # noqa: E731
        report = submit(
            _source_documents(documents, settings.max_document_chars),
            asked,
            repo=repo,
            model=settings.model,
            revision=settings.revision,
            params=params,
            enqueue=enqueue,
            chunk=settings.worker_batch_jobs,
            chunk_windows=settings.batch_windows,
            priority=priority,
            command="client" if label is None else "schedule",
            max_question_chars=settings.max_question_chars,
            label=label,
            chunker=self._chunker(settings),
        )
        if retry_failed:
            retried = repo.retry_failed(submission_id=report.submission_id)
            if retried and not self.embedded:
                self._dispatch().send_queued(retried)
        if report.send_error is not None:
            raise ConnectionError(
                f"the broker refused the jobs' messages ({report.send_error}); submission {report.submission_id} "
                "is stored and its jobs are queued: a worker's reconciler sends them once the broker is back"
            )
        if self.embedded:
            self._answer_here(settings)
        return Submission(self, report.submission_id, SubmitSummary.of(report))

    def _chunker(self, settings: Settings):
        """The producer-side tokenizer for this model (cached), or None (see chunker_for)."""
        import logging

        from docqa.producer.chunking import chunker_for

        key = (settings.model, settings.revision, settings.chunk_at_submit)
        if key not in self._chunkers:
            self._chunkers[key] = chunker_for(settings, say=logging.getLogger("docqa.client").warning)
        return self._chunkers[key]

    def warm_up(self) -> None:
        """Load now what the first submit would otherwise wait for (the producer's tokenizer)."""
        get = self._chunker(self.settings)
        if get is not None:
            get()

    def submission(self, submission_id: int) -> Submission:
        """A submission made earlier (by any client or command)."""
        if not self._repo.submission_exists(submission_id):
            raise LookupError(f"there is no submission {submission_id}")
        return Submission(self, submission_id)

    def _answer_here(self, settings: Settings) -> None:
        from docqa.worker.engine import Engine
        from docqa.worker.runner import JobRunner, answer_queued

        if not self._repo.queued_job_ids(model=settings.model, revision=settings.revision or "", limit=1):
            return  # nothing to answer: the model is not even loaded
        if self._engine is None or (self._engine.model_id, self._engine.revision) != (settings.model, settings.revision):
            self._engine = Engine.from_settings(settings).warm_up()
        answer_queued(JobRunner.from_settings(self._repo, self._engine, settings), model=settings.model,
                      revision=settings.revision)

    # -- reading ---------------------------------------------------------------------
    def answers(
        self,
        *,
        submission: int | None = None,
        document: int | str | None = None,
        job: int | None = None,
        question: str | None = None,
        model: str | None = None,
        rank: int | None = 0,
        where: Mapping[str, Any] | None = None,
        all_versions: bool = False,
        order: str = "answer",
    ) -> Iterator:
        """Stored answers with provenance (`ResultRecord`s), filtered as given.

        Each answer comes once for every document that asked its question, under that
        document's id, path, metadata and version (documents that share a text share the
        answer: same answer_id, their own document_id).

        - `document`: a document id, an id given at submit, or a file path (every version of it);
        - `rank`: 0 (default) is each job's best answer; another number that rank only;
          None every rank;
        - `where`: document metadata equal to these values, e.g. {"lang": "en", "year": 2024};
        - `all_versions`: include documents replaced by a newer version (same id or path,
          new content), marked `superseded`;
        - `order`: "answer" (as stored), "reference" (the pipeline's score, highest first)
          or "margin" (comparable across windows and documents, highest first).
        """
        document_ids = None if document is None else self._repo.resolve_documents(document)
        return self._repo.iter_results(submission_id=submission, job_id=job, document_ids=document_ids,
                                       question=question, model=model, rank=rank, where=where_text(where),
                                       all_versions=all_versions, order=order)

    def best_documents(
        self, question: str, top: int = 10, *, model: str | None = None, where: Mapping[str, Any] | None = None,
        order: str = "margin",
    ) -> list:
        """The `top` best answers (rank 0 of each job) to `question` across the latest versions
        of all documents, by margin (or "reference" score): which documents answer it best.
        Each document is an entry: two documents with one text are two entries."""
        return self._repo.top_results(question=question, top=top, model=model, rank=0, where=where_text(where),
                                      order=order)

    def delete(
        self, *, document: int | str | None = None, submission: int | None = None, path: str | None = None,
        id: str | None = None, dry_run: bool = False,  # noqa: A002 (the JSONL field's name)
    ):
        """Remove documents with every version: one reference (`document`: an internal id, an
        id given at submit or a file path; or exactly a file `path` or an `id`), or all of a `submission`'s.
        Their texts, jobs and answers go only where no remaining document has them. Returns
        the counts removed; LookupError when nothing is named so."""
        given = [x for x in (document, submission, path, id) if x is not None]
        if len(given) != 1:
            raise ValueError("say what to delete: one of document=..., path=..., id=... or submission=...")
        repo = self._repo
        if submission is not None:
            ids = repo.documents_of_submission(submission)
        elif path is not None:
            ids = repo.resolve_path(path)
        elif id is not None:
            ids = repo.resolve_external_id(str(id))
        else:
            ids = repo.resolve_documents(document)
        if not ids and submission is None:
            raise LookupError(f"no document is named {given[0]!r}")
        return repo.delete_documents(ids, dry_run=dry_run)

    def retry(
        self, *, job_ids: Iterable[int] | None = None, document: int | None = None, submission: int | None = None,
        all: bool = False,  # noqa: A002 (the CLI's word)
    ) -> list[int]:
        """Queue failed jobs again (attempts reset) and send or answer them; their ids."""
        if job_ids is None and document is None and submission is None and not all:
            raise ValueError("say which failed jobs to retry: job_ids, document, submission or all=True")
        jobs = self._repo.retry_failed(job_ids=job_ids, document_id=document, submission_id=submission)
        if jobs and not self.embedded:
            self._dispatch().send_queued(jobs)
        elif jobs:
            self._answer_here(self.settings)
        return [j.id for j in jobs]

    # -- plumbing --------------------------------------------------------------------
    @property
    def _repo(self):
        if self._repo_value is None:
            from docqa.storage.db import ensure_schema, make_engine, session_factory
            from docqa.storage.repository import Repository

            db = make_engine(self.settings.database_url)
            ensure_schema(db)
            self._repo_value = Repository(session_factory(db))
        return self._repo_value

    def _dispatch(self):
        if self._dispatcher is None:
            from docqa.worker.app import Dispatcher, make_celery

            self._dispatcher = Dispatcher(make_celery(self.settings), self._repo, queue=self.settings.queue,
                                          batch_jobs=self.settings.worker_batch_jobs,
                                          batch_windows=self.settings.batch_windows)
        return self._dispatcher


def _source_documents(documents: Iterable, max_chars: int) -> Iterator:
    """SourceDocuments from str / path / mapping items, one at a time; an item that cannot
    be used is a SourceDocument with its error (named by its id, else by its position)."""
    from docqa.producer.documents import InputError, SourceDocument, document_from_mapping, iter_inputs

    for n, item in enumerate(documents):
        if isinstance(item, os.PathLike):
            yield from iter_inputs([os.fspath(item)], max_chars)
            continue
        source = f"document {n}"
        if isinstance(item, Mapping) and item.get("id") is not None and _nameable(item["id"]):
            source = f"document {item['id']!s}"
        try:
            if isinstance(item, str):
                yield document_from_mapping({"text": item}, source, max_chars)
            elif isinstance(item, Mapping):
                yield document_from_mapping(item, source, max_chars)
            else:
                yield SourceDocument(source=source, error=f"{source}: a {type(item).__name__}, not a str, path or "
                                                          "mapping")
        except InputError as exc:
            yield SourceDocument(source=source, error=str(exc))


def _nameable(ext: Any) -> bool:
    """Whether an id can name its document in a message (short, storable)."""
    from docqa.producer.documents import MAX_ID_CHARS, unstorable

    return len(str(ext)) <= MAX_ID_CHARS and unstorable(str(ext), "its id") is None


__all__ = ["Client", "Progress", "Submission", "SubmitError", "SubmitSummary"]
