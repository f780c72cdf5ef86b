"""Engines and connection errors: what a user sees when configuring the store."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from docqa.storage.db import check_connection, ensure_schema, make_engine, normalise_url, safe_url, upgrade
from docqa.storage.errors import StoreError
from released_together import exit_codes


@pytest.mark.parametrize(
    "given, driver",
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_postgresql_urls_use_psycopg3(given: str, driver: str) -> None:
    assert normalise_url(given).drivername == driver


def test_unsupported_or_malformed_urls_are_refused() -> None:
    with pytest.raises(StoreError, match="unsupported database mysql://u:\\*\\*\\*@h/db"):
        normalise_url("mysql://u:secret@h/db")
    with pytest.raises(StoreError, match="not a database URL"):
        make_engine("not a url")


def test_safe_url_hides_the_password() -> None:
    assert safe_url("postgresql://docqa:hunter2@db:5432/q") == "postgresql://docqa:***@db:5432/q"


def test_sqlite_engine_uses_wal_busy_timeout_and_foreign_keys(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30_000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
    finally:
        engine.dispose()


def _open_when_released(url: str, start) -> None:
    start.wait(10)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    finally:
        engine.dispose()


def test_processes_opening_one_new_sqlite_file_at_once_all_connect(tmp_path) -> None:
    """Switching a new file to WAL needs it alone; SQLite answers "database is locked" at once
    to the others (no busy wait), which made 1 in 10 of four processes starting on a new
    store fail. 10 rounds of 4 processes, each round a new file."""
    for round_ in range(10):
        url = f"sqlite:///{tmp_path / f'new-{round_}.db'}"
        assert exit_codes(_open_when_released, (url,)) == [0, 0, 0, 0], f"round {round_}"


def test_foreign_keys_are_enforced(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO answers (job_id, rank, text, score, char_start, char_end, model, created_at) "
                    "VALUES (999, 0, '', 0.0, 0, 0, 'm', '2024-01-01 00:00:00')"
                )
            )
    finally:
        engine.dispose()


def test_unreachable_postgresql_gives_a_clear_error_without_the_password() -> None:
    engine = make_engine("postgresql://docqa:s3cret-pw@127.0.0.1:1/docqa")
    with pytest.raises(StoreError) as info:
        ensure_schema(engine)
    message = str(info.value)
    assert message.startswith("cannot reach the database at postgresql+psycopg://docqa:***@127.0.0.1:1/docqa: ")
    assert "s3cret-pw" not in message
    with pytest.raises(StoreError, match="cannot reach"):
        upgrade("postgresql://docqa:s3cret-pw@127.0.0.1:1/docqa")


def test_sqlite_file_in_a_missing_folder_gives_a_clear_error(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-dir' / 'docqa.db'}"
    with pytest.raises(StoreError, match="cannot reach the database at sqlite:///.*no-such-dir.*unable to open"):
        check_connection(make_engine(url))


def test_a_postgresql_database_that_is_not_utf8_is_refused(postgres_url: str) -> None:
    admin = make_engine(postgres_url).execution_options(isolation_level="AUTOCOMMIT")
    name = postgres_url.rsplit("/", 1)[1] + "_ascii"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    try:
        engine = make_engine(postgres_url.rsplit("/", 1)[0] + "/" + name)
        with pytest.raises(StoreError, match="uses encoding SQL_ASCII; docqa needs UTF8"):
            ensure_schema(engine)
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()
