"""Benchmark configurations that go through docqa's services (project venv only).

- `e2e`: Redis broker + `docqa worker` (Celery, concurrency 1) + PostgreSQL: time from
  the start of `docqa submit` until the last job is done (jobs.finished_at).
- `rerun`: `docqa run` (embedded, SQLite) on the workload, then again: the second run
  should find every job done and cost next to nothing.
- `producer`: tokenize + window throughput (tokens/s), `docqa submit` enqueue rate
  (jobs/s) and result writes to PostgreSQL through Repository.complete (rows/s).

benchmarks/measure.py dispatches to them by name: each configuration is the function of
the same name here. This module imports benchmarks/common.py and corpus.py, never
measure.py (which imports it), so the imports have no cycle.

Each uses its own database (dropped and created again) and Redis database
spec["redis_url"] (flushed), so runs do not see each other's jobs. Subprocesses are
started in their own session and stopped by their pid (SIGTERM, then SIGKILL of that
process group) when a configuration ends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timezone
from pathlib import Path

import corpus
from common import cpu_pressure_us, set_threads

PG_ADMIN_DB = "postgres"


# -- helpers ---------------------------------------------------------------------------------
def pg_url(spec: dict, database: str) -> str:
    """SQLAlchemy URL (psycopg 3) of `database` on the benchmark's PostgreSQL server."""
    return f"postgresql+psycopg://{spec['pg_user']}@{spec['pg_host']}:{spec['pg_port']}/{database}"


def fresh_database(spec: dict, database: str) -> str:
    """Drop and create `database` (UTF8); return its URL with the schema in place."""
    import psycopg

    from docqa.storage.db import ensure_schema, make_engine

    with psycopg.connect(host=spec["pg_host"], port=spec["pg_port"], user=spec["pg_user"], dbname=PG_ADMIN_DB,
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f"CREATE DATABASE \"{database}\" ENCODING 'UTF8' TEMPLATE template0")
    url = pg_url(spec, database)
    engine = make_engine(url)
    ensure_schema(engine)
    engine.dispose()
    return url


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def write_jsonl(path: Path, docs, questions_per_doc: int | None = None) -> int:
    """The workload as docqa JSONL (id = document name); returns the number of jobs."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            qs = list(d.questions) if questions_per_doc is None else variant_questions(d, questions_per_doc)
            n += len(qs)
            fh.write(json.dumps({"id": d.name, "text": d.text, "questions": qs}, ensure_ascii=False) + "\n")
    return n


def variant_questions(doc, n: int) -> list[str]:
    """`n` distinct questions about `doc` (its own, then numbered variants)."""
    base = list(doc.questions) or ["What is this about?"]
    out = list(base[:n])
    k = 0
    while len(out) < n:
        out.append(f"{base[k % len(base)]} (variant {k // len(base) + 1})")
        k += 1
    return out


def docqa_env(spec: dict, **extra: str) -> dict:
    env = dict(os.environ)
    env.update({
        "DOCQA_MODEL": spec["model"],
        "DOCQA_DEVICE": spec.get("device", "cpu"),
        "DOCQA_DTYPE": spec.get("dtype", "float32"),
        "DOCQA_BATCH_TOKENS": str(spec["batch_tokens"]),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def docqa_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("docqa")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "docqa.cli"]


def run_timed(cmd: list[str], env: dict, log: Path) -> dict:
    """Run a command to completion; wall seconds, exit status, peak RSS (MiB) of it and what it waited for."""
    with open(log, "ab") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": wall, "rc": proc.returncode, "peak_rss_mib": usage.ru_maxrss / 1024}


def proc_tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def vm_hwm_mib(pid: int) -> float | None:
    """Peak RSS of a live process (VmHWM), MiB."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these live processes."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / tick


def stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the process we started (Celery: warm shutdown), then SIGKILL its group."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session we created for it: our processes only
        proc.wait(10)


def job_counts(conn) -> dict[str, int]:
    return {status: n for status, n in conn.execute("SELECT status, count(*) FROM jobs GROUP BY status")}


def wait_jobs(conn, total: int, timeout: float, proc: subprocess.Popen | None = None) -> dict[str, int]:
    """Poll until `total` jobs are done or failed; stop early if the worker died."""
    deadline = time.perf_counter() + timeout
    while True:
        counts = job_counts(conn)
        if counts.get("done", 0) + counts.get("failed", 0) >= total:
            return counts
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the worker exited (status {proc.returncode}) with jobs {counts}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {total} jobs: {counts}")
        time.sleep(0.1)


