"""Commands that fail to reach a store or broker name it without its credentials (issue 18,
item 13): a real `docqa` process, its whole output read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from docqa.storage.db import upgrade

TINY_MODEL = str(Path(__file__).resolve().parents[1] / "fixtures" / "tiny-distilbert-qa")

SECRET = "s3cr3t-Pa55"


def docqa(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = dict(os.environ, HF_HUB_OFFLINE="1")
    for name in ("DOCQA_DATABASE_URL", "DOCQA_BROKER_URL", "DOCQA_DATABASE_URL_FILE", "DOCQA_BROKER_URL_FILE"):
        environ.pop(name, None)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "docqa", *args], env=environ, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("url", [
    f"postgresql://u@127.0.0.1:1/db?password={SECRET}",
    f"postgresql://u:p@{SECRET}@127.0.0.1:1/db",
    f"postgresql://u:{SECRET}@127.0.0.1:1/db?sslpassword={SECRET}",
])
@pytest.mark.slow
def test_status_and_health_do_not_print_a_store_password(url: str) -> None:
    runs = ((docqa("status", env={"DOCQA_DATABASE_URL": url}), 4), (docqa("status", "--database-url", url), 4),
            (docqa("health", env={"DOCQA_DATABASE_URL": url}), 1))
    for out, status in runs:
        printed = out.stdout + out.stderr
        assert out.returncode == status, printed
        assert "cannot reach the database" in printed, printed
        assert SECRET not in printed and SECRET[:6] not in printed, printed


@pytest.mark.slow
def test_health_and_worker_do_not_print_a_broker_password(tmp_path) -> None:
    store = f"sqlite:///{tmp_path / 'docqa.db'}"
    for broker in (f"redis://127.0.0.1:1/0?password={SECRET}", f"redis://:p@{SECRET}@127.0.0.1:1/0"):
        env = {"DOCQA_DATABASE_URL": store, "DOCQA_BROKER_URL": broker}
        upgrade(store)  # a store to report on, so that the broker is what fails
        for out in (docqa("health", env=env), docqa("status", env=env),
                    docqa("worker", "--model", TINY_MODEL, env=env)):
            printed = out.stdout + out.stderr
            assert "127.0.0.1:1" in printed, printed  # the broker is named...
            assert SECRET not in printed and SECRET[:6] not in printed, printed  # ...without its password
