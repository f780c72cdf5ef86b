"""Fault drill, run by hand: real `docqa submit` and `docqa worker` processes under faults.

    python benchmarks/faults.py [--only NAME] [--jobs N] [--base-jobs N]

Each scenario injects one fault into a distributed run (own PostgreSQL cluster and own
redis-server on free ports, as tests/integration/support.py's OwnPostgres / OwnRedis; a
fresh database and a fresh Redis database per scenario) and records one row: submitted
jobs, answered, duplicated (answer rows per (job, rank) > 1), stranded (queued + running at
the end), failed, recomputed (attempts > 1), the highest attempts, the time from the
fault's end until every job was done, the dead letters, and the worker processes that
exited. Workers run with docqa's DEFAULT settings (lease 30 s, reconcile 60 s, batch 64):
only the store, broker, model (tests/fixtures/tiny-distilbert-qa), DOCQA_DEVICE=cpu and
HF_HUB_OFFLINE=1 are set; every other DOCQA_* variable of the caller's environment is
dropped. 2 worker processes, concurrency 1 each.

Scenarios (--only takes one of these names):

- `base64`: two malformed envelopes (a body that is not base64; no delivery_info) on the
  model's queue before 300 jobs are submitted.
- `foreign`: 300 jobs submitted, the model's queue deleted (the broker lost them), one
  message of another store pushed, then the workers start: no command is given.
- `pg20`, `pg60`: PostgreSQL stopped (pg_ctl stop -m fast) for 20 s / 60 s once ~20 of 300
  mixed-size jobs are done.
- `chaos`: --jobs jobs (5,000 by default) on short documents (at most 5,000 documents; more
  jobs ask each more questions); every 20 s a random worker's pool process is SIGKILLed
  (Celery's prefork main process replaces it); a worker that exits as a whole is replaced
  by a new one. The tiny model answers 5,000 short jobs in under 20 s on 2 CPU cores, so
  the kills need a larger --jobs (docs/FAULTS.md: 300000, a 3-minute submit and 4-7 minutes of work).

The table is printed as Markdown; a full run (no --only) also writes docs/FAULTS.md.
Worker logs stay in the folder printed at the start.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from support import (  # noqa: E402
    TINY_MODEL, OwnPostgres, OwnRedis, Workers, docqa, model_queue, open_repo, wait_for, write_corpus,
)

QUESTION = "Where does the river flow?"
DEAD_LETTER_KEY = "docqa.dead-letters"  # docqa.worker.deadletter.DEAD_LETTER_KEY
SCENARIOS = ("base64", "foreign", "pg20", "pg60", "chaos")
EXPECTED_DEAD_LETTERS = {"base64": 2, "foreign": 1}
KILL_EVERY_SECONDS = 20
CHAOS_WORDS = (15, 30, 60)  # words per chaos document
CHAOS_MAX_DOCS = 5000  # more chaos jobs than this ask each document more questions
LOG_MARKERS = ("Unrecoverable error", "Traceback", "exited with", "WorkerLostError", "reconciler: sent",
               "requeued", "put back", "dead-letter", "refused a message", "could not hand back", "(alone:")


# -- services ------------------------------------------------------------------------------
class Services:
    """One PostgreSQL cluster and one redis-server of the drill's own, on free ports."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.pg = OwnPostgres()
        self.pg.start()
        self.redis = OwnRedis(out)
        self.redis.start()
        self.next_db = 0
        self.stages: list[Stage] = []  # their workers are stopped by close(), whatever happened

    def fresh_database(self, name: str) -> str:
        """A new, empty database `name` on the cluster; its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.pg.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.pg.port}/{name}"

    def fresh_redis_db(self) -> str:
        """The URL of the next unused Redis database number (flushed)."""
        import redis

        self.next_db += 1
        url = f"redis://127.0.0.1:{self.redis.port}/{self.next_db}"
        redis.Redis.from_url(url).flushdb()
        return url

    def close(self) -> None:
        import shutil

        for stage in self.stages:
            stage.workers.stop()
        self.redis.stop()
        if self.pg.log.exists():
            shutil.copy(self.pg.log, self.out / "postgres.log")
        self.pg.remove()


def drill_env(database_url: str, broker_url: str) -> dict[str, str]:
    """The caller's environment without any DOCQA_* variable, plus store, broker, model."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env.update(
        DOCQA_DATABASE_URL=database_url, DOCQA_BROKER_URL=broker_url,
        DOCQA_QUEUE="docqa",  # docqa's default prefix, spelled out for support.model_queue
        DOCQA_MODEL=TINY_MODEL, DOCQA_DEVICE="cpu", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Stage:
    """One scenario's database, Redis database, folder and workers."""

    name: str
    env: dict
    folder: Path
    repo: object
    broker: object
    workers: Workers
    exits: list = field(default_factory=list)  # (worker index, exit status) of workers that ended
    notes: list = field(default_factory=list)


