"""Producer benchmark: what chunking at submit costs (documents/s, tokens/s, bytes per token
stored) and whether a 5,000,000-character document submits within memory.

    . .venv/bin/activate
    python benchmarks/producer.py                       # 200 documents x 2 questions, SQLite + PostgreSQL
    python benchmarks/producer.py --docs 50 --no-postgres --no-big

Each configuration runs in its own subprocess (peak RSS is per configuration) against a
fresh store: `submit` of the same documents with the chunker (tokenize + store tokens +
plan windows) and without it (text and jobs only), on SQLite and on PostgreSQL. The
documents are prose from the Python documentation (benchmarks/corpus.py; `apt-get install
python3.11-doc`). Timings are wall clock on a shared machine: compare rows of one run.
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
        url = f"sqlite:///{config['tmp']}/{config['name']}.db"
        upgrade(url)
    else:
        from services import fresh_database

        url = fresh_database(PG, f"docqa_bench_producer_{config['name'].replace('-', '_')}")
    engine = make_engine(url)
    repo = Repository.from_engine(engine)
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
    with engine.connect() as conn:
        token_bytes, n_tokens = conn.execute(text("SELECT coalesce(sum(length(data)), 0), coalesce(sum(n_tokens), 0) "
                                                  "FROM document_tokens")).one()
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
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_one(json.loads(args.one))))
        return 0
    tmp = tempfile.mkdtemp(prefix="docqa-bench-producer-")
    configs = []
    for store in ("sqlite",) + (() if args.no_postgres else ("postgresql",)):
        for chunk in (False, True):
            configs.append(dict(name=f"{store}-{'chunked' if chunk else 'plain'}", store=store, chunk=chunk,
                                docs=args.docs, model=args.model, tmp=tmp))
    if not args.no_big:
        configs.append(dict(name="sqlite-big-chunked", store="sqlite", chunk=True, big=True, model=args.model, tmp=tmp))
    rows = []
    for config in configs:
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(config)], capture_output=True, text=True,
                             env=dict(os.environ, HF_HUB_OFFLINE="1"))
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    cols = ["name", "documents", "jobs", "seconds", "documents_per_s", "tokens_per_s", "bytes_per_token",
            "plan_bytes_per_job", "tokenizer_load_s", "peak_rss_mib"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
