"""`docqa windows`: the windows each job of a document will run (or ran), from the plan
the producer fixed at submit: provenance to inspect before any worker has run."""

from __future__ import annotations

import argparse
import json
import sys

from docqa.cli import exits
from docqa.cli.options import CliError, add_store_option, build_settings, open_repo, safe_url
from docqa.core.text import clip, plural


def cmd_windows(args: argparse.Namespace) -> int:
    settings = build_settings(args)
    repo = open_repo(settings, create=False)
    ids = repo.resolve_documents(args.document)
    if not ids:
        raise CliError(f"no document is named {clip(args.document)!r} (a document id, an id given at submit, or a file path) in "
                       f"{safe_url(settings.database_url)}", status=exits.FAILED)
    jobs = repo.plans_of_documents(ids, question=args.question, model=args.model_filter)
    if not jobs:
        what = f"asks {clip(args.question)!r}" if args.question is not None else "exists"
        raise CliError(f"no job of document {clip(args.document)!r} {what}: submit it with -q first",
                       status=exits.FAILED)
    texts: dict[int, str] = {}
    missing = 0
    for job_id, doc_id, question, model, plan in jobs:
        if plan is None:
            missing += 1
            print(f"docqa windows: job {job_id} ({clip(question)!r}) has no stored plan: it was submitted without "
                  "the model's tokenizer at hand (or before schema 0005); its worker windows it", file=sys.stderr)
            continue
        if args.format == "text":
            print(f"job {job_id}: document {doc_id}, question {clip(question)!r}, model {model}: "
                  f"{plural(len(plan.windows), 'window')}, question {plural(plan.question_tokens, 'token')}")
        if args.format == "text" or args.show_text:
            if doc_id not in texts:
                texts[doc_id] = repo.document(doc_id).text
        for n, (ts, te, cs, ce) in enumerate(plan.windows):
            if args.format == "text":
                preview = texts[doc_id][cs:ce]
                print(f"  window {n}: tokens {ts}-{te} (end exclusive), characters {cs}-{ce}: {clip(preview, 60)!r}")
            else:
                row = {"job_id": job_id, "document_id": doc_id, "question": question, "model": model,
                       "window_index": n, "token_start": ts, "token_end": te, "char_start": cs, "char_end": ce,
                       "tokenizer": plan.tokenizer}
                if args.show_text:
                    row["text"] = texts[doc_id][cs:ce]
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    return exits.FAILED if missing == len(jobs) else exits.OK


def register(sub) -> None:
    p = sub.add_parser("windows", help="print the windows each job of a document runs, from the stored plan",
                       description="Print the windows fixed at submit for the jobs of a document: each window's "
                       "token range (end exclusive, into the document's stored tokens) and character range "
                       "(text[char_start:char_end] is the context the model sees), before any worker has run.")
    p.add_argument("--document", required=True, metavar="REF", help="a document id, the id it was submitted with, or the path of its file")
    p.add_argument("--question", metavar="Q", help="only the job asking this question (exact text)")
    p.add_argument("--model", dest="model_filter", metavar="MODEL", help="only jobs for this model")
    p.add_argument("--format", choices=["jsonl", "text"], default="jsonl",
                   help="jsonl: one object per window (default); text: a readable list with each window's start")
    p.add_argument("--show-text", action="store_true", help="with jsonl: add each window's text")
    add_store_option(p)
    p.set_defaults(func=cmd_windows)
