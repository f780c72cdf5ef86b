"""Secured connections: a password-protected Redis whose URL every process reads from a file
(DOCQA_BROKER_URL_FILE, as a Docker secret would be), never from a command line where `ps`
shows it; and the TLS broker that deploy/make-secrets.sh and docker-compose.yml make."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support import (
    OwnRedis,
    Workers,
    docqa,
    free_port,
    open_repo,
    wait_for,
    write_corpus,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

PASSWORD = "Pw-7f3a9c2e-in-a-file-only"
ROOT = Path(__file__).resolve().parents[2]
MAKE_SECRETS = ["sh", str(ROOT / "deploy" / "make-secrets.sh")]


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


@pytest.mark.skipif(shutil.which("redis-server") is None or shutil.which("openssl") is None,
                    reason="redis-server or openssl is not installed")
def test_the_compose_secrets_and_redis_command_give_a_tls_broker_with_a_password(tmp_path):
    """deploy/make-secrets.sh's files, used by docker-compose.yml's own redis command (run here
    with sh, the paths of /run/secrets mapped to the files), make a broker docqa reaches with
    the generated rediss:// URL, and that refuses a wrong password or an unknown CA."""
    import redis
    from docqa.worker.app import make_celery, send_jobs

    from docqa.core.settings import Settings

    secrets = tmp_path / "secrets"
    made = subprocess.run([*MAKE_SECRETS, str(secrets)], check=False, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    files = {p.name: p for p in secrets.iterdir()}
    assert {"redis_password", "postgres_password", "grafana_admin_password", "broker_url", "database_url", "ca.crt",
            "ca.key", "tls.crt", "tls.key"} <= files.keys()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {Path(spec["file"]).name for spec in compose["secrets"].values()} <= files.keys(), "compose needs a file"
    assert secrets.stat().st_mode & 0o777 == 0o700
    assert files["ca.key"].stat().st_mode & 0o077 == 0, "the CA key is for the script alone"
    redis_password = files["redis_password"].read_text().strip()
    postgres_password = files["postgres_password"].read_text().strip()
    assert len(redis_password) >= 32 and redis_password != postgres_password
    broker_url = files["broker_url"].read_text().strip()
    database_url = files["database_url"].read_text().strip()
    assert broker_url == (f"rediss://:{redis_password}@redis:6379/0"
                          "?ssl_cert_reqs=required&ssl_ca_certs=/run/secrets/tls_ca")
    assert database_url == (f"postgresql+psycopg://docqa:{postgres_password}@postgres:5432/docqa"
                            "?sslmode=verify-full&sslrootcert=/run/secrets/tls_ca")
    for host in ("redis", "postgres"):
        check = subprocess.run(["openssl", "verify", "-CAfile", str(files["ca.crt"]), "-verify_hostname", host,
                                str(files["tls.crt"])], check=False, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    before = {name: p.read_bytes() for name, p in files.items()}
    again = subprocess.run([*MAKE_SECRETS, str(secrets)], check=False, capture_output=True, text=True)
    assert again.returncode == 0 and {n: p.read_bytes() for n, p in files.items()} == before, "a rerun changed a file"

    # docker-compose.yml's redis command, run by sh here: /run/secrets/<name> is the file that
    # the compose secret <name> names, $$ is compose's escaped $, and the server runs as us.
    mounted = {name: secrets / Path(spec["file"]).name for name, spec in compose["secrets"].items()}
    port = free_port()

    def here(text: str) -> str:
        text = text.replace("$$", "$").replace("/tmp/redis.conf", str(tmp_path / "redis.conf"))
        for name, path in mounted.items():
            text = text.replace(f"/run/secrets/{name}", str(path))
        return (text.replace("chown redis ", "true ").replace("exec docker-entrypoint.sh redis-server",
                                                               "exec redis-server")
                .replace("--tls-port 6379", f"--tls-port {port} --bind 127.0.0.1 --dir {tmp_path}")
                .replace("-p 6379", f"-p {port}"))

    command = compose["services"]["redis"]["command"]
    assert command[:2] == ["sh", "-c"]
    server = subprocess.Popen(["sh", "-c", here(command[2])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = broker_url.replace("@redis:6379/", f"@localhost:{port}/").replace("/run/secrets/tls_ca",
                                                                              str(files["ca.crt"]))
        wait_for(lambda: _answers(url), timeout=10, what="the compose redis command up")
        assert redis_password not in (Path("/proc") / str(server.pid) / "cmdline").read_text()
        probe = compose["services"]["redis"]["healthcheck"]["test"]
        assert subprocess.run(["sh", "-c", here(probe[1])], check=False).returncode == 0, "its healthcheck fails"

        app = make_celery(Settings(broker_url=url))
        send_jobs(app, [1, 2], "tls-test-queue", "store-x")
        assert redis.Redis.from_url(url).llen("tls-test-queue") == 1

        with pytest.raises(redis.AuthenticationError):
            _client(url.replace(redis_password, "wrong")).ping()
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            _client(url.replace(str(files["ca.crt"]), "/etc/ssl/certs/ca-certificates.crt")).ping()
        with pytest.raises(redis.ConnectionError):
            _client(f"redis://:{redis_password}@localhost:{port}/0").ping()  # no plain-text port
    finally:
        server.terminate()
        server.wait(10)


def _client(url: str):
    """A redis-py client that fails at once (no retries with backoff)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2, retry=Retry(NoBackoff(), 0))


def _answers(url: str) -> bool:
    import redis

    try:
        return bool(_client(url).ping())
    except redis.RedisError:
        return False
