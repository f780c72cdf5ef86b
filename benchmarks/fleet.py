"""Fleet benchmark (issue 19, "a fleet that stays busy"): does a fleet of `docqa worker`s
stay busy on a skewed corpus, and how long does a caller's `?wait=` take meanwhile?

    . .venv/bin/activate
    python benchmarks/fleet.py --quick                      # small corpus, N = 1, 2 (about 1-2 minutes)
    python benchmarks/fleet.py                              # 400 short + 3 long documents, N = 1, 2, 4
    python benchmarks/fleet.py --model full                 # the full-size model (benchmarks/build_full_model.py)
    python benchmarks/fleet.py --batch-windows 128 --split-windows 128 --json bench-out/fleet-after.json
    python benchmarks/fleet.py --python /tmp/venv-before/bin/python --json bench-out/fleet-before.json

The corpus: many short documents (1-3 windows each; 400 by default) and a few very long
ones (300, 700 and 1500 windows by default), one question each, in a fixed shuffled order
(--seed). The text is prose of the Python documentation (benchmarks/corpus.py, Debian's
python3.11-doc) when it is installed, else the repository's own README.md, docs/*.md and
examples/ (--text); each document starts with a line naming it, so no two share a text.
Window counts come from docqa.core.windows.plan_windows on the model's tokenizer, the
windowing workers run (max_seq_len 384, doc_stride 128).

For each N in --workers (default 1 2 4), on a fresh PostgreSQL database and a fresh Redis
database of the benchmark's own (a redis-server it starts on a free port, unless
--redis-url), it starts N `docqa worker --pool solo --concurrency 1` processes, each with
DOCQA_TORCH_THREADS = max(1, cores // N) (--cores, default this machine's), waits until
every one has loaded its model ("docqa worker process ... ready" in its log), then runs
`docqa submit` of the corpus and polls the store until every job is done or failed.

- makespan: from the start of `docqa submit` to the last job's finished_at;
- windows/s: the corpus's windows / makespan;
- efficiency: windows/s / (N x the N = 1 run's windows/s) (needs 1 in --workers);
- runs: each worker logs one line per run, `docqa run: message jobs [...]: claimed C, ...,
  windows W in F forwards, S s`, with Celery's `[YYYY-MM-DD HH:MM:SS,mmm: LEVEL/...]` in
  front; a run spans [log time - S, log time]. Checkouts whose line has no seconds (before
  commit 759b426) are timed by Celery's own `Task ... succeeded in S s` line instead;
- max idle gap: the longest time a worker spent between two of its runs, or from the
  submit's start to its first run, before the makespan's end (a worker with no run at all:
  the whole makespan); tail idle: the longest time from a worker's last run to the
  makespan's end (waiting on a straggler); busy: run seconds / (N x makespan);
- queued until: the last poll (every 0.2 s) at which some job or part was still queued;
- ?wait= latency (for N in --probe-at, default 2): `docqa serve` runs beside the workers,
  and as soon as `docqa submit` has returned (the backlog at its largest) one short
  document is POSTed to /v1/submissions?wait=600; the seconds until the response, whether
  it was finished, and the jobs still queued when it was sent.

--python runs every docqa process (submit, worker, serve, db upgrade) with another
interpreter, e.g. a venv with another checkout installed non-editable (the "before" of a
comparison, docs/BENCHMARKS.md): the corpus, the polling and the report stay here.
--batch-windows / --split-windows set DOCQA_BATCH_WINDOWS / DOCQA_SPLIT_WINDOWS for the
workers (a checkout that has no such settings ignores them); --env KEY=VALUE sets others.

The table is printed as Markdown; --json PATH writes every figure (per worker too, and the
store's queued/running/done counts over time). The workers', server's and submit's logs
stay in the folder printed at the start (--out). Every worker, server and redis-server
started here is stopped on exit, on Ctrl-C and on SIGTERM, and the databases are dropped.

With the tiny model a worker runs a few hundred windows a second, so `docqa submit`
(tokenizing and storing the corpus) takes about as long as the work and the figures say
more about the producer than about the fleet: they show the benchmark runs. Use
--model full for figures about the fleet (about 10 windows/s per 2 cores: the default
corpus takes several minutes per N).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import corpus  # noqa: E402  (benchmarks/corpus.py)
from support import OwnRedis, free_port  # noqa: E402  (tests/integration/support.py)

TINY_MODEL = ROOT / "tests" / "fixtures" / "tiny-distilbert-qa"
FULL_MODEL = ROOT / "bench-out" / "full-distilbert-qa"  # benchmarks/build_full_model.py
QUESTION = "What does this part of the documentation describe?"
PROBE_QUESTION = "Where does the river flow?"
MAX_SEQ_LEN, DOC_STRIDE = 384, 128  # docqa's defaults: the windows workers run
POLL_SECONDS = 0.2
PROBE_WAIT_SECONDS = 600  # DOCQA_API_MAX_WAIT_SECONDS' default: the longest ?wait= a server allows

DEFAULTS = dict(short_docs=400, short_windows=(1, 3), long_windows=(300, 700, 1500), workers=(1, 2, 4),
                timeout=3600.0)
QUICK = dict(short_docs=80, short_windows=(1, 3), long_windows=(100, 200, 400), workers=(1, 2), timeout=900.0)


class BenchError(RuntimeError):
    """Something the benchmark cannot go on with; the message says what and where to look."""


# -- processes ---------------------------------------------------------------------------------
class Processes:
    """Every process this benchmark starts (each in a session of its own), so that all are
    stopped however the benchmark ends."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], env: dict, log: Path, cwd: Path) -> subprocess.Popen:
        fh = open(log, "ab")
        try:
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            fh.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, procs: list[subprocess.Popen] | None = None, grace: float = 15.0) -> None:
        """SIGTERM (Celery: warm shutdown), then SIGKILL of each process group after `grace`."""
        chosen = [p for _, p in self.procs if procs is None or p in procs]
        for p in chosen:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for p in chosen:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
                continue
            except subprocess.TimeoutExpired:
                pass
            try:  # still running: SIGKILL the session we created for it (it and its children)
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                print(f"process {p.pid} ({' '.join(map(str, p.args[:4]))} ...) did not end", file=sys.stderr)
        self.procs = [(n, p) for n, p in self.procs if p not in chosen]


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


