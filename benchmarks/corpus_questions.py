"""Corpus questions (issue 22): retrieval quality on a test set built from text the repo
carries, and the latency of POST /v1/ask on large stores, split into retrieval and reading.

    . .venv/bin/activate
    python benchmarks/corpus_questions.py recall                  # 1,000 documents, SQLite and PostgreSQL
    python benchmarks/corpus_questions.py latency --docs 10000    # p50/p95 of POST /v1/ask
    python benchmarks/corpus_questions.py latency --docs 100000 --backends postgresql
    python benchmarks/corpus_questions.py reading                 # tiny vs full-size model, float32 / int8
    python benchmarks/corpus_questions.py latency --full --quantize int8 --queries 30   # full-size, int8

**The test set.** Sentences come from the repository's own prose: every Markdown file and
every docstring of its Python modules, split at sentence ends, 8 to 60 words each. 1,000
documents of 8 sentences are drawn from them (a fixed seed): 400 reserved sentences go
into one document each, and the rest fill every document, drawn with replacement, so each
of those is in several documents. A question is made from a sentence that is in exactly
one document: an answer word (a content word of 4+ letters) is taken out, about
half of the other content words are kept, in their order, after "What". So questions
share some words with their sentence, not all, and the answer word never. Hits: the
answer's document is among the texts of the top M passages (recall@M); the answer's
document is the first of them (retrieval ranks it first); after reading, the answer's
document is ranked first (the model's margin decides).

The reading figures need a real QA model. Weights cannot be downloaded on the machines
these figures were made on, so they were read by the tests' tiny model (`--model`
chooses another); with a random model the ranked-first rate says only that the reading
runs, not how good a real model ranks.

**Latency.** A store of N documents (sentences as above, about 1,000 characters each) is
made with `Repository.add_document` (texts, documents and passages only: no jobs), then a
`docqa serve` process on it answers Q questions by POST /v1/ask, one at a time, embedded
(SQLite) or through one `docqa worker` (PostgreSQL and Redis). Each reply carries its
retrieval and reading times; the client's wall time is the total.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TINY_MODEL = str(ROOT / "tests" / "fixtures" / "tiny-distilbert-qa")
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"'(])")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
STOP = set("a an and are as at be been by can did do does for from had has have how if in into is it its of on "
           "or that the their them then there these they this those to was were what when where which who will "
           "with without not no one each".split())


def repo_sentences() -> list[str]:
    """Sentences of the repository's Markdown files and Python docstrings, 8-60 words, distinct."""
    texts = [p.read_text(encoding="utf-8") for p in sorted(ROOT.rglob("*.md")) if ".venv" not in p.parts]
    for path in sorted(ROOT.rglob("*.py")):
        if ".venv" in path.parts or "bench-out" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    texts.append(doc)
    out: dict[str, None] = {}
    for text in texts:
        flat = re.sub(r"\s+", " ", re.sub(r"[|#*`>]+", " ", text))
        for sentence in _SENTENCE_END.split(flat):
            if 8 <= len(sentence.split()) <= 60:
                out[sentence.strip()] = None
    return list(out)


def build_documents(sentences: list[str], n_docs: int, per_doc: int, seed: int,
                    reserved: int = 400) -> list[list[int]]:
    """Each document as the indexes of its sentences. `reserved` sentences (a fixed shuffle)
    go into one document each, the first ones; the others fill every document, drawn with
    replacement, so each of them is in several documents."""
    rng = random.Random(seed)
    order = list(range(len(sentences)))
    rng.shuffle(order)
    unique, filler = order[:reserved], order[reserved:]
    docs = [[rng.choice(filler) for _ in range(per_doc - (d < len(unique)))] for d in range(n_docs)]
    for d, i in enumerate(unique[:n_docs]):
        docs[d].insert(rng.randrange(len(docs[d]) + 1), i)
    return docs


