"""The `docqa` command line.

Every command builds one `Settings` from flags and DOCQA_* environment variables and
passes it down. Errors a user can fix are printed as one sentence (no traceback) with
exit status 2 for bad usage/input and 1 for failures at run time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from worker.settings import DEFAULT_MODEL, Settings


class CliError(Exception):
    """A problem the user can fix; printed as one line."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


# -- shared options -------------------------------------------------------------
def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help=f"hub id or local folder (default {DEFAULT_MODEL}; env DOCQA_MODEL)")
    g.add_argument("--revision", help="model revision on the hub: branch, tag or commit (env DOCQA_REVISION)")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N (env DOCQA_DEVICE)")
    g.add_argument("--dtype", help="auto (default: float32 on CPU, bf16/fp16 on GPU), float32, bfloat16, float16")
    g.add_argument("--quantize", choices=["none", "int8"], help="int8: faster CPU mode (dynamic int8 linear layers)")
    g.add_argument("--batch-tokens", type=int, help="token budget of one forward batch, windows x padded length (default 1536 on CPU, 131072 on GPU)")


def _add_answer_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("answers (defaults are transformers' question-answering pipeline's)")
    g.add_argument("--top-k", type=int, help="answers per question (default 1)")
    g.add_argument("--max-answer-len", type=int, help="longest answer in tokens (default 15)")
    g.add_argument("--max-seq-len", type=int, help="tokens per window (default 384)")
    g.add_argument("--doc-stride", type=int, help="tokens two neighbouring windows share (default 128)")
    g.add_argument(
        "--handle-impossible-answer",
        action="store_true",
        default=None,
        help="allow the empty answer when the model finds none",
    )
    g.add_argument(
        "--no-align-to-words",
        dest="align_to_words",
        action="store_false",
        default=None,
        help="report exact token spans instead of widening them to whole words",
    )
    g.add_argument(
        "--keep-occurrences",
        dest="merge_by_text",
        action="store_false",
        default=None,
        help="keep separate occurrences of the same answer text apart (default: merge them, as the pipeline did)",
    )


_SETTING_FLAGS = (
    "model", "revision", "device", "dtype", "quantize", "batch_tokens", "top_k", "max_answer_len",
    "max_seq_len", "doc_stride", "handle_impossible_answer", "align_to_words", "merge_by_text",
    "database_url", "broker_url", "max_document_chars", "queue", "lease_seconds", "max_attempts",
    "worker_batch_jobs",
)