# -- services ----------------------------------------------------------------------------------
class Databases:
    """PostgreSQL databases of this run (created fresh, dropped at the end)."""

    def __init__(self, admin_dsn: str) -> None:
        import psycopg

        self.admin_dsn = admin_dsn
        try:
            info = psycopg.conninfo.conninfo_to_dict(admin_dsn)
            with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            raise BenchError(f"PostgreSQL is not reachable with --pg {admin_dsn!r}: {exc}") from None
        self.host = info.get("host", "127.0.0.1")
        self.port = info.get("port", "5432")
        self.user = info.get("user", "postgres")
        self.created: list[str] = []

    def fresh(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
        self.created.append(name)
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{name}"

    def drop_all(self) -> None:
        import psycopg

        for name in self.created:
            try:
                with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:  # report, and go on dropping the others
                print(f"could not drop database {name}: {exc}", file=sys.stderr)
        self.created.clear()


class Broker:
    """A Redis database per fleet run: on a redis-server of our own (default), or numbered
    databases of --redis-url's server, each flushed before and after use."""

    def __init__(self, url: str | None, folder: Path) -> None:
        import redis

        self.own: OwnRedis | None = None
        if url is None:
            self.own = OwnRedis(folder)
            if self.own.exe is None:
                raise BenchError("redis-server is not on PATH: install it (apt-get install redis-server) or give "
                                 "--redis-url redis://HOST:PORT/DB of a server whose database DB may be flushed")
            self.own.start()
            self.base, self.next_db = f"redis://127.0.0.1:{self.own.port}", 1
        else:
            m = re.fullmatch(r"(rediss?://[^/]+)/(\d+)", url)
            if not m:
                raise BenchError(f"--redis-url {url!r}: expected redis://HOST:PORT/DB with a database number")
            if m.group(2) == "0":
                raise BenchError("--redis-url: database 0 is the shared default; pick another number (it is flushed)")
            self.base, self.next_db = m.group(1), int(m.group(2))
        self.used: list[str] = []
        try:
            redis.Redis.from_url(f"{self.base}/{self.next_db}", socket_connect_timeout=5).ping()
        except Exception as exc:
            raise BenchError(f"Redis at {self.base} is not reachable: {exc}") from None

    def fresh(self) -> str:
        import redis

        url = f"{self.base}/{self.next_db}"
        self.next_db += 1
        redis.Redis.from_url(url).flushdb()
        self.used.append(url)
        return url

    def close(self) -> None:
        import redis

        if self.own is not None:
            self.own.stop()
            return
        for url in self.used:
            try:
                redis.Redis.from_url(url, socket_connect_timeout=5).flushdb()
            except Exception:
                pass


# -- the corpus --------------------------------------------------------------------------------
@dataclass
class Doc:
    id: str
    text: str
    windows: int
    kind: str  # "short" or "long"


def source_paragraphs(which: str) -> tuple[str, list[str]]:
    """Prose paragraphs to cut documents from: (what they are, paragraphs)."""
    if which in ("auto", "pydocs") and corpus.available():
        paras = [p for _n, _t, prose, _h in corpus.all_prose() for p in prose.split("\n\n") if len(p) > 40]
        return f"Python 3.11 documentation prose ({corpus.DOC_ROOT})", paras
    if which == "pydocs":
        raise BenchError(f"{corpus.DOC_ROOT} is missing: apt-get install -y python3.11-doc, or use --text repo")
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").rglob("*.txt")),
             *sorted((ROOT / "examples").rglob("*.md"))]
    paras = []
    for f in files:
        paras += [re.sub(r"\s+", " ", p).strip() for p in f.read_text(encoding="utf-8").split("\n\n")]
    return "this repository's README.md, docs/*.md and examples/", [p for p in paras if len(p) > 40]


