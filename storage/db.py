"""Engines, sessions and schema migrations for the result store.

Two backends, same behaviour: SQLite (embedded mode: one file, WAL, many processes on
one host) and PostgreSQL through psycopg 3 (distributed mode). Only the URL differs.

SQLite transactions: the sqlite3 driver's own transaction handling is switched off and
SQLAlchemy emits BEGIN itself, so every transaction (migrations included) is a real
one. A connection opened with the execution option `SQLITE_BEGIN_OPTION` set to
"IMMEDIATE" takes the write lock at BEGIN (waiting up to the busy timeout) instead of
at its first write; the repository does that for every transaction that writes, which
rules out SQLITE_BUSY errors from upgrading a read snapshot to a write.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from docqa.storage.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# How long a SQLite connection waits for another process's write lock, milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 30_000
# How long a PostgreSQL connection attempt may take before it is reported unreachable,
# seconds (unless the URL sets connect_timeout itself).
PG_CONNECT_TIMEOUT_S = 10
# Connection execution option read by the BEGIN hook on SQLite: "DEFERRED" (default)
# or "IMMEDIATE".
SQLITE_BEGIN_OPTION = "docqa_sqlite_begin"
# Key of the PostgreSQL advisory lock that serialises concurrent `upgrade` calls
# (many workers starting at once against an empty database).
PG_MIGRATION_LOCK_KEY = 0x646F6371  # "docq"
# The newest revision in migrations/versions (a test holds it to Alembic's own answer).
# A database already at it is confirmed with one SELECT: Alembic, a quarter of a second
# of imports, is loaded only to migrate, so a re-run that finds nothing new stays cheap.
SCHEMA_HEAD = "0008"
# Alembic keeps the running migration in module globals: one upgrade per process at a time.
_UPGRADE_LOCK = threading.Lock()


def normalise_url(url: str | URL) -> URL:
    """Parse a database URL; plain `postgresql://` / `postgres://` get the psycopg 3 driver.

    Raises StoreError for an unparsable URL or a database other than SQLite/PostgreSQL.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError as exc:
        raise StoreError(f"not a database URL: {url!r} ({exc})") from None
    backend = parsed.get_backend_name()
    if backend == "postgres":  # the old Heroku-style scheme
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend not in ("postgresql", "sqlite"):
        raise StoreError(
            f"unsupported database {safe_url(parsed)}: use sqlite:///FILE or "
            "postgresql://USER@HOST/DB"
        )
    return parsed


# Query parameters whose value is a credential: a name containing one of these words
# (case-insensitive: password, PASSWD, sslpassword, api_key, auth_token, client_secret...).
SECRET_QUERY_WORDS = ("pass", "pwd", "token", "secret", "key", "auth", "credential")
MASK = "***"


def _url_text(url: str | URL | Engine) -> str:
    """`url` as text, password included (masking works on the text: it is what was given)."""
    if isinstance(url, Engine):
        url = url.url
    return url if isinstance(url, str) else url.render_as_string(hide_password=False)


