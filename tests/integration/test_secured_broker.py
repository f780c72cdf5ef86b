"""A password-protected Redis, its URL given to every process in a file (DOCQA_BROKER_URL_FILE,
as a Docker secret would be), never on a command line where `ps` shows it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from support import OwnRedis, Workers, docqa, open_repo, wait_for, write_corpus

pytestmark = [pytest.mark.services, pytest.mark.slow]

PASSWORD = "Pw-7f3a9c2e-in-a-file-only"


def command_lines_of_group(pgid: int) -> list[str]:
    """The command lines of every live process in process group `pgid` (a worker and its pool)."""
    lines = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) == pgid:
                lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            continue
    return lines


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_a_worker_reads_a_password_protected_broker_url_from_a_file(distributed_env, tmp_path):
    import redis

    own = OwnRedis(tmp_path, password=PASSWORD)
    own.start()
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "broker_url").write_text(own.url + "\n")
    (secrets / "database_url").write_text(distributed_env["DOCQA_DATABASE_URL"] + "\n")
    env = {k: v for k, v in distributed_env.items() if k not in ("DOCQA_BROKER_URL", "DOCQA_DATABASE_URL")}
    env.update(DOCQA_BROKER_URL_FILE=str(secrets / "broker_url"), DOCQA_DATABASE_URL_FILE=str(secrets / "database_url"))
    workers = Workers(env, tmp_path)
    try:
        # The broker really wants the password.
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=own.port, socket_connect_timeout=2).ping()

        docs = tmp_path / "docs"
        write_corpus(docs, 3, seed=21)
        workers.start(1)
        sub = docqa(["submit", str(docs), "-q", "Where does the river flow?"], env)
        assert sub.returncode == 0, sub.stderr
        assert "3 new" in sub.stdout, sub.stdout
        repo = open_repo(distributed_env["DOCQA_DATABASE_URL"])
        wait_for(lambda: repo.counts()["done"] == 3, timeout=180, what="3 jobs done through the protected broker",
                 logs=workers.logs)
        assert repo.counts() == {"queued": 0, "running": 0, "done": 3, "failed": 0}
        # Nowhere a user of the host could read it: not the worker's (or its pool's) command
        # lines, and not its log (Celery's banner shows the URL with the password masked).
        proc = workers.procs[0]
        lines = command_lines_of_group(os.getpgid(proc.pid))
        assert any("docqa.cli worker" in line for line in lines), lines
        assert not [line for line in lines if PASSWORD in line]
        logs = workers.logs(tail=None)
        assert f"://:**@127.0.0.1:{own.port}/0" in logs, logs[-2000:]  # this broker, password masked
        assert PASSWORD not in logs
    finally:
        workers.stop()
        own.stop()