def read_answers(spec: dict, env: dict, docs, log: Path) -> tuple[dict, int]:
    """Rank-0 answers stored in the database, keyed "doc:question"; and how many rows there are."""
    key_of = {(d.name, q): f"{i}:{j}" for i, d in enumerate(docs) for j, q in enumerate(d.questions)}
    out = subprocess.run(docqa_cmd() + ["results", "--format", "jsonl"], env=env, capture_output=True, text=True)
    with open(log, "a") as fh:
        fh.write(out.stderr)
    answers, rows = {}, 0
    for line in out.stdout.splitlines():
        rec = json.loads(line)
        rows += 1
        key = key_of.get((rec.get("document_external_id"), rec.get("question")))
        if key is not None and rec.get("rank") == 0:
            answers[key] = [rec["text"], rec["char_start"], rec["char_end"], rec["score"]]
    return answers, rows


def failures(env: dict) -> list[str]:
    out = subprocess.run(docqa_cmd() + ["status", "--format", "json"], env=env, capture_output=True, text=True)
    try:
        return [f"{f['document']}: {f['error']}" for f in json.loads(out.stdout)["failures"]][:5]
    except (ValueError, KeyError):
        return [out.stderr.strip()[-500:]]


# -- configurations --------------------------------------------------------------------------
def e2e(spec: dict, docs) -> dict:
    """Submit through Redis to one Celery worker (concurrency 1), answers into PostgreSQL."""
    import psycopg

    work = Path(spec["workdir"]) / "e2e"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    url = fresh_database(spec, spec["pg_database"])
    flush_redis(spec["redis_url"])
    env = docqa_env(spec, DOCQA_DATABASE_URL=url, DOCQA_BROKER_URL=spec["redis_url"], DOCQA_QUEUE="docqa-bench")
    jobs_file = work / "bench.jsonl"
    n_jobs = write_jsonl(jobs_file, docs)
    warm = work / "warm.jsonl"
    warm_doc = corpus.BenchDocument("warm-up", "", docs[0].text[:2000] + "\n(warm-up copy)\n",
                                    (docs[0].questions[0],))
    write_jsonl(warm, [warm_doc])

    worker = subprocess.Popen(
        docqa_cmd() + ["worker", "--concurrency", "1", "--loglevel", "INFO", "--hostname", "docqa-bench@%h"],
        env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    result: dict = {"items": n_jobs}
    try:
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
            t0 = time.perf_counter()
            sub = run_timed(docqa_cmd() + ["submit", str(warm)], env, log)
            if sub["rc"] != 0:
                raise RuntimeError(f"docqa submit (warm-up) failed: see {log}")
            wait_jobs(conn, 1, timeout=600, proc=worker)
            result["worker_ready_s"] = time.perf_counter() - t0

            workers = proc_tree(worker.pid)
            cpu0, psi0 = cpu_seconds(workers), cpu_pressure_us()
            started_wall = time.time()
            t0 = time.perf_counter()
            sub = run_timed(docqa_cmd() + ["submit", str(jobs_file)], env, log)
            result["submit"] = sub
            if sub["rc"] != 0:
                raise RuntimeError(f"docqa submit failed (status {sub['rc']}): see {log}")
            counts = wait_jobs(conn, 1 + n_jobs, timeout=spec.get("e2e_timeout", 3600), proc=worker)
            polled = time.perf_counter() - t0
            cpu1, psi1 = cpu_seconds(workers), cpu_pressure_us()
            last = conn.execute("SELECT max(finished_at) FROM jobs").fetchone()[0]
            wall = polled
            if last is not None:
                last_ts = last.replace(tzinfo=timezone.utc).timestamp() if last.tzinfo is None else last.timestamp()
                if 0 < last_ts - started_wall <= polled + 1:
                    wall = last_ts - started_wall
            result.update({"wall_s": wall, "polled_wall_s": polled, "job_counts": counts,
                           # The worker idles until `docqa submit` has enqueued: count its busy time only.
                           "cpu_s": cpu1 - cpu0,
                           "cpu_util": (cpu1 - cpu0) / (max(polled - sub["wall_s"], 1e-9) * spec["threads"]),
                           "pressure": (psi1 - psi0) / 1e6 / polled if psi0 is not None and psi1 else None})
            rss = {p: vm_hwm_mib(p) for p in proc_tree(worker.pid)}
            result["worker_rss_mib"] = {str(p): r for p, r in rss.items() if r is not None}
            result["worker_peak_rss_mib"] = max((r for r in rss.values() if r is not None), default=None)
    except Exception as exc:  # report what happened; the other configurations go on
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["log_tail"] = tail(log)
    finally:
        stop(worker)
    if "error" not in result:
        result["answers"], result["answer_rows"] = read_answers(spec, env, docs, log)
        if result["job_counts"].get("failed"):
            result["failures"] = failures(env)
    flush_redis(spec["redis_url"])
    return result


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


_ELAPSED = re.compile(r"docqa run: .*?, ([\d.]+) s\b")


def rerun(spec: dict, docs) -> dict:
    """`docqa run` (embedded, SQLite) twice on the same workload."""
    work = Path(spec["workdir"]) / "rerun"
    work.mkdir(parents=True, exist_ok=True)
    db = work / "docqa.db"
    for f in work.glob("docqa.db*"):
        f.unlink()
    log = work / "log.txt"
    env = docqa_env(spec, DOCQA_DATABASE_URL=f"sqlite:///{db}")
    jobs_file = work / "bench.jsonl"
    n_jobs = write_jsonl(jobs_file, docs)
    runs = []
    for _ in range(2):
        start = log.stat().st_size if log.exists() else 0
        r = run_timed(docqa_cmd() + ["run", str(jobs_file)], env, log)
        text = log.read_text(errors="replace")[start:]
        m = _ELAPSED.search(text)
        r["reported_s"] = float(m.group(1)) if m else None
        r["summary"] = next((ln for ln in text.splitlines() if ln.startswith("docqa run:")), text[-1500:])
        runs.append(r)
    result = {"items": n_jobs, "runs": runs, "wall_s": runs[0]["wall_s"],
              "peak_rss_mib_child": max(r["peak_rss_mib"] for r in runs)}
    if all(r["rc"] == 0 for r in runs):
        result["answers"], result["answer_rows"] = read_answers(spec, env, docs, log)
    else:
        result["error"] = f"docqa run exited with {[r['rc'] for r in runs]}"
        result["log_tail"] = tail(log)
    return result


def producer(spec: dict, docs) -> dict:
    """Tokenize+window rate, submit enqueue rate, answer write rate."""
    out: dict = {}
    for name, fn in (("tokenize", _tokenize_rate), ("submit", _submit_rate), ("writes", _write_rate)):
        try:
            out[name] = fn(spec, docs)
        except Exception as exc:  # one failing part must not hide the others
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _tokenize_rate(spec: dict, docs) -> dict:
    import numpy as np
    from transformers import AutoTokenizer

    from docqa.core.windows import plan_windows, tokenize_documents

    set_threads(spec["threads"])
    tok = AutoTokenizer.from_pretrained(spec["model"])
    texts = [d.text for d in docs]
    tokenize_documents(tok, texts[:2])  # warm-up
    reps = spec.get("producer_repeats", 3)

    def best(fn):
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - t0)
        return min(times), value

    t_tok, toks = best(lambda: tokenize_documents(tok, texts))
    n_tokens = sum(len(t) for t in toks)
    q_ids = {q: tok(q, add_special_tokens=False)["input_ids"] for d in docs for q in d.questions}

    def windows():
        n = 0
        for d, t in zip(docs, toks):
            for q in d.questions:
                qi = q_ids[q]
                head = np.asarray([tok.cls_token_id, *qi, tok.sep_token_id], dtype=np.int64)
                for s, e in plan_windows(len(t), len(qi)):
                    np.concatenate([head, t.ids[s:e], [tok.sep_token_id]])
                    n += 1
        return n

    t_win, n_windows = best(windows)

    def pipeline_style():
        # What the reference does: tokenize the whole document again for every question.
        for d in docs:
            for q in d.questions:
                tok(q, d.text, truncation="only_second", max_length=384, stride=128,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding="do_not_pad")

    t_pipe, _ = best(pipeline_style)
    n_q = sum(len(d.questions) for d in docs)
    return {
        "documents": len(docs), "tokens": n_tokens, "chars": sum(len(t) for t in texts),
        "tokenize_s": t_tok, "tokens_per_s": n_tokens / t_tok,
        "windows": n_windows, "window_s": t_win, "windows_built_per_s": n_windows / t_win,
        "tokenize_and_window_tokens_per_s": n_tokens / (t_tok + t_win),
        "per_question_retokenize_s": t_pipe,
        "per_question_retokenize_tokens_per_s": n_tokens * n_q / len(docs) / t_pipe if t_pipe else None,
    }