def build_settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags the user gave."""
    overrides = {k: getattr(args, k) for k in _SETTING_FLAGS if getattr(args, k, None) is not None}
    try:
        return Settings(**overrides)
    except Exception as exc:  # pydantic ValidationError: name the bad setting
        raise CliError(f"invalid configuration: {exc}") from None


def _answer_params(settings: Settings):
    from pydantic import ValidationError

    try:
        return settings.answer_params()
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'parameters'}: {e['msg']}" for e in exc.errors())
        raise CliError(f"invalid answer parameters: {msgs}") from None


def _make_engine(settings: Settings):
    from worker.engine import Engine, ModelLoadError

    engine = Engine(
        settings.model,
        revision=settings.revision,
        device=settings.device,
        dtype=settings.dtype,
        batch_tokens=settings.batch_tokens,
        quantize=settings.quantize,
    )
    try:
        return engine.warm_up()
    except ModelLoadError as exc:
        raise CliError(str(exc), status=1) from None


# -- ask ---------------------------------------------------------------------------
def cmd_ask(args: argparse.Namespace) -> int:
    from producer.documents import InputError, decode_text
    from worker.engine import QAItem

    settings = build_settings(args)
    params = _answer_params(settings)
    if args.file == "-":
        data, source = sys.stdin.buffer.read(), "stdin"
    else:
        try:
            with open(args.file, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise CliError(f"{args.file}: cannot be read ({exc.strerror})") from None
        source = args.file
    try:
        text = decode_text(data, source, settings.max_document_chars)
    except InputError as exc:
        raise CliError(str(exc)) from None
    engine = _make_engine(settings)
    results = engine.run([QAItem(text, q, params) for q in args.question])
    out = {"model": engine.model_label, "source": source, "results": []}
    failed = False
    for q, res in zip(args.question, results):
        entry = {"question": q, "windows": res.n_windows}
        if res.ok:
            entry["answers"] = [a.model_dump() for a in res.answers]
        else:
            entry["error"] = res.error
            failed = True
        out["results"].append(entry)
    json.dump(out, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    return 1 if failed else 0


# -- eval --------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from worker.engine import QAItem
    from worker.evaluate import DatasetError, load_squad, score

    settings = build_settings(args)
    params = _answer_params(settings)
    try:
        questions = load_squad(args.data)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    engine = _make_engine(settings)
    started = time.perf_counter()
    predictions: dict[str, str] = {}
    errors = 0
    chunk = max(1, args.chunk)
    for i in range(0, len(questions), chunk):
        part = questions[i : i + chunk]
        for q, res in zip(part, engine.run([QAItem(q.context, q.question, params) for q in part])):
            if res.ok and res.answers:
                predictions[q.qid] = res.answers[0].text
            elif not res.ok:
                errors += 1
        _progress(f"eval: {min(i + chunk, len(questions))}/{len(questions)} questions")
    figures = score(questions, predictions)
    figures.update(
        {"model": engine.model_label, "unanswerable_items": errors, "seconds": round(time.perf_counter() - started, 3)}
    )
    if args.predictions:
        with open(args.predictions, "w", encoding="utf-8") as fh:
            json.dump(predictions, fh, ensure_ascii=False, indent=1)
    json.dump(figures, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r" + message)
        sys.stderr.flush()


# -- store helpers -----------------------------------------------------------------
def _open_repo(settings: Settings):
    from storage.db import StoreError, ensure_schema, make_engine, session_factory
    from storage.repository import Repository

    try:
        db = make_engine(settings.database_url)
        ensure_schema(db)
    except StoreError as exc:
        raise CliError(str(exc), status=1) from None
    return Repository(session_factory(db))


def _read_questions(args: argparse.Namespace) -> list[str]:
    from producer.documents import InputError, read_questions

    questions = list(args.question or [])
    if getattr(args, "questions", None):
        try:
            questions += read_questions(args.questions)
        except InputError as exc:
            raise CliError(str(exc)) from None
    return questions


def _progress_bar(total: int | None, unit: str, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not sys.stderr.isatty(), file=sys.stderr, leave=False)


def _submit_inputs(args, settings, repo, enqueue):
    from producer.documents import iter_inputs
    from producer.submit import submit

    params = _answer_params(settings)
    questions = _read_questions(args)
    bar = _progress_bar(None, "doc", "reading documents")
    try:
        report = submit(
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
    return report


def _print_input_errors(report) -> None:
    for err in report.errors:
        print(f"  skipped: {err}", file=sys.stderr)


# -- run (embedded) ------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from worker.loading import ModelLoadError, check_model_available
    from worker.runner import JobRunner, dead_local_workers

    settings = build_settings(args)
    _answer_params(settings)
    started = time.perf_counter()
    try:  # an unknown model stops the run before anything is stored
        check_model_available(settings.model, settings.revision)
    except ModelLoadError as exc:
        raise CliError(str(exc), status=1) from None
    repo = _open_repo(settings)
    report = _submit_inputs(args, settings, repo, enqueue=None)
    # Jobs left running by an interrupted run on this host go back to the queue now.
    repo.requeue_expired(max_attempts=settings.max_attempts, dead_workers=dead_local_workers(repo.running_workers()))
    pending = repo.queued_job_ids(model=settings.model, revision=settings.revision or "")
    done = failed = answers = 0
    if pending:  # unchanged input: nothing to run, and the model is not even loaded
        engine = _make_engine(settings)
        runner = JobRunner(
            repo,
            engine,
            lease_seconds=settings.lease_seconds,
            max_jobs=settings.worker_batch_jobs,
            max_attempts=settings.max_attempts,
        )
        bar = _progress_bar(len(pending), "job", "answering")
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
    print(f"results are in {_safe_url(settings.database_url)}: see 'docqa results' and 'docqa status'")
    if pending and engine.device == "cpu" and engine.precision == "float32":
        from worker.engine import cpu_has_bf16

        if cpu_has_bf16():
            print(
                "hint: this CPU runs bfloat16 natively (AMX/AVX512-BF16): --dtype bfloat16 answers several "
                "times faster, with answers that can differ from float32 only where two spans nearly tie",
                file=sys.stderr,
            )
    _print_input_errors(report)
    if failed:
        for job_id, source, question, error in repo.failures(limit=20):
            print(f"  failed job {job_id} ({source}, {question!r}): {error}", file=sys.stderr)
    return 1 if (failed or report.errors) else 0


# -- submit (distributed) --------------------------------------------------------------
def cmd_submit(args: argparse.Namespace) -> int:
    settings = build_settings(args)
    _answer_params(settings)
    repo = _open_repo(settings)
    from worker.app import send_jobs

    app = _connect_broker(settings)
    started = time.perf_counter()
    report = _submit_inputs(args, settings, repo, enqueue=lambda ids: send_jobs(app, ids, settings.queue))
    print(
        f"docqa submit: {report.documents} documents ({report.new_documents} new), "
        f"{report.jobs} jobs ({report.new_jobs} new, enqueued in {report.enqueued_messages} messages; "
        f"{report.existing_jobs} already known), {len(report.errors)} inputs skipped, "
        f"{time.perf_counter() - started:.1f} s"
    )
    _print_input_errors(report)
    return 1 if report.errors else 0


def _connect_broker(settings):
    """docqa's Celery app, after checking that its broker answers (CliError if not)."""
    from worker.app import make_celery

    app = make_celery(settings)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        raise CliError(f"cannot reach the broker at {_safe_url(settings.broker_url)}: {exc}", status=1) from None
    return app


