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
    g.add_argument("--batch-tokens", type=int, help="token budget of one forward batch (default 8192)")


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
    "database_url", "broker_url", "max_document_chars", "queue",
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
