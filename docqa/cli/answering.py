"""Answering without a store: `docqa ask` (one document, JSON out) and `docqa eval` (SQuAD)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from docqa.cli.options import (
    CliError,
    add_answer_options,
    add_model_options,
    add_setting,
    answer_params,
    build_settings,
    load_engine,
    progress_line,
)


def cmd_ask(args: argparse.Namespace) -> int:
    from docqa.producer.documents import InputError, decode_text
    from docqa.worker.engine import QAItem

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
    engine = load_engine(settings)
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


def cmd_eval(args: argparse.Namespace) -> int:
    from docqa.worker.engine import QAItem
    from docqa.worker.evaluate import DatasetError, load_squad, score

    settings = build_settings(args)
    params = answer_params(settings)
    try:
        questions = load_squad(args.data)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    engine = load_engine(settings)
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
        progress_line(f"eval: {min(i + chunk, len(questions))}/{len(questions)} questions")
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


def register(sub) -> None:
    p = sub.add_parser("ask", help="answer questions about one document and print JSON",
                       description="Answer questions about one document; prints the answers as JSON "
                       "with character offsets into the document (text[char_start:char_end] == answer).")
    p.add_argument("file", metavar="FILE", help="UTF-8 text file, or - for standard input")
    p.add_argument("-q", "--question", action="append", required=True, help="a question (repeatable)")
    add_setting(p, "max_document_chars", metavar="N")
    add_model_options(p)
    add_answer_options(p)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("eval", help="score a SQuAD v1.1-format file (exact match and F1)",
                       description="Answer every question of a SQuAD v1.1-format JSON file and print the "
                       "official exact-match and F1 scores (percent) as JSON.")
    p.add_argument("data", metavar="DATA.json", help="SQuAD v1.1-format dataset")
    p.add_argument("--predictions", metavar="FILE", help="also write {question id: answer} to FILE")
    p.add_argument("--chunk", type=int, default=256, help="questions per engine call (default 256)")
    add_model_options(p)
    add_answer_options(p)
    p.set_defaults(func=cmd_eval)
