"""A fleet that stays busy (issue 19), with real PostgreSQL, Redis, `docqa worker` and
`docqa serve` processes: a long document's windows are run by every worker as parts and
answered as one run would answer it; a worker killed mid-range costs only that range; a
caller waiting on `?wait=` is answered within its wait while a bulk backlog of 10,000
windows is queued."""

from __future__ import annotations

import os
import re
import signal
import time

import httpx
from sqlalchemy import text
from support import (TINY_MODEL, Server, docqa, held_process, hold_env, open_repo, pool_of, prose, wait_for,
                     wait_ready)

QUESTION = "Where does the river flow?"
TOKEN = "fleet-test-token-0123456789"


def _windows_run(log: str) -> int:
    """Windows the worker ran, from its per-run log lines."""
    return sum(int(n) for n in re.findall(r"docqa run: .* windows (\d+) in \d+ forwards", log))


def _whole_run_answers(doc: str):
    """The answers one engine gives running the whole job at once (the reference for parts)."""
    from docqa.core.params import AnswerParams
    from docqa.worker.engine import Engine, QAItem

    engine = Engine(TINY_MODEL, device="cpu").warm_up()
    return engine.run([QAItem(doc, QUESTION, AnswerParams(top_k=3))])[0]


def _same_answers(stored, whole) -> None:
    assert [(a.text, a.char_start, a.char_end, a.window_index) for a in stored] == \
        [(a.text, a.char_start, a.char_end, a.window_index) for a in whole.answers]
    for a, b in zip(stored, whole.answers):  # other batch-mates: float32 sums in another order
        assert abs(a.score - b.score) <= 1e-5 * max(abs(b.score), 1e-12)


def _one_job(repo) -> int:
    with repo.engine.connect() as conn:
        return conn.execute(text("SELECT id FROM jobs WHERE parent_id IS NULL")).scalar_one()


def test_a_long_document_runs_on_every_worker_and_is_answered_as_one_run(distributed_env, workers, tmp_path):
    env = dict(distributed_env, DOCQA_BATCH_WINDOWS="8", DOCQA_TORCH_THREADS="1")
    workers.env = env
    doc = prose(18000, seed=19)
    (tmp_path / "long.txt").write_text(doc, encoding="utf-8")
    workers.start(2, default_names=True)
    wait_ready(workers, 2)
    # Two `docqa worker`s on one host, no --hostname: node names of their own, no Celery
    # DuplicateNodenameWarning (the default docqa-PID-XXXX@HOST of `docqa worker --help`).
    names = [re.search(r"(docqa-\d+-[0-9a-f]{4}@\S+) v\d", log.read_text(errors="replace"))
             for log in sorted(tmp_path.glob("worker*.log"))]
    assert all(names) and names[0].group(1) != names[1].group(1), workers.logs()
    assert "DuplicateNodenameWarning" not in workers.logs(None)
    sub = docqa(["submit", str(tmp_path / "long.txt"), "-q", QUESTION, "--top-k", "3"], env)
    assert sub.returncode == 0, sub.stderr
    repo = open_repo(env["DOCQA_DATABASE_URL"])
    wait_for(lambda: repo.counts()["done"] == 1, timeout=180, what="the long job answered", logs=workers.logs)
    job = _one_job(repo)
    n_windows = len(repo.plans_for([job])[job].windows)
    logs = [p.read_text(errors="replace") for p in sorted(tmp_path.glob("worker*.log"))]
    assert "split into" in "".join(logs)
    ran = [_windows_run(log) for log in logs]
    assert all(n > 0 for n in ran), ran  # both workers ran parts of the one job
    assert sum(ran) == n_windows  # every window once
    _same_answers(repo.answers_for_job(job), _whole_run_answers(doc))
    with repo.engine.connect() as conn:  # the parts are gone, the job answered once
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM job_part_results")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM answers")).scalar_one() == 3




def _parts_done(repo) -> int:
    with repo.engine.connect() as conn:
        return conn.execute(text("SELECT coalesce(sum(n_windows), 0) FROM jobs WHERE parent_id IS NOT NULL "
                                 "AND status = 'done'")).scalar_one()


