"""Fixtures for end-to-end tests: real PostgreSQL + Redis, and `docqa worker` processes."""

from __future__ import annotations

import os
import uuid

import pytest
from support import TINY_MODEL, Workers


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every end-to-end test starts processes (docqa, workers, servers, services): all slow.
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.path).startswith(here + os.sep):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def distributed_env(postgres_url, redis_url, tmp_path):
    """Environment for producers and workers: real PostgreSQL + Redis, tiny model, short lease."""
    env = dict(os.environ)
    env.update(
        DOCQA_DATABASE_URL=postgres_url,
        DOCQA_BROKER_URL=redis_url,
        DOCQA_QUEUE=f"docqa-test-{uuid.uuid4().hex[:8]}",
        DOCQA_MODEL=TINY_MODEL,
        DOCQA_DEVICE="cpu",
        DOCQA_LEASE_SECONDS="4",
        DOCQA_MAX_ATTEMPTS="3",
        DOCQA_WORKER_BATCH_JOBS="16",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def workers(distributed_env, tmp_path):
    w = Workers(distributed_env, tmp_path)
    yield w
    w.stop()


