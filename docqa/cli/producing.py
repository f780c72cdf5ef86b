"""Producing work: `docqa run` (embedded: store and answer here), `docqa submit`
(distributed: store and enqueue), `docqa requeue` (send queued jobs to the broker again)."""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

from docqa.cli import exits
from docqa.cli.options import (
    CliError,
    add_answer_options,
    add_broker_options,
    add_model_options,
    add_setting,
    add_store_option,
    answer_params,
    build_settings,
    connect_broker,
    open_repo,
    progress_bar,
    safe_url,
    say_fast_mode,
)
from docqa.core.errors import DocqaError
from docqa.core.text import clip, plural

if TYPE_CHECKING:
    from docqa.storage.repository import Repository


def read_questions(args: argparse.Namespace, max_chars: int) -> list[str]:
    from docqa.producer.documents import InputError, check_question, read_questions as read_file

    questions = list(args.question or [])
    if getattr(args, "questions", None):
        try:
            questions += read_file(args.questions)
        except InputError as exc:
            raise CliError(str(exc)) from None
    try:
        for q in questions:
            check_question(q, max_chars)
    except InputError as exc:
        raise CliError(str(exc)) from None
    return questions


def input_walk(args: argparse.Namespace):
    """How directories given as inputs are walked: --include / --exclude, hidden ones skipped."""
    from docqa.producer.documents import Walk

    return Walk(include=tuple(args.include or ()), exclude=tuple(args.exclude or ()))


def _some_input_exists(inputs: list[str]) -> None:
    """A usage error, before anything is stored, when no input named exists (a typo'd sole
    file): nothing would be done. Some missing among others are skipped and named (exit 3)."""
    from pathlib import Path

    if inputs and all(name != "-" and not Path(name).exists() for name in inputs):
        missing = ", ".join(inputs[:5]) + (f" and {len(inputs) - 5} more" if len(inputs) > 5 else "")
        raise CliError(f"no input exists: {missing}: no such file or directory")


class CliProgress:
    """The command line's view of one submission (`hooks` for Client.submit_sources): a bar
    while reading documents, one while answering here, notes on stderr."""

    def __init__(self, command: str) -> None:
        from docqa.client import SubmitHooks

        self.command = command
        self.engine = None  # embedded: the engine, once loaded
        self._bars = [progress_bar(None, "doc", "reading documents")]
        self.hooks = SubmitHooks(read=lambda _doc: self._bars[-1].update(1), note=self._note, loaded=self._loaded,
                                 answering=self._answering, answered=self._answered)

    def _note(self, line: str) -> None:
        print(f"docqa {self.command}: note: {line}", file=sys.stderr)

    def _loaded(self, engine) -> None:
        self.engine = engine
        say_fast_mode(engine, self.command)

    def _answering(self, jobs: int) -> None:
        self._bars[-1].close()
        self._bars.append(progress_bar(jobs, "job", "answering"))

    def _answered(self, stats) -> None:
        self._bars[-1].update(stats.done + stats.failed)

    def close(self) -> None:
        for bar in self._bars:
            bar.close()


def submit_with_progress(client, args, settings, *, check_model: bool = True):
    """The command's inputs through the client's one submit path, with progress on stderr:
    (its SubmitOutcome, the Walk that read the inputs, the engine if one was loaded)."""
    from docqa.producer.documents import iter_inputs

    params = answer_params(settings)
    questions = read_questions(args, settings.max_question_chars)
    walk = input_walk(args)
    progress = CliProgress(args.command)
    try:
        outcome = client.submit_sources(iter_inputs(args.inputs, settings.max_document_chars, walk), questions,
                                        params=params, check_model=check_model, retry_failed=args.retry_failed,
                                        command=args.command, hooks=progress.hooks)
    finally:
        progress.close()
    return outcome, walk, progress.engine


def print_input_errors(report, walk=None) -> None:
    for err in report.errors:
        print(f"  skipped: {err}", file=sys.stderr)
    if walk is not None and walk.hidden:
        shown = ", ".join(walk.hidden_paths) + (", ..." if walk.hidden > len(walk.hidden_paths) else "")
        print(f"  skipped {plural(walk.hidden, 'hidden file or folder', 'hidden files and folders')} ({shown}): "
              "to read them, name them with --include GLOB, spelling the leading dot (--include '.env'; "
              "with --include only what it matches is read, so add --include '*' for the rest)", file=sys.stderr)


