"""Alembic environment for the docqa store.

The database comes from, in order: a connection passed in `config.attributes["connection"]`
(what `docqa.storage.db.upgrade` does), the `sqlalchemy.url` option, or DOCQA_DATABASE_URL.
Migrations run in one transaction, holding a PostgreSQL advisory lock so concurrent
upgrades run one after the other.
"""

from __future__ import annotations


from alembic import context
from sqlalchemy import Connection, text

from docqa.core.settings import Settings
from docqa.storage.db import PG_MIGRATION_LOCK_KEY, SQLITE_BEGIN_OPTION, make_engine
from docqa.storage.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Released at commit; the version table is read after it is taken.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK_KEY})
        context.run_migrations()


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or Settings().database_url
    if not url:
        raise RuntimeError("no database: set sqlalchemy.url or DOCQA_DATABASE_URL")
    return url


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url()).execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