def new_stage(services: Services, name: str) -> Stage:
    import redis

    from docqa.storage.db import ensure_schema

    folder = services.out / name
    folder.mkdir(parents=True, exist_ok=True)
    env = drill_env(services.fresh_database(f"faults_{name}"), services.fresh_redis_db())
    repo = open_repo(env["DOCQA_DATABASE_URL"])
    ensure_schema(repo.engine)
    stage = Stage(name, env, folder, repo, redis.Redis.from_url(env["DOCQA_BROKER_URL"]), Workers(env, folder))
    services.stages.append(stage)
    return stage


# -- measuring -----------------------------------------------------------------------------
def safe_counts(stage: Stage) -> dict[str, int] | None:
    """Jobs per status, or None while the store does not answer."""
    try:
        return stage.repo.counts()
    except Exception:
        return None


def all_finished(stage: Stage, submitted: int) -> bool:
    counts = safe_counts(stage)
    return bool(counts) and counts["queued"] + counts["running"] == 0 and counts["done"] + counts["failed"] == submitted


def measure(stage: Stage) -> dict:
    """The row's figures, read from the store and the broker."""
    from sqlalchemy import text

    with stage.repo.engine.connect() as conn:
        answered = conn.execute(text("SELECT count(DISTINCT job_id) FROM answers")).scalar_one()
        duplicated = conn.execute(text(
            "SELECT count(*) FROM (SELECT 1 FROM answers GROUP BY job_id, rank HAVING count(*) > 1) d")).scalar_one()
        recomputed, highest = conn.execute(text(
            "SELECT count(*) FILTER (WHERE attempts > 1), max(attempts) FROM jobs")).one()
    counts = stage.repo.counts()
    return dict(answered=answered, duplicated=duplicated, stranded=counts["queued"] + counts["running"],
                failed=counts["failed"], recomputed=recomputed or 0, highest=highest or 0,
                dead_letters=int(stage.broker.llen(DEAD_LETTER_KEY)))


def log_findings(stage: Stage) -> dict[str, int]:
    """How often each marker of interest occurs in the scenario's worker logs."""
    logs = stage.workers.logs(None)
    return {m: logs.count(m) for m in LOG_MARKERS if m in logs}


def collect_exits(stage: Stage) -> None:
    """Record every worker process that has ended (and not been recorded yet)."""
    seen = {k for k, _ in stage.exits}
    for k, proc in enumerate(stage.workers.procs):
        if k not in seen and proc.poll() is not None:
            stage.exits.append((k, proc.returncode))


@dataclass
class Row:
    fault: str
    submitted: int
    figures: dict
    recover: str
    exits: list
    notes: list
    findings: dict


def finish(stage: Stage, fault: str, submitted: int, fault_end: float, timeout: float) -> Row:
    """Wait until every job is done or failed (or `timeout`), then measure and stop the workers."""
    try:
        wait_for(lambda: all_finished(stage, submitted), timeout=timeout, interval=0.5, what="all jobs finished")
        recover = f"{time.monotonic() - fault_end:.1f} s"
    except AssertionError:
        recover = f"not within {timeout:.0f} s"
        stage.notes.append(f"jobs still unfinished {timeout:.0f} s after the fault ended: {safe_counts(stage)}")
    collect_exits(stage)
    figures = measure(stage)
    stage.workers.stop()
    row = Row(fault, submitted, figures, recover, list(stage.exits), stage.notes, log_findings(stage))
    stage.repo.engine.dispose()
    print(f"  {fault}: {figures}, recovered {recover}, worker exits {stage.exits or 'none'}", flush=True)
    return row


