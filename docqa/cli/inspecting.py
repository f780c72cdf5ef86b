"""Inspecting the store: `docqa status`, `docqa results`, `docqa db upgrade`. No torch here."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

from docqa.cli import exits
from docqa.cli.options import (
    CliError,
    add_broker_options,
    add_setting,
    add_store_option,
    build_settings,
    masked,
    open_repo,
    safe_url,
)
from docqa.core.offsets import record_converter
from docqa.core.text import CLIP_CHARS, clip, plural

if TYPE_CHECKING:
    from docqa.storage.repository import Repository

RESULT_FIELDS = (
    "answer_id", "document_id", "document_external_id", "document_source", "sha256", "job_id",
    "question", "rank", "text", "score", "char_start", "char_end", "window_index",
    "window_char_start", "window_char_end", "token_start", "token_end", "start_logit",
    "end_logit", "null_start_logit", "null_end_logit", "margin", "model", "document_metadata", "params",
    "document_version", "superseded", "text_id",
)


def _seconds_since(when) -> float | None:
    from docqa.storage.columns import utcnow

    return None if when is None else max(0.0, (utcnow() - when).total_seconds())


def store_facts(repo: Repository, settings) -> dict:
    live = repo.live_workers(seen_within=settings.live_worker_seconds)
    served = {w.model for w in live}
    queued_by_model = repo.queued_by_model()
    splits = repo.split_states()
    return {
        "counts": repo.counts(),
        # Running jobs whose windows run as parts (docqa.worker.parts): their parts and those done.
        "split_jobs": {"jobs": len(splits), "parts": sum(s.parts for s in splits),
                       "parts_done": sum(s.done for s in splits)},
        "workers": [
            {"name": w.name, "host": w.host, "model": w.model, "queue": w.queue, "threads": w.threads,
             "cores": w.cores, "last_seen_seconds": round(_seconds_since(w.last_seen_at) or 0.0, 1)}
            for w in live
        ],
        "oversubscribed": oversubscribed_hosts(live),
        "queued_by_model": queued_by_model,
        "models_without_worker": sorted(m for m in queued_by_model if m not in served),
        "oldest_queued_seconds": _seconds_since(repo.oldest_queued_at()),
        "queued_without_message": repo.count_unsent_queued(older_than=settings.reconcile_seconds),
    }


def oversubscribed_hosts(workers) -> list[dict]:
    """The hosts whose live workers' torch threads add up to more than the host's cores (the
    most cores any of them may use), by host name: [{"host", "processes", "threads", "cores"}].
    Workers that did not record their threads (older than schema 0007) are left out."""
    by_host: dict[str, list] = {}
    for w in workers:
        if w.threads is not None and w.cores is not None:
            by_host.setdefault(w.host, []).append(w)
    found = []
    for host, group in sorted(by_host.items()):
        threads, cores = sum(w.threads for w in group), max(w.cores for w in group)
        if threads > cores:
            found.append({"host": host, "processes": len(group), "threads": threads, "cores": cores})
    return found


def cmd_status(args: argparse.Namespace) -> int:
    settings = build_settings(args)
    repo = open_repo(settings, create=False)
    if args.watch:
        from docqa.cli.watch import watch

        if args.interval <= 0:
            raise CliError(f"--interval must be positive (got {args.interval:g})")
        return watch(repo, settings, interval=args.interval, metrics_urls=args.metrics_url,
                     json_lines=args.format == "json")
    from docqa.worker.queues import broker_facts

    facts = store_facts(repo, settings)
    failures = repo.failures(limit=args.limit)
    broker = broker_facts(settings) if not args.no_broker else None
    if args.format == "json":
        out = dict(facts, failures=[{"job_id": j, "document": d, "question": q, "error": e} for j, d, q, e in failures])
        if broker is not None:
            out["broker"] = broker
        json.dump(out, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        _print_status(facts, failures, broker, settings)
    # A shared (PostgreSQL) store means distributed mode, where a broker that does not answer
    # is an outage; an embedded SQLite store needs none.
    distributed = not settings.database_url.startswith("sqlite")
    return exits.UNREACHABLE if distributed and broker is not None and broker.get("unreachable") else exits.OK


def _print_status(facts: dict, failures, broker: dict | None, settings) -> None:
    print("  ".join(f"{k}: {v}" for k, v in facts["counts"].items()))
    split = facts["split_jobs"]
    if split["jobs"]:
        print(f"split: {plural(split['jobs'], 'running job')} run as {split['parts']} window-range parts, "
              f"{split['parts_done']} done")
    workers = facts["workers"]
    print(f"live workers: {len(workers)}" + "".join(
        f"\n  {w['name']} ({w['model']}, queue {w['queue']}, seen {w['last_seen_seconds']:.0f} s ago)" for w in workers))
    _print_warnings(facts, settings)
    if broker is not None:
        _print_broker(broker)
    for job_id, source, question, error in failures:
        print(f"failed job {job_id} ({_clip(source)}, {_clip(question)!r}): {_clip(error, 500)}")


def _print_warnings(facts: dict, settings) -> None:
    """The status lines on oversubscribed hosts, the oldest queued job and unserved models."""
    for host in facts["oversubscribed"]:
        print(f"warning: host {host['host']}: {host['processes']} docqa worker processes use {host['threads']} torch "
              f"threads on {host['cores']} cores; set DOCQA_TORCH_THREADS (docqa worker --torch-threads) or fewer "
              "processes (-c) so threads x processes <= cores")
    if facts["oldest_queued_seconds"] is not None:
        print(f"oldest queued job: {facts['oldest_queued_seconds']:.0f} s; queued with no broker message for over "
              f"{settings.reconcile_seconds} s: {facts['queued_without_message']}")
    for model in facts["models_without_worker"]:
        print(f"queued for model {model}: {plural(facts['queued_by_model'][model], 'job')}, and no live worker "
              "serves it")


def _print_broker(broker: dict) -> None:
    if "error" in broker:
        print(f"broker: {broker['error']}")
        return
    print(f"broker: {plural(broker['queue_depth'], 'message')} waiting on queue {broker['queue']!r}; "
          f"dead letters: {broker['dead_letters']}" + (" (see 'docqa dead-letters')" if broker["dead_letters"] else ""))
    for entry in broker["bouncing_messages"]:
        print(f"bouncing: a message of {plural(entry['jobs'], 'job')} on {entry['queue']!r} was put back "
              f"{plural(entry['bounces'], 'time')} (last {entry['at']}): {_clip(entry['reason'], 300)}")
    if broker["bouncing"] > len(broker["bouncing_messages"]):
        print(f"bouncing: {broker['bouncing'] - len(broker['bouncing_messages'])} more")


def _clip(text: str, limit: int = CLIP_CHARS) -> str:
    return clip(text, limit)


def cmd_health(args: argparse.Namespace) -> int:
    """0 when the store (and, unless --no-broker, the broker) answer; with --worker, also a live
    worker of this host. 1 with the reason otherwise."""
    import socket

    settings = build_settings(args)
    try:
        repo = open_repo(settings, create=False)
        repo.counts()
    except CliError as exc:
        print(f"unhealthy: store: {exc}", file=sys.stderr)
        return exits.FAILED  # every unhealthy state is 1, as container healthchecks expect
    if not args.no_broker:
        from docqa.worker.queues import broker_facts

        broker = broker_facts(settings)
        if broker.get("unreachable"):
            print(f"unhealthy: {broker['error']}", file=sys.stderr)
            return exits.FAILED
    if args.worker:
        host = socket.gethostname()
        live = [w for w in repo.live_workers(seen_within=settings.live_worker_seconds)
                if w.name.split(":")[0] == host]
        if not live:
            print(f"unhealthy: no live docqa worker process on host {host}", file=sys.stderr)
            return exits.FAILED
    print("healthy")
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    import redis

    from docqa.worker.deadletter import DEAD_LETTER_KEY, read

    settings = build_settings(args)
    client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=3, socket_timeout=5)
    try:
        count, entries = read(client, args.limit)
        if args.clear:
            client.delete(DEAD_LETTER_KEY)
    except redis.RedisError as exc:
        raise CliError(f"cannot reach the broker at {safe_url(settings.broker_url)}: "
                       f"{masked(str(exc), settings.broker_url)}", status=exits.UNREACHABLE) from None
    finally:
        client.close()
    for e in entries:
        sys.stdout.write(json.dumps(e, ensure_ascii=False) + "\n")
    print(f"{plural(count, 'dead letter')}{' (cleared)' if args.clear else ''}", file=sys.stderr)
    return 0


def parse_where(items: list[str]) -> dict[str, str]:
    """{"KEY": "VALUE"} from --where KEY=VALUE arguments; CliError naming a malformed one."""
    from docqa.core.filters import parse_where as parse

    try:
        return parse(items)
    except ValueError as exc:
        raise CliError(f"--where {exc}") from None


def cmd_results(args: argparse.Namespace) -> int:
    settings = build_settings(args)
    repo = open_repo(settings, create=False)
    filters = _result_filters(repo, settings, args)
    write = _result_writer(repo, args)
    if args.top is not None:
        if args.question is None or args.follow:
            raise CliError("--top ranks the answers to one --question across documents (and does not --follow)")
        records = repo.top_results(top=args.top, order=args.order or "margin", submission_id=args.submission,
                                   **filters)
    elif args.order not in (None, "answer"):
        if args.follow:
            raise CliError("--follow prints answers as they land, in answer order: drop --order or --follow")
        records = repo.iter_results(job_id=args.job, submission_id=args.submission, order=args.order, **filters)
    else:
        return _follow_results(repo, settings, args, filters, write)
    for rec in records:
        write(rec)
    return 0


def _result_filters(repo: Repository, settings, args: argparse.Namespace) -> dict:
    """The answer filters of `docqa results` (document_ids, question, model, rank, where, all_versions);
    CliError for a submission or document not in the store, or --rank with --all-ranks."""
    if args.submission is not None and not repo.submission_exists(args.submission):
        raise CliError(f"there is no submission {args.submission} in {safe_url(settings.database_url)}", status=1)
    document_ids = None if args.document is None else _document_ids(repo, args.document)
    if args.all_ranks and args.rank is not None:
        raise CliError("give --rank N or --all-ranks, not both")
    rank = None if args.all_ranks else (0 if args.rank is None else args.rank)
    return dict(document_ids=document_ids, question=args.question, model=args.model_filter, rank=rank,
                where=parse_where(args.where), all_versions=args.all_versions)


def _document_ids(repo: Repository, ref: str) -> list:
    document_ids = repo.resolve_documents(ref)
    if not document_ids:
        raise CliError(f"no document is named {ref!r} (a document id, an id given at submit, or a file path)", status=1)
    return document_ids


def _result_writer(repo: Repository, args: argparse.Namespace):
    """A function printing one answer record as args.format, offsets in args.offsets; for csv,
    the header row is written now."""
    import csv

    as_row = record_converter(args.offsets, repo.text_of)
    if args.format != "csv":
        def write_jsonl(rec) -> None:
            sys.stdout.write(json.dumps(as_row(rec), ensure_ascii=False) + "\n")

        return write_jsonl
    fields = RESULT_FIELDS + (("offset_unit",) if args.offsets != "codepoints" else ())
    writer = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()

    def write_csv(rec) -> None:
        row = as_row(rec)
        for key in ("document_metadata", "params"):
            row[key] = None if row[key] is None else json.dumps(row[key], ensure_ascii=False, sort_keys=True)
        writer.writerow(row)

    return write_csv


def _follow_results(repo: Repository, settings, args: argparse.Namespace, filters: dict, write) -> int:
    """Answers in answer order; with --follow, polls every --interval seconds until done or Ctrl-C."""
    # A followed submission ends when its last job does; the whole store only with --until-done.
    until_done = args.until_done or args.submission is not None
    position = None
    quiet_since = None
    while True:
        progress, position = _poll_results(repo, args, filters, position, write)
        finished = progress.get("queued", 0) == 0 and progress.get("running", 0) == 0
        if not args.follow:
            return 0
        if until_done and finished:
            return _followed_status(progress)
        _show_progress(progress)
        if not settings.database_url.startswith("sqlite") and not finished:
            quiet_since = warn_unserved(repo, settings, args, quiet_since)
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 130


def _poll_results(repo: Repository, args: argparse.Namespace, filters: dict, position, write) -> tuple:
    """One pass: the job counts, then the answers after position, printed. (counts, new position)"""
    # Counts first, answers second: an answer committed between the two reads is still
    # printed, by this pass or the final one.
    progress = repo.submission_progress(args.submission) if args.submission is not None else repo.counts()
    records, position = repo.follow_results(position, job_id=args.job, submission_id=args.submission, **filters)
    for rec in records:
        write(rec)
    sys.stdout.flush()
    return progress, position


def _followed_status(progress: dict) -> int:
    if progress.get("failed", 0):
        print(f"docqa results: {plural(progress['failed'], 'job')} failed: see 'docqa status'", file=sys.stderr)
        return 1
    return 0


def _show_progress(progress: dict) -> None:
    done = progress.get("done", 0) + progress.get("failed", 0)
    total = sum(progress.values())
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{done}/{total} jobs finished ({progress.get('failed', 0)} failed)")
        sys.stderr.flush()


def warn_unserved(repo: Repository, settings, args, said_at: float | None) -> float | None:
    """While following: say on stderr, at once and then every --no-worker-warning seconds,
    which queued jobs' models no live worker serves (and what live workers do serve).
    Returns when it last said so (None: every queued job has a live worker)."""
    from docqa.producer.models import describe_served, served_models

    served = served_models(repo, settings.live_worker_seconds)
    waiting = {label: n for label, n in repo.queued_by_model(args.submission).items() if not served[label]}
    if not waiting:
        return None
    now = time.monotonic()
    if said_at is not None and now - said_at < args.no_worker_warning:
        return said_at
    models = ", ".join(f"{plural(n, 'job')} for {label!r}" for label, n in sorted(waiting.items()))
    print(f"docqa results: {models} wait{'s' if sum(waiting.values()) == 1 else ''} for a worker: no live worker "
          f"serves {'that model' if len(waiting) == 1 else 'those models'} ({describe_served(served)}); start "
          "'docqa worker --model MODEL', or check the submission's --model", file=sys.stderr)
    return now


def cmd_delete(args: argparse.Namespace) -> int:
    settings = build_settings(args)
    if (args.document is None) == (args.submission is None):
        raise CliError("say what to delete: --document REF (a document id, an id given at submit, or a file path) or --submission ID")
    repo = open_repo(settings, create=False)
    if args.document is not None:
        ids = repo.resolve_documents(args.document)
        if not ids:
            raise CliError(f"no document is named {clip(args.document)!r} (a document id, an id given at submit, or a file path)",
                           status=exits.FAILED)
    else:
        if not repo.submission_exists(args.submission):
            raise CliError(f"there is no submission {args.submission}", status=exits.FAILED)
        ids = repo.documents_of_submission(args.submission)
    counts = repo.delete_documents(ids, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"docqa delete: {verb} {plural(counts.documents, 'document')} (ids {ids[:20]}{' ...' if len(ids) > 20 else ''}) "
          f"and what no other document needs: {plural(counts.texts, 'text')}, {plural(counts.jobs, 'job')}, "
          f"{plural(counts.answers, 'answer')}")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from docqa.storage.db import StoreError, upgrade

    settings = build_settings(args)
    try:
        upgrade(settings.database_url)
    except StoreError as exc:
        raise CliError(str(exc), status=exits.UNREACHABLE) from None
    print(f"database {safe_url(settings.database_url)} is at the latest schema")
    return 0


def register(sub) -> None:
    for add_parser in (_add_status_parser, _add_health_parser, _add_dead_letters_parser, _add_results_parser,
                       _add_delete_parser, _add_db_parser):
        add_parser(sub)


def _add_status_parser(sub) -> None:
    p = sub.add_parser("status", help="job counts, live workers, stuck jobs, dead letters, failures",
                       description="Job counts by status; live workers, and hosts where their torch threads "
                       "add up to more than the cores; the oldest queued job and the jobs queued "
                       "with no broker message; models nobody serves; the broker's queue depth and dead letters; "
                       "failed jobs with their reasons. Never creates a store.")
    add_store_option(p)
    add_broker_options(p)
    add_setting(p, "lease_seconds", metavar="S")
    add_setting(p, "reconcile_seconds", metavar="S")
    p.add_argument("--no-broker", action="store_true", help="do not ask the broker (queue depth, dead letters)")
    p.add_argument("--limit", type=int, default=50, help="failures listed at most (default 50)")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="text for people (default; long questions and reasons clipped) or json: one object with "
                   "counts, workers, oversubscribed (hosts whose workers' torch threads exceed their cores), "
                   "queued_by_model, failures (whole) and broker facts")
    p.add_argument("--watch", action="store_true",
                   help="keep showing counts, jobs/s (windows/s with --metrics-url) and an ETA every --interval "
                   "seconds until Ctrl-C: redrawn in place on a terminal, one line (or JSON object) each otherwise")
    p.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between --watch redraws "
                   "(default 2)")
    p.add_argument("--metrics-url", action="append", default=[], metavar="URL",
                   help="with --watch: a worker's metrics (http://HOST:PORT/metrics, 'docqa worker --metrics-port'); "
                   "repeat for each worker: windows/s is their sum")
    p.set_defaults(func=cmd_status)


def _add_health_parser(sub) -> None:
    p = sub.add_parser("health", help="exit 0 when the store and broker answer (probes for supervisors)",
                       description="Readiness: exit 0 when the store (schema current) and the broker answer, 1 "
                       "with the reason otherwise. With --worker (liveness of a worker container): also a docqa "
                       "worker process of this host seen within three sweeps.")
    add_store_option(p)
    add_broker_options(p)
    add_setting(p, "lease_seconds", metavar="S")
    p.add_argument("--worker", action="store_true", help="also require a live worker process on this host")
    p.add_argument("--no-broker", action="store_true", help="do not check the broker")
    p.set_defaults(func=cmd_health)


def _add_dead_letters_parser(sub) -> None:
    p = sub.add_parser("dead-letters", help="print the malformed messages workers set aside, with reasons",
                       description="Print the dead-letter list of the broker (newest first, JSON lines: time, "
                       "queue, reason, worker, payload); the count goes to stderr.")
    add_broker_options(p)
    p.add_argument("--limit", type=int, default=20, help="entries printed at most (default 20)")
    p.add_argument("--clear", action="store_true", help="empty the list after printing")
    p.set_defaults(func=cmd_dead_letters)


def _add_results_parser(sub) -> None:
    p = sub.add_parser("results", help="stream answers with provenance as JSON lines or CSV",
                       description="Print stored answers with provenance: document id and source, question, "
                       "rank, answer text, score, margin, character offsets (text[char_start:char_end] == answer), "
                       "window, model, the document's metadata and the job's answer parameters.")
    add_store_option(p)
    _add_results_filters(p)
    p.add_argument("--order", choices=["answer", "reference", "margin"], default=None,
                   help="answer: as stored (default; --follow needs it); reference: the pipeline's score, highest "
                   "first (comparable within one job only); margin: start+end logits minus the window's null "
                   "logits, highest first (comparable across windows and documents)")
    p.add_argument("--top", type=int, metavar="N",
                   help="with --question: the N best answers across all documents, by margin unless --order "
                   "says reference (which documents answer it best)")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl",
                   help="jsonl: one JSON object per answer (default); csv: a header row, then one row per answer "
                   "(document_metadata and params as JSON text)")
    p.add_argument("--offsets", choices=["codepoints", "utf16", "utf8"], default="codepoints",
                   help="units of char_start/char_end and the window's offsets: Python str indices (default), "
                   "UTF-16 code units (Java, JavaScript, Elasticsearch) or UTF-8 bytes")
    p.add_argument("--follow", action="store_true", help="keep printing new answers as they land (Ctrl-C stops)")
    p.add_argument("--until-done", action="store_true", help="with --follow: stop once no job is queued or running")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls with --follow (default 1)")
    p.add_argument("--no-worker-warning", type=float, default=30.0, metavar="S",
                   help="with --follow: say so when no live worker has been seen for this long (default 30)")
    add_setting(p, "lease_seconds", metavar="S")
    p.set_defaults(func=cmd_results)


def _add_results_filters(p) -> None:
    """The options of `docqa results` that choose which answers to print."""
    p.add_argument("--submission", type=int, metavar="ID",
                   help="only this submission's answers; with --follow, stop when its last job ends "
                   "(exit 1 if any failed)")
    p.add_argument("--document", metavar="REF",
                   help="only this document (every version): its document id, the id it was submitted with, or "
                   "the path of the file it was read from")
    p.add_argument("--job", type=int, help="only this job id")
    p.add_argument("--question", metavar="Q", help="only answers to this question (exact text)")
    p.add_argument("--model", dest="model_filter", metavar="MODEL", help="only answers of jobs for this model")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only documents whose metadata has KEY equal to VALUE (top-level keys; numbers and "
                   "booleans as JSON writes them, e.g. year=2024, draft=false); repeat to require several")
    p.add_argument("--rank", type=int, metavar="N",
                   help="only answers of this rank (default 0: each job's best answer)")
    p.add_argument("--all-ranks", action="store_true", help="every rank of every job (a job asked for top_k > 1 "
                   "has several)")
    p.add_argument("--all-versions", action="store_true",
                   help="include answers of documents replaced by a newer version (same id or path, new content); "
                   "they carry superseded=true and their document_version")


def _add_delete_parser(sub) -> None:
    p = sub.add_parser("delete", help="remove documents; their texts, jobs and answers where nothing else needs them",
                       description="Remove documents from the store: one document with every version (by id, JSONL "
                       "id or file path) or every document of a submission. A text, its jobs and their answers go "
                       "only when no remaining document has that text: deleting one of two documents with one text "
                       "leaves the other's answers. A job of a deleted document that a worker is running ends "
                       "without writing answers.")
    p.add_argument("--document", metavar="REF", help="an internal id, a JSONL id or a file path (any spelling), or a "
                   "path as it was given at submit: the document with every version (a document that came without id or "
                   "path is named by its internal id, the document_id of results)")
    p.add_argument("--submission", type=int, metavar="ID", help="every document of this submission")
    p.add_argument("--dry-run", action="store_true", help="only print what would be deleted")
    add_store_option(p)
    p.set_defaults(func=cmd_delete)


def _add_db_parser(sub) -> None:
    p = sub.add_parser("db", help="database maintenance",
                       description="Database maintenance: 'docqa db upgrade' creates or migrates the store's schema.")
    dbsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = dbsub.add_parser("upgrade", help="create or migrate the schema to the latest version",
                          description="Create the store's schema in an empty database, or migrate an older docqa's "
                          "store to the latest version (every command that writes does this by itself).")
    add_store_option(up)
    up.set_defaults(func=cmd_db)
