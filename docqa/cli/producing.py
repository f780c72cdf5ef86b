"""Producing work: `docqa run` (embedded: store and answer here), `docqa submit`
(distributed: store and enqueue), `docqa requeue` (send queued jobs to the broker again)."""

from __future__ import annotations

import argparse
import sys
import time

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
    load_engine,
    open_repo,
    progress_bar,
    safe_url,
)


def read_questions(args: argparse.Namespace) -> list[str]:
    from docqa.producer.documents import InputError, read_questions as read_file

    questions = list(args.question or [])
    if getattr(args, "questions", None):
        try:
            questions += read_file(args.questions)
        except InputError as exc:
            raise CliError(str(exc)) from None
    return questions


def submit_inputs(args, settings, repo, enqueue):
    from docqa.producer.documents import iter_inputs
    from docqa.producer.submit import submit

    params = answer_params(settings)
    questions = read_questions(args)
    bar = progress_bar(None, "doc", "reading documents")
    try:
        return submit(
            iter_inputs(args.inputs, settings.max_document_chars),
            questions,
            repo=repo,
            model=settings.model,
            revision=settings.revision,
            params=params,
            enqueue=enqueue,
            chunk=settings.worker_batch_jobs,
            progress=lambda _doc: bar.update(1),
        )
    finally:
        bar.close()


def print_input_errors(report) -> None:
    for err in report.errors:
        print(f"  skipped: {err}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from docqa.worker.loading import ModelLoadError, check_model_available
    from docqa.worker.runner import JobRunner, dead_local_workers

    settings = build_settings(args)
    answer_params(settings)
    started = time.perf_counter()
    try:  # an unknown model stops the run before anything is stored
        check_model_available(settings.model, settings.revision)
    except ModelLoadError as exc:
        raise CliError(str(exc), status=1) from None
    repo = open_repo(settings)
    report = submit_inputs(args, settings, repo, enqueue=None)
    # Jobs left running by an interrupted run on this host go back to the queue now.
    repo.requeue_expired(max_attempts=settings.max_attempts, dead_workers=dead_local_workers(repo.running_workers()))
    pending = repo.queued_job_ids(model=settings.model, revision=settings.revision or "")
    done = failed = answers = 0
    engine = None
    if pending:  # unchanged input: nothing to run, and the model is not even loaded
        engine = load_engine(settings)
        runner = JobRunner.from_settings(repo, engine, settings)
        bar = progress_bar(len(pending), "job", "answering")
        try:
            for i in range(0, len(pending), settings.worker_batch_jobs):
                stats = runner.run(pending[i : i + settings.worker_batch_jobs], fill=False)
                done, failed, answers = done + stats.done, failed + stats.failed, answers + stats.answers
                bar.update(stats.claimed + len(stats.skipped))
        finally:
            bar.close()
    elapsed = time.perf_counter() - started
    print(
        f"docqa run: {report.documents} documents ({report.new_documents} new), "
        f"{report.jobs} jobs ({report.new_jobs} new, {report.existing_jobs} already known), "
        f"{done} answered now with {answers} answers, {failed} failed, "
        f"{len(report.errors)} inputs skipped, {elapsed:.1f} s"
    )
    print(f"results are in {safe_url(settings.database_url)}: see 'docqa results' and 'docqa status'")
    if engine is not None and engine.device == "cpu" and engine.precision == "float32":
        from docqa.worker.hardware import cpu_has_bf16

        if cpu_has_bf16():
            print(
                "hint: this CPU runs bfloat16 natively (AMX/AVX512-BF16): --dtype bfloat16 answers several "
                "times faster, with answers that can differ from float32 only where two spans nearly tie",
                file=sys.stderr,
            )
    print_input_errors(report)
    if failed:
        for job_id, source, question, error in repo.failures(limit=20):
            print(f"  failed job {job_id} ({source}, {question!r}): {error}", file=sys.stderr)
    return 1 if (failed or report.errors) else 0


def cmd_submit(args: argparse.Namespace) -> int:
    from docqa.worker.app import send_jobs

    settings = build_settings(args)
    answer_params(settings)
    repo = open_repo(settings)
    app = connect_broker(settings)
    started = time.perf_counter()
    report = submit_inputs(args, settings, repo, enqueue=lambda ids: send_jobs(app, ids, settings.queue))
    print(
        f"docqa submit: {report.documents} documents ({report.new_documents} new), "
        f"{report.jobs} jobs ({report.new_jobs} new, enqueued in {report.enqueued_messages} messages; "
        f"{report.existing_jobs} already known), {len(report.errors)} inputs skipped, "
        f"{time.perf_counter() - started:.1f} s"
    )
    print_input_errors(report)
    return 1 if report.errors else 0


def cmd_requeue(args: argparse.Namespace) -> int:
    from docqa.core.labels import model_label
    from docqa.worker.app import send_jobs

    settings = build_settings(args)
    repo = open_repo(settings)
    app = connect_broker(settings)
    ids = repo.queued_job_ids(model=settings.model, revision=settings.revision or "")
    chunk = settings.worker_batch_jobs
    for i in range(0, len(ids), chunk):
        send_jobs(app, ids[i : i + chunk], settings.queue)
    messages = -(-len(ids) // chunk)
    print(
        f"docqa requeue: {len(ids)} queued jobs of model {model_label(settings.model, settings.revision)} "
        f"put on queue {settings.queue!r} again in {messages} messages"
    )
    others = repo.counts()["queued"] - len(ids)
    if others:
        print(f"  {others} queued jobs ask for other models or revisions: run with their --model/--revision",
              file=sys.stderr)
    return 0


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="text files, directories (read recursively), .jsonl files with one "
                   '{"id", "text", "questions"?, "metadata"?} per line, or - for standard input')
    p.add_argument("-q", "--question", action="append", help="a question asked of every document (repeatable)")
    p.add_argument("--questions", metavar="FILE", help="a file of questions, one per line (# comments)")
    add_setting(p, "max_document_chars", metavar="N")
    add_store_option(p)


def register(sub) -> None:
    p = sub.add_parser("run", help="answer questions over documents in process, into SQLite (embedded mode)",
                       description="Embedded mode: store the documents, create a job per (document, question), "
                       "answer them in this process and write the answers to the SQL store (SQLite file docqa.db "
                       "by default). Jobs answered before are not run again.")
    _add_inputs(p)
    add_setting(p, "worker_batch_jobs", metavar="N")
    add_model_options(p)
    add_answer_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("submit", help="store documents and enqueue jobs for Celery workers (distributed mode)",
                       description="Distributed mode: store the documents and jobs in the SQL store and put the new "
                       "jobs on the broker (DOCQA_BROKER_URL) for 'docqa worker' processes to answer.")
    _add_inputs(p)
    add_broker_options(p)
    add_setting(p, "worker_batch_jobs", metavar="N")
    add_model_options(p, compute=False)
    add_answer_options(p)
    p.set_defaults(func=cmd_submit)

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
    p.set_defaults(func=cmd_requeue)