# -- the workload --------------------------------------------------------------------------
def submit(stage: Stage, n_docs: int, *, seed: int, sizes: tuple[int, ...], questions: int = 1) -> int:
    """`docqa submit` of n_docs generated documents, each asked `questions` questions; the jobs stored."""
    docs = stage.folder / "docs"
    write_corpus(docs, n_docs, seed=seed, sizes=sizes)
    asked = stage.folder / "questions.txt"
    asked.write_text("\n".join([QUESTION] + [f"Where does river number {i} flow?" for i in range(1, questions)]) + "\n",
                     encoding="utf-8")
    started = time.monotonic()
    out = docqa(["submit", str(docs), "--questions", str(asked)], stage.env, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"docqa submit failed ({out.returncode}):\n{out.stderr[-3000:]}")
    counts = stage.repo.counts()
    print(f"  submitted {sum(counts.values())} jobs in {time.monotonic() - started:.1f} s: "
          f"{out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ''}", flush=True)
    return sum(counts.values())


def celery_envelope(stage: Stage) -> dict:
    """A real Celery envelope of a docqa message (as tests/integration/test_poison.py builds it)."""
    from docqa.core.settings import Settings
    from docqa.worker.app import make_celery, send_jobs

    app = make_celery(Settings(broker_url=stage.env["DOCQA_BROKER_URL"], queue=stage.env["DOCQA_QUEUE"]))
    send_jobs(app, [1], "scratch-queue", None)
    return json.loads(stage.broker.rpop("scratch-queue"))


def dead_letter_reasons(stage: Stage) -> list[str]:
    return [json.loads(e).get("reason", "?") for e in stage.broker.lrange(DEAD_LETTER_KEY, 0, -1)]


# -- scenarios -----------------------------------------------------------------------------
def scenario_base64(services: Services, args) -> Row:
    stage = new_stage(services, "base64")
    queue = model_queue(stage.env)
    not_base64 = celery_envelope(stage)
    not_base64["body"] = "%%% not base64"
    no_delivery_info = celery_envelope(stage)
    del no_delivery_info["properties"]["delivery_info"]
    for envelope in (not_base64, no_delivery_info):
        stage.broker.lpush(queue, json.dumps(envelope))
    submitted = submit(stage, args.base_jobs, seed=1, sizes=(20, 150, 700))
    started = time.monotonic()
    stage.workers.start(2)
    row = finish(stage, "base64-invalid body + no delivery_info on the queue", submitted, started, 600)
    row.notes.append("dead-letter reasons: " + " | ".join(dead_letter_reasons(stage)))
    return row


def scenario_foreign(services: Services, args) -> Row:
    from docqa.core.settings import Settings
    from docqa.worker.app import make_celery, send_jobs

    stage = new_stage(services, "foreign")
    submitted = submit(stage, args.base_jobs, seed=2, sizes=(20, 150, 700))
    queue = model_queue(stage.env)
    lost = stage.broker.llen(queue)
    stage.broker.delete(queue)  # the broker lost the jobs' messages
    app = make_celery(Settings(broker_url=stage.env["DOCQA_BROKER_URL"], queue=stage.env["DOCQA_QUEUE"]))
    send_jobs(app, [1], queue, "another-store")
    started, wall = time.monotonic(), time.time()
    stage.workers.start(2)
    stage.notes.append(f"{lost} messages deleted with the queue")
    row = finish(stage, "broker lost its queue + another store's message", submitted, started, 900)
    row.notes.append("dead-letter reasons: " + " | ".join(dead_letter_reasons(stage)))
    for marker, what in (("refused a message", "the foreign message refused"),
                         ("reconciler: sent", "the reconciler sent the lost jobs"),
                         ("dead-lettered", "the foreign message dead-lettered")):
        row.notes.append(when(stage, marker, wall, what) or f"never: {what}")
    return row


def log_offsets(stage: Stage, marker: str, since: float) -> list[float]:
    """Seconds from `since` (time.time()) to each worker-log line holding `marker`, in order
    (Celery's log lines start with their local time: `[2026-01-02 03:04:05,678: ...`)."""
    found = []
    for line in stage.workers.logs(None).splitlines():
        if marker in line and line.startswith("["):
            try:
                at = datetime.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
            found.append(at - since)
    return sorted(found)


