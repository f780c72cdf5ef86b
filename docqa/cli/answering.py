"""Answering without a store: `docqa ask` (one document, JSON out) and `docqa eval` (SQuAD)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

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
    load_engine,
    open_repo,
    progress_line,
)
from docqa.core.corpus import MAX_CORPUS_WINDOWS
from docqa.core.text import clip, plural


def cmd_ask(args: argparse.Namespace) -> int:
    from docqa.producer.documents import InputError, decode_text
    from docqa.worker.engine import QAItem

    if args.corpus is not None:
        return cmd_ask_corpus(args)
    if args.file is None or not args.question:
        raise CliError("give a FILE and -q QUESTION, or --corpus QUESTION to ask every stored document")
    settings = build_settings(args)
    params = answer_params(settings)
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
    engine = load_engine(settings, "ask")
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
    return exits.FAILED if failed else exits.OK


def cmd_ask_corpus(args: argparse.Namespace) -> int:
    """`docqa ask --corpus Q`: every stored document, retrieved by full-text search and read."""
    from docqa.cli.inspecting import parse_where
    from docqa.client import Client

    if args.file is not None or args.question:
        raise CliError("--corpus asks the stored documents: give no FILE and no -q")
    settings = build_settings(args)
    answer_params(settings)  # the flags' parameters, checked before anything is opened
    where = parse_where(args.where)
    client = Client(settings=settings, embedded=True if args.here else None, open_store=lambda: open_repo(settings),
                    connect=lambda: connect_broker(settings))
    result = client.ask_corpus(args.corpus, windows=args.windows, top=args.top, where=where, timeout=args.timeout)
    json.dump(result.model_dump(mode="json"), sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    return exits.OK


def cmd_eval(args: argparse.Namespace) -> int:
    from docqa.worker.engine import QAItem
    from docqa.worker.evaluate import DatasetError, load_squad, score

    settings = build_settings(args)
    params = answer_params(settings)
    try:
        questions = load_squad(args.data)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    if not questions:
        raise CliError(f"{args.data}: holds no questions (a SQuAD v1.1 file lists them under "
                       "data[].paragraphs[].qas[]): there is nothing to score")
    engine = load_engine(settings, "eval")
    started = time.perf_counter()
    predictions: dict[str, str] = {}
    skipped: list[dict[str, str]] = []  # questions with no prediction, and why: they score 0
    chunk = max(1, args.chunk)
    for i in range(0, len(questions), chunk):
        part = questions[i : i + chunk]
        for q, res in zip(part, engine.run([QAItem(q.context, q.question, params) for q in part])):
            if res.ok and res.answers:
                predictions[q.qid] = res.answers[0].text
            else:
                skipped.append({"id": q.qid, "question": q.question,
                                "reason": res.error if not res.ok else "the model gave no answer"})
        progress_line(f"eval: {min(i + chunk, len(questions))}/{len(questions)} questions")
    if sys.stderr.isatty():
        sys.stderr.write("\n")  # after the progress line
    figures: dict[str, Any] = dict(score(questions, predictions))
    figures.update({"model": engine.model_label, "skipped_questions": len(skipped),
                    "skipped": [{"id": e["id"], "reason": e["reason"]} for e in skipped],
                    "seconds": round(time.perf_counter() - started, 3)})
    if skipped:
        print(f"docqa eval: {plural(len(skipped), 'question')} skipped, each scored 0 (as the official script "
              "scores a missing prediction):", file=sys.stderr)
        for entry in skipped[:SKIPPED_SHOWN]:
            print(f"  {clip(entry['id'])} ({clip(entry['question'])!r}): {clip(entry['reason'], 300)}",
                  file=sys.stderr)
        if len(skipped) > SKIPPED_SHOWN:
            print(f"  ... and {len(skipped) - SKIPPED_SHOWN} more (all under \"skipped\" in the output)",
                  file=sys.stderr)
    if args.predictions:
        with open(args.predictions, "w", encoding="utf-8") as fh:
            json.dump(predictions, fh, ensure_ascii=False, indent=1)
    json.dump(figures, sys.stdout)
    sys.stdout.write("\n")
    return exits.OK


# Skipped eval questions named on stderr at most (all of them are in the JSON output).
SKIPPED_SHOWN = 20


def register(sub) -> None:
    p = sub.add_parser("ask", help="answer questions about one document and print JSON",
                       description="Answer questions about one document; prints the answers as JSON "
                       "with character offsets into the document (text[char_start:char_end] == answer).")
    p.add_argument("file", metavar="FILE", nargs="?", help="UTF-8 text file, or - for standard input")
    p.add_argument("-q", "--question", action="append", default=[], help="a question (repeatable)")
    add_setting(p, "max_document_chars", metavar="N")
    add_model_options(p)
    add_answer_options(p)
    corpus = p.add_argument_group(
        "every stored document (--corpus)",
        "The store's full-text search (PostgreSQL tsvector, SQLite FTS5) finds the passages that best match the "
        "question's words; the model reads the windows over them and each document's answers are ranked by "
        "margin. Embedded (a SQLite store, or --here) the model answers in this process; otherwise a live "
        "'docqa worker' of the model does.")
    corpus.add_argument("--corpus", metavar="QUESTION", help="ask every stored document this question")
    corpus.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="only documents whose metadata has KEY equal to VALUE (repeatable)")
    corpus.add_argument("--windows", type=int, default=32, metavar="M",
                        help=f"passages retrieved and read (default 32; at most {MAX_CORPUS_WINDOWS})")
    corpus.add_argument("--top", type=int, default=10, metavar="N", help="answers returned (default 10)")
    corpus.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="distributed: how long to wait for a worker (default 30)")
    corpus.add_argument("--here", action="store_true", help="load the model and answer in this process, "
                        "whatever the store")
    add_store_option(corpus)
    add_broker_options(corpus)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("eval", help="score a SQuAD v1.1-format file (exact match and F1)",
                       description="Answer every question of a SQuAD v1.1-format JSON file and print the "
                       "official exact-match and F1 scores (percent) as JSON. Questions the model cannot answer "
                       "(e.g. too long for the window) are skipped, scored 0, and named on stderr and under "
                       "\"skipped\" (id, reason); a file with no questions is an error.")
    p.add_argument("data", metavar="DATA.json", help="SQuAD v1.1-format dataset")
    p.add_argument("--predictions", metavar="FILE", help="also write {question id: answer} to FILE")
    p.add_argument("--chunk", type=int, default=256, help="questions per engine call (default 256)")
    add_model_options(p)
    add_answer_options(p)
    p.set_defaults(func=cmd_eval)
