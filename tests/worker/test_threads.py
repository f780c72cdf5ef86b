"""Torch threads per worker process: the cores shared among the docqa workers of a host, and
`docqa status` warning when a host's workers use more torch threads than it has cores."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from cli_in_process import docqa_in_process

from docqa.storage.fleet import WorkerInfo
from docqa.worker.identity import boot_id, pid_namespace, start_ticks
from docqa.worker.tasks import other_local_workers, torch_threads

NOW = datetime(2024, 1, 1, tzinfo=timezone.utc)


def info(name: str, host: str | None = None, threads: int | None = None, cores: int | None = None) -> WorkerInfo:
    host = socket.gethostname() if host is None else host
    return WorkerInfo(name, host, 1, "m", "q", NOW, NOW, threads, cores)


def local_name(pid: int) -> str:
    """The worker name process `pid` of this machine and PID namespace would register."""
    return f"{socket.gethostname()}:{pid}:{boot_id()}.{pid_namespace()}.{start_ticks(pid) or '-'}:0123456789ab"


# -- the rule ---------------------------------------------------------------------------


def test_threads_share_the_cores_with_the_other_workers_of_the_host():
    assert torch_threads(1, cores=8) == 8
    assert torch_threads(1, cores=8, others=3) == 2  # four processes on the host
    assert torch_threads(2, cores=8, others=2) == 2
    assert torch_threads(2, cores=16, others=1) == 5  # rounded down: never more threads than cores
    assert torch_threads(1, cores=2, others=5) == 1  # never zero
    assert torch_threads(0, cores=4, others=0) == 4  # a concurrency below one counts as one
    assert torch_threads(2, cores=16, override=3, others=7) == 3  # DOCQA_TORCH_THREADS wins


@pytest.mark.slow
def test_other_workers_count_only_live_processes_of_this_host_but_this_one():
    here = socket.gethostname()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone_name = local_name(gone.pid)  # its start time, read while it may still run
        gone.wait()
        workers = [
            info(local_name(os.getpid())),  # this process: not counted
            info(local_name(sleeper.pid)),  # another live process here: counted
            info(gone_name),  # its process is gone (a stale row): not counted
            info("elsewhere:7:x:y", host=here + "-other"),  # another host: not counted
            info("old-style-name"),  # a name that cannot be judged: counted while its row is live
        ]
        assert other_local_workers(workers, local_name(os.getpid())) == 2
        assert other_local_workers([], "me") == 0
    finally:
        sleeper.kill()
        sleeper.wait()


def _count_in_pool_child(names: list[str]) -> tuple[int, int]:
    workers = [info(n) for n in names]
    return os.getpid(), other_local_workers(workers, local_name(os.getpid()))


def test_pool_siblings_are_not_counted_twice():
    """A prefork child counts its siblings in its concurrency, so their rows (registered
    before it, e.g. when Celery replaced a child) must not count again; the parent's other
    processes still do."""
    from billiard import Pool

    with Pool(2) as pool:
        siblings = [local_name(p.pid) for p in pool._pool]
        names = [*siblings, local_name(os.getpid())]  # the pool's parent stands for another worker here
        results = pool.map(_count_in_pool_child, [names] * 4)
        # In a main process (a solo pool) the pool's processes are other workers.
        assert other_local_workers([info(n) for n in names], local_name(os.getpid())) == 2
    assert {pid for pid, _ in results} <= {int(n.split(":")[1]) for n in siblings}
    assert {count for _, count in results} == {1}


# -- a worker process -------------------------------------------------------------------


def test_a_worker_process_shares_the_cores_with_live_workers_and_registers_its_threads(
        tiny_model, sqlite_url, monkeypatch, caplog):
    import torch

    from docqa.core.settings import Settings
    from docqa.storage.db import make_engine, session_factory, upgrade
    from docqa.storage.repository import Repository
    from docqa.worker import tasks

    upgrade(sqlite_url)
    repo = Repository(session_factory(make_engine(sqlite_url)))
    here = socket.gethostname()
    for k in range(3):  # three live workers of this host (names that cannot be judged gone)
        repo.register_worker(f"{here}-w{k}", host=here, pid=10 + k, model="m", queue="q", threads=2, cores=8)
    repo.register_worker("stopped", host=here, pid=20, model="m", queue="q", threads=2, cores=8)
    repo.stop_worker("stopped")
    repo.register_worker("other-host", host=here + "-other", pid=21, model="m", queue="q", threads=8, cores=8)
    monkeypatch.setattr(tasks, "usable_cores", lambda: 8)
    monkeypatch.setattr(tasks, "_concurrency", 1)
    monkeypatch.delenv("DOCQA_TORCH_THREADS", raising=False)
    settings = Settings(database_url=sqlite_url, broker_url="redis://127.0.0.1:1/0", model=tiny_model, device="cpu",
                        lease_seconds=600)
    before = torch.get_num_threads()
    caplog.set_level(logging.INFO, logger="docqa.worker.tasks")
    runtime = tasks.Runtime(settings)
    try:
        assert torch.get_num_threads() == 2  # 8 cores / (itself + 3 others)
        mine = next(w for w in repo.live_workers(seen_within=60) if w.name == runtime.name)
        assert (mine.threads, mine.cores) == (2, 8)
        ready = next(r.getMessage() for r in caplog.records if " ready: " in r.getMessage())
        assert "2 torch threads (8 usable cores / 4 docqa worker processes on this host: concurrency 1 + 3 " in ready
    finally:
        runtime.stop()
        torch.set_num_threads(before)


# -- docqa status -----------------------------------------------------------------------


def status(url: str, *args: str) -> subprocess.CompletedProcess:
    """`docqa status` through docqa.cli.main in this process (tests/cli_in_process.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    return docqa_in_process(["status", "--no-broker", "--database-url", url, *args], env)


WARNING = ("warning: host busy-host: 3 docqa worker processes use 6 torch threads on 4 cores; set DOCQA_TORCH_THREADS "
           "(docqa worker --torch-threads) or fewer processes (-c) so threads x processes <= cores")


def test_status_warns_when_a_hosts_workers_oversubscribe_its_cores(store_url):
    from docqa.storage.db import make_engine, session_factory
    from docqa.storage.repository import Repository

    repo = Repository(session_factory(make_engine(store_url)))
    for k in range(3):  # 3 x 2 threads on 4 cores
        repo.register_worker(f"busy-host:{k}", host="busy-host", pid=k, model="m", queue="q", threads=2, cores=4)
    for k in range(2):  # 2 x 2 threads on 4 cores: fits
        repo.register_worker(f"calm-host:{k}", host="calm-host", pid=k, model="m", queue="q", threads=2, cores=4)
    repo.register_worker("old-host:1", host="old-host", pid=1, model="m", queue="q")  # before 0007: no threads
    repo.register_worker("old-host:2", host="old-host", pid=2, model="m", queue="q")

    out = status(store_url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert WARNING in lines
    assert sum(line.startswith("warning: host") for line in lines) == 1  # calm-host and old-host fit or are unknown
    facts = json.loads(status(store_url, "--format", "json").stdout)
    assert facts["oversubscribed"] == [{"host": "busy-host", "processes": 3, "threads": 6, "cores": 4}]
    assert {(w["host"], w["threads"], w["cores"]) for w in facts["workers"]} == {
        ("busy-host", 2, 4), ("calm-host", 2, 4), ("old-host", None, None)}

    repo.stop_worker("busy-host:2")  # 2 x 2 threads on 4 cores now: no warning
    out = status(store_url)
    assert out.returncode == 0, out.stderr
    assert "warning: host" not in out.stdout and "live workers: 6" in out.stdout
    assert json.loads(status(store_url, "--format", "json").stdout)["oversubscribed"] == []


@pytest.mark.parametrize("cores", [3, 5])
def test_status_takes_a_hosts_cores_as_the_most_any_of_its_workers_may_use(store_url, cores):
    from docqa.storage.db import make_engine, session_factory
    from docqa.storage.repository import Repository

    repo = Repository(session_factory(make_engine(store_url)))
    repo.register_worker("h:1", host="h", pid=1, model="m", queue="q", threads=2, cores=2)  # pinned to 2 cores
    repo.register_worker("h:2", host="h", pid=2, model="m", queue="q", threads=2, cores=cores)
    facts = json.loads(status(store_url, "--format", "json").stdout)
    expected = [{"host": "h", "processes": 2, "threads": 4, "cores": 3}] if cores == 3 else []
    assert facts["oversubscribed"] == expected
