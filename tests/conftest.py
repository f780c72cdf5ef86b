"""Shared test fixtures: offline model hubs, real PostgreSQL and Redis, migrated stores.

Services are the ones on 127.0.0.1 (PostgreSQL 5432 with trust auth, Redis 6379), unless
DOCQA_TEST_POSTGRES_HOST/_PORT/_DB and DOCQA_TEST_REDIS_HOST/_PORT/_DB say otherwise.
A test that needs an unreachable service is skipped with the reason; with
DOCQA_REQUIRE_SERVICES=1 (CI) it fails instead, so a broken service cannot pass
silently. The reachability checks are plain functions (`postgres_unreachable_reason`,
`redis_unreachable_reason`, `require_service`) for modules that need them outside a
fixture, e.g. `import conftest` in a skipif.
"""

from __future__ import annotations

import functools
import getpass
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

# Before anything imports transformers: tests never reach the network for weights.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Before torch loads OpenMP: spinning threads slow every process on a busy 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Bytecode caches (__pycache__, git-ignored) even where PYTHONDONTWRITEBYTECODE is set: the suite
# starts about 180 Python processes, each of which would compile docqa's sources again, and
# every xdist worker would rewrite every test module again: 30 of 550 CPU-s (CONTRIBUTING.md).
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    sys.dont_write_bytecode = False
# A shell that starts the suite in the background (`cmd &` without job control) ignores SIGINT,
# and the processes tests start would inherit that: the Ctrl-C tests' commands would never stop.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Where the shared services are: settable for a machine whose services live elsewhere
# (CONTRIBUTING.md lists the variables).
POSTGRES_HOST = os.environ.get("DOCQA_TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("DOCQA_TEST_POSTGRES_PORT", "5432"))
# The database the admin connection opens to create and drop per-test databases.
POSTGRES_ADMIN_DB = os.environ.get("DOCQA_TEST_POSTGRES_DB", "test")
REDIS_HOST = os.environ.get("DOCQA_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("DOCQA_TEST_REDIS_PORT", "6379"))
# A db number nothing else uses: every test flushes it. Two test runs on one machine at
# once (e.g. two checkouts) must each set their own DOCQA_TEST_REDIS_DB. Under pytest-xdist
# (-n N) worker gwK uses the number K below it, so the workers never flush each other's.
REDIS_TEST_DB = int(os.environ.get("DOCQA_TEST_REDIS_DB", "15")) - int(
    os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
# Seconds a reachability check may wait before it calls a service unreachable.
SERVICE_TIMEOUT_S = 3


def services_required() -> bool:
    """True when DOCQA_REQUIRE_SERVICES=1: a missing service fails the test instead of skipping it."""
    return os.environ.get("DOCQA_REQUIRE_SERVICES", "") == "1"


def require_service(reason: str | None) -> None:
    """Skip (or fail, when services are required) the current test if `reason` is not None."""
    if reason is None:
        return
    if services_required():
        pytest.fail(f"{reason} (DOCQA_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


@functools.cache
def _postgres_probe() -> tuple[str | None, str | None]:
    """(user that can connect, None) or (None, why no user could); probed once per session."""
    try:
        import psycopg
    except ImportError as exc:
        return None, f"PostgreSQL not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}: psycopg missing ({exc})"
    users = list(dict.fromkeys(u for u in (os.environ.get("PGUSER"), getpass.getuser(), "postgres") if u))
    errors = []
    for user in users:
        try:
            with psycopg.connect(
                host=POSTGRES_HOST,
                port=POSTGRES_PORT,
                user=user,
                dbname=POSTGRES_ADMIN_DB,
                connect_timeout=SERVICE_TIMEOUT_S,
            ) as conn:
                conn.execute("SELECT 1")
            return user, None
        except psycopg.Error as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            errors.append(f"as {user}: {first_line}")
    return None, f"PostgreSQL not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}: {'; '.join(errors)}"


def postgres_unreachable_reason() -> str | None:
    """None when PostgreSQL accepts a connection, else why not."""
    return _postgres_probe()[1]


def postgres_user() -> str:
    """The role the tests connect as (the OS user, else postgres). Call after the reason check."""
    user, reason = _postgres_probe()
    if user is None:
        raise RuntimeError(reason)
    return user


def redis_unreachable_reason(db: int = REDIS_TEST_DB) -> str | None:
    """None when Redis answers PING, else why not."""
    try:
        import redis
    except ImportError as exc:
        return f"Redis not reachable at {REDIS_HOST}:{REDIS_PORT}: redis package missing ({exc})"
    client = redis.Redis(
        host=REDIS_HOST, port=REDIS_PORT, db=db, socket_connect_timeout=SERVICE_TIMEOUT_S, socket_timeout=SERVICE_TIMEOUT_S
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"Redis not reachable at {REDIS_HOST}:{REDIS_PORT}: {exc}"
    finally:
        client.close()
    return None


def _admin_connection():  # -> psycopg.Connection, imported lazily
    import psycopg

    return psycopg.connect(
        host=POSTGRES_HOST,
        port=POSTGRES_PORT,
        user=postgres_user(),
        dbname=POSTGRES_ADMIN_DB,
        connect_timeout=SERVICE_TIMEOUT_S,
        autocommit=True,  # CREATE/DROP DATABASE cannot run in a transaction
    )


# Processes the tests start, counted, so a test that starts one without the `slow` mark
# fails: `-m "not slow"` (the inner loop) then never waits for a process start.
# Lookups libraries make on their own (ctypes.util.find_library runs ldconfig) do not count.
_LOOKUPS = {"ldconfig", "gcc", "cc", "ld", "objdump", "uname"}
_started = [0]
_popen_init = subprocess.Popen.__init__


def _program(args) -> str:
    """The name of the program a Popen `args` runs (a command line, a path, or a list)."""
    words = os.fsdecode(args).split() if isinstance(args, (str, bytes, os.PathLike)) else list(args)
    return os.path.basename(os.fsdecode(words[0])) if words else ""


def _counted_popen_init(self, args, *rest, **kwargs):
    if _program(args) not in _LOOKUPS:
        _started[0] += 1
    _popen_init(self, args, *rest, **kwargs)


subprocess.Popen.__init__ = _counted_popen_init  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _process_starts_are_marked_slow(request: pytest.FixtureRequest) -> Iterator[None]:
    before = _started[0]
    yield
    if _started[0] > before and request.node.get_closest_marker("slow") is None:
        pytest.fail(f"{request.node.nodeid} started {_started[0] - before} process(es) without the slow mark: "
                    "mark it @pytest.mark.slow (CONTRIBUTING.md)", pytrace=False)


@pytest.fixture(autouse=True)
def _fresh_lexeme_statistics() -> None:
    """Each test reads its store's lexeme statistics afresh: the process keeps them for a
    minute per store URL, and the tests' PostgreSQL databases reuse their URLs."""
    passages = sys.modules.get("docqa.storage.passages")
    if passages is not None:
        passages._stats.clear()


@pytest.hookimpl(trylast=True)  # after tests/integration/conftest.py has marked its tests slow
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Anything using a real service gets the `services` marker, so `-m "not services"` works.
    for item in items:
        if {"postgres_url", "redis_url"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)
    # The tests that start processes first (in their order): under -n N they are what takes
    # longest, so they start at once and the quick ones fill the gaps instead of the tail.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _create_database(admin, name: str) -> None:
    # template0 + C locale: always allowed with UTF8, whatever the cluster default.
    admin.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")


def _drop_database(admin, name: str) -> None:
    # FORCE: a test that leaked a connection must not leak its database too.
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _database_url(name: str) -> str:
    return f"postgresql+psycopg://{postgres_user()}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"


def _new_database_name() -> str:
    return f"docqa_test_{os.getpid()}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a fresh, empty UTF8 PostgreSQL database of this test alone; dropped afterwards."""
    require_service(postgres_unreachable_reason())
    name = _new_database_name()
    with _admin_connection() as admin:
        _create_database(admin, name)
    try:
        yield _database_url(name)
    finally:
        with _admin_connection() as admin:
            _drop_database(admin, name)


class _MigratedPostgres:
    """One migrated database per test process, emptied before each test that uses it.

    Emptying (TRUNCATE, ~20 ms) instead of creating and migrating a database per test
    (~300 ms) keeps the suite fast; a test that changed the schema gets a new database.
    """

    def __init__(self) -> None:
        self.name: str | None = None

    def fresh_url(self) -> str:
        from docqa.storage.db import head_revision, upgrade

        with _admin_connection() as admin:
            if self.name is not None and not self._reset(admin, head_revision()):
                _drop_database(admin, self.name)
                self.name = None
            if self.name is None:
                self.name = _new_database_name()
                _create_database(admin, self.name)
                upgrade(_database_url(self.name))
        return _database_url(self.name)

    def _reset(self, admin, head: str) -> bool:
        """Empty the tables; False when the database no longer has the newest schema."""
        import psycopg

        # Connections a previous test leaked would block TRUNCATE.
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (self.name,),
        )
        try:
            with psycopg.connect(
                host=POSTGRES_HOST, port=POSTGRES_PORT, user=postgres_user(), dbname=self.name, autocommit=True
            ) as conn:
                version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
                if version != [(head,)]:
                    return False
                conn.execute(
                    "TRUNCATE answers, submission_jobs, submission_documents, submissions, job_plans, document_jobs, "
                    "jobs, text_tokens, passages, document_keys, documents, texts, workers "
                    "RESTART IDENTITY CASCADE"
                )
                conn.execute("UPDATE leaders SET holder = '', until = '2000-01-01T00:00:00+00:00'")
        except psycopg.Error:
            return False
        return True

    def close(self) -> None:
        if self.name is not None:
            with _admin_connection() as admin:
                _drop_database(admin, self.name)
            self.name = None


@pytest.fixture(scope="session")
def _migrated_postgres() -> Iterator[_MigratedPostgres]:
    store = _MigratedPostgres()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """URL of Redis db REDIS_TEST_DB, flushed before and after the test."""
    require_service(redis_unreachable_reason())
    import redis

    if REDIS_TEST_DB < 0:
        pytest.fail(f"DOCQA_TEST_REDIS_DB={os.environ.get('DOCQA_TEST_REDIS_DB')} is too small for this many "
                    "pytest-xdist workers: worker gwK flushes the db K below it (CONTRIBUTING.md)", pytrace=False)
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_TEST_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        yield url
        client.flushdb()
    finally:
        client.close()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """URL of a SQLite file (not yet created) in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'docqa.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def store_url(request: pytest.FixtureRequest) -> str:
    """URL of an empty store with the newest schema, once on SQLite and once on PostgreSQL.

    Isolated per test: a new SQLite file each time; on PostgreSQL one database per test
    process, emptied before each test (use `postgres_url` for a database of your own).
    """
    if request.param == "sqlite":
        from docqa.storage.db import upgrade

        url = request.getfixturevalue("sqlite_url")
        upgrade(url)
        return url
    require_service(postgres_unreachable_reason())
    return request.getfixturevalue("_migrated_postgres").fresh_url()


TINY_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "tiny-distilbert-qa")


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """The tiny DistilBERT QA model with a real WordPiece tokenizer (tests/fixtures/build_tiny_model.py)."""
    return TINY_MODEL


@pytest.fixture(scope="session")
def engine(tiny_model):
    """One loaded engine on the tiny model, shared by the tests that only read from it."""
    from docqa.worker.engine import Engine

    return Engine(tiny_model, device="cpu").warm_up()
