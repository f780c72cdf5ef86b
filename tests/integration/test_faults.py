"""Distributed mode under faults, with real Redis, PostgreSQL and `docqa worker` processes.

Each test asserts what an operator needs: every job answered exactly once (one answer
row per job and rank), nothing left queued or running, and recovery within the bound the
defaults promise. Tests that stop a service start their own instance on another port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import text
from support import (TINY_MODEL, OwnPostgres, OwnRedis, answered_once, docqa, held_process, hold_env, model_queue,
                     open_repo, pool_of, postgres_bin, sitecustomize_env, wait_for, wait_ready, write_corpus)

QUESTION = "Where does the river flow?"


def report(fault: str, repo, n_jobs: int, seconds: float | None) -> None:
    """One line per fault for the record (shown with pytest -s): submitted / answered /
    duplicated / stranded, and the time to recover."""
    with repo.engine.connect() as conn:
        answered = conn.execute(text("SELECT count(DISTINCT job_id) FROM answers")).scalar_one()
        duplicated = conn.execute(
            text("SELECT count(*) FROM (SELECT job_id FROM answers GROUP BY job_id, rank HAVING count(*) > 1) d")
        ).scalar_one()
        recomputed, highest = conn.execute(text("SELECT count(*) FILTER (WHERE attempts > 1), max(attempts) FROM jobs")
                                           if repo.engine.dialect.name == "postgresql" else
                                           text("SELECT sum(attempts > 1), max(attempts) FROM jobs")).one()
    counts = repo.counts()
    stranded = counts["queued"] + counts["running"]
    took = "-" if seconds is None else f"{seconds:.1f} s"
    print(f"\nFAULT {fault}: submitted {n_jobs}, answered {answered}, duplicated {duplicated}, "
          f"stranded {stranded}, failed {counts['failed']}, recomputed {recomputed or 0} (highest attempts "
          f"{highest}), recovered in {took}")


def test_a_message_of_another_store_is_refused_and_left_for_its_workers(distributed_env, workers, tmp_path):
    import redis

    from docqa.core.settings import Settings
    from docqa.worker.app import make_celery, send_jobs

    env = distributed_env
    repo = open_repo(env["DOCQA_DATABASE_URL"])
    from docqa.storage.db import ensure_schema

    ensure_schema(repo.engine)
    docs = tmp_path / "docs"
    write_corpus(docs, 2, seed=3, sizes=(30,))
    # Jobs stored by a producer, one of them also named by another store's message.
    sub = docqa(["submit", str(docs), "-q", QUESTION], env)
    assert sub.returncode == 0, sub.stderr
    client = redis.Redis.from_url(env["DOCQA_BROKER_URL"])
    client.delete(model_queue(env))  # only the foreign message is on the queue
    app = make_celery(Settings(broker_url=env["DOCQA_BROKER_URL"], queue=env["DOCQA_QUEUE"]))
    send_jobs(app, [1], model_queue(env), "another-store")
    env_no_reconcile = dict(env, DOCQA_RECONCILE_SECONDS="3600")
    workers.env = env_no_reconcile
    workers.start(1)
    wait_for(lambda: "refused a message for store another-store" in workers.logs(), timeout=90,
             what="the refusal in the log", logs=workers.logs)
    time.sleep(1)
    assert repo.counts()["queued"] == 2, "a foreign message must not make this store's jobs run"
    assert client.llen(model_queue(env)) + _unacked(client) >= 1, "the message was dropped"


def _unacked(client) -> int:
    return int(client.hlen("unacked"))


def test_jobs_with_no_message_are_sent_again_without_a_command(distributed_env, workers, tmp_path):
    """A producer killed between storing jobs and sending them, and a broker that lost its
    messages (queue deleted, as a Redis restart without persistence does): the reconciler
    sends them again within reconcile_seconds."""
    import redis

    from docqa.core.params import AnswerParams

    env = dict(distributed_env, DOCQA_RECONCILE_SECONDS="5")
    repo = open_repo(env["DOCQA_DATABASE_URL"])
    from docqa.storage.db import ensure_schema

    ensure_schema(repo.engine)
    # "Killed producer": jobs stored, no message ever sent.
    for i in range(12):
        doc = repo.add_document(f"The river number {i} flows north to the sea past the old mill.")
        repo.add_jobs(doc.id, [QUESTION], model=env["DOCQA_MODEL"], revision=None, params=AnswerParams())
    # "Lost broker": jobs sent, then the queue vanishes before any worker runs.
    docs = tmp_path / "docs"
    write_corpus(docs, 12, seed=4, sizes=(30,))
    sub = docqa(["submit", str(docs), "-q", QUESTION], env)
    assert sub.returncode == 0, sub.stderr
    redis.Redis.from_url(env["DOCQA_BROKER_URL"]).delete(model_queue(env))
    workers.env = env
    workers.start(1)
    started = time.monotonic()
    wait_for(lambda: repo.counts()["done"] == 24, timeout=120, what="24 stranded jobs done", logs=workers.logs)
    report("killed producer (12 never sent) + broker lost its queue (12), reconcile 5 s", repo, 24,
           time.monotonic() - started)
    answered_once(repo, 24)
    assert "reconciler: sent" in workers.logs(tail=None)
    assert time.monotonic() - started < 60


def test_whole_worker_killed_its_jobs_are_answered_by_another_within_a_minute(distributed_env, workers, tmp_path):
    env = dict(distributed_env, DOCQA_WORKER_BATCH_JOBS="8", DOCQA_LEASE_SECONDS="6")
    inject = tmp_path / "inject"
    workers.env = hold_env(env, inject)
    docs = tmp_path / "docs"
    write_corpus(docs, 24, seed=6, sizes=(2000,))
    workers.start(2)
    wait_ready(workers, 2)
    (inject / "hold").touch()  # the first batch to start stays mid-run until its worker is killed
    sub = docqa(["submit", str(docs), "-q", QUESTION], env)
    assert sub.returncode == 0, sub.stderr
    repo = open_repo(env["DOCQA_DATABASE_URL"])
    holder = held_process(inject, logs=workers.logs)
    victim = next(p for p in workers.procs if holder in pool_of(p.pid))
    os.killpg(victim.pid, signal.SIGKILL)  # the whole worker: main process and pool
    killed_at = time.monotonic()
    wait_for(lambda: repo.counts()["done"] == 24, timeout=150, what="24 jobs done", logs=workers.logs)
    recovered = time.monotonic() - killed_at
    report("whole worker (process group) SIGKILLed mid-batch, lease 6 s", repo, 24, recovered)
    answered_once(repo, 24)
    assert recovered < 60 + 30, f"took {recovered:.0f} s"  # the bound, plus slack for a busy host


KILLER = '''
import os
from docqa.worker import engine as _engine

_run = _engine.Engine.run


def _run_or_die(self, items, **kwargs):
    if any("KILLME" in item.text for item in items):
        os._exit(137)  # what the OOM killer does to the process
    return _run(self, items, **kwargs)


_engine.Engine.run = _run_or_die
'''


def test_a_job_that_kills_its_process_fails_alone(distributed_env, workers, tmp_path):
    """Fault injection (a real process death, triggered by one document): the innocent
    batch-mates are answered, only the killer ends failed, saying why."""
    env = sitecustomize_env(dict(distributed_env, DOCQA_WORKER_BATCH_JOBS="16", DOCQA_LEASE_SECONDS="4"),
                            tmp_path / "inject", KILLER)
    docs = tmp_path / "docs"
    write_corpus(docs, 15, seed=7, sizes=(40,))
    (docs / "killer.txt").write_text("This document says KILLME to the worker that reads it.")
    sub = docqa(["submit", str(docs), "-q", QUESTION], dict(distributed_env, DOCQA_WORKER_BATCH_JOBS="16"))
    assert sub.returncode == 0, sub.stderr
    workers.env = env
    workers.start(1)
    repo = open_repo(env["DOCQA_DATABASE_URL"])
    wait_for(lambda: repo.counts()["done"] + repo.counts()["failed"] == 16, timeout=240,
             what="16 jobs finished", logs=workers.logs)
    report("one job kills its process (os._exit), batch of 16, lease 4 s", repo, 16, None)
    counts = repo.counts()
    assert counts == {"queued": 0, "running": 0, "done": 15, "failed": 1}, counts
    (failure,) = repo.failures()
    assert "killer.txt" in failure.document
    assert "alone" in failure.error and "brings its worker down" in failure.error


def test_a_worker_that_cannot_start_exits_non_zero_with_the_reason(distributed_env, tmp_path):
    bad_model = dict(distributed_env, DOCQA_MODEL=str(tmp_path / "no-such-model"))
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "docqa", "worker"], env=bad_model, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1 and "cannot start: model:" in out.stderr, out.stderr[-2000:]
    assert time.monotonic() - started < 60
    # A model whose weights are cut short fails in the forked check, with the loader's reason.
    cut = tmp_path / "cut-model"
    shutil.copytree(TINY_MODEL, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    out = subprocess.run([sys.executable, "-m", "docqa", "worker"], env=dict(distributed_env, DOCQA_MODEL=str(cut)),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "cannot start: model:" in out.stderr, out.stderr[-2000:]
    bad_store = dict(distributed_env, DOCQA_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:9/none")
    out = subprocess.run([sys.executable, "-m", "docqa", "worker"], env=bad_store, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 4 and "cannot start: store:" in out.stderr, out.stderr[-2000:]  # exits.UNREACHABLE
    # The plain Celery entry point checks the same things before consuming.
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "docqa.worker.app", "worker"],
        env=bad_model, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode != 0 and "docqa worker cannot start: model:" in out.stdout + out.stderr


def test_submit_refuses_a_sqlite_store_with_a_broker(distributed_env, tmp_path):
    docs = tmp_path / "docs"
    write_corpus(docs, 1, seed=8, sizes=(20,))
    env = dict(distributed_env, DOCQA_DATABASE_URL=f"sqlite:///{tmp_path / 'local.db'}")
    out = docqa(["submit", str(docs), "-q", QUESTION], env)
    assert out.returncode == 2 and "SQLite file" in out.stderr and "--shared-sqlite" in out.stderr
    assert not (tmp_path / "local.db").exists(), "nothing is stored when the submit is refused"


def test_the_worker_decides_its_batch_and_retry_and_follow_work(distributed_env, workers, tmp_path):
    env = distributed_env
    docs = tmp_path / "docs"
    write_corpus(docs, 40, seed=9, sizes=(20,))
    # The producer puts all 40 jobs in one message; the worker takes 16 at a time.
    sub = docqa(["submit", str(docs), "-q", QUESTION], dict(env, DOCQA_WORKER_BATCH_JOBS="1000",
                                                            DOCQA_BATCH_WINDOWS="1000"))
    assert sub.returncode == 0 and "enqueued in 1 message;" in sub.stdout, sub.stdout
    submission = int(sub.stdout.split("submission ")[1].split(":")[0])
    workers.env = dict(env, DOCQA_WORKER_BATCH_JOBS="16")
    workers.start(1)
    follow = docqa(["results", "--submission", str(submission), "--follow", "--interval", "0.2"], env, timeout=180,
                   process=True)  # a process: it waits by design, and the timeout bounds it
    assert follow.returncode == 0, follow.stderr
    assert len(follow.stdout.splitlines()) == 40
    claimed = [int(x) for x in __import__("re").findall(r"claimed (\d+)", workers.logs(tail=None))]
    assert claimed and max(claimed) <= 16, claimed
    repo = open_repo(env["DOCQA_DATABASE_URL"])
    answered_once(repo, 40)
    # Retry: two jobs marked failed (as a crash would leave them) are queued again and answered.
    with repo.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'failed', error = 'simulated failure' WHERE id IN (1, 2)"))
    assert docqa(["results", "--submission", str(submission), "--follow"], env).returncode == 1
    retry = docqa(["retry", "--submission", str(submission)], env)
    assert retry.returncode == 0 and "2 failed jobs queued again" in retry.stdout, retry.stdout
    wait_for(lambda: repo.counts()["done"] == 40, timeout=60, what="retried jobs done", logs=workers.logs)
    assert repo.counts()["failed"] == 0


@pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL server binaries (initdb, pg_ctl) are not installed")
def test_a_database_outage_loses_no_message_and_strands_no_job(redis_url, tmp_path):
    """PostgreSQL stopped for 15 s under running workers: no message dropped, no job left
    running or queued, every job answered once, work resumed within 30 s of its return."""
    from support import TINY_MODEL, Workers

    pg = OwnPostgres()
    pg.start()
    try:
        env = dict(os.environ)
        env.update(
            DOCQA_DATABASE_URL=pg.url, DOCQA_BROKER_URL=redis_url, DOCQA_QUEUE=f"docqa-outage-{uuid.uuid4().hex[:8]}",
            DOCQA_MODEL=TINY_MODEL, DOCQA_DEVICE="cpu", DOCQA_LEASE_SECONDS="6", DOCQA_RECONCILE_SECONDS="10",
            DOCQA_WORKER_BATCH_JOBS="4", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
        )
        workers = Workers(env, tmp_path)
        docs = tmp_path / "docs"
        write_corpus(docs, 60, seed=10, sizes=(400, 900))
        sub = docqa(["submit", str(docs), "-q", QUESTION], env)
        assert sub.returncode == 0, sub.stderr
        repo = open_repo(pg.url)
        try:
            workers.start(2)
            wait_for(lambda: repo.counts()["done"] >= 4, timeout=120, what="first jobs done", logs=workers.logs)
            pg.stop()
            time.sleep(15)
            pg.start()
            back = time.monotonic()
            before = _safe_done(repo)
            wait_for(lambda: _safe_done(repo) > before, timeout=60, what="work to resume", logs=workers.logs)
            print(f"\nFAULT PostgreSQL outage: work resumed {time.monotonic() - back:.1f} s after the database returned")
            assert time.monotonic() - back < 30
            wait_for(lambda: repo.counts()["done"] > 0 and _safe_done(repo) == 60, timeout=180,
                     what="60 jobs done after the outage", logs=workers.logs)
            assert time.monotonic() - back < 150
            report("PostgreSQL stopped 15 s under 2 workers", repo, 60, time.monotonic() - back)
            answered_once(repo, 60)
            # The store's outage was nobody's fault: no job ran twice, none counts as a suspect.
            with repo.engine.connect() as conn:
                attempts = conn.execute(text("SELECT attempts, count(*) FROM jobs GROUP BY attempts")).all()
            assert dict(attempts) == {1: 60}, attempts
            assert all(p.poll() is None for p in workers.procs), "a worker died in the outage"
        finally:
            workers.stop()
            repo.engine.dispose()
    finally:
        pg.remove()


def _safe_done(repo) -> int:
    try:
        return repo.counts()["done"]
    except Exception:
        return -1


@pytest.mark.skipif(__import__("shutil").which("redis-server") is None, reason="redis-server is not installed")
def test_a_broker_restarted_without_persistence_loses_no_job(distributed_env, tmp_path):
    """Redis killed under running workers and started again empty (no persistence): the
    workers reconnect, the reconciler re-sends what the broker lost, every job answered once."""
    from support import Workers

    own = OwnRedis(tmp_path)
    own.start()
    env = dict(distributed_env, DOCQA_BROKER_URL=own.url, DOCQA_RECONCILE_SECONDS="5", DOCQA_WORKER_BATCH_JOBS="4")
    workers = Workers(env, tmp_path)
    repo = open_repo(env["DOCQA_DATABASE_URL"])
    try:
        docs = tmp_path / "docs"
        write_corpus(docs, 40, seed=12, sizes=(300, 800))
        workers.start(2)
        sub = docqa(["submit", str(docs), "-q", QUESTION], env)
        assert sub.returncode == 0, sub.stderr
        wait_for(lambda: repo.counts()["done"] >= 4, timeout=120, what="first jobs done", logs=workers.logs)
        own.stop()  # every queued message is gone with it
        time.sleep(3)
        own.start()
        back = time.monotonic()
        wait_for(lambda: repo.counts()["done"] == 40, timeout=180, what="40 jobs done after the broker restart",
                 logs=workers.logs)
        report("Redis killed and restarted empty under 2 workers, reconcile 5 s", repo, 40, time.monotonic() - back)
        answered_once(repo, 40)
        assert all(p.poll() is None for p in workers.procs), "a worker died with the broker"
    finally:
        workers.stop()
        own.stop()


def test_a_producer_stopped_with_sigterm_leaves_every_stored_document_with_its_jobs_sent(distributed_env, tmp_path):
    """`docqa submit` reading a JSONL stream (a FIFO) is told to stop (SIGTERM) while it waits
    for more: the documents it stored have their jobs, on the broker, and it says how to go on."""
    import redis

    env = distributed_env
    fifo = tmp_path / "stream.jsonl"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "docqa.cli", "submit", str(fifo), "-q", QUESTION], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with open(fifo, "w", encoding="utf-8") as stream:  # opens once the producer opens its end
            for i in range(3):  # fewer than a group: their jobs wait for the group to fill
                line = {"id": f"stream-{uuid.uuid4().hex}", "text": f"The mill {i} stands by the river."}
                stream.write(json.dumps(line) + "\n")
            stream.flush()
            repo = open_repo(env["DOCQA_DATABASE_URL"])
            wait_for(lambda: _safe_count(repo, "documents") == 3, timeout=60, what="3 documents stored")
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "every document stored so far has its jobs" in err
    queued = repo.queued_job_ids()
    assert len(queued) == 3 and repo.counts()["queued"] == 3
    depth = redis.Redis.from_url(env["DOCQA_BROKER_URL"]).llen(model_queue(env))
    assert depth >= 1, "the jobs were made but never sent"


def test_a_producer_whose_database_goes_away_says_so_and_the_same_command_completes_it(redis_url, tmp_path):
    """PostgreSQL stops while `docqa submit` reads a stream: it exits 4 with one sentence
    (no traceback) that says what to do; the same command, once the store is back, leaves
    every document with its job."""
    from support import TINY_MODEL

    pg = OwnPostgres()
    pg.start()
    try:
        env = dict(os.environ, DOCQA_DATABASE_URL=pg.url, DOCQA_BROKER_URL=redis_url,
                   DOCQA_QUEUE=f"docqa-producer-outage-{uuid.uuid4().hex[:8]}", DOCQA_MODEL=TINY_MODEL,
                   HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        lines = [json.dumps({"id": f"doc-{i}", "text": f"The mill {i} stands by the river."}) + "\n" for i in range(4)]
        fifo = tmp_path / "stream.jsonl"
        os.mkfifo(fifo)
        proc = subprocess.Popen([sys.executable, "-m", "docqa.cli", "submit", str(fifo), "-q", QUESTION], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            with open(fifo, "w", encoding="utf-8") as stream:
                stream.writelines(lines[:3])
                stream.flush()
                repo = open_repo(pg.url)
                wait_for(lambda: _safe_count(repo, "documents") == 3, timeout=60, what="3 documents stored")
                repo.engine.dispose()
                pg.stop()
                stream.write(lines[3])  # the next document finds the store gone
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 4, err
        assert "failed during the submission" in err and "Run the same command again" in err, err
        assert "Traceback" not in err, err
        pg.start()
        whole = tmp_path / "stream-again.jsonl"
        whole.write_text("".join(lines), encoding="utf-8")
        again = docqa(["submit", str(whole), "-q", QUESTION], env)
        assert again.returncode == 0, again.stderr
        repo = open_repo(pg.url)
        try:
            assert _safe_count(repo, "documents") == 4
            assert repo.counts()["queued"] == 4  # each document has its job, none twice
        finally:
            repo.engine.dispose()
    finally:
        pg.remove()


def _safe_count(repo, table: str) -> int:
    try:
        with repo.engine.connect() as conn:
            return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
    except Exception:
        return -1
