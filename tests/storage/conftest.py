"""Fixtures for the store tests: an engine and a repository on each backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from docqa.storage.db import make_engine
from docqa.storage.repository import Repository
from docqa.core.params import AnswerParams


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    engine = make_engine(store_url)
    try:
        yield engine
    finally:
        # Closes pooled connections so the per-test PostgreSQL database can be dropped.
        engine.dispose()


@pytest.fixture
def repo(engine: Engine) -> Repository:
    return Repository.from_engine(engine)


@pytest.fixture
def params() -> AnswerParams:
    return AnswerParams()

