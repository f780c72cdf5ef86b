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

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from docqa.core.corpus import MAX_CORPUS_WINDOWS, CorpusResult
from docqa.core.errors import UsageError
from docqa.core.filters import where_text
from docqa.core.settings import Settings

if TYPE_CHECKING:
    from docqa.producer.chunking import Chunker

# Seconds between progress reads while waiting.
POLL_SECONDS = 0.5

class SubmitError(UsageError):
    """The submission could not be made at all (bad parameters, no questions, refused store)."""


class SharedFileStore(SubmitError):
    """Distributed with a SQLite store: workers elsewhere cannot read the file (allowed with
    shared_sqlite when every worker runs on this host)."""


@dataclass
class SubmitHooks:
    """How a caller follows one submission (the command line's progress bars); each optional."""

    read: Callable[[Any], None] | None = None  # one input document read
    note: Callable[[str], None] | None = None  # a sentence for the user (no tokenizer here)
    loaded: Callable[[Any], None] | None = None  # embedded: the engine, just loaded
    answering: Callable[[int], None] | None = None  # embedded: this many queued jobs answered now
    answered: Callable[[Any], None] | None = None  # embedded: one run's RunStats


@dataclass(frozen=True)
class SubmitOutcome:
    """One pass of the submit path: the producer's SubmitReport, the failed jobs queued
    again (retry_failed) and, embedded, the totals of answering here (None: nothing queued)."""

    report: Any
    retried: list
    answered: Any = None


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
        return cls(documents=report.documents, new_documents=report.new_documents, jobs=report.jobs,
                   new_jobs=report.new_jobs, existing_jobs=report.existing_jobs, errors=tuple(report.errors),
                   changed_documents=report.changed_documents, texts=report.texts, new_texts=report.new_texts,
                   questions=report.questions)


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
        open_store: Callable[[], Any] | None = None,
        connect: Callable[[], Any] | None = None,
        **overrides: Any,
    ) -> None:
        """`open_store` and `connect`, when given, open the store's Repository and the
        connected Celery app on first use in the caller's own way (the command line checks
        and words failures itself); by default the settings' URLs are opened here."""
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
        self._open_store = open_store
        self._connect = connect
        self._engine = None
        self._engine_lock = threading.Lock()
        self._dispatcher = None
        self._chunkers: dict[tuple[str, str | None], Callable[[], Chunker | None] | None] = {}

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
        from docqa.producer.models import UnservedModel

        settings = self._settings_for(model, revision)
        params = _checked_params(settings, answer_params)
        asked = _checked_questions(questions, settings.max_question_chars)
        if isinstance(documents, (str, os.PathLike, Mapping)):
            documents = [documents]
        _something_asked(asked, documents)
        try:
            outcome = self.submit_sources(
                _source_documents(documents, settings.max_document_chars), asked, settings=settings, params=params,
                check_model=check_model, retry_failed=retry_failed, label=label,
                priority=_default_priority(documents) if priority is None else priority,
                command="client" if label is None else "schedule")
        except UnservedModel as exc:
            raise SubmitError(str(exc).replace("--no-model-check", "check_model=False")) from None
        report = outcome.report
        if report.send_error is not None:
            raise ConnectionError(
                f"the broker refused the jobs' messages ({report.send_error}); submission {report.submission_id} "
                "is stored and its jobs are queued: a worker's reconciler sends them once the broker is back"
            )
        return Submission(self, report.submission_id, SubmitSummary.of(report))

    def document_problems(self, documents: Iterable, max_chars: int | None = None) -> list[str]:
        """Why each of `documents` (as `submit` takes them) that cannot be stored cannot be, read
        as `submit` would read it; nothing is stored. Empty when every one can be."""
        limit = self.settings.max_document_chars if max_chars is None else max_chars
        return [doc.error for doc in _source_documents(documents, limit) if doc.error]

    def submit_sources(
        self,
        sources: Iterable,
        questions: list[str],
        *,
        settings: Settings | None = None,
        params=None,
        check_model: bool = True,
        retry_failed: bool = False,
        label: str | None = None,
        priority: int = 0,
        command: str = "client",
        hooks: SubmitHooks | None = None,
    ) -> SubmitOutcome:
        """The one submit path (`submit`, `docqa run`, `docqa submit`): store `sources`
        (producer SourceDocuments, read one at a time) with a job per (document, question),
        then send the new jobs to the workers (distributed) or answer them here (embedded).
        Refuses before storing anything: a SQLite store with a broker (SharedFileStore,
        unless shared_sqlite), and with check_model a model nobody can run (UnservedModel
        distributed, ModelLoadError embedded). `hooks` follow the work (progress bars)."""
        from docqa.producer.submit import submit

        settings = settings or self.settings
        hooks = hooks or SubmitHooks()
        enqueue = self._enqueue_for(settings, check_model)
        report = submit(
            sources, questions, repo=self._repo, model=settings.model, revision=settings.revision,
            params=params or settings.answer_params(), enqueue=enqueue, chunk=settings.worker_batch_jobs,
            chunk_windows=settings.batch_windows, progress=hooks.read, priority=priority, command=command,
            max_question_chars=settings.max_question_chars, label=label, chunker=self._chunker(settings, hooks),
        )
        retried = self._repo.retry_failed(submission_id=report.submission_id) if retry_failed else []
        if retried and not self.embedded and report.send_error is None:
            self._dispatch().send_queued(retried)
        answered = self._answer_here(settings, hooks) if self.embedded else None
        return SubmitOutcome(report, retried, answered)

    def _settings_for(self, model: str | None, revision: str | None) -> Settings:
        if model is None and revision is None:
            return self.settings
        return self.settings.model_copy(update={"model": model or self.settings.model, "revision": revision})

    def _enqueue_for(self, settings: Settings, check_model: bool):
        """How new jobs leave this process: None embedded (answered here), else a function
        sending job ids to the model's queue; the refusals `submit_sources` names."""
        if self.embedded:
            if check_model:
                from docqa.core.loading import check_model_available

                check_model_available(settings.model, settings.revision)
            return None
        if settings.database_url.startswith("sqlite") and not self.shared_sqlite:
            raise SharedFileStore(
                "a SQLite store with a broker: workers elsewhere cannot read that file; use the PostgreSQL "
                "store the workers use, Client(embedded=True) to answer in this process, or "
                "shared_sqlite=True if every worker runs on this host with this same file"
            )
        if check_model:
            from docqa.producer.models import check_model_served

            check_model_served(self._repo, settings.model, settings.revision, seen_within=settings.live_worker_seconds)
        dispatcher = self._dispatch()
        return lambda ids: dispatcher.send(ids, settings.model, settings.revision)

    def _chunker(self, settings: Settings, hooks: SubmitHooks | None = None) -> Callable[[], Chunker | None] | None:
        """The producer-side tokenizer (a function giving a Chunker, or None: see chunker_for).
        Embedded, the engine's own tokenizer (one load for chunking and answering); else a
        tokenizer of its own, cached per model."""
        import logging

        from docqa.producer.chunking import Chunker, chunker_for

        if not settings.chunk_at_submit:
            return None
        if self.embedded:
            from functools import cache

            return cache(lambda: Chunker(self._engine_for(settings, hooks).tokenizer))
        key = (settings.model, settings.revision)
        if key not in self._chunkers:
            say = hooks.note if hooks is not None and hooks.note else logging.getLogger("docqa.client").warning
            self._chunkers[key] = chunker_for(settings, say=say)
        return self._chunkers[key]

    def warm_up(self) -> None:
        """Load now what the first submit would otherwise wait for: the model (embedded) or
        the producer's tokenizer."""
        if self.embedded:
            self._engine_for(self.settings)
            return
        get = self._chunker(self.settings)
        if get is not None:
            get()

    def submission(self, submission_id: int) -> Submission:
        """A submission made earlier (by any client or command)."""
        if not self._repo.submission_exists(submission_id):
            raise LookupError(f"there is no submission {submission_id}")
        return Submission(self, submission_id)

    def _engine_for(self, settings: Settings, hooks: SubmitHooks | None = None):
        """The warm engine for settings' model, loaded once (a server warms it in a thread
        while a request may ask for it); `hooks.loaded` hears of a new one."""
        from docqa.worker.engine import Engine

        with self._engine_lock:
            if self._engine is None or (self._engine.model_id, self._engine.revision) != (settings.model,
                                                                                         settings.revision):
                self._engine = Engine.from_settings(settings).warm_up()
                if hooks is not None and hooks.loaded is not None:
                    hooks.loaded(self._engine)
            return self._engine

    def _answer_here(self, settings: Settings, hooks: SubmitHooks | None = None):
        """Embedded: answer every queued job of the model here (jobs a dead run of this host
        left running first go back to the queue). The totals, or None when nothing was
        queued (the model is not even loaded)."""
        from docqa.worker.runner import JobRunner, answer_queued, dead_local_workers

        hooks = hooks or SubmitHooks()
        repo = self._repo
        repo.requeue_expired(max_attempts=settings.max_attempts, dead_workers=dead_local_workers(repo.running_workers()))
        pending = repo.queued_job_ids(model=settings.model, revision=settings.revision or "")
        if not pending:
            return None
        engine = self._engine_for(settings, hooks)
        if hooks.answering is not None:
            hooks.answering(len(pending))
        return answer_queued(JobRunner.from_settings(repo, engine, settings), model=settings.model,
                             revision=settings.revision, on_run=hooks.answered)

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
        after: str | None = None,
        batch: int = 500,
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
          or "margin" (comparable across windows and documents, highest first);
        - `after`: a page's last answer's cursor (`docqa.storage.answers.result_cursor`, same
          order): the answers after it; `batch`: how many are read from the store at a time.
        """
        document_ids = None if document is None else self._repo.resolve_documents(document)
        return self._repo.iter_results(submission_id=submission, job_id=job, document_ids=document_ids,
                                       question=question, model=model, rank=rank, where=where_text(where),
                                       all_versions=all_versions, order=order, after=after, batch=batch)

    def best_documents(
        self, question: str, top: int = 10, *, model: str | None = None, where: Mapping[str, Any] | None = None,
        order: str = "margin", rank: int | None = 0, document: int | str | None = None,
        submission: int | None = None, all_versions: bool = False,
    ) -> list:
        """The `top` best answers (rank 0 of each job, or `rank`; None: any) to `question`
        across the latest versions of all documents (or every version), by margin (or
        "reference" score): which documents answer it best. Each document is an entry: two
        documents with one text are two entries. `document`, `submission` narrow it as in
        `answers`."""
        document_ids = None if document is None else self._repo.resolve_documents(document)
        return self._repo.top_results(question=question, top=top, model=model, rank=rank, where=where_text(where),
                                      order=order, document_ids=document_ids, submission_id=submission,
                                      all_versions=all_versions)

    def ask_corpus(
        self, question: str, *, windows: int = 32, top: int = 10, where: Mapping[str, Any] | None = None,
        document: int | str | None = None, submission: int | None = None, all_versions: bool = False,
        timeout: float = 30.0, **params: Any,
    ) -> CorpusResult:
        """Answer `question` from every stored document: the `windows` passages that best
        match its words (the store's full-text search, among the documents `where`,
        `document`, `submission` and `all_versions` keep) are read by the model, and the
        documents' answers come back ranked by margin, at most `top` of them. `params`:
        answer parameters (top_k, max_answer_len, ...). Embedded, the model answers here;
        distributed, a worker of the model answers within `timeout` seconds."""
        _checked_questions(question, self.settings.max_question_chars)
        if not question.strip():
            raise SubmitError("the question is empty")
        if not 1 <= windows <= MAX_CORPUS_WINDOWS:
            raise SubmitError(f"windows must be between 1 and {MAX_CORPUS_WINDOWS}, got {windows}")
        if top < 1:
            raise SubmitError(f"top must be at least 1, got {top}")
        answer_params, settings = _checked_params(self.settings, params), self.settings
        for key in where or {}:
            if not isinstance(key, str) or not key or '"' in key or "\\" in key:
                raise SubmitError(f"cannot filter on metadata key {key!r}: give a non-empty key without quotes or "
                                  "backslashes")
        filters = {"where": where_text(where), "submission_id": submission, "all_versions": all_versions,
                   "document_ids": None if document is None else self._repo.resolve_documents(document)}
        if self.embedded:
            from docqa.worker.corpus import ask_corpus

            return ask_corpus(self._engine_for(settings), self._repo, question, params=answer_params,
                              windows=windows, top=top, **filters)
        from docqa.worker.interactive import ask_workers

        return ask_workers(self._dispatch().app, self._repo, settings, question, params=answer_params,
                           windows=windows, top=top, timeout=timeout, **filters)

    def text_of(self, text_id: int) -> str | None:
        """The stored text an answer's offsets point into (`record.text_id`); None: no such text."""
        return self._repo.text_of(text_id)

    def counts(self) -> dict[str, int]:
        """The store's jobs by status (queued, running, done, failed); reading it checks the store answers."""
        return self._repo.counts()

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
        jobs, _ = self.requeue_failed(job_ids=job_ids, document=document, submission=submission, all=all)
        return [j.id for j in jobs]

    def requeue_failed(
        self, *, job_ids: Iterable[int] | None = None, document: int | None = None, submission: int | None = None,
        all: bool = False, answer_here: bool = True,  # noqa: A002 (the CLI's word)
    ) -> tuple[list, int]:
        """`retry`, returning the jobs queued again and the broker messages that carried them
        (distributed; the broker is reached before any job is touched). Embedded, they are
        answered here unless answer_here=False (left queued)."""
        if job_ids is None and document is None and submission is None and not all:
            raise ValueError("say which failed jobs to retry: job_ids, document, submission or all=True")
        dispatcher = None if self.embedded else self._dispatch()
        jobs = self._repo.retry_failed(job_ids=job_ids, document_id=document, submission_id=submission)
        if jobs and dispatcher is not None:
            return jobs, dispatcher.send_queued(jobs)
        if jobs and answer_here:
            self._answer_here(self.settings)
        return jobs, 0

    # -- plumbing --------------------------------------------------------------------
    @property
    def _repo(self):
        if self._repo_value is None and self._open_store is not None:
            self._repo_value = self._open_store()
        if self._repo_value is None:
            from docqa.storage.repository import Repository

            self._repo_value = Repository.open(self.settings.database_url)
        return self._repo_value

    def _dispatch(self):
        if self._dispatcher is None:
            from docqa.worker.app import Dispatcher, make_celery

            app = self._connect() if self._connect is not None else make_celery(self.settings)
            self._dispatcher = Dispatcher(app, self._repo, queue=self.settings.queue,
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


def _checked_params(settings: Settings, given: Mapping[str, Any]):
    """The answer parameters: the settings' with `given` on top (SubmitError if invalid)."""
    from docqa.core.params import AnswerParams

    try:
        return AnswerParams(**{**settings.answer_params().model_dump(), **given})
    except ValueError as exc:
        raise SubmitError(f"invalid answer parameters: {exc}") from None


def _checked_questions(questions: Iterable[str] | str, max_chars: int) -> list[str]:
    """The questions as a list, each checked (SubmitError names the first bad one)."""
    from docqa.producer.documents import InputError, check_question, unstorable

    asked = [questions] if isinstance(questions, str) else list(questions)
    for q in asked:
        if not isinstance(q, str):
            raise SubmitError(f"questions must be str, not {type(q).__name__}")
        try:
            check_question(q, max_chars)
        except InputError as exc:
            raise SubmitError(str(exc)) from None
        problem = unstorable(q, "a question")
        if problem is not None:
            raise SubmitError(problem)
    return asked


def _something_asked(asked: list[str], documents) -> None:
    """SubmitError when neither the call nor a (listed) document mapping asks anything."""
    if not any(q.strip() for q in asked) and isinstance(documents, (list, tuple)) and not any(
            isinstance(d, Mapping) and d.get("questions") for d in documents):
        raise SubmitError("no question to ask: pass questions=[...] (asked of every document), or "
                          "\"questions\" in a document mapping")


def _default_priority(documents) -> int:
    """1 (someone waits) for one text or mapping, else 0 (bulk)."""
    one = isinstance(documents, (list, tuple)) and len(documents) == 1
    return int(one and isinstance(documents[0], (str, Mapping)))


__all__ = ["Client", "Progress", "SharedFileStore", "Submission", "SubmitError", "SubmitHooks", "SubmitOutcome",
           "SubmitSummary"]