def when(stage: Stage, marker: str, since: float, what: str) -> str | None:
    """`what` at +N s (each occurrence of `marker` after `since`), or None if it never occurred."""
    offsets = log_offsets(stage, marker, since)
    if not offsets:
        return None
    shown = ", ".join(f"{t:+.1f} s" for t in offsets[:5]) + (" ..." if len(offsets) > 5 else "")
    return f"{what} at {shown}"


def scenario_outage(services: Services, args, seconds: int) -> Row:
    stage = new_stage(services, f"pg{seconds}")
    submitted = submit(stage, args.base_jobs, seed=3, sizes=(400, 900))
    stage.workers.start(2)
    wait_for(lambda: (safe_counts(stage) or {"done": 0})["done"] >= 20, timeout=600, interval=0.2,
             what="20 jobs done", logs=stage.workers.logs)
    restarted, wall = outage(services, stage, seconds)
    resumed = wait_resumed(stage, restarted)
    stage.notes.append(f"the first job after the restart finished {resumed} after it")
    row = finish(stage, f"PostgreSQL stopped {seconds} s under 2 workers", submitted, restarted, 900)
    for marker, what in (("could not hand back", "a run could not hand back its claimed jobs"),
                         ("requeued", "the sweeper requeued jobs"),
                         ("reconciler: sent", "the reconciler sent jobs again")):
        found = when(stage, marker, wall, what + " (times from the restart)")
        if found:
            row.notes.append(found)
    alone = len(log_offsets(stage, "(alone:", wall))
    if alone:
        row.notes.append(f"{alone} runs of one suspect job alone after the restart")
    return row


def outage(services: Services, stage: Stage, seconds: int) -> tuple[float, float]:
    """Stop PostgreSQL for `seconds`; the restart's time.monotonic() and time.time()."""
    before = stage.repo.counts()
    services.pg.stop()
    stopped = time.monotonic()
    time.sleep(seconds)
    services.pg.start()
    restarted, wall = time.monotonic(), time.time()
    stage.notes.append(f"stopped with {before['done']} jobs done and {before['running']} running; down "
                       f"{restarted - stopped:.1f} s")
    stage.repo.engine.dispose()
    collect_exits(stage)
    if stage.exits:
        stage.notes.append(f"worker exits during the outage: {stage.exits}")
    return restarted, wall


def wait_resumed(stage: Stage, since: float) -> str:
    """Seconds from `since` until the done count grows (work resumed), as text."""
    before = (safe_counts(stage) or {"done": -1})["done"]
    try:
        wait_for(lambda: (safe_counts(stage) or {"done": -1})["done"] > before, timeout=300, interval=0.2)
        return f"{time.monotonic() - since:.1f} s"
    except AssertionError:
        return "not within 300 s"


# -- chaos ---------------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc: psutil is not a dependency)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:  # fields: state, ppid, ...
            found.append(int(entry.name))
    return found


def kill_a_pool_process(stage: Stage, rng: random.Random) -> str | None:
    """SIGKILL the pool process of a random live worker; what was killed, or None."""
    live = [(k, p) for k, p in enumerate(stage.workers.procs) if p.poll() is None]
    rng.shuffle(live)
    for k, proc in live:
        pool = children(proc.pid)
        if pool:
            pid = rng.choice(pool)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            return f"worker{k} pool pid {pid}"
    return None


def replace_dead_workers(stage: Stage) -> None:
    """A worker that ended as a whole is recorded and replaced by a new one."""
    before = len(stage.exits)
    collect_exits(stage)
    for k, code in stage.exits[before:]:
        stage.notes.append(f"worker{k} exited with status {code}; worker{len(stage.workers.procs)} started")
        stage.workers.start(1)


def chaos_loop(stage: Stage, submitted: int, timeout: float) -> tuple[list, float]:
    """Kill a pool process every KILL_EVERY_SECONDS until every job is finished; the kills
    and the time of the last one."""
    rng = random.Random(20)
    kills: list[tuple[float, str]] = []
    started = last = time.monotonic()
    next_kill = started + KILL_EVERY_SECONDS
    while not all_finished(stage, submitted) and time.monotonic() - started < timeout:
        replace_dead_workers(stage)
        if time.monotonic() >= next_kill:
            what = kill_a_pool_process(stage, rng)
            next_kill += KILL_EVERY_SECONDS
            if what:
                last = time.monotonic()
                kills.append((last - started, f"{what} at {datetime.datetime.now():%H:%M:%S.%f}"[:-3]))
        time.sleep(0.5)
    return kills, last


