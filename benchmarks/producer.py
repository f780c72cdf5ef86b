"""Producer benchmark: what chunking at submit costs (documents/s, tokens/s, bytes per token
stored) and whether a 5,000,000-character document submits within memory.

    . .venv/bin/activate
    python benchmarks/producer.py                       # 200 documents x 2 questions, SQLite + PostgreSQL
    python benchmarks/producer.py --docs 50 --no-postgres --no-big
    python benchmarks/producer.py --shared-texts                    # issue 17: documents that share texts
    python benchmarks/producer.py --shared-texts --against /tmp/venv-0005/bin/python --rounds 2

Each configuration runs in its own subprocess (peak RSS is per configuration) against a
fresh store: `submit` of the same documents with the chunker (tokenize + store tokens +
plan windows) and without it (text and jobs only), on SQLite and on PostgreSQL. The
documents are prose from the Python documentation (benchmarks/corpus.py; `apt-get install
python3.11-doc`). Timings are wall clock on a shared machine: compare rows of one run.

--shared-texts (issue 17): 5,000 documents of which half share texts, under distinct ids:
2,500 unique texts (about 2,000 characters each, cut at paragraphs from the same prose),
submitted first, then 2,500 documents that each repeat one of them, as a second
submission into the same store. Rows give documents/s for each half and for all 5,000, and
what the duplicate half added to the store: new jobs and new texts (0 expected: a
document whose text is stored costs a row, no work). The same script runs under an
earlier release's Python (`--against`; its docqa is what that venv installed): there a
texts table is the `documents` table of schema <= 0005, and its report has no `texts`
fields, so the store's own counts are what the rows compare. With --rounds the two
codes' runs alternate (this, against, this, against, ...), so machine noise hits both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TINY = ROOT / "tests" / "fixtures" / "tiny-distilbert-qa"
PG = dict(pg_host="127.0.0.1", pg_port=5432, pg_user=os.environ.get("PGUSER", "postgres"))


def shared_workload(n_texts: int, piece_chars: int = 2_000) -> list[str]:
    """`n_texts` distinct texts of at least `piece_chars` characters: the corpus's prose
    (every page, path order) cut at paragraph ends."""
    from corpus import all_prose

    pieces: list[str] = []
    for _name, _title, prose, _headings in all_prose():
        piece: list[str] = []
        for paragraph in (p for p in prose.split("\n\n") if p.strip()):
            piece.append(paragraph)
            if sum(len(p) for p in piece) >= piece_chars:
                pieces.append("\n\n".join(piece))
                piece = []
    pieces = list(dict.fromkeys(pieces))  # distinct
    if len(pieces) < n_texts:
        raise SystemExit(f"asked for {n_texts} texts, the corpus gives {len(pieces)}")
    return pieces[:n_texts]


def _store_tables(engine) -> tuple[str, str]:
    """(texts table, tokens table): `texts` / `text_tokens` from schema 0006, before that
    `documents` (one row per distinct text) / `document_tokens`."""
    from sqlalchemy import inspect

    names = set(inspect(engine).get_table_names())
    return ("texts", "text_tokens") if "texts" in names else ("documents", "document_tokens")


def _store_counts(engine) -> dict:
    from sqlalchemy import text

    texts, _tokens = _store_tables(engine)
    with engine.connect() as conn:
        return {name: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for name, table in (("texts", texts), ("jobs", "jobs"))}


def _shared(config: dict, repo, engine, chunker) -> dict:
    """The --shared-texts configuration: unique texts, then documents repeating them."""
    from corpus import select_documents

    from docqa.core.params import AnswerParams
    from docqa.producer.documents import SourceDocument
    from docqa.producer.submit import submit
    from docqa.storage import db

    texts = shared_workload(config["unique"])
    questions = list(select_documents(1, 2)[0].questions)
    halves = {
        "unique": [SourceDocument(source=f"u{i}", text=t, external_id=f"u{i}") for i, t in enumerate(texts)],
        "duplicate": [SourceDocument(source=f"d{i}", text=t, external_id=f"d{i}") for i, t in enumerate(texts)],
    }
    row = {"name": config["name"], "code": f"docqa {db.SCHEMA_HEAD}", "store": config["store"],
           "chunk": config["chunk"], "characters": sum(len(t) for t in texts)}
    total_s = 0.0
    for half, inputs in halves.items():
        before = _store_counts(engine)
        started = time.perf_counter()
        report = submit(inputs, questions, repo=repo, model=config["model"], revision=None, params=AnswerParams(),
                        chunker=None if chunker is None else (lambda: chunker))
        seconds = time.perf_counter() - started
        after = _store_counts(engine)
        total_s += seconds
        row.update({
            f"{half}_documents": report.documents, f"{half}_seconds": round(seconds, 3),
            f"{half}_documents_per_s": round(report.documents / seconds, 1),
            f"{half}_new_jobs": after["jobs"] - before["jobs"], f"{half}_new_texts": after["texts"] - before["texts"],
            # What the submission itself reported (a release without `texts` fields: None).
            f"{half}_report_new_jobs": report.new_jobs, f"{half}_report_new_texts": getattr(report, "new_texts", None),
        })
    documents = sum(len(inputs) for inputs in halves.values())
    counts = _store_counts(engine)
    row.update({"documents": documents, "seconds": round(total_s, 3),
                "documents_per_s": round(documents / total_s, 1), "texts": counts["texts"], "jobs": counts["jobs"]})
    return row


def _one(config: dict) -> dict:
    """Run one configuration in this process; return its figures."""
    sys.path.insert(0, str(HERE))
    from common import peak_rss_mib
    from corpus import select_documents
    from sqlalchemy import text

    from docqa.core.params import AnswerParams
    from docqa.producer.chunking import Chunker
    from docqa.producer.documents import SourceDocument
    from docqa.producer.submit import submit
    from docqa.storage.db import make_engine, upgrade
    from docqa.storage.repository import Repository

    if config["store"] == "sqlite":
        path = Path(config["tmp"]) / f"{config['name']}.db"
        for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):  # an earlier round's
            stale.unlink(missing_ok=True)
        url = f"sqlite:///{path}"
        upgrade(url)
    else:
        from services import fresh_database

        url = fresh_database(PG, f"docqa_bench_producer_{config['name'].replace('-', '_')}")
    engine = make_engine(url)
    repo = Repository.from_engine(engine)
    if config.get("shared"):
        chunker = Chunker.load(config["model"]) if config["chunk"] else None
        row = _shared(config, repo, engine, chunker)
        engine.dispose()
        return dict(row, peak_rss_mib=round(peak_rss_mib()))
    if config.get("big"):
        docs = select_documents(60, 2)
        prose = "\n\n".join(d.text for d in docs)
        big = (prose * (5_000_000 // len(prose) + 1))[:5_000_000]
        inputs = [SourceDocument(source="big", text=big)]
        questions = list(docs[0].questions)
    else:
        docs = select_documents(config["docs"], 2)
        inputs = [SourceDocument(source=d.name, text=d.text) for d in docs]
        questions = list(docs[0].questions)
    chunker = None
    load_s = 0.0
    if config["chunk"]:
        started = time.perf_counter()
        chunker = Chunker.load(config["model"])
        load_s = time.perf_counter() - started
    rss_before = peak_rss_mib()
    started = time.perf_counter()
    report = submit(inputs, questions, repo=repo, model=config["model"], revision=None, params=AnswerParams(),
                    chunker=None if chunker is None else (lambda: chunker))
    seconds = time.perf_counter() - started
    tokens_table = _store_tables(engine)[1]
    with engine.connect() as conn:
        token_bytes, n_tokens = conn.execute(text("SELECT coalesce(sum(length(data)), 0), coalesce(sum(n_tokens), 0) "
                                                  f"FROM {tokens_table}")).one()
        plan_bytes, plans, windows = conn.execute(text(
            "SELECT coalesce(sum(length(windows)), 0), count(*), coalesce(sum(length(windows) - "
            "length(replace(windows, '],[', ''))), 0) FROM job_plans")).one()
    engine.dispose()
    chars = sum(len(d.text) for d in inputs)
    return {
        "name": config["name"], "store": config["store"], "chunk": config["chunk"], "documents": report.documents,
        "jobs": report.jobs, "characters": chars, "seconds": round(seconds, 3),
        "documents_per_s": round(report.documents / seconds, 1),
        "characters_per_s": round(chars / seconds),
        "tokens": int(n_tokens), "tokens_per_s": round(n_tokens / seconds) if n_tokens else None,
        "token_bytes": int(token_bytes), "bytes_per_token": round(token_bytes / n_tokens, 2) if n_tokens else None,
        "plans": int(plans), "plan_bytes_per_job": round(plan_bytes / plans) if plans else None,
        "tokenizer_load_s": round(load_s, 2),
        "peak_rss_mib": round(peak_rss_mib()), "rss_before_submit_mib": round(rss_before),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200, help="documents per configuration (default 200)")
    parser.add_argument("--model", default=str(TINY), help="model whose tokenizer chunks (default: the tiny test model)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--no-big", action="store_true", help="skip the 5,000,000-character document")
    parser.add_argument("--shared-texts", action="store_true",
                        help="issue 17: unique texts, then as many documents repeating them (see above)")
    parser.add_argument("--unique", type=int, default=2500, help="with --shared-texts: unique texts (default 2500)")
    parser.add_argument("--no-chunk", action="store_true", help="only the configurations without the chunker")
    parser.add_argument("--against", metavar="PYTHON",
                        help="also run every configuration under this Python (an earlier release's venv)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each configuration per code (default 1)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_one(json.loads(args.one))))
        return 0
    tmp = tempfile.mkdtemp(prefix="docqa-bench-producer-")
    if os.path.exists(args.model):  # the runs start in `tmp`
        args.model = os.path.abspath(args.model)
    configs = []
    for store in ("sqlite",) + (() if args.no_postgres else ("postgresql",)):
        for chunk in (False,) if args.no_chunk else (False, True):
            if args.shared_texts:
                configs.append(dict(name=f"{store}-shared-{'chunked' if chunk else 'plain'}", store=store,
                                    chunk=chunk, shared=True, unique=args.unique, model=args.model, tmp=tmp))
                continue
            configs.append(dict(name=f"{store}-{'chunked' if chunk else 'plain'}", store=store, chunk=chunk,
                                docs=args.docs, model=args.model, tmp=tmp))
    if not args.no_big and not args.shared_texts and not args.no_chunk:
        configs.append(dict(name="sqlite-big-chunked", store="sqlite", chunk=True, big=True, model=args.model, tmp=tmp))
    pythons = [sys.executable] + ([args.against] if args.against else [])
    rows = []
    for config in configs:
        for round_ in range(args.rounds):
            for python in pythons:  # alternating, so noise hits each code alike
                # Each Python imports the docqa its venv installed (sys.path starts with
                # benchmarks/, not a checkout's root); the runs start in `tmp`.
                out = subprocess.run([python, str(Path(__file__).resolve()), "--one", json.dumps(config)],
                                     capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), cwd=tmp)
                if out.returncode != 0:
                    print(out.stderr[-3000:], file=sys.stderr)
                    return 1
                rows.append(dict(json.loads(out.stdout.strip().splitlines()[-1]), round=round_ + 1))
                print(json.dumps(rows[-1]), flush=True)
    if args.shared_texts:
        cols = ["name", "code", "round", "documents_per_s", "unique_documents_per_s", "duplicate_documents_per_s",
                "unique_new_jobs", "unique_new_texts", "duplicate_new_jobs", "duplicate_new_texts", "texts", "jobs",
                "peak_rss_mib"]
    else:
        cols = ["name", "documents", "jobs", "seconds", "documents_per_s", "tokens_per_s", "bytes_per_token",
                "plan_bytes_per_job", "tokenizer_load_s", "peak_rss_mib"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