# -- requeue -----------------------------------------------------------------------------
def cmd_requeue(args: argparse.Namespace) -> int:
    settings = build_settings(args)
    repo = _open_repo(settings)
    from worker.app import send_jobs

    app = _connect_broker(settings)
    ids = repo.queued_job_ids(model=settings.model, revision=settings.revision or "")
    chunk = settings.worker_batch_jobs
    for i in range(0, len(ids), chunk):
        send_jobs(app, ids[i : i + chunk], settings.queue)
    label = f"{settings.model}@{settings.revision}" if settings.revision else settings.model
    messages = -(-len(ids) // chunk)
    print(
        f"docqa requeue: {len(ids)} queued jobs of model {label} put on queue {settings.queue!r} "
        f"again in {messages} messages"
    )
    others = repo.counts()["queued"] - len(ids)
    if others:
        print(f"  {others} queued jobs ask for other models or revisions: run with their --model/--revision",
              file=sys.stderr)
    return 0


# -- worker ------------------------------------------------------------------------------
def cmd_worker(args: argparse.Namespace) -> int:
    import os

    settings = build_settings(args)
    _answer_params(settings)
    # The Celery app and its pool processes read their settings from the environment.
    for key in _SETTING_FLAGS:
        value = getattr(args, key, None)
        if value is not None:
            os.environ[f"DOCQA_{key.upper()}"] = str(value)
    from worker.app import app

    argv = [
        "worker",
        "--queues", settings.queue,
        "--concurrency", str(args.concurrency),
        "--pool", args.pool,
        "--loglevel", args.loglevel,
        "--prefetch-multiplier", "1",
        "-O", "fair",
        "--without-gossip",
        "--without-mingle",
    ]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    app.worker_main(argv=argv)
    return 0


# -- status / results -------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    settings = build_settings(args)
    repo = _open_repo(settings)
    counts = repo.counts()
    failures = repo.failures(limit=args.limit)
    if args.format == "json":
        out = {
            "counts": counts,
            "failures": [
                {"job_id": j, "document": s, "question": q, "error": e} for j, s, q, e in failures
            ],
        }
        json.dump(out, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    print("  ".join(f"{k}: {v}" for k, v in counts.items()))
    for job_id, source, question, error in failures:
        print(f"failed job {job_id} ({source}, {question!r}): {error}")
    return 0


RESULT_FIELDS = (
    "answer_id", "document_id", "document_external_id", "document_source", "sha256", "job_id",
    "question", "rank", "text", "score", "char_start", "char_end", "window_index",
    "window_char_start", "window_char_end", "token_start", "token_end", "start_logit",
    "end_logit", "model",
)


def cmd_results(args: argparse.Namespace) -> int:
    import csv
    import dataclasses

    settings = build_settings(args)
    repo = _open_repo(settings)
    writer = None
    if args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=RESULT_FIELDS, extrasaction="ignore")
        writer.writeheader()
    last = 0
    while True:
        for rec in repo.iter_results(document_id=args.document, job_id=args.job, after_answer_id=last):
            row = dataclasses.asdict(rec)
            last = row["answer_id"]
            if writer is not None:
                writer.writerow(row)
            else:
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        if not args.follow:
            return 0
        if args.until_done:
            counts = repo.counts()
            if counts.get("queued", 0) == 0 and counts.get("running", 0) == 0:
                return 0
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0


def cmd_db(args: argparse.Namespace) -> int:
    from storage.db import StoreError, upgrade

    settings = build_settings(args)
    try:
        upgrade(settings.database_url)
    except StoreError as exc:
        raise CliError(str(exc), status=1) from None
    print(f"database {_safe_url(settings.database_url)} is at the latest schema")
    return 0


def _safe_url(url: str) -> str:
    """A URL fit to print: any password replaced."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


# -- parser ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docqa",
        description="Extractive question answering over long documents: the answers transformers' "
        "question-answering pipeline gave, batched, durable, with character offsets into your text.",
        epilog="Every option can also be set as an environment variable DOCQA_<NAME> "
        "(e.g. DOCQA_MODEL, DOCQA_DATABASE_URL). Run 'docqa COMMAND --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("ask", help="answer questions about one document and print JSON",
                       description="Answer questions about one document; prints the answers as JSON "
                       "with character offsets into the document (text[char_start:char_end] == answer).")
    p.add_argument("file", metavar="FILE", help="UTF-8 text file, or - for standard input")
    p.add_argument("-q", "--question", action="append", required=True, help="a question (repeatable)")
    p.add_argument("--max-document-chars", type=int, help="refuse larger documents (default 5,000,000)")
    _add_model_options(p)
    _add_answer_options(p)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("eval", help="score a SQuAD v1.1-format file (exact match and F1)",
                       description="Answer every question of a SQuAD v1.1-format JSON file and print the "
                       "official exact-match and F1 scores (percent) as JSON.")
    p.add_argument("data", metavar="DATA.json", help="SQuAD v1.1-format dataset")
    p.add_argument("--predictions", metavar="FILE", help="also write {question id: answer} to FILE")
    p.add_argument("--chunk", type=int, default=256, help="questions per engine call (default 256)")
    _add_model_options(p)
    _add_answer_options(p)
    p.set_defaults(func=cmd_eval)

    def add_store_option(p):
        p.add_argument("--database-url", help="result store URL (default sqlite:///docqa.db; env DOCQA_DATABASE_URL)")

    def add_broker_options(p):
        p.add_argument("--broker-url", help="Celery broker URL (default redis://127.0.0.1:6379/0)")
        p.add_argument("--queue", help="broker queue (default docqa)")

    def add_input_options(p):
        p.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="text files, directories (read recursively), .jsonl files with one "
                       '{"id", "text", "questions"?, "metadata"?} per line, or - for standard input')
        p.add_argument("-q", "--question", action="append", help="a question asked of every document (repeatable)")
        p.add_argument("--questions", metavar="FILE", help="a file of questions, one per line")
        p.add_argument("--max-document-chars", type=int, help="refuse larger documents (default 5,000,000)")
        add_store_option(p)

    p = sub.add_parser("run", help="answer questions over documents in process, into SQLite (embedded mode)",
                       description="Embedded mode: store the documents, create a job per (document, question), "
                       "answer them in this process and write the answers to the SQL store (SQLite file docqa.db "
                       "by default). Jobs answered before are not run again.")
    add_input_options(p)
    _add_model_options(p)
    _add_answer_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("submit", help="store documents and enqueue jobs for Celery workers (distributed mode)",
                       description="Distributed mode: store the documents and jobs in the SQL store and put the new "
                       "jobs on the broker (DOCQA_BROKER_URL) for 'docqa worker' processes to answer.")
    add_input_options(p)
    add_broker_options(p)
    p.add_argument("--model", help=f"model the jobs ask for (default {DEFAULT_MODEL}); workers must serve it")
    p.add_argument("--revision", help="model revision the jobs ask for")
    _add_answer_options(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("requeue", help="put the store's queued jobs on the broker again (after lost messages)",
                       description="Send every queued job of a model to the broker again. Use it when the broker "
                       "lost its messages (a Redis restart without persistence, a purged queue): the jobs are "
                       "still queued in the SQL store, which is the source of truth, but no worker hears of "
                       "them. Safe to repeat: a job is answered once, and a message for a job that is done "
                       "by then is acknowledged and dropped.")
    add_store_option(p)
    add_broker_options(p)
    p.add_argument("--model", help=f"model whose queued jobs to send (default {DEFAULT_MODEL})")
    p.add_argument("--revision", help="model revision of those jobs")
    p.add_argument("--worker-batch-jobs", type=int, help="jobs per message (default 64)")
    p.set_defaults(func=cmd_requeue)

    p = sub.add_parser("worker", help="start a Celery worker that answers queued jobs",
                       description="Start a Celery worker with docqa's app (same as 'celery -A worker.app worker' "
                       "with docqa's recommended flags). Each pool process loads the model once.")
    add_store_option(p)
    add_broker_options(p)
    p.add_argument("-c", "--concurrency", type=int, default=1,
                   help="pool processes (default 1; torch threads per process = cores / concurrency)")
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"],
                   help="Celery pool (default prefork; use solo for one process per GPU)")
    p.add_argument("--loglevel", default="INFO", help="log level (default INFO)")
    p.add_argument("--hostname", help="Celery node name (default docqa-PID@HOST)")
    p.add_argument("--lease-seconds", type=int, help="a running job not finished within this is requeued (default 900)")
    p.add_argument("--max-attempts", type=int, help="runs of a job before it is marked failed (default 3)")
    p.add_argument("--worker-batch-jobs", type=int, help="jobs answered together at most (default 64)")
    _add_model_options(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", help="job counts by status, and failures with their reasons")
    add_store_option(p)
    p.add_argument("--limit", type=int, default=50, help="failures listed at most (default 50)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("results", help="stream answers with provenance as JSON lines or CSV",
                       description="Print stored answers with provenance: document id and source, question, "
                       "rank, answer text, score, character offsets (text[char_start:char_end] == answer), "
                       "window, model.")
    add_store_option(p)
    p.add_argument("--document", type=int, help="only this document id")
    p.add_argument("--job", type=int, help="only this job id")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--follow", action="store_true", help="keep printing new answers as they land (Ctrl-C stops)")
    p.add_argument("--until-done", action="store_true", help="with --follow: stop once no job is queued or running")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls with --follow (default 1)")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("db", help="database maintenance")
    dbsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = dbsub.add_parser("upgrade", help="create or migrate the schema to the latest version")
    add_store_option(up)
    up.set_defaults(func=cmd_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except CliError as exc:
        print(f"docqa {args.command}: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"docqa {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