class ParagraphStream:
    """Paragraphs in order (starting over at the end), each with its tokens' end offsets."""

    def __init__(self, tokenizer, paragraphs: list[str]) -> None:
        self.tok, self.paras, self.pos = tokenizer, paragraphs, 0
        self._cache: dict[int, list[int]] = {}

    def _ends(self, i: int) -> list[int]:
        if i not in self._cache:
            chunk = list(range(i, min(i + 512, len(self.paras))))
            enc = self.tok([self.paras[j] for j in chunk], add_special_tokens=False, return_offsets_mapping=True,
                           return_attention_mask=False, verbose=False)
            for j, offsets in zip(chunk, enc["offset_mapping"]):
                self._cache[j] = [e for _s, e in offsets]
        return self._cache[i]

    def take(self, n_tokens: int) -> str:
        """About `n_tokens` tokens of whole paragraphs, the last one cut at a token's end."""
        out, left = [], n_tokens
        while left > 0:
            i = self.pos % len(self.paras)
            ends = self._ends(i)
            self.pos += 1
            if len(ends) <= left:
                out.append(self.paras[i])
                left -= len(ends)
            else:
                out.append(self.paras[i][: ends[left - 1]])
                left = 0
        return "\n\n".join(out)


def tokens_for(windows: int, budget: int, rng: random.Random) -> int:
    """A context length, in tokens, that plan_windows cuts into exactly `windows` windows (with
    a margin from either edge, so a slightly different tokenization of the cut text keeps it)."""
    step = budget - DOC_STRIDE
    lo = 12 if windows == 1 else budget + (windows - 2) * step + 1
    hi = budget if windows == 1 else budget + (windows - 1) * step
    margin = min(24, (hi - lo) // 4)
    return rng.randint(lo + margin, hi - margin)


def build_corpus(model: str, text_source: str, short_docs: int, short_windows: tuple[int, int],
                 long_windows: tuple[int, ...], seed: int) -> tuple[list[Doc], dict]:
    from transformers import AutoTokenizer

    from docqa.core.windows import plan_windows, tokenize_document

    started = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model)
    what, paragraphs = source_paragraphs(text_source)
    if not paragraphs:
        raise BenchError(f"no prose found in {what}")
    q_tokens = len(tok(QUESTION, add_special_tokens=False)["input_ids"])
    budget = MAX_SEQ_LEN - q_tokens - 3
    rng = random.Random(seed)
    stream = ParagraphStream(tok, paragraphs)
    specs = [("short", rng.randint(*short_windows)) for _ in range(short_docs)]
    specs += [("long", w) for w in long_windows]
    rng.shuffle(specs)
    docs = []
    for i, (kind, windows) in enumerate(specs):
        head = f"Fleet benchmark document {i} ({kind}, {windows} windows, seed {seed})."
        target = tokens_for(windows, budget, rng)
        text = head + "\n\n" + stream.take(target - len(tok(head, add_special_tokens=False)["input_ids"]))
        for _ in range(8):  # the cut text may tokenize a little differently: correct towards the target
            t = tokenize_document(tok, text)
            got = len(plan_windows(len(t), q_tokens, max_seq_len=MAX_SEQ_LEN, doc_stride=DOC_STRIDE))
            if got == windows:
                break
            if len(t) < target:
                text += "\n\n" + stream.take(target - len(t))
            else:
                text = text[: int(t.offsets[target - 1][1])]
        docs.append(Doc(id=f"fleet-{i:04d}-{kind}", text=text, windows=got, kind=kind))
    short = [d.windows for d in docs if d.kind == "short"]
    summary = {
        "text": what, "seed": seed, "question": QUESTION, "question_tokens": q_tokens, "documents": len(docs),
        "short_documents": len(short), "short_windows": sum(short),
        "short_windows_each": f"{min(short, default=0)}-{max(short, default=0)}",
        "long_windows_each": [d.windows for d in docs if d.kind == "long"],
        "long_positions": [i for i, d in enumerate(docs) if d.kind == "long"],
        "windows": sum(d.windows for d in docs), "characters": sum(len(d.text) for d in docs),
        "build_s": round(time.perf_counter() - started, 1),
    }
    return docs, summary


def probe_windows(model: str, text: str) -> int:
    from transformers import AutoTokenizer

    from docqa.core.windows import plan_windows, tokenize_document

    tok = AutoTokenizer.from_pretrained(model)
    q = len(tok(PROBE_QUESTION, add_special_tokens=False)["input_ids"])
    return len(plan_windows(len(tokenize_document(tok, text)), q, max_seq_len=MAX_SEQ_LEN, doc_stride=DOC_STRIDE))


# -- worker logs -------------------------------------------------------------------------------
_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): (\w+)/([^\]]*)\] (.*)$")
_RUN = re.compile(r"docqa run: .*?claimed (\d+).*?windows (\d+) in (\d+) forwards(?:, ([\d.]+) s)?")
_SUCCEEDED = re.compile(r"Task \S+\[[^\]]+\] succeeded in ([\d.]+)s")
_READY = re.compile(r"docqa worker process \S+ ready")


def log_time(stamp: str) -> float:
    """Celery's log time (local time, milliseconds) as a Unix time."""
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


