"""Helpers for end-to-end tests: corpora, `docqa` subprocesses, worker and server processes, polling."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from cli_in_process import run_docqa


TINY_MODEL = str(Path(__file__).resolve().parents[1] / "fixtures" / "tiny-distilbert-qa")

WORDS = (
    "the river Seine flows through Paris and the tower of iron stood near it in 1889 while "
    "engineers from Zürich and café owners watched ; 東京 also grew , with naïve plans for "
    "bridges canals and railways that carried coal grain wine and people north to the sea"
).split()


def prose(n_words: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def write_corpus(folder: Path, n_docs: int, *, seed: int = 0, sizes=(20, 150, 700)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for i in range(n_docs):
        p = folder / f"doc{i:03d}.txt"
        text = prose(rng.choice(sizes), seed=seed * 1000 + i)
        if i % 7 == 0:
            text = "  " + text.replace(" ", "\r\n", 2) + " e\u0301 zero\u200bwidth 👩\u200d👩\u200d👧\n"
        p.write_text(text, encoding="utf-8")
        paths.append(p)
    return paths


class Workers:
    """`docqa worker` processes sharing one queue; stopped (and reaped) at the end."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, n: int = 1, *, concurrency: int = 1, via: str = "docqa", extra: list[str] = (),
              default_names: bool = False) -> None:
        """Start n workers with `docqa worker`, or (via="celery") with plain `celery -A docqa.worker.app worker`;
        `extra`: more arguments for each; default_names: no --hostname (docqa worker's own node names)."""
        for _ in range(n):
            k = len(self.procs)
            log = open(self.log_dir / f"worker{k}.log", "wb")
            name = f"w{k}-{uuid.uuid4().hex[:6]}@%h"
            if via == "celery":
                # No -Q: the app's default queue is its model's queue.
                cmd = [sys.executable, "-m", "celery", "-A", "docqa.worker.app", "worker",
                       "-c", str(concurrency), "-n", name, "--loglevel", "INFO"]
            else:
                cmd = [sys.executable, "-m", "docqa.cli", "worker", "--concurrency", str(concurrency),
                       "--loglevel", "INFO", *([] if default_names else ["--hostname", name])]
            cmd += list(extra)
            self.procs.append(
                subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )

    def logs(self, tail: int | None = 4000) -> str:
        """The workers' logs (the last `tail` characters of each; None for all)."""
        texts = (p.read_text(errors="replace") for p in sorted(self.log_dir.glob("worker*.log")))
        return "\n".join(t if tail is None else t[-tail:] for t in texts)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


# The `docqa` command line, in this process unless process=True (tests/cli_in_process.py).
docqa = run_docqa


