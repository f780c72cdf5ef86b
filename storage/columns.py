"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import DateTime, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime, on every database.

    PostgreSQL stores `timestamptz`. SQLite has no time zones: values are stored as UTC
    text (SQLAlchemy's fixed-width format, so text order is time order) and come back
    with UTC attached. Naive datetimes are refused on the way in, because guessing
    their zone would silently shift leases and timestamps.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone-aware one (UTC)")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            # SQLite's DATETIME storage drops the zone anyway; dropping it here makes
            # the stored text always UTC whatever zone the caller used.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class StrEnumType(TypeDecorator[enum.StrEnum]):
    """A `StrEnum` stored as its string value in a VARCHAR column (no database enum type).

    Adding a member needs no migration; values read back that the enum does not know
    raise ValueError rather than leaking strings into typed code.
    """

    impl = String(16)
    cache_ok = True

    def __init__(self, enum_class: type[enum.StrEnum], length: int = 16) -> None:
        super().__init__(length)
        self.enum_class = enum_class

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        # Accept plain strings too, but only the enum's values.
        return self.enum_class(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> enum.StrEnum | None:
        if value is None:
            return None
        return self.enum_class(value)