def exit_status(*, failed: int = 0, skipped: int = 0) -> int:
    """FAILED when a job failed, else SKIPPED when an input was skipped, else OK."""
    return exits.FAILED if failed else exits.SKIPPED if skipped else exits.OK


def hint_faster_cpu_mode(repo: Repository, engine) -> None:
    """Once per store: suggest --fast when float32 ran on a CPU that has a faster mode."""
    if engine is None or engine.device != "cpu" or engine.precision != "float32":
        return
    from docqa.worker.hardware import faster_cpu_mode

    mode = faster_cpu_mode()
    if mode is None or not repo.first_time("hint:faster-cpu-mode", mode[0]):
        return
    name, why = mode
    differ = ("only where two spans nearly tie" if name == "bfloat16" else "slightly")
    print(f"hint: --fast answers faster here: it runs {name} ({why}), with answers that can differ from "
          f"float32's {differ} (said once per store)", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from functools import cache

    from docqa.client import Client

    settings = build_settings(args)
    answer_params(settings)
    _some_input_exists(args.inputs)
    started = time.perf_counter()
    store = cache(lambda: open_repo(settings))
    client = Client(settings=settings, embedded=True, open_store=store)
    outcome, walk, engine = submit_with_progress(client, args, settings)
    report, totals = outcome.report, outcome.answered
    done, failed, answers = (totals.done, totals.failed, totals.answers) if totals is not None else (0, 0, 0)
    print(
        f"docqa run: submission {report.submission_id}: {report.summary()}"
        f"{f', {len(outcome.retried)} failed ones retried' if outcome.retried else ''}; "
        f"{done} answered now with {plural(answers, 'answer')}, {failed} failed, "
        f"{plural(len(report.errors), 'input')} skipped, {time.perf_counter() - started:.1f} s"
    )
    print(f"results are in {safe_url(settings.database_url)}: see 'docqa results' and 'docqa status'")
    hint_faster_cpu_mode(store(), engine)
    print_input_errors(report, walk)
    if failed:
        for job_id, source, question, error in store().failures(limit=20):
            print(f"  failed job {job_id} ({clip(source)}, {clip(question)!r}): {clip(error, 500)}", file=sys.stderr)
    return exit_status(failed=failed, skipped=len(report.errors))


def stop_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt in the main thread, so a submission that is told to
    stop (a scheduler's timeout, `kill`) ends as cleanly as one stopped with Ctrl-C."""
    import signal

    def stop(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def cmd_submit(args: argparse.Namespace) -> int:
    from docqa.client import Client

    settings = build_settings(args)
    answer_params(settings)
    _some_input_exists(args.inputs)
    client = Client(settings=settings, embedded=False, shared_sqlite=args.shared_sqlite,
                    open_store=lambda: open_repo(settings), connect=lambda: connect_broker(settings))
    started = time.perf_counter()
    stop_on_sigterm()  # `kill` ends it as Ctrl-C does: what was stored gets its jobs, sent
    with _submit_failures(settings):
        outcome, walk, _ = submit_with_progress(client, args, settings, check_model=not args.no_model_check)
    report, retried = outcome.report, outcome.retried
    print(
        f"docqa submit: submission {report.submission_id}: {report.summary()}; new jobs enqueued in "
        f"{plural(report.enqueued_messages, 'message')}{f'; {len(retried)} failed ones retried' if retried else ''}; "
        f"{plural(len(report.errors), 'input')} skipped, {time.perf_counter() - started:.1f} s"
    )
    print(f"follow it with: docqa results --submission {report.submission_id} --follow")
    print_input_errors(report, walk)
    if report.send_error is not None:
        print(
            f"  the broker refused the messages of {plural(len(report.unsent_job_ids), 'new job')} "
            f"({report.send_error}): "
            f"they are stored and queued; a running worker sends them again within "
            f"{settings.reconcile_seconds} s of the broker's return, or run 'docqa requeue'",
            file=sys.stderr,
        )
        return exits.UNREACHABLE
    return exit_status(skipped=len(report.errors))


@contextmanager
def _submit_failures(settings):
    """`docqa submit`'s refusals and failures in the command line's words and statuses."""
    from docqa.client import SharedFileStore
    from docqa.producer.models import UnservedModel
    from docqa.storage.db import store_failure

    try:
        yield
    except SharedFileStore:
        raise CliError(
            f"the store is a SQLite file ({safe_url(settings.database_url)}) while the jobs go to the broker at "
            f"{safe_url(settings.broker_url)}: workers on other hosts cannot read that file, so the jobs would "
            "never be answered (or their workers would claim unrelated jobs of their own store). Set "
            "DOCQA_DATABASE_URL (or --database-url) to the PostgreSQL store your workers use, run 'docqa run' "
            "to answer in this process, or pass --shared-sqlite if every worker runs on this host and uses "
            "this same file."
        ) from None
    except UnservedModel as exc:
        raise CliError(str(exc), status=exits.FAILED) from None
    except KeyboardInterrupt:
        print("docqa submit: stopped; every document stored so far has its jobs, sent to the broker. The same "
              "command again submits the rest (stored documents and their jobs cost nothing twice)", file=sys.stderr)
        raise
    except DocqaError:
        raise
    except Exception as exc:
        reason = store_failure(exc, settings.database_url)
        if reason is None:
            raise
        # The store went away (or refused) mid-submission: what to do, in one sentence.
        raise CliError(
            f"the store at {safe_url(settings.database_url)} failed during the submission ({reason}). "
            "Run the same command again once it is back: documents and jobs already stored cost nothing "
            "twice, and stored documents that missed their jobs (at most the last group of 32) get them",
            status=exits.UNREACHABLE,
        ) from None


def cmd_retry(args: argparse.Namespace) -> int:
    from functools import cache

    from docqa.client import Client

    settings = build_settings(args)
    if args.job is None and args.document is None and args.submission is None and not args.all:
        raise CliError("say which failed jobs to retry: --job ID (repeatable), --document ID, --submission ID or --all")
    store = cache(lambda: open_repo(settings))
    client = Client(settings=settings, embedded=args.here, open_store=store, connect=lambda: connect_broker(settings))
    store()  # the store first: an unusable one is named before the broker is tried
    jobs, messages = client.requeue_failed(job_ids=args.job, document=args.document, submission=args.submission,
                                           all=args.all, answer_here=False)
    where = ("queued: 'docqa run' answers them" if args.here
             else f"sent to their models' queues in {plural(messages, 'message')}")
    print(f"docqa retry: {plural(len(jobs), 'failed job')} queued again with their attempts reset, {where}")
    for job in jobs[:50]:
        print(f"  job {job.id} ({job.model}{'@' + job.revision if job.revision else ''})")
    if len(jobs) > 50:
        print(f"  ... and {len(jobs) - 50} more")
    return _named_jobs_not_retried(store(), args.job or [], {job.id for job in jobs})


def _named_jobs_not_retried(repo: Repository, named: list[int], retried: set[int]) -> int:
    """Say on stderr why each job named with --job was not retried (no such job, or not
    failed): exit 1 if none of them was, 3 if some were, 0 when all were."""
    missed = [job_id for job_id in dict.fromkeys(named) if job_id not in retried]
    if not missed:
        return exits.OK
    statuses = repo.job_statuses(missed)
    for job_id in missed:
        status = statuses.get(job_id)
        why = "there is no such job" if status is None else f"it is {getattr(status, 'value', status)}, not failed"
        print(f"docqa retry: job {job_id} not retried: {why}", file=sys.stderr)
    return exits.FAILED if len(missed) == len(set(named)) else exits.SKIPPED


def cmd_requeue(args: argparse.Namespace) -> int:
    from docqa.core.labels import model_label
    from docqa.worker.app import Dispatcher

    settings = build_settings(args)
    repo = open_repo(settings)
    dispatcher = Dispatcher(connect_broker(settings), repo, queue=settings.queue, batch_jobs=settings.worker_batch_jobs,
                                batch_windows=settings.batch_windows)
    ids = repo.queued_job_ids(model=settings.model, revision=settings.revision or "")
    messages = dispatcher.send_queued(repo.queued_jobs(ids))
    print(
        f"docqa requeue: {plural(len(ids), 'queued job')} of model {model_label(settings.model, settings.revision)} "
        f"put on queue {settings.model_queue!r} again in {plural(messages, 'message')}"
    )
    others = repo.queued_job_count(exclude_model=settings.model, exclude_revision=settings.revision or "")
    if others > 0:
        print(f"  {plural(others, 'queued job')} {'asks' if others == 1 else 'ask'} for other models or revisions: "
              "run with their --model/--revision", file=sys.stderr)
    return 0


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="text files, directories (read recursively; hidden files and folders skipped), .jsonl "
                   'files with one {"id", "text", "questions"?, "metadata"?} per line, or - for standard input')
    p.add_argument("--include", action="append", metavar="GLOB",
                   help="in directories, read only the files GLOB matches (repeatable): matched against the path "
                   "relative to the directory (notes/*.txt) and, without a '/', against each file or folder name "
                   "(*.md); a hidden name needs a GLOB that spells its dot (.env, .*)")
    p.add_argument("--exclude", action="append", metavar="GLOB",
                   help="in directories, skip the files and folders GLOB matches (repeatable; matched as "
                   "--include, and wins over it)")
    p.add_argument("-q", "--question", action="append", help="a question asked of every document (repeatable)")
    p.add_argument("--questions", metavar="FILE", help="a file of questions, one per line (# comments)")
    add_setting(p, "max_document_chars", metavar="N")
    add_setting(p, "max_question_chars", metavar="N")
    add_setting(p, "chunk_at_submit")
    add_store_option(p)
    p.add_argument("--retry-failed", action="store_true",
                   help="also queue again the jobs of this input that failed before (attempts reset)")


def register(sub) -> None:
    p = sub.add_parser("run", help="answer questions over documents in process, into SQLite (embedded mode)",
                       description="Embedded mode: store the documents, create a job per (document, question), "
                       "answer them in this process and write the answers to the SQL store (SQLite file docqa.db "
                       "by default). Jobs answered before are not run again.")
    _add_inputs(p)
    add_setting(p, "worker_batch_jobs", metavar="N")
    add_setting(p, "batch_windows", metavar="N")
    add_model_options(p)
    add_answer_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("submit", help="store documents and enqueue jobs for Celery workers (distributed mode)",
                       description="Distributed mode: store the documents and jobs in the SQL store and put the new "
                       "jobs on the broker (DOCQA_BROKER_URL) for 'docqa worker' processes to answer.")
    _add_inputs(p)
    add_broker_options(p)
    p.add_argument("--shared-sqlite", action="store_true",
                   help="allow a SQLite store: only when every worker runs on this host and uses this same file")
    p.add_argument("--no-model-check", action="store_true",
                   help="queue the jobs even when no live worker serves --model and this host cannot load it (a "
                   "producer that cannot see the model, with workers on their way); by default such a model, "
                   "often a mistyped one, is refused before anything is stored")
    add_setting(p, "worker_batch_jobs", metavar="N")
    add_setting(p, "batch_windows", metavar="N")
    add_model_options(p, compute=False)
    add_answer_options(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("retry", help="queue failed jobs again (by job, document, submission, or all)",
                       description="Put failed jobs back in the queue with their attempts reset and send them to "
                       "the broker (or, with --here, leave them queued for 'docqa run'). Prints what it queued.")
    p.add_argument("--job", type=int, action="append", metavar="ID", help="a failed job (repeatable)")
    p.add_argument("--document", type=int, metavar="ID", help="the failed jobs of this document")
    p.add_argument("--submission", type=int, metavar="ID", help="the failed jobs of this submission")
    p.add_argument("--all", action="store_true", help="every failed job")
    p.add_argument("--here", action="store_true", help="embedded mode: do not send to a broker")
    add_store_option(p)
    add_broker_options(p)
    add_setting(p, "worker_batch_jobs", metavar="N")
    add_setting(p, "batch_windows", metavar="N")
    p.set_defaults(func=cmd_retry)

    p = sub.add_parser("requeue", help="put the store's queued jobs on the broker again (after lost messages)",
                       description="Send every queued job of a model to the broker again. Use it when the broker "
                       "lost its messages (a Redis restart without persistence, a purged queue): the jobs are "
                       "still queued in the SQL store, which is the source of truth, but no worker hears of "
                       "them. Safe to repeat: a job is answered once, and a message for a job that is done "
                       "by then is acknowledged and dropped.")
    add_store_option(p)
    add_broker_options(p)
    add_model_options(p, compute=False)
    add_setting(p, "worker_batch_jobs", metavar="N")
    add_setting(p, "batch_windows", metavar="N")
    p.set_defaults(func=cmd_requeue)
