"""Load test of distributed mode: N jobs through W real `docqa worker` processes.

Real PostgreSQL (a database of its own, dropped afterwards) and Redis (a db number of its
own, flushed), the tiny fixture model (the point is the queue, the store and the
workers, not the model). Checks exact counts (every job done, one answer row per job and
rank, nothing queued or running) and reports: submit rate, answer rate, and the time of
`docqa status` at that size.

    python benchmarks/load.py --jobs 20000 --workers 2     # about 6 minutes on 2 cores

Writes the figures as JSON to stdout (and to --out if given).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny-distilbert-qa"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20000, help="jobs (one question per document)")
    parser.add_argument("--workers", type=int, default=2, help="docqa worker processes (concurrency 1 each)")
    parser.add_argument("--pg", default="host=127.0.0.1 dbname=test user=postgres", help="admin libpq DSN")
    parser.add_argument("--redis-db", type=int, default=13, help="Redis db number to use (flushed)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    import psycopg
    import redis
    from sqlalchemy import create_engine, text

    name = f"docqa_load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
    user = psycopg.conninfo.conninfo_to_dict(args.pg).get("user", "postgres")
    url = f"postgresql+psycopg://{user}@127.0.0.1/{name}"
    broker = f"redis://127.0.0.1:6379/{args.redis_db}"
    redis.Redis.from_url(broker).flushdb()
    env = dict(os.environ, DOCQA_DATABASE_URL=url, DOCQA_BROKER_URL=broker, DOCQA_MODEL=str(TINY),
               DOCQA_DEVICE="cpu", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    docqa = [sys.executable, "-m", "docqa"]
    figures: dict = {"jobs": args.jobs, "workers": args.workers}
    workers: list[subprocess.Popen] = []
    folder = Path(tempfile.mkdtemp(prefix="docqa-load-"))
    try:
        data = folder / "docs.jsonl"
        with data.open("w", encoding="utf-8") as fh:
            for i in range(args.jobs):
                fh.write(json.dumps({"id": f"d{i}", "text": f"Document {i}: the river flows north past "
                                     f"mill number {i} and reaches the sea at port {i % 97}."}) + "\n")
        started = time.perf_counter()
        sub = subprocess.run([*docqa, "submit", str(data), "-q", "Where does the river flow?"], env=env,
                             capture_output=True, text=True)
        if sub.returncode != 0:
            raise SystemExit(sub.stderr)
        figures["submit_seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        for k in range(args.workers):
            log = open(folder / f"worker{k}.log", "wb")
            workers.append(subprocess.Popen([*docqa, "worker", "--concurrency", "1", "--hostname", f"load{k}@%h"],
                                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        engine = create_engine(url)
        status_times = []
        while True:
            with engine.connect() as conn:
                open_jobs = conn.execute(text("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")).scalar()
            if open_jobs == 0:
                break
            t = time.perf_counter()
            subprocess.run([*docqa, "status", "--format", "json"], env=env, capture_output=True, check=True)
            status_times.append(time.perf_counter() - t)
            time.sleep(5)
        figures["answer_seconds"] = round(time.perf_counter() - started, 1)
        figures["jobs_per_second"] = round(args.jobs / figures["answer_seconds"], 1)
        t = time.perf_counter()
        status = subprocess.run([*docqa, "status", "--format", "json"], env=env, capture_output=True, text=True,
                                check=True)
        figures["status_seconds_at_end"] = round(time.perf_counter() - t, 2)
        figures["status_seconds_while_running_max"] = round(max(status_times), 2) if status_times else None
        figures["counts"] = json.loads(status.stdout)["counts"]
        with engine.connect() as conn:
            figures["jobs_with_answers"] = conn.execute(text("SELECT count(DISTINCT job_id) FROM answers")).scalar()
            figures["duplicate_answer_rows"] = conn.execute(text(
                "SELECT count(*) FROM (SELECT job_id, rank FROM answers GROUP BY job_id, rank HAVING count(*) > 1) d"
            )).scalar()
        engine.dispose()
        figures["exact"] = (figures["counts"] == {"queued": 0, "running": 0, "done": args.jobs, "failed": 0}
                            and figures["jobs_with_answers"] == args.jobs and figures["duplicate_answer_rows"] == 0)
    finally:
        import signal

        for p in workers:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in workers:
            p.wait(timeout=60)
        with psycopg.connect(args.pg, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        redis.Redis.from_url(broker).flushdb()
    text_out = json.dumps(figures, indent=1)
    print(text_out)
    if args.out:
        Path(args.out).write_text(text_out + "\n")
    return 0 if figures.get("exact") else 1


if __name__ == "__main__":
    sys.exit(main())
