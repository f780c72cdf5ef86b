"""GET /v1/answers throughput on a store of N answers (PostgreSQL), through a real socket.

Builds a PostgreSQL database of its own with N answers (bulk SQL, not the model), starts
`docqa serve` on it and reads pages of `--page` answers for `--seconds` seconds, walking
the cursor and starting over at the end, from one client over one keep-alive connection.
Reports requests/s and answers/s; the database is dropped afterwards.

    python benchmarks/http_answers.py --answers 100000 --page 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=100_000)
    parser.add_argument("--page", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--order", choices=["answer", "reference", "margin"], default="answer",
                        help="the order pages are read in (default answer: by answer id)")
    parser.add_argument("--pg", default="host=127.0.0.1 dbname=test user=postgres", help="admin libpq DSN")
    args = parser.parse_args()

    import httpx
    import psycopg
    from sqlalchemy import create_engine, text

    from docqa.core.params import AnswerParams
    from docqa.storage.db import upgrade

    name = f"docqa_http_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
    user = psycopg.conninfo.conninfo_to_dict(args.pg).get("user", "postgres")
    url = f"postgresql+psycopg://{user}@127.0.0.1/{name}"
    server = None
    try:
        upgrade(url)
        engine = create_engine(url)
        now = datetime.now(timezone.utc)
        params = AnswerParams()
        n_docs = args.answers  # one job, one answer per document
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO texts (id, sha256, text, length, created_at) "
                "SELECT g, md5(g::text) || md5((g + 1)::text), 'The river ' || g || ' flows north to the sea.', "
                "30, :now FROM generate_series(1, :n) g"), {"now": now, "n": n_docs})
            conn.execute(text(
                "INSERT INTO documents (id, text_id, key, version, latest, source, external_id, created_at) "
                "SELECT g, g, 'id:d' || g, 1, true, 'bench', 'd' || g, :now FROM generate_series(1, :n) g"),
                {"now": now, "n": n_docs})
            conn.execute(text(
                "INSERT INTO jobs (id, text_id, question, question_sha256, model, revision, params, "
                "params_digest, status, attempts, created_at, updated_at) "
                "SELECT g, g, 'Where does the river flow?', md5('q') || md5('q'), 'm', '', :p, :d, 'done', 1, :now, :now "
                "FROM generate_series(1, :n) g"), {"now": now, "n": n_docs, "p": params.canonical_json(),
                                                   "d": params.digest()})
            conn.execute(text(
                "INSERT INTO document_jobs (document_id, job_id) SELECT g, g FROM generate_series(1, :n) g"),
                {"n": n_docs})
            conn.execute(text(
                "INSERT INTO answers (job_id, rank, text, score, char_start, char_end, window_index, "
                "start_logit, end_logit, null_start_logit, null_end_logit, sort_margin, model, created_at) "
                "SELECT g, 0, 'north', 0.5 + (g % 997) / 2000.0, 0, 5, 0, 3.0 + (g % 1009) / 100.0, 2.0, 0.5, 0.25, "
                "3.0 + (g % 1009) / 100.0 + 2.0 - 0.5 - 0.25, 'm', :now FROM generate_series(1, :n) g"),
                {"now": now, "n": n_docs})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))  # as autovacuum would have by now on a store that grew
        engine.dispose()
        port = 8000 + os.getpid() % 1000
        env = dict(os.environ, DOCQA_DATABASE_URL=url)
        env.pop("DOCQA_API_TOKEN", None)
        server = subprocess.Popen([sys.executable, "-m", "docqa", "serve", "--port", str(port), "--log-level",
                                   "warning"], env=env)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(100):
                try:
                    client.get("/healthz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            requests = answers = 0
            cursor = None
            started = time.perf_counter()
            while time.perf_counter() - started < args.seconds:
                query = {"limit": args.page, "order": args.order}
                if cursor is not None:
                    query["cursor"] = cursor
                page = client.get("/v1/answers", params=query).json()
                requests += 1
                answers += len(page["answers"])
                cursor = page["next_cursor"]
            elapsed = time.perf_counter() - started
        figures = {"answers_in_store": args.answers, "page": args.page, "order": args.order,
                   "seconds": round(elapsed, 1),
                   "requests_per_second": round(requests / elapsed, 1),
                   "answers_per_second": round(answers / elapsed, 1)}
        print(json.dumps(figures, indent=1))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        with psycopg.connect(args.pg, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