def test_a_worker_killed_mid_range_loses_only_that_range(distributed_env, workers, tmp_path):
    # A part takes a second, as a long range of the full-size model would; the kill finds a
    # range held mid-run (one timed against a 1 s part could land after it was stored).
    inject = tmp_path / "inject"
    env = hold_env(dict(distributed_env, DOCQA_BATCH_WINDOWS="16", DOCQA_TORCH_THREADS="1", DOCQA_LEASE_SECONDS="6"),
                   inject, parts_only=True, seconds=1.0)
    workers.env = env
    doc = prose(30000, seed=20)
    (tmp_path / "long.txt").write_text(doc, encoding="utf-8")
    workers.start(2)
    wait_ready(workers, 2)
    sub = docqa(["submit", str(tmp_path / "long.txt"), "-q", QUESTION, "--top-k", "3"], env)
    assert sub.returncode == 0, sub.stderr
    repo = open_repo(env["DOCQA_DATABASE_URL"])
    wait_for(lambda: _parts_done(repo) >= 32, timeout=120, interval=0.05, what="two ranges stored",
             logs=workers.logs)
    (inject / "hold").touch()
    holder = held_process(inject, timeout=60, logs=workers.logs)
    victim = next(k for k, p in enumerate(workers.procs) if holder in pool_of(p.pid))
    pool = pool_of(workers.procs[victim].pid)
    os.killpg(workers.procs[victim].pid, signal.SIGKILL)
    (inject / "hold").unlink()
    with repo.engine.connect() as conn:  # the ranges lost with it: running under it at the kill
        held = conn.execute(text("SELECT worker, n_windows FROM jobs WHERE parent_id IS NOT NULL AND "
                                 "status = 'running'")).all()
    lost = sum(n for w, n in held if w and int(w.split(":")[1]) in pool)
    assert lost > 0
    wait_for(lambda: repo.counts()["done"] == 1, timeout=240, what="the long job answered", logs=workers.logs)
    job = _one_job(repo)
    n_windows = len(repo.plans_for([job])[job].windows)
    ran = [_windows_run((tmp_path / f"worker{k}.log").read_text(errors="replace")) for k in (0, 1)]
    # Every window ran once, and the lost ranges once more: no range stored before the kill
    # ran again (the killed worker's last run wrote no log line: its windows are not counted).
    assert n_windows - 16 <= sum(ran) <= n_windows + lost, (ran, n_windows, lost)
    assert ran[1 - victim] > 0
    _same_answers(repo.answers_for_job(job), _whole_run_answers(doc))
    with repo.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM answers")).scalar_one() == 3
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 1


def test_a_waiting_caller_is_answered_within_its_wait_behind_10000_bulk_windows(distributed_env, workers,
                                                                               tmp_path):
    env = dict(distributed_env, DOCQA_TORCH_THREADS="1", DOCQA_API_TOKEN=TOKEN)
    workers.env = env
    docs = tmp_path / "bulk"
    docs.mkdir()
    for i in range(100):  # about 100 windows each
        (docs / f"bulk{i:03d}.txt").write_text(prose(18500, seed=1000 + i), encoding="utf-8")
    sub = docqa(["submit", str(docs), "-q", QUESTION], env)
    assert sub.returncode == 0, sub.stderr
    repo = open_repo(env["DOCQA_DATABASE_URL"])
    with repo.engine.connect() as conn:
        backlog = conn.execute(text("SELECT sum(n_windows) FROM jobs")).scalar_one()
    assert backlog >= 10_000
    server = Server(env, tmp_path / "serve.log")
    try:
        base = server.base
        workers.start(1)
        wait_for(lambda: repo.counts()["done"] >= 1, timeout=120, what="the worker busy with the backlog",
                 logs=workers.logs)
        started = time.monotonic()
        r = httpx.post(f"{base}/v1/submissions?wait=20", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60,
                       json={"documents": ["The Rhine flows to the North Sea."], "questions": [QUESTION]})
        waited = time.monotonic() - started
        counts = repo.counts()
        left = counts["queued"] + counts["running"]
    finally:
        server.stop()
    assert r.status_code == 200 and r.json()["finished"], (r.text, server.logs()[-2000:])
    print(f"\n?wait= answered in {waited:.2f} s with {left} bulk jobs not done")
    assert left >= 20, f"the backlog was nearly done ({left} jobs left): the test did not test priority"
    with repo.engine.connect() as conn:
        urgent = conn.execute(text("SELECT j.priority, j.status FROM jobs j JOIN texts t ON t.id = j.text_id "
                                   "WHERE t.text LIKE 'The Rhine%'")).one()
    assert tuple(urgent) == (1, "done")