def scenario_chaos(services: Services, args) -> Row:
    stage = new_stage(services, "chaos")
    n_docs = min(args.jobs, CHAOS_MAX_DOCS)
    questions = -(-args.jobs // n_docs)
    submitted = submit(stage, n_docs, seed=5, sizes=CHAOS_WORDS, questions=questions)
    started, wall = time.monotonic(), time.time()
    stage.workers.start(2)
    kills, last = chaos_loop(stage, submitted, timeout=args.chaos_timeout)
    took = time.monotonic() - started
    row = finish(stage, f"SIGKILL of a pool process every {KILL_EVERY_SECONDS} s ({len(kills)} kills)",
                 submitted, last, 300)
    row.notes.insert(0, f"{n_docs} documents x {questions} question(s)")
    row.notes.append(f"{len(kills)} kills in {took:.0f} s from the workers' start to the last job: "
                     + ", ".join(f"+{t:.0f} s {w}" for t, w in kills[:4]) + (" ..." if len(kills) > 4 else ""))
    requeues = re.findall(r"requeued (\d+) job\(s\)", stage.workers.logs(None))
    row.notes.append(f"the sweepers requeued {sum(map(int, requeues))} jobs in {len(requeues)} passes")
    for marker, what in (("(alone:", "runs of one suspect alone"),
                         ("exited with 'signal 9", "pool processes reported killed by Celery"),
                         ("failed: their attempts ran out", "'marked ... failed' log lines")):
        row.notes.append(f"{what}: {len(log_offsets(stage, marker, wall))}")
    return row


# -- report --------------------------------------------------------------------------------
HEADER = ("fault", "submitted jobs", "answered", "duplicated", "stranded", "failed", "recomputed",
          "highest attempts", "time to recover", "dead letters", "worker exits")


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        f = r.figures
        exits = ", ".join(f"worker{k}: {code}" for k, code in r.exits) or "none"
        cells = (r.fault, r.submitted, f["answered"], f["duplicated"], f["stranded"], f["failed"], f["recomputed"],
                 f["highest"], r.recover, f["dead_letters"], exits)
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


PARAGRAPHS = {
    "base64": "**base64-invalid envelope.** Before any job was submitted, two real Celery envelopes of a docqa "
              "message (built by `send_jobs` and read back from a scratch queue, as tests/integration/test_poison.py "
              "does) were pushed onto the model's queue: one whose `body` is `%%% not base64`, one without "
              "`properties.delivery_info`. Then {n} jobs were submitted with `docqa submit` and 2 workers started; "
              "the time is from the workers' start to the last job done.",
    "foreign": "**Foreign-store message and a broker that lost its queue.** {n} jobs were submitted with no worker "
               "running, the model's queue key was deleted in Redis (its messages lost), one message of another "
               "store (`send_jobs(app, [1], queue, \"another-store\")`) was pushed, and then 2 workers started. No "
               "command was given afterwards: the jobs can only come back through the reconciler (default "
               "DOCQA_RECONCILE_SECONDS=60). The time is from the workers' start to the last job done.",
    "pg20": "**PostgreSQL outage, 20 s.** {n} jobs of mixed sizes (write_corpus sizes=(400, 900)) were submitted, 2 "
            "workers started, and once at least 20 jobs were done the drill's own PostgreSQL was stopped "
            "(`pg_ctl stop -m fast`), left down 20 s and started again. The time is from the restart to the last job "
            "done.",
    "pg60": "**PostgreSQL outage, 60 s.** The same as above with the database down for 60 s: longer than the 30 s "
            "lease, so every lease held at the stop has run out when the store returns.",
    "chaos": "**Chaos.** {n} jobs on short documents (15, 30 or 60 words), 2 workers; every {every} s the drill "
             "SIGKILLed the pool process (the child that runs jobs, found in /proc by its parent pid) of a random "
             "worker, and let Celery's prefork main process start a new one; a worker that exited as a whole would "
             "have been replaced by a new `docqa worker`. The time is from the last kill to the last job done. With "
             "the tiny model two workers answer several hundred short jobs a second here, so 5,000 jobs (the "
             "default --jobs) are all done before the first kill; `--jobs` sets the number, and above 5,000 each "
             "of the 5,000 documents is asked more questions.",
}


def problems(name: str, row: Row) -> list[str]:
    """What an operator would call wrong in this row."""
    f = row.figures
    found = [f"{f[k]} {k}" for k in ("stranded", "duplicated", "failed") if f[k]]
    if row.recover.startswith("not"):
        found.append(f"jobs unfinished ({row.recover})")
    found += [f"worker{k} exited with status {code}" for k, code in row.exits]
    expected = EXPECTED_DEAD_LETTERS.get(name, 0)
    if f["dead_letters"] != expected:
        found.append(f"{f['dead_letters']} dead letters where {expected} were expected")
    if name != "chaos" and f["recomputed"]:
        found.append(f"{f['recomputed']} jobs computed again (attempts up to {f['highest']}) with no process killed")
    return found


def paragraph(name: str, row: Row) -> str:
    text = PARAGRAPHS[name].format(n=row.submitted, every=KILL_EVERY_SECONDS)
    observed = "; ".join(n[:-1] if n.endswith(".") and not n.endswith("...") else n for n in row.notes)
    found = problems(name, row)
    return f"{text} Observed: {observed}. Problems: {'; '.join(found) if found else 'none'}."


def write_doc(path: Path, rows: list[tuple[str, Row]], command: str, seconds: float) -> None:
    parts = [
        "# Fault drill",
        "",
        f"Run on {datetime.date.today().isoformat()}, CPU: {cpu_model()} ({os.cpu_count()} cores), in "
        f"{seconds / 60:.1f} minutes, with:",
        "",
        "```bash", command, "```",
        "",
        "Real `docqa submit` and `docqa worker` processes (2 workers, `--concurrency 1` each) with docqa's default "
        "settings (lease 30 s, reconcile 60 s, 64 jobs a message), the tiny model tests/fixtures/tiny-distilbert-qa "
        "on the CPU, the drill's own PostgreSQL cluster and redis-server on free ports, and a fresh database and "
        "Redis database for each fault. duplicated: (job, rank) pairs with more than one answer row; stranded: jobs "
        "queued or running at the end; recomputed: jobs with attempts > 1; worker exits: worker processes that "
        "ended by themselves during the fault (exit status).",
        "",
        table([r for _, r in rows]),
        "",
    ]
    for name, row in rows:
        parts += [paragraph(name, row), ""]
    path.write_text("\n".join(parts), encoding="utf-8")


# -- main ----------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=SCENARIOS, help="run this scenario only (docs/FAULTS.md is not written)")
    p.add_argument("--jobs", type=int, default=5000, help="jobs of the chaos scenario (default 5000)")
    p.add_argument("--base-jobs", type=int, default=300, help="jobs of the other scenarios (default 300)")
    p.add_argument("--chaos-timeout", type=float, default=1800, help="stop killing after this long, seconds")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "FAULTS.md", help="where a full run writes its report")
    return p.parse_args(argv)


def run_scenario(name: str, services: Services, args) -> Row:
    print(f"== {name}", flush=True)
    if name == "base64":
        return scenario_base64(services, args)
    if name == "foreign":
        return scenario_foreign(services, args)
    if name in ("pg20", "pg60"):
        return scenario_outage(services, args, int(name[2:]))
    return scenario_chaos(services, args)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = "python benchmarks/faults.py " + " ".join(argv)
    out = Path(tempfile.mkdtemp(prefix="docqa-faults-"))
    print(f"logs in {out}", flush=True)
    started = time.monotonic()
    services = Services(out)
    rows: list[tuple[str, Row]] = []
    try:
        for name in [args.only] if args.only else SCENARIOS:
            rows.append((name, run_scenario(name, services, args)))
    finally:
        services.close()
    seconds = time.monotonic() - started
    print("\n" + table([r for _, r in rows]) + "\n")
    for name, row in rows:
        print(f"{name}: {row.notes}; problems: {problems(name, row) or 'none'}; log markers {row.findings}")
    print(f"\nrun time {seconds / 60:.1f} min; logs in {out}")
    if not args.only:
        write_doc(args.doc, rows, command.strip(), seconds)
        print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