@dataclass
class Run:
    start: float
    end: float
    claimed: int
    windows: int
    forwards: int
    timed_by: str  # "docqa" (the run line's seconds) or "celery" (the task's `succeeded in`)


@dataclass
class WorkerLog:
    ready: float | None = None
    runs: list[Run] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def parse_worker_log(text: str) -> WorkerLog:
    out = WorkerLog()
    pending: tuple[float, re.Match] | None = None  # a run line without seconds, waiting for Celery's
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        at, level, message = log_time(m.group(1)), m.group(2), m.group(4)
        if out.ready is None and _READY.search(message):
            out.ready = at
        r = _RUN.search(message)
        if r:
            claimed, windows, forwards = int(r.group(1)), int(r.group(2)), int(r.group(3))
            if r.group(4) is not None:
                out.runs.append(Run(at - float(r.group(4)), at, claimed, windows, forwards, "docqa"))
            else:
                pending = (at, r)
            continue
        s = _SUCCEEDED.search(message)
        if s and pending is not None:
            _at, r = pending
            out.runs.append(Run(at - float(s.group(1)), at, int(r.group(1)), int(r.group(2)), int(r.group(3)),
                                "celery"))
            pending = None
        elif level in ("ERROR", "CRITICAL") and len(out.errors) < 5:
            out.errors.append(message[:300])
    if pending is not None:  # no Celery line came (a different log level): a run of no length
        at, r = pending
        out.runs.append(Run(at, at, int(r.group(1)), int(r.group(2)), int(r.group(3)), "log time only"))
    return out


def queued_spans(timeline: list[tuple[float, int, int, int]], t0: float) -> list[tuple[float, float]]:
    """The times (Unix) at which the store had queued jobs or parts: each poll that saw some
    stands for the time until the next poll."""
    spans = []
    for (t, queued, *_), nxt in zip(timeline, timeline[1:] + [None]):
        if queued:
            end = t0 + (nxt[0] if nxt is not None else t + POLL_SECONDS)
            if spans and abs(spans[-1][1] - (t0 + t)) < 1e-9:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((t0 + t, end))
    return spans


def overlap(a: float, b: float, spans: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(b, e) - max(a, s)) for s, e in spans)


def idle_figures(runs: list[Run], start: float, horizon: float, queued: list[tuple[float, float]]) -> dict:
    """Idle gaps of one worker in [start, horizon]: between runs, and from `start` to its first
    run (a worker with no run: all of it); and how much of each gap work was queued in the store."""
    spans = sorted((r.start, r.end) for r in runs if r.end > start and r.start < horizon)
    gaps, cursor, busy = [], start, 0.0
    for b, e in spans:
        b, e = max(b, start), min(e, horizon)
        if b > cursor:
            gaps.append((cursor, b))
        busy += max(0.0, e - max(b, cursor))
        cursor = max(cursor, e)
    if not spans:
        gaps.append((start, horizon))
    tail = (cursor, horizon) if spans and horizon > cursor else None
    return {"max_gap_s": max((b - a for a, b in gaps), default=0.0),
            "max_gap_while_queued_s": max((overlap(a, b, queued) for a, b in gaps), default=0.0),
            "gaps_over_1s": sum(b - a > 1.0 for a, b in gaps),
            "tail_idle_s": tail[1] - tail[0] if tail else (horizon - start if not spans else 0.0),
            "tail_idle_while_queued_s": overlap(*tail, queued) if tail else 0.0,
            "busy_s": busy, "runs": len(runs), "windows": sum(r.windows for r in runs),
            "claimed": sum(r.claimed for r in runs),
            "first_run_s": spans[0][0] - start if spans else None,
            "last_run_end_s": cursor - start if spans else None,
            "timed_by": sorted({r.timed_by for r in runs})}


