"""The fleet as the store sees it: the store's own identity, the worker registry, and
fleet-wide roles held under a renewable lease (one reconciler at a time).

Workers register a row when they start and beat it while they live; `live_workers`
lists those seen recently. Roles use the same lease idea as jobs: a holder renews its
hold before it runs out; when it dies, another takes the role once the hold expires.
Times are UTC from this host's clock; lengths of time in seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import or_, select, update

from docqa.storage.columns import utcnow
from docqa.storage.errors import StoreError
from docqa.storage.models import Leader, StoreInfo, WorkerRow
from docqa.storage.transactions import Transactions, rowcount


class WorkerInfo(NamedTuple):
    name: str
    host: str
    pid: int
    model: str
    queue: str
    started_at: datetime
    last_seen_at: datetime
    # Its torch intra-op threads and the cores it may use (None: a worker of before 0007).
    threads: int | None = None
    cores: int | None = None


class Fleet(Transactions):
    """Store identity, worker registry, fleet-wide roles."""

    _store_id: str | None = None

    def store_id(self) -> str:
        """The store's random identity (written once by the schema migration); cached."""
        if self._store_id is None:
            with self._read() as session:
                value = session.execute(select(StoreInfo.value).where(StoreInfo.key == "store_id")).scalar()
            if value is None:
                raise StoreError("the store has no store_id (schema older than revision 0002?): run 'docqa db upgrade'")
            self._store_id = value
        return self._store_id

    def first_time(self, key: str, value: str = "") -> bool:
        """Record `key` in the store's facts; True only for the call that recorded it, so a
        hint or notice is given once per store, by whichever process comes first."""
        with self._write() as session:
            stmt = (
                self._insert(StoreInfo).values(key=key, value=value)
                .on_conflict_do_nothing(index_elements=[StoreInfo.key]).returning(StoreInfo.key)
            )
            return session.execute(stmt).scalar_one_or_none() is not None

    def register_worker(self, name: str, *, host: str, pid: int, model: str, queue: str,
                        threads: int | None = None, cores: int | None = None) -> None:
        """Record worker process `name` as started now; `threads`: its torch intra-op threads,
        `cores`: the cores it may use (so `docqa status` can tell a host's cores oversubscribed)."""
        now = utcnow()
        with self._write() as session:
            session.merge(
                WorkerRow(name=name, host=host, pid=pid, model=model, queue=queue, started_at=now,
                          last_seen_at=now, stopped_at=None, threads=threads, cores=cores)
            )

    def beat_worker(self, name: str) -> None:
        """Say `name` is alive now."""
        with self._write() as session:
            session.execute(
                update(WorkerRow).where(WorkerRow.name == name).values(last_seen_at=utcnow(), stopped_at=None)
            )

    def stop_worker(self, name: str) -> None:
        with self._write() as session:
            session.execute(update(WorkerRow).where(WorkerRow.name == name).values(stopped_at=utcnow()))

    def live_workers(self, *, seen_within: float, now: datetime | None = None) -> list[WorkerInfo]:
        """Workers not stopped and seen within the last `seen_within` seconds, by name."""
        now = utcnow() if now is None else now
        stmt = (
            select(WorkerRow.name, WorkerRow.host, WorkerRow.pid, WorkerRow.model, WorkerRow.queue,
                   WorkerRow.started_at, WorkerRow.last_seen_at, WorkerRow.threads, WorkerRow.cores)
            .where(WorkerRow.stopped_at.is_(None), WorkerRow.last_seen_at >= now - timedelta(seconds=seen_within))
            .order_by(WorkerRow.name)
        )
        with self._read() as session:
            return [WorkerInfo(*row) for row in session.execute(stmt)]

    def hold_role(self, role: str, holder: str, *, seconds: float, now: datetime | None = None) -> bool:
        """Take or renew `role` for `holder` until now + seconds; False while another holds it."""
        now = utcnow() if now is None else now
        until = now + timedelta(seconds=seconds)
        with self._write() as session:
            result = session.execute(
                update(Leader)
                .where(Leader.role == role, or_(Leader.holder == holder, Leader.until < now))
                .values(holder=holder, until=until)
                .execution_options(synchronize_session=False)
            )
            if rowcount(result):
                return True
            # A role no migration created: the first to insert it holds it (a second
            # process inserting at the same moment waits, then finds the row taken).
            inserted = session.execute(
                self._insert(Leader).values(role=role, holder=holder, until=until)
                .on_conflict_do_nothing(index_elements=[Leader.role]).returning(Leader.role)
            ).scalar_one_or_none()
            return inserted is not None

    def role_holder(self, role: str, now: datetime | None = None) -> str | None:
        """Who holds `role` now (None: nobody, or the hold ran out)."""
        now = utcnow() if now is None else now
        with self._read() as session:
            row = session.get(Leader, role)
            return row.holder if row is not None and row.until >= now and row.holder else None

    def release_role(self, role: str, holder: str) -> None:
        with self._write() as session:
            session.execute(
                update(Leader)
                .where(Leader.role == role, Leader.holder == holder)
                .values(until=datetime(2000, 1, 1, tzinfo=utcnow().tzinfo))
            )