def _submit_rate(spec: dict, docs) -> dict:
    """`docqa submit` with no worker: documents + jobs into PostgreSQL, messages onto Redis."""
    from docqa.producer.documents import iter_inputs
    from docqa.producer.submit import submit
    from docqa.storage.db import make_engine, session_factory
    from docqa.storage.repository import Repository
    from docqa.worker.app import make_celery, send_jobs
    from docqa.core.params import AnswerParams
    from docqa.core.settings import Settings

    work = Path(spec["workdir"]) / "producer"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    per_doc = spec.get("submit_questions", 25)
    jobs_file = work / "submit.jsonl"
    n_jobs = write_jsonl(jobs_file, docs, questions_per_doc=per_doc)
    queue = "docqa-bench-enqueue"

    # 1. The command, as a user runs it (includes interpreter start and imports).
    url = fresh_database(spec, spec["pg_database"] + "_submit")
    flush_redis(spec["redis_url"])
    env = docqa_env(spec, DOCQA_DATABASE_URL=url, DOCQA_BROKER_URL=spec["redis_url"], DOCQA_QUEUE=queue)
    cli = run_timed(docqa_cmd() + ["submit", str(jobs_file)], env, log)
    import redis

    r = redis.Redis.from_url(spec["redis_url"])
    cli["messages_on_queue"] = r.llen(queue)

    # 2. The same submit() call in process, on a fresh database: the producer's own rate.
    url = fresh_database(spec, spec["pg_database"] + "_submit")
    flush_redis(spec["redis_url"])
    settings = Settings(database_url=url, broker_url=spec["redis_url"], queue=queue, model=spec["model"])
    app = make_celery(settings)
    engine = make_engine(url)
    repo = Repository(session_factory(engine))
    t0 = time.perf_counter()
    report = submit(iter_inputs([str(jobs_file)]), [], repo=repo, model=spec["model"], revision=None,
                    params=AnswerParams(), enqueue=lambda ids: send_jobs(app, ids, queue), chunk=64)
    t_in = time.perf_counter() - t0
    messages = r.llen(queue)
    # 3. Submitting the same input again: every job exists, nothing is enqueued.
    t0 = time.perf_counter()
    again = submit(iter_inputs([str(jobs_file)]), [], repo=repo, model=spec["model"], revision=None,
                   params=AnswerParams(), enqueue=lambda ids: send_jobs(app, ids, queue), chunk=64)
    t_again = time.perf_counter() - t0
    engine.dispose()
    flush_redis(spec["redis_url"])
    return {
        "jobs": n_jobs, "documents": len(docs),
        "cli_wall_s": cli["wall_s"], "cli_rc": cli["rc"], "cli_jobs_per_s": n_jobs / cli["wall_s"],
        "in_process_s": t_in, "in_process_jobs_per_s": report.new_jobs / t_in if t_in else None,
        "new_jobs": report.new_jobs, "messages": messages, "cli_messages": cli["messages_on_queue"],
        "resubmit_s": t_again, "resubmit_existing_jobs": again.existing_jobs,
    }