def make_questions(sentences: list[str], docs: list[list[int]], n: int, seed: int) -> list[tuple[int, str, str]]:
    """(answer document index, question, answer word) for up to n sentences in exactly one document."""
    holders: dict[int, set[int]] = {}
    for d, ids in enumerate(docs):
        for i in ids:
            holders.setdefault(i, set()).add(d)
    rng = random.Random(seed)
    unique = sorted(i for i, ds in holders.items() if len(ds) == 1)
    rng.shuffle(unique)
    out = []
    for i in unique:
        words = _WORD.findall(sentences[i])
        content = [w for w in words if w.lower() not in STOP]
        answers = [w for w in content if len(w) >= 4]
        if len(content) < 5 or not answers:
            continue
        answer = rng.choice(answers)
        kept = [w for w in content if w != answer and rng.random() < 0.5]
        if len(kept) < 2:
            continue
        out.append((next(iter(holders[i])), "What " + " ".join(kept) + "?", answer))
        if len(out) == n:
            break
    return out


def store_url(backend: str, name: str, folder: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{folder / (name + '.db')}"
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def fill_store(url: str, texts: list[str], batch: int = 1000) -> tuple["object", float]:
    """A store holding `texts` as documents doc0, doc1, ... (metadata shard = i % 10), each
    text with its passages as the producer stores them (`index_passages`), `batch` documents
    per transaction (one `add_document` transaction each would take the time of the run)."""
    from sqlalchemy import text as sql

    from docqa.core.passages import split_passages
    from docqa.storage.db import make_engine
    from docqa.storage.identity import text_sha256
    from docqa.storage.passages import index_passages
    from docqa.storage.repository import Repository

    repo = Repository.open(url)
    engine = make_engine(url)
    postgres = engine.dialect.name == "postgresql"
    started = time.perf_counter()
    for first in range(0, len(texts), batch):
        with engine.begin() as conn:
            for i in range(first, min(first + batch, len(texts))):
                text = texts[i]
                text_id = conn.execute(sql(
                    "INSERT INTO texts (sha256, text, length, created_at) VALUES (:h, :t, :n, CURRENT_TIMESTAMP) "
                    "ON CONFLICT (sha256) DO UPDATE SET length = excluded.length RETURNING id"),
                    {"h": text_sha256(text), "t": text, "n": len(text)}).scalar_one()
                conn.execute(sql(
                    "INSERT INTO documents (text_id, key, version, latest, external_id, metadata, created_at) "
                    "VALUES (:t, :k, 1, true, :e, :m, CURRENT_TIMESTAMP)"),
                    {"t": text_id, "k": f"id:doc{i}", "e": f"doc{i}", "m": json.dumps({"shard": str(i % 10)})})
                if conn.execute(sql("SELECT count(*) FROM passages WHERE text_id = :t"), {"t": text_id}).scalar():
                    continue
                index_passages(conn, postgres, text_id, split_passages(text))
        if first and first % 10_000 == 0:
            print(f"  stored {first:,} documents ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if postgres:
        with engine.connect() as conn:
            conn.execute(sql("ANALYZE"))  # what autovacuum would have done by now
            conn.commit()
    engine.dispose()
    return repo, time.perf_counter() - started


def cmd_recall(args) -> dict:
    from docqa.core.params import AnswerParams
    from docqa.worker.corpus import ask_corpus
    from docqa.worker.engine import Engine

    sentences = repo_sentences()
    docs = build_documents(sentences, args.docs, args.per_doc, args.seed)
    questions = make_questions(sentences, docs, args.questions, args.seed)
    texts = [" ".join(sentences[i] for i in ids) for ids in docs]
    engine = Engine(args.model, device="cpu").warm_up()
    report: dict = {"sentences": len(sentences), "documents": len(docs), "questions": len(questions),
                    "model": args.model, "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            repo, _ = fill_store(store_url(backend, "docqa_bench_corpus", Path(tmp)), texts)
            text_doc: dict[int, int] = {}  # text id -> answer-document index, filled as hits come
            row: dict = {}
            for m in args.windows:
                found = first = read_first = 0
                for doc, question, _answer in questions:
                    hits = repo.search_passages(question, limit=m)
                    docs_hit = _documents_of(repo, hits, text_doc)
                    found += doc in docs_hit
                    first += bool(docs_hit) and docs_hit[0] == doc
                    if args.read:
                        res = ask_corpus(engine, repo, question, params=AnswerParams(), windows=m, top=1)
                        read_first += bool(res.answers) and res.answers[0].external_id == f"doc{doc}"
                n = len(questions)
                row[m] = {"recall": found / n, "retrieval_first": first / n,
                          **({"read_first": read_first / n} if args.read else {})}
                print(f"{backend} M={m}: recall {found / n:.3f}, retrieval ranks it first {first / n:.3f}"
                      + (f", read ranks it first {read_first / n:.3f}" if args.read else ""), file=sys.stderr)
            report["backends"][backend] = row
    return report


def _documents_of(repo, hits, cache: dict[int, int]) -> list[int]:
    """The answer-document indexes of the hits' texts, in hit order, each once."""
    missing = {h.text_id for h in hits} - set(cache)
    if missing:
        for text_id, ds in repo.documents_of_texts(missing).items():
            cache[text_id] = int(ds[0].external_id[3:])
    return list(dict.fromkeys(cache[h.text_id] for h in hits if h.text_id in cache))


def cmd_latency(args) -> dict:
    import httpx

    sentences = repo_sentences()
    rng = random.Random(args.seed)
    questions = [q for _d, q, _a in make_questions(sentences, build_documents(sentences, 1000, 8, args.seed),
                                                   args.queries, args.seed)]
    report: dict = {"documents": args.docs, "queries": len(questions), "model": args.model, "windows": args.windows,
                    "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model = full_size_model(Path(tmp) / "full") if args.full else args.model
        report["model"] = "full-size DistilBERT (random weights)" if args.full else args.model
        report["quantize"] = args.quantize
        for backend in args.backends:
            texts = (" ".join(rng.choice(sentences) for _ in range(8)) for _ in range(args.docs))
            url = store_url(backend, "docqa_bench_ask", Path(tmp))
            repo, fill_s = fill_store(url, list(texts))
            env = dict(os.environ, DOCQA_DATABASE_URL=url, DOCQA_MODEL=model, HF_HUB_OFFLINE="1", DOCQA_DEVICE="cpu",
                       DOCQA_QUANTIZE=args.quantize, DOCQA_QUEUE="bench-ask",
                       DOCQA_BROKER_URL="redis://127.0.0.1:6379/14")
            procs = []
            if backend != "sqlite":
                procs.append(subprocess.Popen([sys.executable, "-m", "docqa", "worker"], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            port = 18000 + rng.randrange(1000)
            procs.append(subprocess.Popen([sys.executable, "-m", "docqa", "serve", "--port", str(port)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            try:
                report["backends"][backend] = _time_asks(f"http://127.0.0.1:{port}", questions, args.windows,
                                                         fill_s, httpx)
            finally:
                for p in procs:
                    p.terminate()
                    p.wait(timeout=30)
    return report


def full_size_model(folder: Path) -> str:
    """A DistilBERT QA model of the default model's shape (6 layers, dim 768, 12 heads, FFN
    3072; random weights) with the tests' tokenizer: its compute per window is the real
    model's, its answers meaningless. benchmarks/build_full_model.py builds one with a real
    28,996-token vocabulary where python3.11-doc is installed."""
    import shutil

    import torch
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=3000, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
                              max_position_embeddings=512)
    DistilBertForQuestionAnswering(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(TINY_MODEL) / name, folder / name)
    return str(folder)


def cmd_reading(args) -> dict:
    """In process (no server): ask_corpus on a SQLite store of --docs documents, p50/p95 of
    retrieval and reading, with the tiny model and a full-size one (float32 and int8)."""
    from docqa.core.params import AnswerParams
    from docqa.worker.corpus import ask_corpus
    from docqa.worker.engine import Engine

    sentences = repo_sentences()
    rng = random.Random(args.seed)
    questions = [q for _d, q, _a in make_questions(sentences, build_documents(sentences, 1000, 8, args.seed),
                                                   args.queries, args.seed)]
    report: dict = {"documents": args.docs, "queries": len(questions), "windows": args.windows, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        repo, _ = fill_store(store_url("sqlite", "reading", Path(tmp)),
                             [" ".join(rng.choice(sentences) for _ in range(8)) for _ in range(args.docs)])
        full = full_size_model(Path(tmp) / "full")
        for label, model, quantize in (("tiny", TINY_MODEL, "none"), ("full float32", full, "none"),
                                       ("full int8", full, "int8")):
            engine = Engine(model, device="cpu", quantize=quantize).warm_up()
            ask_corpus(engine, repo, questions[0], params=AnswerParams(), windows=args.windows)  # warm
            runs = [ask_corpus(engine, repo, q, params=AnswerParams(), windows=args.windows) for q in questions]
            row = {name: {"p50": _pct([getattr(r, name) for r in runs], 50),
                          "p95": _pct([getattr(r, name) for r in runs], 95)} for name in ("retrieval_ms", "reading_ms")}
            row["windows_read_mean"] = statistics.mean(r.windows for r in runs)
            report["models"][label] = row
            print(label, json.dumps(row), file=sys.stderr)
    return report


def _time_asks(base: str, questions: list[str], windows: int, fill_s: float, httpx) -> dict:
    deadline = time.monotonic() + 180
    while True:  # the server, and (distributed) a live worker: the first question that is answered
        try:
            if httpx.post(base + "/v1/ask", json={"question": questions[0], "windows": windows},
                          timeout=60).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the server (or its worker) did not answer within 180 s")
        time.sleep(1)
    walls, retrieval, reading = [], [], []
    for q in questions:
        started = time.perf_counter()
        r = httpx.post(base + "/v1/ask", json={"question": q, "windows": windows, "top": 10}, timeout=60)
        walls.append(1000 * (time.perf_counter() - started))
        body = r.json()
        retrieval.append(body["retrieval_ms"])
        reading.append(body["reading_ms"])
    row = {name: {"p50": _pct(v, 50), "p95": _pct(v, 95)} for name, v in
           (("total_ms", walls), ("retrieval_ms", retrieval), ("reading_ms", reading))}
    row["store_fill_s"] = fill_s
    print(json.dumps(row), file=sys.stderr)
    return row


def _pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recall", help="recall@M and ranked-first rates on the repo's own prose")
    r.add_argument("--docs", type=int, default=1000)
    r.add_argument("--per-doc", type=int, default=8)
    r.add_argument("--questions", type=int, default=300)
    r.add_argument("--windows", type=int, nargs="+", default=[8, 32, 128])
    r.add_argument("--read", action="store_true", help="also read with the model and rank by margin")
    l_ = sub.add_parser("latency", help="p50/p95 of POST /v1/ask")
    l_.add_argument("--docs", type=int, default=10_000)
    l_.add_argument("--queries", type=int, default=100)
    l_.add_argument("--windows", type=int, default=32)
    l_.add_argument("--full", action="store_true", help="a full-size model (random weights) instead of --model")
    l_.add_argument("--quantize", default="none", choices=["none", "int8"])
    rd = sub.add_parser("reading", help="in process: reading time of the tiny and a full-size model")
    rd.add_argument("--docs", type=int, default=10_000)
    rd.add_argument("--queries", type=int, default=50)
    rd.add_argument("--windows", type=int, default=32)
    for p in (r, l_, rd):
        p.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
        p.add_argument("--model", default=TINY_MODEL)
        p.add_argument("--seed", type=int, default=22)
    args = ap.parse_args()
    report = {"recall": cmd_recall, "latency": cmd_latency, "reading": cmd_reading}[args.cmd](args)
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