# -- the store ---------------------------------------------------------------------------------
class Store:
    """Direct SQL on the fleet's database: job counts and finish times, of either schema."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
        cols = {r[0] for r in self.conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs'")}
        # Schema 0007+: window-range parts are rows of jobs with a parent; count the jobs only.
        self.top = "parent_id IS NULL" if "parent_id" in cols else "TRUE"

    def counts(self) -> tuple[dict[str, int], int]:
        """(top-level jobs by status, rows queued: jobs and parts)."""
        rows = self.conn.execute(
            f"SELECT status, count(*) FILTER (WHERE {self.top}), count(*) FROM jobs GROUP BY status").fetchall()
        return {s: int(n) for s, n, _all in rows}, sum(int(a) for s, _n, a in rows if s == "queued")

    def last_finish(self) -> float | None:
        v = self.conn.execute(f"SELECT extract(epoch FROM max(finished_at)) FROM jobs WHERE {self.top}").fetchone()[0]
        return float(v) if v is not None else None

    def failures(self, limit: int = 5) -> list[str]:
        return [f"job {i}: {e}" for i, e in self.conn.execute(
            f"SELECT id, error FROM jobs WHERE status = 'failed' AND {self.top} ORDER BY id LIMIT {limit}")]

    def close(self) -> None:
        self.conn.close()


# -- one fleet run -----------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args, self.out = args, out
        self.procs = Processes()
        self.dbs: Databases | None = None
        self.broker: Broker | None = None
        self.run_id = uuid.uuid4().hex[:8]
        self.python = args.python
        self.probe_text = (f"Probe {self.run_id}: the river Seine flows north-west through Paris and reaches the sea "
                           "at Le Havre, past Rouen, where barges unload grain and wine.")
        self.probe_windows = probe_windows(args.model, self.probe_text)

    def docqa(self, *args: str) -> list[str]:
        return [self.python, "-m", "docqa.cli", *args]

    def env(self, database_url: str, broker_url: str, threads: int | None = None) -> dict[str, str]:
        """The caller's environment less every DOCQA_* variable (and PYTHONPATH: --python's
        interpreter must import its own docqa), plus the run's settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_") and k != "PYTHONPATH"}
        env.update(DOCQA_DATABASE_URL=database_url, DOCQA_BROKER_URL=broker_url, DOCQA_QUEUE="docqa",
                   DOCQA_MODEL=self.args.model, DOCQA_DEVICE=self.args.device, HF_HUB_OFFLINE="1",
                   HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error", PYTHONUNBUFFERED="1")
        if threads is not None:
            env["DOCQA_TORCH_THREADS"] = str(threads)
        if self.args.batch_windows is not None:
            env["DOCQA_BATCH_WINDOWS"] = str(self.args.batch_windows)
        if self.args.split_windows is not None:
            env["DOCQA_SPLIT_WINDOWS"] = str(self.args.split_windows)
        for item in self.args.env:
            key, _, value = item.partition("=")
            env[key] = value
        return env

    def check_python(self) -> dict:
        """Which docqa --python imports (and that it imports one at all)."""
        code = ("import json, docqa, docqa.worker.tasks as t; from docqa.storage import db; "
                "print(json.dumps({'version': docqa.__version__, 'file': docqa.__file__, 'worker': t.__file__, "
                "'schema': getattr(db, 'SCHEMA_HEAD', None)}))")
        out = subprocess.run([self.python, "-c", code], capture_output=True, text=True, cwd=self.out,
                             env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        if out.returncode != 0:
            raise BenchError(f"{self.python} cannot import docqa:\n{out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def run_fleet(self, n: int, docs_file: Path, n_jobs: int, windows: int, probe: bool) -> dict:
        folder = self.out / f"n{n}"
        folder.mkdir(parents=True, exist_ok=True)
        url = self.dbs.fresh(f"docqa_fleet_{self.run_id}_n{n}")
        broker = self.broker.fresh()
        threads = max(1, self.args.cores // n)
        env = self.env(url, broker, threads)
        up = subprocess.run(self.docqa("db", "upgrade"), env=env, cwd=folder, capture_output=True, text=True)
        if up.returncode != 0:
            raise BenchError(f"N={n}: docqa db upgrade failed ({up.returncode}):\n{up.stderr[-2000:]}")
        store = Store(url)
        result: dict = {"workers": n, "torch_threads": threads, "database": url.rsplit("/", 1)[1], "broker": broker,
                        "log_folder": str(folder)}
        workers: list[subprocess.Popen] = []
        server = None
        try:
            for k in range(n):
                workers.append(self.procs.start(
                    f"worker{k}", self.docqa("worker", "--pool", "solo", "--concurrency", "1", "--loglevel", "INFO",
                                             "--hostname", f"fleet{k}-{self.run_id}@%h"),
                    env, folder / f"worker{k}.log", folder))
            if probe:
                port = free_port()
                token = secrets.token_urlsafe(24)
                server = self.procs.start("serve", self.docqa("serve", "--host", "127.0.0.1", "--port", str(port)),
                                          dict(env, DOCQA_API_TOKEN=token), folder / "serve.log", folder)
            if self.args.presubmit:  # stored now, its messages sent to a scratch database: the workers see none
                pre = subprocess.run(self.docqa("submit", str(docs_file)), env=dict(env, DOCQA_BROKER_URL=self.broker.fresh()),
                                     cwd=folder, capture_output=True, text=True)
                if pre.returncode != 0:
                    raise BenchError(f"N={n}: docqa submit (presubmit) failed ({pre.returncode}):\n{pre.stderr[-2000:]}")
            t_ready = time.time()
            self.wait_ready(n, folder, workers, server, port if probe else None)
            result["workers_ready_s"] = round(time.time() - t_ready, 1)

            t0 = time.time()
            # The clock starts at the submit, or (--presubmit) at the requeue that hands the stored
            # jobs to the ready fleet: then the makespan is the fleet's alone.
            command = ("requeue",) if self.args.presubmit else ("submit", str(docs_file))
            sub = self.procs.start("submit", self.docqa(*command), env, folder / "submit.log", folder)
            probe_result: dict = {}
            probe_thread = None
            timeline: list[tuple[float, int, int, int]] = []  # (t, queued rows, running jobs, done jobs)
            deadline = time.monotonic() + self.args.timeout
            submit_s = None
            queued_until = 0.0
            while True:
                now = time.time()
                counts, queued_rows = store.counts()
                timeline.append((round(now - t0, 2), queued_rows, counts.get("running", 0), counts.get("done", 0)))
                if queued_rows:
                    queued_until = now - t0
                if submit_s is None and sub.poll() is not None:
                    submit_s = time.time() - t0
                    if sub.returncode != 0:
                        raise BenchError(f"N={n}: docqa submit exited with {sub.returncode}: see "
                                         f"{folder / 'submit.log'}:\n{tail(folder / 'submit.log')}")
                    if probe:
                        probe_result["sent_at_s"] = round(time.time() - t0, 2)
                        probe_result["queued_rows_at_send"] = queued_rows
                        probe_thread = threading.Thread(target=self.probe, args=(port, token, probe_result),
                                                        daemon=True)
                        probe_thread.start()
                finished = counts.get("done", 0) + counts.get("failed", 0)
                # The probe's job counts once it is sent (unless its request failed: maybe never stored).
                expected = n_jobs + (1 if probe_thread is not None and "error" not in probe_result else 0)
                if submit_s is not None and finished >= expected and (probe_thread is None or "latency_s" in probe_result
                                                                      or "error" in probe_result):
                    break
                for k, w in enumerate(workers):
                    if w.poll() is not None:
                        raise BenchError(f"N={n}: worker{k} exited with {w.returncode} (jobs {counts}): see "
                                         f"{folder / f'worker{k}.log'}:\n{tail(folder / f'worker{k}.log')}")
                if time.monotonic() > deadline:
                    raise BenchError(f"N={n}: not finished within --timeout {self.args.timeout:.0f} s: jobs {counts}, "
                                     f"{queued_rows} rows queued; logs in {folder}")
                time.sleep(POLL_SECONDS)
            polled_end = time.time()
            last = store.last_finish()
            end = last if last is not None and t0 < last <= polled_end + 1 else polled_end
            counts, _ = store.counts()
            makespan = end - t0
            result.update({
                "jobs": sum(counts.values()), "job_counts": counts, "windows": windows,
                "submit_s": round(submit_s, 2), "makespan_s": makespan, "polled_makespan_s": polled_end - t0,
                "queued_until_s": queued_until,
            })
            if counts.get("failed"):
                result["failures"] = store.failures()
            if probe:
                result["probe"] = probe_result
            result["timeline"] = timeline[:: max(1, len(timeline) // 400)]
        finally:
            store.close()
            self.procs.stop(workers + ([server] if server is not None else []))
        # Each worker's runs, from its log (complete now that it has stopped).
        per_worker = []
        queued = queued_spans(timeline, t0)
        for k in range(n):
            wl = parse_worker_log((folder / f"worker{k}.log").read_text(errors="replace"))
            fig = idle_figures(wl.runs, max(t0, wl.ready or t0), end, queued)
            fig["ready_before_submit_s"] = round(t0 - wl.ready, 2) if wl.ready else None
            if wl.errors:
                fig["errors"] = wl.errors
            per_worker.append(fig)
        result["per_worker"] = per_worker
        result["max_idle_gap_s"] = max(w["max_gap_s"] for w in per_worker)
        result["max_idle_gap_while_queued_s"] = max(w["max_gap_while_queued_s"] for w in per_worker)
        result["max_tail_idle_s"] = max(w["tail_idle_s"] for w in per_worker)
        result["busy_share"] = sum(w["busy_s"] for w in per_worker) / (n * makespan)
        result["windows_run"] = sum(w["windows"] for w in per_worker)
        result["runs"] = sum(w["runs"] for w in per_worker)
        return result

    def wait_ready(self, n: int, folder: Path, workers: list, server, port: int | None) -> None:
        deadline = time.monotonic() + self.args.start_timeout
        while True:
            ready = [parse_worker_log((folder / f"worker{k}.log").read_text(errors="replace")).ready is not None
                     for k in range(n)]
            served = server is None or _get(f"http://127.0.0.1:{port}/healthz") == 200
            if all(ready) and served:
                return
            for k, w in enumerate(workers):
                if w.poll() is not None:
                    raise BenchError(f"N={n}: worker{k} exited with {w.returncode} before it was ready: "
                                     f"{folder / f'worker{k}.log'}:\n{tail(folder / f'worker{k}.log')}")
            if server is not None and server.poll() is not None:
                raise BenchError(f"N={n}: docqa serve exited with {server.returncode}: {folder / 'serve.log'}:\n"
                                 f"{tail(folder / 'serve.log')}")
            if time.monotonic() > deadline:
                raise BenchError(f"N={n}: workers ready {ready}, server up {served} after --start-timeout "
                                 f"{self.args.start_timeout:.0f} s; logs in {folder}")
            time.sleep(0.3)

    def probe(self, port: int, token: str, out: dict) -> None:
        """POST one short document with ?wait=; the seconds until the answer (or the error)."""
        text = self.probe_text
        out["windows"] = self.probe_windows
        body = json.dumps({"documents": [{"id": f"probe-{self.run_id}", "text": text}],
                           "questions": [PROBE_QUESTION]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/submissions?wait={PROBE_WAIT_SECONDS}", data=body,
                                     method="POST", headers={"Authorization": f"Bearer {token}",
                                                             "Content-Type": "application/json"})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=PROBE_WAIT_SECONDS + 60) as resp:
                reply = json.loads(resp.read())
            out["latency_s"] = time.perf_counter() - started
            out["finished"] = bool(reply.get("finished"))
            out["progress"] = reply.get("progress")
        except urllib.error.HTTPError as exc:
            out["error"] = f"HTTP {exc.code}: {exc.read()[:500]!r}"
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        self.procs.stop(grace=10)
        if self.dbs is not None:
            self.dbs.drop_all()
        if self.broker is not None:
            self.broker.close()


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except Exception:
        return None


def tail(path: Path, n: int = 2500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# -- report ------------------------------------------------------------------------------------
def table(results: list[dict]) -> str:
    base = next((r for r in results if r["workers"] == 1), None)
    one = base["windows"] / base["makespan_s"] if base else None
    head = ("N", "torch threads", "jobs", "windows", "submit s", "makespan s", "windows/s", "fleet efficiency",
            "max idle gap s", "of it queued s", "tail idle s", "busy", "runs", "?wait= latency s")
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in results:
        rate = r["windows"] / r["makespan_s"]
        eff = f"{rate / (r['workers'] * one):.2f}" if one else "—"
        probe = r.get("probe")
        if probe is None:
            lat = "—"
        elif "latency_s" in probe:
            lat = f"{probe['latency_s']:.2f}" + ("" if probe.get("finished") else " (not finished)")
        else:
            lat = "error"
        cells = (r["workers"], r["torch_threads"], r["jobs"], f"{r['windows']:,}", f"{r['submit_s']:.1f}",
                 f"{r['makespan_s']:.1f}", f"{rate:.1f}", eff, f"{r['max_idle_gap_s']:.1f}",
                 f"{r['max_idle_gap_while_queued_s']:.1f}", f"{r['max_tail_idle_s']:.1f}",
                 f"{r['busy_share']:.0%}", r["runs"], lat)
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"small corpus, N = 1, 2 (short docs {QUICK['short_docs']}, long windows "
                        f"{','.join(map(str, QUICK['long_windows']))}); explicit options still win")
    p.add_argument("--workers", type=int, nargs="+", help=f"fleet sizes N (default {' '.join(map(str, DEFAULTS['workers']))})")
    p.add_argument("--model", default=str(TINY_MODEL),
                   help="model folder (default the tiny test model); 'full' = bench-out/full-distilbert-qa, built by "
                        "benchmarks/build_full_model.py")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter (or venv folder) that runs docqa's commands: another checkout's venv for a "
                        "before/after comparison (default this one)")
    p.add_argument("--batch-windows", type=int, help="DOCQA_BATCH_WINDOWS for the workers (default unset)")
    p.add_argument("--split-windows", type=int, help="DOCQA_SPLIT_WINDOWS for the workers (default unset)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="another environment variable for every docqa process (repeatable)")
    p.add_argument("--short-docs", type=int, help=f"short documents (default {DEFAULTS['short_docs']})")
    p.add_argument("--short-windows", help="windows of a short document, MIN-MAX (default 1-3)")
    p.add_argument("--long-windows", help="windows of each long document, comma-separated (default 300,700,1500)")
    p.add_argument("--text", choices=("auto", "pydocs", "repo"), default="auto",
                   help="where the prose comes from: auto = the Python docs if installed (apt-get install python3.11-doc), "
                        "else the repository's README.md, docs/ and examples/ (which change between commits)")
    p.add_argument("--seed", type=int, default=19, help="corpus seed (window counts and order; default 19)")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                   help="cores the fleet shares: torch threads per worker = max(1, cores // N) (default all)")
    p.add_argument("--device", default="cpu", help="DOCQA_DEVICE (default cpu)")
    p.add_argument("--probe-at", type=int, nargs="*", default=[2],
                   help="fleet sizes at which a ?wait= request is timed (default 2; none: --probe-at)")
    p.add_argument("--pg", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                   help="libpq DSN of an admin connection; a database per N is created there and dropped")
    p.add_argument("--redis-url", help="redis://HOST:PORT/DB to use database DB (then DB+1, ...) of an existing server, "
                                       "flushed (default: a redis-server of our own on a free port)")
    p.add_argument("--timeout", type=float, help="seconds per fleet run before giving up (default 3600; quick 300)")
    p.add_argument("--start-timeout", type=float, default=300, help="seconds for the workers to load the model")
    p.add_argument("--presubmit", action="store_true",
                   help="store the corpus before the workers start (its messages go to a scratch Redis database) "
                   "and start the clock at `docqa requeue`, which sends it to the ready fleet: the makespan is "
                   "then the fleet's alone, without the producer (whose tokenizing dominates with the tiny model)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write every figure as JSON here")
    p.add_argument("--out", type=Path, help="folder for logs (default a new folder under /tmp)")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    args.workers = args.workers or list(preset["workers"])
    args.short_docs = preset["short_docs"] if args.short_docs is None else args.short_docs
    args.short_windows = (tuple(int(x) for x in args.short_windows.split("-")) if args.short_windows
                          else preset["short_windows"])
    args.long_windows = (tuple(int(x) for x in args.long_windows.split(",") if x) if args.long_windows
                         else preset["long_windows"])
    args.timeout = args.timeout or preset["timeout"]
    if len(args.short_windows) != 2 or not 1 <= args.short_windows[0] <= args.short_windows[1]:
        p.error("--short-windows: MIN-MAX with 1 <= MIN <= MAX")
    if any(n < 1 for n in args.workers):
        p.error("--workers: each N at least 1")
    if args.model == "full":
        args.model = str(FULL_MODEL)
    model = Path(args.model)
    if not (model / "config.json").exists():
        hint = " (build it: python benchmarks/build_full_model.py)" if model.resolve() == FULL_MODEL else ""
        p.error(f"--model {args.model}: no model folder there{hint}")
    args.model = str(model.resolve())
    py = Path(args.python)
    if py.is_dir():
        py = py / "bin" / "python"
    if not py.exists():
        p.error(f"--python {args.python}: no such interpreter")
    args.python = str(py.absolute())  # a venv's python is a symlink: keep the venv's path
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    out = args.out or Path(tempfile.mkdtemp(prefix="docqa-fleet-"))
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if out == ROOT or ROOT in out.parents and not str(out).startswith(str(ROOT / "bench-out")):
        raise SystemExit("--out: use a folder outside the repository (or under bench-out/): docqa's commands run there "
                         "and must import --python's docqa, not the checkout's folder")
    print(f"logs in {out}", flush=True)
    os.environ["HF_HUB_OFFLINE"] = "1"
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (`cmd &`)
    bench = Bench(args, out)
    results: list[dict] = []
    report: dict = {}
    try:
        info = bench.check_python()
        print(f"docqa {info['version']} from {info['file']} (schema {info['schema']}), python {args.python}", flush=True)
        docs, summary = build_corpus(args.model, args.text, args.short_docs, args.short_windows, args.long_windows,
                                     args.seed)
        print(f"corpus: {summary['documents']} documents, {summary['windows']:,} windows ({summary['short_documents']} "
              f"short of {summary['short_windows_each']} windows, long {summary['long_windows_each']}), "
              f"{summary['characters']:,} characters, from {summary['text']} ({summary['build_s']} s)", flush=True)
        docs_file = out / "corpus.jsonl"
        with open(docs_file, "w", encoding="utf-8") as fh:
            for d in docs:
                fh.write(json.dumps({"id": d.id, "text": d.text, "questions": [QUESTION]}, ensure_ascii=False) + "\n")
        bench.dbs = Databases(args.pg)
        bench.broker = Broker(args.redis_url, out)
        report = {"command": "python benchmarks/fleet.py " + " ".join(argv), "date": datetime.datetime.now().isoformat(
            timespec="seconds"), "host": {"cores": os.cpu_count(), "cpu": cpu_model()}, "docqa": info,
                  "python": args.python, "model": args.model,
                  "settings": {"DOCQA_BATCH_WINDOWS": args.batch_windows, "DOCQA_SPLIT_WINDOWS": args.split_windows,
                               "env": args.env, "cores": args.cores, "device": args.device},
                  "corpus": summary, "results": results}
        for n in args.workers:
            print(f"== N={n}: {n} worker(s), {max(1, args.cores // n)} torch thread(s) each", flush=True)
            r = bench.run_fleet(n, docs_file, len(docs), summary["windows"], n in args.probe_at)
            if "probe" in r and "windows" in r["probe"]:
                r["windows"] += r["probe"]["windows"]
            results.append(r)
            probe = r.get("probe") or {}
            print(f"   {r['jobs']} jobs {r['job_counts']}, makespan {r['makespan_s']:.1f} s (submit {r['submit_s']} s), "
                  f"{r['windows'] / r['makespan_s']:.1f} windows/s, {r['runs']} runs, max idle gap "
                  f"{r['max_idle_gap_s']:.1f} s, tail idle {r['max_tail_idle_s']:.1f} s, busy {r['busy_share']:.0%}"
                  + (f", ?wait= {probe.get('latency_s', float('nan')):.2f} s "
                     f"(sent at +{probe.get('sent_at_s')} s with {probe.get('queued_rows_at_send')} rows queued)"
                     if probe else "") + (f", probe error {probe['error']}" if "error" in probe else ""), flush=True)
            if r.get("failures"):
                print(f"   failed jobs: {r['failures']}", flush=True)
            if r["runs"] == 0:
                print("   warning: no `docqa run:` line found in the worker logs (has its format changed?): "
                      "idle gaps and busy shares are meaningless", flush=True)
            elif r["windows_run"] != r["windows"]:
                print(f"   note: the workers' run lines sum to {r['windows_run']:,} windows, the corpus has "
                      f"{r['windows']:,}", flush=True)
    except BenchError as exc:
        print(f"\nfleet benchmark: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process started here", file=sys.stderr)
        return 130
    finally:
        bench.close()
        if results:
            print("\n" + table(results) + "\n")
            report["seconds"] = round(time.monotonic() - started, 1)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
                print(f"wrote {args.json}")
        print(f"run time {(time.monotonic() - started) / 60:.1f} min; logs in {out}")
    return 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