def _write_rate(spec: dict, docs) -> dict:
    """Repository.complete per job (one transaction each), answers of realistic size."""
    from docqa.storage.db import make_engine, session_factory
    from docqa.storage.repository import Repository
    from docqa.core.answer import Answer
    from docqa.core.params import AnswerParams

    url = fresh_database(spec, spec["pg_database"] + "_writes")
    engine = make_engine(url)
    repo = Repository(session_factory(engine))
    per_doc = spec.get("submit_questions", 25)
    jobs = []
    for d in docs:
        doc_id, _sha, _new = repo.add_document(d.text, source=d.name)
        for (job_id, _created), _q in zip(repo.add_jobs(doc_id, variant_questions(d, per_doc), model=spec["model"],
                                                        revision=None, params=AnswerParams()),
                                          range(per_doc)):
            jobs.append((job_id, d.text))
    claimed = repo.claim([j for j, _ in jobs], worker="bench", lease_seconds=3600)
    assert len(claimed) == len(jobs), (len(claimed), len(jobs))
    top_k = spec.get("write_top_k", 1)

    def answers_for(text: str, salt: int) -> list[Answer]:
        out = []
        for rank in range(top_k):
            start = (salt * 7919 + rank * 131) % max(1, len(text) - 40)
            end = start + 12 + rank
            out.append(Answer(rank=rank, text=text[start:end], score=0.5 / (rank + 1), char_start=start,
                              char_end=end, window_index=0, window_char_start=0, window_char_end=len(text),
                              token_start=1, token_end=3, start_logit=3.0, end_logit=2.5))
        return out

    payload = [(job_id, answers_for(text, i)) for i, (job_id, text) in enumerate(jobs)]
    half = len(payload) // 2
    # One transaction per job (`complete`), then a worker's batch of 64 per transaction
    # (`complete_many`, what the worker does), each on its own half of the jobs.
    t0 = time.perf_counter()
    for job_id, answers in payload[:half]:
        repo.complete(job_id, answers, model_label=spec["model"])
    wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(half, len(payload), 64):
        refused = repo.complete_many(payload[i : i + 64], model_label=spec["model"])
        assert not refused, refused
    wall_many = time.perf_counter() - t0
    engine.dispose()
    rest = len(payload) - half
    return {"jobs": half, "answers_per_job": top_k, "rows": half * top_k, "wall_s": wall,
            "rows_per_s": half * top_k / wall, "jobs_per_s": half / wall,
            "many": {"jobs": rest, "batch": 64, "wall_s": wall_many, "rows_per_s": rest * top_k / wall_many}}

