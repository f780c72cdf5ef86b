"""Metadata filters (`--where KEY=VALUE`, HTTP `where=`, `Client.answers(where=...)`), one
meaning for every caller: a top-level metadata key equal to a value, compared as text."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


def parse_where(items: Iterable[str] | None) -> dict[str, str]:
    """{"KEY": "VALUE"} from KEY=VALUE items (the key stripped, the value as written).

    ValueError names the first malformed item; callers turn it into their own error
    (CliError, HTTP 422)."""
    where: dict[str, str] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{item!r}: write KEY=VALUE (e.g. lang=en)")
        where[name.strip()] = value
    return where


def where_text(where: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Metadata values as the store compares them: strings as they are, others as their JSON
    text (so {"year": 2024} matches a document whose metadata says 2024, as does "2024")."""
    if where is None:
        return None
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in where.items()}
