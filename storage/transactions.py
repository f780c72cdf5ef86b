"""Short transactions over the store, the base every store noun builds on.

Each operation is one short transaction; nothing is cached between them. Writes on
SQLite take the write lock at BEGIN (IMMEDIATE), so they never fail upgrading a read
snapshot; PostgreSQL gets its dialect's INSERT ... ON CONFLICT and row locks where a
noun asks for them.

Times are timezone-aware UTC from this host's clock: leases assume the hosts' clocks
agree to well within a lease (NTP). Lengths of time are in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Engine, Result
from sqlalchemy.orm import Session, sessionmaker

from docqa.storage.db import SQLITE_BEGIN_OPTION, session_factory

# PostgreSQL advisory lock held while answers or document links are written, so their ids
# become visible in increasing order (a follower reads "after the last id seen" safely).
PG_RESULTS_LOCK_KEY = 0x646F6361  # "doca"

# Ids per IN (...) list or rows per multi-row INSERT: far below SQLite's and
# PostgreSQL's bound-parameter limits.
CHUNK = 500

T = TypeVar("T")


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE matched. `Session.execute` is typed as giving a Result;
    for those statements it is a CursorResult, which has the count."""
    return cast("CursorResult[Any]", result).rowcount


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """`items` in slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Transactions:
    """A session factory, and the read / write transactions the store's nouns run in."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._dialect: str | None = None

    @classmethod
    def from_engine(cls, engine: Engine) -> "Transactions":
        return cls(session_factory(engine))

    # -- transactions -------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._sessions() as session:
            self._remember_dialect(session)
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A transaction that commits on success. On SQLite it holds the write lock from BEGIN."""
        with self._sessions() as session, session.begin():
            session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            self._remember_dialect(session)
            yield session

    def _remember_dialect(self, session: Session) -> None:
        if self._dialect is None:
            self._dialect = session.get_bind().dialect.name

    @property
    def _postgres(self) -> bool:
        return self._dialect == "postgresql"

    def _insert(self, entity: Any) -> Any:
        # The dialect's INSERT (ON CONFLICT support), imported for the one in use only.
        if self._postgres:
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(entity)
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(entity)