def _split_url(text: str) -> tuple[str, str, str | None, str, str]:
    """(scheme "://", user, password (None: no ':'), rest of the authority and path, query + fragment).

    The userinfo ends at the last "@" before the path's query: an unencoded "@" in a
    password ("u:p@ss@host") stays in the password, as browsers and urllib read it."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return "", "", None, text, ""
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    head, tail = rest[:cut], rest[cut:]
    at = head.rfind("@") if not head.startswith("/") else -1
    if at < 0:
        return scheme + sep, "", None, head, tail
    user, colon, password = head[:at].partition(":")
    return scheme + sep, user, password if colon else None, head[at:], tail


def _secret_query_items(tail: str) -> list[tuple[str, str]]:
    """(name, value) of each credential query parameter in `tail` ("?a=b&c=d#frag")."""
    query = tail[1:].partition("#")[0] if tail.startswith("?") else ""
    items = [part.partition("=") for part in query.split("&") if part]
    return [(name, value) for name, _eq, value in items
            if value and any(word in name.lower() for word in SECRET_QUERY_WORDS)]


def url_secrets(url: str | URL | Engine) -> list[str]:
    """Every credential written in `url`: the userinfo password and credential query values,
    each also percent-decoded when that differs; longest first is not guaranteed."""
    from urllib.parse import unquote

    _scheme, _user, password, _rest, tail = _split_url(_url_text(url))
    found = ([password] if password else []) + [value for _name, value in _secret_query_items(tail)]
    return list(dict.fromkeys(s for value in found for s in (value, unquote(value)) if s))


def safe_url(url: str | URL | Engine) -> str:
    """The URL as text with every credential replaced by ***: the userinfo password (an
    unencoded "@" in it included) and the values of credential query parameters
    (SECRET_QUERY_WORDS: `?password=`, `passwd`, `token`, `secret`, `api_key`...). Safe for
    messages and logs; the rest is shown as given."""
    scheme, user, password, rest, tail = _split_url(_url_text(url))
    shown = scheme + user + (f":{MASK}" if password else ":" if password == "" else "") + rest
    for name, value in _secret_query_items(tail):
        tail = tail.replace(f"{name}={value}", f"{name}={MASK}", 1)
    return shown + tail


def mask_secrets(text: str, url: str | URL | Engine | None) -> str:
    """`text` (a driver's or library's message) with `url`'s credentials replaced by ***.
    Where a password holds an unencoded "@", drivers took what follows it for the host
    ("ss@db" of "u:p@ss@db"): that piece is masked too."""
    if url is None:
        return text
    try:
        secrets = url_secrets(url)
    except Exception:  # never let masking hide the message itself
        return text
    pieces = [s.split("@", 1)[1] + "@" for s in secrets if "@" in s]
    for secret in sorted(secrets, key=len, reverse=True) + pieces:
        text = text.replace(secret, MASK if not secret.endswith("@") else MASK + "@")
    return text


def make_engine(url: str | URL, **engine_kwargs: Any) -> Engine:
    """An Engine for `url` (sqlite:///FILE, postgresql://..., postgresql+psycopg://...).

    SQLite connections get WAL journaling (readers do not block the writer), a busy
    timeout of SQLITE_BUSY_TIMEOUT_MS and enforced foreign keys; use a file, since an
    in-memory database is private to one connection. PostgreSQL connections use UTF-8
    on the wire and give up connecting after PG_CONNECT_TIMEOUT_S (both unless the URL
    says otherwise). All engines ping pooled connections before use, so a restarted
    server costs no failed transaction. Connecting is lazy: use `check_connection` or
    `ensure_schema` to fail early. Engines must not cross a fork: create one per process.
    """
    parsed = normalise_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "postgresql":
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        if "client_encoding" not in parsed.query:
            # Text crosses the wire as UTF-8 whatever the server's default; a server
            # that cannot convert is then reported by `ensure_schema`, not mis-decoded.
            connect_args["client_encoding"] = "utf8"
        kwargs["connect_args"] = connect_args
    kwargs.update(engine_kwargs)
    engine = create_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _use_wal(cursor: Any) -> None:
    """Put the file in write-ahead-log mode (it stays so: later connections only read that).

    Switching needs the file to itself, and SQLite answers "database is locked" at once,
    without waiting out busy_timeout, when other processes open the new file at the same
    moment (several workers or `docqa run`s starting on one new store): try again for up
    to the busy timeout."""
    import sqlite3
    import time

    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Driver autocommit: BEGIN is emitted by the hook below, not by sqlite3 (which
        # would skip it before SELECT and DDL statements).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _use_wal(cursor)
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE"):
            raise ValueError(f"{SQLITE_BEGIN_OPTION} must be DEFERRED or IMMEDIATE, not {mode!r}")
        connection.exec_driver_sql(f"BEGIN {mode}")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to `engine` whose objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def check_connection(engine: Engine) -> None:
    """Open one connection and run `SELECT 1`; raise StoreError naming the URL if that fails."""
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except DBAPIError as exc:
        raise StoreError(f"cannot reach the database at {safe_url(engine)}: {failure_reason(exc, engine.url)}") from exc


def failure_reason(exc: DBAPIError, url: str | URL | None = None) -> str:
    """The driver's own explanation of `exc`, first line only, with `url`'s credentials (if
    any: `mask_secrets`) replaced by ***."""
    reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    text = reason[0] if reason else type(exc).__name__
    return mask_secrets(text, url)


def store_failure(exc: BaseException, url: str | URL | None = None) -> str | None:
    """`failure_reason` when `exc` is the database itself failing (connection lost, server
    shut down, out of disk: SQLAlchemy's OperationalError or InterfaceError), else None: a
    constraint or programming error is a bug, not an outage."""
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return None
    return failure_reason(exc, url)


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic Config built in code (no alembic.ini needed), pointing at storage/migrations."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        config.set_main_option(
            "sqlalchemy.url", normalise_url(url).render_as_string(hide_password=False).replace("%", "%%")
        )
    return config


def head_revision() -> str:
    """The newest schema revision this code ships, as Alembic reads it from the scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StoreError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(engine: Engine) -> str | None:
    """The schema revision stored in the database, None for a database docqa never migrated."""
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except DBAPIError as exc:
        raise StoreError(f"cannot reach the database at {safe_url(engine)}: {failure_reason(exc, engine.url)}") from exc
    if len(versions) > 1:
        raise StoreError(
            f"database {safe_url(engine)} records several schema revisions ({', '.join(sorted(versions))}); "
            "docqa's migrations are one line, so this table was edited by hand"
        )
    return versions[0] if versions else None


def upgrade(url_or_engine: str | URL | Engine) -> None:
    """Run Alembic `upgrade head` in one transaction; safe to call from many processes at once.

    Concurrent callers are serialised (an advisory lock on PostgreSQL, BEGIN IMMEDIATE
    on SQLite), so the second one finds the schema current and does nothing. Raises
    StoreError, as `ensure_schema` does, for a database docqa cannot or must not use.
    """
    if isinstance(url_or_engine, Engine):
        engine, owned = url_or_engine, False
    else:
        engine, owned = make_engine(url_or_engine), True
    try:
        _check_usable(engine)
        _run_upgrade(engine)
    finally:
        if owned:
            engine.dispose()


def ensure_schema(engine: Engine) -> str:
    """Make the database's schema current; return its revision.

    Upgrades an empty database or one behind head. Raises StoreError when the database
    cannot be reached, is not UTF-8 (PostgreSQL), holds tables docqa did not create, or
    was migrated by a newer docqa than this one.
    """
    current = _check_usable(engine)
    if current != SCHEMA_HEAD:
        _run_upgrade(engine)
    return SCHEMA_HEAD


def _run_upgrade(engine: Engine) -> None:
    _migrate(engine, "upgrade", "head")


def downgrade(engine: Engine, revision: str) -> None:
    """Run Alembic `downgrade revision` in one transaction (tests, and going back a release)."""
    _migrate(engine, "downgrade", revision)


def _migrate(engine: Engine, direction: str, revision: str) -> None:
    """One migration run in one transaction. On SQLite, foreign keys are off while it runs
    (rebuilding a table drops the old one, which would otherwise cascade to its children)
    and checked before commit, as SQLite's procedure for altering tables says."""
    from alembic import command

    config = alembic_config()
    locking = engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
    with _UPGRADE_LOCK, locking.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:  # outside any transaction: SQLite ignores this pragma inside one
            _driver_execute(connection, "PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                getattr(command, direction)(config, revision)
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise StoreError(f"the schema migration left rows without their parent: {broken[:5]}")
        finally:
            if sqlite:
                _driver_execute(connection, "PRAGMA foreign_keys=ON")


def _driver_execute(connection: Connection, sql: str) -> None:
    """Run `sql` on the driver's own connection, outside SQLAlchemy's transaction."""
    driver = connection.connection.driver_connection
    assert driver is not None, "the connection is open: it has its driver connection"
    driver.execute(sql)


def _check_usable(engine: Engine) -> str | None:
    """Raise StoreError unless docqa can migrate this database; return its current revision."""
    check_connection(engine)
    if engine.dialect.name == "postgresql":
        _check_pg_encoding(engine)
    # Tables first, then the revision: an upgrade commits both in one transaction, so a
    # process that sees the tables also sees their version.  (Read the other way round, a
    # concurrent first upgrade could land in between and look like foreign tables.)
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
    current = current_revision(engine)
    if current is None:
        clash = tables & {"documents", "texts", "jobs", "answers"}
        if clash:
            raise StoreError(
                f"database {safe_url(engine)} already has table(s) {', '.join(sorted(clash))} "
                "but no docqa schema version; use an empty database for docqa"
            )
        return None
    if current == SCHEMA_HEAD:
        return current
    from alembic.script import ScriptDirectory

    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current not in known:
        raise StoreError(
            f"database {safe_url(engine)} has schema revision {current!r}, which this docqa "
            f"does not know (its newest is {head_revision()!r}); upgrade docqa"
        )
    return current


def _check_pg_encoding(engine: Engine) -> None:
    # Offsets are character indices; a non-UTF8 database would mangle or refuse text.
    with engine.connect() as connection:
        encoding = connection.exec_driver_sql("SHOW server_encoding").scalar_one()
    if isinstance(encoding, bytes):  # psycopg returns bytes on SQL_ASCII databases
        encoding = encoding.decode("ascii", "replace")
    if encoding.upper() not in ("UTF8", "UTF-8"):
        raise StoreError(
            f"database {safe_url(engine)} uses encoding {encoding}; docqa needs UTF8 "
            "(CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0)"
        )
