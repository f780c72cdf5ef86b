"""Schema migrations: an empty database gets the schema; running them again changes nothing."""

from __future__ import annotations

import multiprocessing.synchronize
import subprocess
import sys
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from docqa.storage.db import alembic_config, current_revision, ensure_schema, head_revision, make_engine, upgrade
from docqa.storage.errors import StoreError
from docqa.storage.models import Base
from docqa.storage.repository import Repository
from released_together import exit_codes

TABLES = {
    "alembic_version", "texts", "documents", "document_keys", "document_jobs", "text_tokens", "job_plans", "jobs",
    "answers", "store_info", "submissions", "submission_jobs", "submission_documents", "workers", "leaders",
    "job_part_results", "passages",
}
# The full-text index of passages, the dialect's own and not mapped (docqa.storage.passages):
# SQLite's FTS5 table and the tables FTS5 keeps beside it; PostgreSQL's tsv column and its index.
FTS5_TABLES = {"passages_fts", *(f"passages_fts_{part}" for part in ("data", "idx", "content", "docsize", "config"))}


def _unmapped_full_text(obj, name, type_, reflected, compare_to) -> bool:
    """include_object for compare_metadata: False for the full-text objects models do not map."""
    return not (name in FTS5_TABLES or name in ("tsv", "ix_passages_tsv"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def empty_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture
def empty_engine(empty_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_url)
    try:
        yield engine
    finally:
        engine.dispose()


def test_empty_database_gets_the_schema_and_again_changes_nothing(empty_engine: Engine) -> None:
    assert current_revision(empty_engine) is None
    assert ensure_schema(empty_engine) == head_revision()
    fts = FTS5_TABLES if empty_engine.dialect.name == "sqlite" else set()
    assert set(inspect(empty_engine).get_table_names()) == TABLES | fts
    doc = Repository.from_engine(empty_engine).add_document("kept across upgrades")
    assert ensure_schema(empty_engine) == head_revision()
    upgrade(empty_engine)
    assert current_revision(empty_engine) == head_revision()
    assert Repository.from_engine(empty_engine).document(doc.id).text == "kept across upgrades"


def test_models_match_the_migrations(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    with empty_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False,
                                                         "include_object": _unmapped_full_text})
        assert compare_metadata(context, Base.metadata) == []


def test_downgrade_to_nothing_and_back(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    config = alembic_config()
    with empty_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert set(inspect(empty_engine).get_table_names()) <= {"alembic_version"}
    upgrade(empty_engine)
    fts = FTS5_TABLES if empty_engine.dialect.name == "sqlite" else set()
    assert set(inspect(empty_engine).get_table_names()) == TABLES | fts


def _upgrade_when_released(url: str, start: multiprocessing.synchronize.Event) -> None:
    start.wait(10)
    engine = make_engine(url)
    try:
        ensure_schema(engine)
    finally:
        engine.dispose()


def test_many_processes_upgrading_at_once_all_succeed(empty_url: str) -> None:
    # Processes, as in production: Alembic itself is not thread-safe.
    assert exit_codes(_upgrade_when_released, (empty_url,)) == [0, 0, 0, 0]
    engine = make_engine(empty_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_tables_not_made_by_docqa_are_not_touched(empty_engine: Engine) -> None:
    with empty_engine.begin() as conn:
        conn.execute(text("CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT)"))
    with pytest.raises(StoreError, match=r"already has table\(s\) jobs but no docqa schema version"):
        ensure_schema(empty_engine)


def test_a_schema_newer_than_this_code_is_reported(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreError, match="schema revision '9999', which this docqa does not know"):
        ensure_schema(empty_engine)
    with pytest.raises(StoreError, match="which this docqa does not know"):
        upgrade(empty_engine)


def test_the_schema_head_constant_is_alembics_head() -> None:
    # docqa.storage.db confirms a current schema without importing Alembic, by this constant.
    from docqa.storage.db import SCHEMA_HEAD

    assert SCHEMA_HEAD == head_revision()


@pytest.mark.slow
def test_a_current_database_is_confirmed_without_importing_alembic(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'current.db'}"
    upgrade(url)
    code = (
        "import sys; from docqa.storage.db import make_engine, ensure_schema; "
        f"e = make_engine({url!r}); print(ensure_schema(e)); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == head_revision() and out[1] == "[]"
