"""End to end with the real thing: Redis broker, PostgreSQL store, `docqa worker` processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import text

from support import docqa, held_process, hold_env, model_queue, open_repo, wait_for, wait_ready, write_corpus

pytestmark = [pytest.mark.services, pytest.mark.slow]

QUESTIONS = ["Where does the river flow?", "Who watched the tower?", "When was it built?"]


def q_args(questions=QUESTIONS) -> list[str]:
    return [a for q in questions for a in ("-q", q)]


def results_by_key(env: dict, database_url: str) -> dict:
    out = docqa(["results", "--format", "jsonl", "--database-url", database_url], env)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    return {(r["sha256"], r["question"], r["rank"]): r for r in rows}


def test_fifty_documents_through_redis_postgres_and_two_workers_equal_embedded(distributed_env, workers, tmp_path):
    env = distributed_env
    docs = tmp_path / "docs"
    write_corpus(docs, 50)
    workers.start(1)
    workers.start(1, via="celery")  # `celery -A docqa.worker.app worker` works as well as `docqa worker`
    # Both ready before the work arrives: on a busy host the one that loads its model first
    # can answer all 150 jobs before the other is up.
    wait_ready(workers, 2)
    sub = docqa(["submit", str(docs), *q_args()], env)
    assert sub.returncode == 0, sub.stderr
    assert "150 new" in sub.stdout

    repo = open_repo(env["DOCQA_DATABASE_URL"])
    wait_for(lambda: repo.counts()["done"] == 150, timeout=240, what="150 jobs done", logs=workers.logs)
    assert repo.counts() == {"queued": 0, "running": 0, "done": 150, "failed": 0}
    with repo.engine.connect() as conn:
        used = conn.execute(text("SELECT count(DISTINCT worker) FROM jobs")).scalar_one()
        answers = conn.execute(text("SELECT count(*) FROM answers")).scalar_one()
    assert used >= 2, "both worker processes should have taken jobs"
    assert answers == 150  # top_k 1: one answer per job

    # The same input through embedded mode gives the same answers, offsets and windows.
    embedded_url = f"sqlite:///{tmp_path / 'embedded.db'}"
    run = docqa(["run", str(docs), *q_args(), "--database-url", embedded_url], env)
    assert run.returncode == 0, run.stderr
    distributed = results_by_key(env, env["DOCQA_DATABASE_URL"])
    embedded = results_by_key(env, embedded_url)
    assert distributed.keys() == embedded.keys() and len(distributed) == 150
    texts = {p.read_bytes().decode("utf-8") for p in docs.iterdir()}  # keep \r\n as stored
    for key, d in distributed.items():
        e = embedded[key]
        for field in ("text", "char_start", "char_end", "window_index", "token_start", "token_end", "model"):
            assert d[field] == e[field], (key, field)
        assert d["score"] == pytest.approx(e["score"], rel=1e-4)
        assert any(t[d["char_start"] : d["char_end"]] == d["text"] for t in texts)

    # Submitting the same input again creates no job and no answer.
    before = set(distributed)
    again = docqa(["submit", str(docs), *q_args()], env)
    assert again.returncode == 0, again.stderr
    assert "(0 new, 150 in the store before)" in again.stdout
    assert repo.counts()["done"] == 150
    assert set(results_by_key(env, env["DOCQA_DATABASE_URL"])) == before

    # A job for a model no worker serves waits on that model's queue (it is not taken and
    # failed by a worker of another model), and status says why it waits.
    other = tmp_path / "other"
    write_corpus(other, 1, seed=99)
    # A mistyped model is refused before anything is stored: no worker serves it, none can load it.
    refused = docqa(["submit", str(other), "-q", "Where?", "--model", "acme/missing-model"], env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "no live worker serves model 'acme/missing-model'" in refused.stderr
    assert f"live workers serve: {env['DOCQA_MODEL']!r} (2 workers)" in refused.stderr
    assert repo.counts()["queued"] == 0
    sub = docqa(["submit", str(other), "-q", "Where?", "--model", "acme/missing-model", "--no-model-check"], env)
    assert sub.returncode == 0, sub.stderr
    time.sleep(3)
    assert repo.counts()["queued"] == 1 and repo.counts()["failed"] == 0
    status = docqa(["status"], env)
    assert "queued for model acme/missing-model: 1 job, and no live worker serves it" in status.stdout
    # Following that submission says at once why it waits, and what the live workers serve.
    sid = re.search(r"submission (\d+)", sub.stdout).group(1)
    # (A process: it follows until it is stopped. Read until it has said so, however long the
    # process takes to start on a loaded host.)
    said = tmp_path / "follow.err"
    with open(said, "w") as err_file:
        follow = subprocess.Popen([sys.executable, "-m", "docqa.cli", "results", "--submission", sid, "--follow"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=err_file)
    try:
        wait_for(lambda: "live workers serve" in said.read_text(), timeout=60, what="the follower's reason")
    finally:
        follow.terminate()
        follow.wait(timeout=10)
    err = said.read_text()
    assert "1 job for 'acme/missing-model' waits for a worker: no live worker serves that model" in err
    assert f"live workers serve: {env['DOCQA_MODEL']!r} (2 workers)" in err


def test_worker_killed_mid_batch_loses_no_job_and_duplicates_no_answer(distributed_env, workers, tmp_path):
    env = dict(distributed_env, DOCQA_WORKER_BATCH_JOBS="6")
    inject = tmp_path / "inject"
    workers.env = hold_env(env, inject)
    docs = tmp_path / "docs"
    write_corpus(docs, 24, seed=5, sizes=(300,))
    workers.start(2)
    wait_ready(workers, 2)
    (inject / "hold").touch()  # the first batch to start stays mid-run
    sub = docqa(["submit", str(docs), "-q", QUESTIONS[0], "-q", QUESTIONS[1]], env)
    assert sub.returncode == 0, sub.stderr
    repo = open_repo(env["DOCQA_DATABASE_URL"])
    pid = held_process(inject, logs=workers.logs)
    os.kill(pid, signal.SIGKILL)  # the pool process in the middle of its batch

    wait_for(lambda: repo.counts()["done"] == 48, timeout=240, what="all 48 jobs done", logs=workers.logs)
    assert repo.counts() == {"queued": 0, "running": 0, "done": 48, "failed": 0}
    with repo.engine.connect() as conn:
        per_job = conn.execute(text("SELECT job_id, count(*) FROM answers GROUP BY job_id")).all()
        retried = conn.execute(text("SELECT count(*) FROM jobs WHERE attempts >= 2")).scalar_one()
        killed = conn.execute(
            text("SELECT count(*) FROM jobs WHERE worker LIKE :w"), {"w": f"%:{pid}:%"}
        ).scalar_one()
    assert len(per_job) == 48 and all(n == 1 for _job, n in per_job)
    assert retried >= 1, "the killed worker's jobs must have been run again"
    assert killed == 0, "every job the killed process held was finished by another process"


def test_single_job_messages_share_forwards_in_a_worker(distributed_env, workers, tmp_path):
    """200 one-window jobs, each in its own message: the worker must not run 200 forwards."""
    docs = tmp_path / "docs"
    write_corpus(docs, 200, seed=11, sizes=(15, 25))
    producer_env = dict(distributed_env, DOCQA_WORKER_BATCH_JOBS="1")  # one job per message
    sub = docqa(["submit", str(docs), "-q", QUESTIONS[0]], producer_env)
    assert sub.returncode == 0, sub.stderr
    assert "enqueued in 200 messages" in sub.stdout
    workers.env = dict(distributed_env, DOCQA_WORKER_BATCH_JOBS="64")
    workers.env.pop("DOCQA_TORCH_THREADS", None)
    workers.start(1, concurrency=2)
    repo = open_repo(distributed_env["DOCQA_DATABASE_URL"])
    wait_for(lambda: repo.counts()["done"] == 200, timeout=180, what="200 jobs done", logs=workers.logs)

    def logged() -> tuple[int, int]:
        """(windows, forwards) the runs logged so far."""
        forwards = windows = 0
        for line in workers.logs(tail=None).splitlines():
            m = re.search(r"windows (\d+) in (\d+) forwards", line)
            if m:
                windows += int(m.group(1))
                forwards += int(m.group(2))
        return windows, forwards

    # A run logs its line just after its answers commit: the last one may still be on its way.
    windows, forwards = wait_for(lambda: (w := logged())[0] >= 200 and w, timeout=30, what="the runs' log lines",
                                 logs=workers.logs)
    assert windows == 200
    assert forwards <= 20, f"{forwards} forwards for 200 one-window jobs"
    # Two pool processes share the cores instead of each taking all of them.
    from docqa.worker.tasks import usable_cores

    threads = wait_for(
        lambda: (t := re.findall(r"ready: model .* (\d+) torch threads", workers.logs(tail=None))) and len(t) == 2 and t,
        timeout=120, what="both pool processes ready", logs=workers.logs,
    )
    assert len(threads) == 2 and all(int(t) == max(1, usable_cores() // 2) for t in threads)


def test_requeue_recovers_jobs_whose_broker_messages_were_lost(distributed_env, workers, tmp_path):
    """The broker loses its messages (Redis restarted without persistence): the jobs are
    still queued in SQL, `docqa requeue` puts them on the broker again, a worker answers them."""
    import redis

    docs = tmp_path / "docs"
    write_corpus(docs, 12, seed=21, sizes=(40, 120))
    sub = docqa(["submit", str(docs), *q_args(QUESTIONS[:2])], distributed_env)
    assert sub.returncode == 0, sub.stderr
    broker = redis.Redis.from_url(distributed_env["DOCQA_BROKER_URL"])
    queue = model_queue(distributed_env)
    assert broker.llen(queue) == 2  # 24 jobs, 16 a message
    broker.delete(queue)  # the messages are gone; the jobs are not
    repo = open_repo(distributed_env["DOCQA_DATABASE_URL"])
    assert repo.counts()["queued"] == 24

    workers.start(1)
    wait_for(lambda: "ready: model" in workers.logs(), timeout=120, what="the worker to load its model",
             logs=workers.logs)
    assert repo.counts()["queued"] == 24  # nobody told the worker about them

    out = docqa(["requeue"], distributed_env)
    assert out.returncode == 0, out.stderr
    assert "24 queued jobs of model" in out.stdout and "in 2 messages" in out.stdout
    wait_for(lambda: repo.counts()["done"] == 24, timeout=180, what="all 24 jobs done", logs=workers.logs)
    assert repo.counts() == {"queued": 0, "running": 0, "done": 24, "failed": 0}
    with repo.engine.connect() as conn:
        per_job = conn.execute(text("SELECT job_id, count(*) FROM answers GROUP BY job_id")).all()
    assert len(per_job) == 24 and all(n == 1 for _job, n in per_job)

    again = docqa(["requeue"], distributed_env)  # nothing left to send: harmless
    assert again.returncode == 0 and "0 queued jobs" in again.stdout

    unreachable = docqa(["requeue", "--broker-url", "redis://127.0.0.1:1/0"], distributed_env)
    assert unreachable.returncode == 4 and "cannot reach the broker at redis://127.0.0.1:1/0" in unreachable.stderr