def wait_for(predicate, *, timeout: float, interval: float = 0.25, what: str = "condition", logs=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    extra = f"\n--- worker logs ---\n{logs()}" if logs else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")


def open_repo(url: str):
    """A Repository on `url`, with its SQLAlchemy engine reachable as `.engine` for raw checks."""
    from docqa.storage.db import make_engine, session_factory
    from docqa.storage.repository import Repository

    engine = make_engine(url)
    repo = Repository(session_factory(engine))
    repo.engine = engine
    return repo


def answered_once(repo, n_jobs: int) -> None:
    """Every one of n_jobs jobs is done with one answer row per rank, none left over."""
    from sqlalchemy import text

    assert repo.counts() == {"queued": 0, "running": 0, "done": n_jobs, "failed": 0}
    with repo.engine.connect() as conn:
        per_job = conn.execute(text("SELECT job_id, count(*) FROM answers GROUP BY job_id")).all()
        dupes = conn.execute(
            text("SELECT count(*) FROM (SELECT job_id, rank FROM answers GROUP BY job_id, rank HAVING count(*) > 1) d")
        ).scalar_one()
    assert len(per_job) == n_jobs and all(n == 1 for _job, n in per_job)
    assert dupes == 0


def model_queue(env: dict[str, str]) -> str:
    """The broker queue the workers of env's model consume."""
    from docqa.core.labels import queue_for

    return queue_for(env["DOCQA_QUEUE"], env["DOCQA_MODEL"], env.get("DOCQA_REVISION") or None)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    """A redis-server of the test's own (no persistence, like a restarted broker), on a free port.

    `stop()` kills it (its messages are gone); `start()` brings an empty one back on the
    same port. Never the shared instance. With `password`, clients must authenticate
    (`requirepass`, read from a config file in `folder`, so it is not in the server's argv).
    """

    def __init__(self, folder: Path, *, password: str | None = None) -> None:
        import shutil

        self.exe = shutil.which("redis-server")
        self.port = free_port()
        self.folder = folder
        self.password = password
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        config = []
        if self.password:
            conf = self.folder / "redis-auth.conf"
            conf.write_text(f"requirepass {self.password}\n")
            config = [str(conf)]
        self.proc = subprocess.Popen(
            [self.exe, *config, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        wait_for(lambda: _pings(redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.5)),
                 timeout=10, what="own redis-server up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


PG_BIN = Path("/usr/lib/postgresql/15/bin")


def postgres_bin() -> Path | None:
    """The folder of initdb/pg_ctl (Debian keeps them off PATH), or None."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "pg_ctl").exists() and (candidate / "initdb").exists():
            return candidate
    return None


class OwnPostgres:
    """A PostgreSQL cluster of the test's own (initdb + pg_ctl as the postgres user, trust
    auth, a free port), so a test can stop and start the database under running workers."""

    def __init__(self) -> None:
        import shutil
        import tempfile

        self.bin = postgres_bin()
        self.port = free_port()
        # Not under pytest's tmp_path: the postgres user cannot enter root's 0700 folders.
        folder = Path(tempfile.mkdtemp(prefix="docqa-pg-"))
        self.folder = folder
        self.data = folder / "pgdata"
        self.socket_dir = folder / "pgsock"
        for d in (self.data, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "postgres", "postgres")
        shutil.chown(folder, "postgres", "postgres")
        self.log = folder / "postgres.log"
        self._as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-E", "UTF8", "--locale=C",
                           "-A", "trust", "-U", "postgres"])

    def _as_postgres(self, cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True, check=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                           "-o", f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1", "start"])

    def stop(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D", str(self.data),
                        "-m", "fast", "-w", "stop"], capture_output=True, text=True)

    def remove(self) -> None:
        import shutil

        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


# Engine.run, in every docqa process started with `hold_env`: once the test has dropped a
# `hold` file, the first run to start after it claims `held` (writing its process id) and
# stays mid-batch, its jobs running, until it is killed. A kill timed against real compute
# races it: a batch that takes 0.5 s may be stored before a busy test process looks.
# With PARTS_ONLY only runs of window ranges (parts of a split job) hold, and each run of
# those takes SECONDS longer, as a long range of the full-size model would.
HOLD = '''
import os
import time
from pathlib import Path
from docqa.worker import engine as _engine

_run = _engine.Engine.run
_here = Path(__file__).parent
PARTS_ONLY = {parts_only}
SECONDS = {seconds}


def _run_or_hold(self, items, **kwargs):
    if not PARTS_ONLY or any(item.window_range is not None for item in items):
        if (_here / "hold").exists():
            try:
                fd = os.open(_here / "held", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                time.sleep(3600)
        time.sleep(SECONDS)
    return _run(self, items, **kwargs)


_engine.Engine.run = _run_or_hold
'''


def sitecustomize_env(env: dict[str, str], folder: Path, code: str) -> dict[str, str]:
    """`env` with `code` run at the start of every Python process (a sitecustomize in `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(code)
    return dict(env, PYTHONPATH=os.pathsep.join([str(folder), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))


def hold_env(env: dict[str, str], folder: Path, *, parts_only: bool = False, seconds: float = 0.0) -> dict[str, str]:
    """`env` with HOLD loaded into every Python process."""
    return sitecustomize_env(env, folder, HOLD.format(parts_only=parts_only, seconds=seconds))


def held_process(folder: Path, *, timeout: float = 120, logs=None) -> int:
    """The id of the process holding a batch mid-run, once the test has dropped the hold
    (`(folder / "hold").touch()`, only when the workers are ready: model checks run the engine too)."""
    held = folder / "held"
    return int(wait_for(lambda: held.exists() and held.read_text(), timeout=timeout, interval=0.05,
                        what="a worker holding a batch mid-run", logs=logs))


def pool_of(pid: int) -> set[int]:
    """A worker's process and its pool children."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {pid} | {int(p) for p in out.split()}


def wait_ready(workers: Workers, n: int) -> None:
    """n workers have loaded their model (on a busy host one may take a while)."""
    wait_for(lambda: workers.logs(None).count(" ready: model ") >= n, timeout=120, what=f"{n} workers ready",
             logs=workers.logs)


class Server:
    """A `docqa serve` process on a free port of 127.0.0.1; its log in `log_path`."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "docqa", "serve", "--port", str(self.port), *args],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._up, timeout=60, what="docqa serve to answer /healthz")
        # Its store opened too: the first request that opens it can take over httpx's 5 s on a
        # loaded host while the model loads beside it (seen under -n 6).
        httpx.get(self.base + "/readyz", timeout=60)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"docqa serve exited: {self.logs()[-2000:]}")
        try:
            return httpx.get(self.base + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def has_torch(self) -> bool:
        """Whether the server has loaded torch (a model, or a tokenizer that imports it) by now."""
        return "libtorch" in Path(f"/proc/{self.proc.pid}/maps").read_text()

    def peak_rss_kib(self) -> int:
        """The server's peak resident memory so far (VmHWM), KiB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
