"""Inspecting the store: `docqa status`, `docqa results`, `docqa db upgrade`. No torch here."""

from __future__ import annotations

import argparse
import json
import sys
import time

from docqa.cli.options import CliError, add_store_option, build_settings, open_repo, safe_url

RESULT_FIELDS = (
    "answer_id", "document_id", "document_external_id", "document_source", "sha256", "job_id",
    "question", "rank", "text", "score", "char_start", "char_end", "window_index",
    "window_char_start", "window_char_end", "token_start", "token_end", "start_logit",
    "end_logit", "model",
)


def cmd_status(args: argparse.Namespace) -> int:
    settings = build_settings(args)
    repo = open_repo(settings)
    counts = repo.counts()
    failures = repo.failures(limit=args.limit)
    if args.format == "json":
        out = {
            "counts": counts,
            "failures": [{"job_id": j, "document": s, "question": q, "error": e} for j, s, q, e in failures],
        }
        json.dump(out, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    print("  ".join(f"{k}: {v}" for k, v in counts.items()))
    for job_id, source, question, error in failures:
        print(f"failed job {job_id} ({source}, {question!r}): {error}")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    import csv
    import dataclasses

    settings = build_settings(args)
    repo = open_repo(settings)
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
    from docqa.storage.db import StoreError, upgrade

    settings = build_settings(args)
    try:
        upgrade(settings.database_url)
    except StoreError as exc:
        raise CliError(str(exc), status=1) from None
    print(f"database {safe_url(settings.database_url)} is at the latest schema")
    return 0


def register(sub) -> None:
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
