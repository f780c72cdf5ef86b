"""Messages that keep coming back: counted, bounded, shown; and whether a queue drains.

Redis keeps no delivery count (a message put back is a new list item), so a worker that
cannot run a message (another store's, or one that meets a store or model that is not
there) puts back a copy carrying BOUNCES_HEADER (how many times it came back) and
acknowledges the original; at `Settings.max_redeliveries` it dead-letters the message
with the reason instead. While a message bounces, a key under BOUNCING_PREFIX (kept
BOUNCING_TTL seconds at most) says why, for `docqa status`; it goes when the message
finally runs or is set aside. Workers stamp PROGRESS_PREFIX + queue each time a run claims
jobs, so the reconciler can tell a queue that drains from one that only bounces.

Every broker key docqa writes besides the queues is named here or in `deadletter`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

log = logging.getLogger(__name__)

# The message header that counts how many times a message was put back.
BOUNCES_HEADER = "docqa_bounces"
# One key per bouncing message: BOUNCING_PREFIX + store + digest of its job ids.
BOUNCING_PREFIX = "docqa.bouncing:"
# Seconds a bouncing message's key lives without being renewed.
BOUNCING_TTL = 3600
# One key per queue: when a worker last claimed jobs from it (unix time).
PROGRESS_PREFIX = "docqa.progress:"
# Seconds a progress stamp lives.
PROGRESS_TTL = 24 * 3600


def message_key(job_ids: list[int], store_id: str | None) -> str:
    """The bouncing key of a message (the same for its every copy)."""
    digest = hashlib.sha1(",".join(map(str, job_ids)).encode()).hexdigest()[:16]
    return f"{BOUNCING_PREFIX}{store_id or '-'}:{digest}"


@contextmanager
def broker_client(app) -> Iterator:
    """The app broker's redis-py client, or None for a broker that is not Redis."""
    with app.connection_for_write() as conn:
        yield getattr(conn.default_channel, "client", None)


def record(app, key: str, *, reason: str, bounces: int, queue: str | None, job_ids: list[int]) -> None:
    """Say that a message bounced (for `docqa status`); a broker that is away is only logged."""
    entry = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "reason": reason,
             "bounces": bounces, "queue": queue, "job_ids": job_ids[:10], "jobs": len(job_ids)}
    _quietly(app, lambda client: client.set(key, json.dumps(entry), ex=BOUNCING_TTL))


def clear(app, key: str) -> None:
    """The message ran or was set aside: it no longer bounces."""
    _quietly(app, lambda client: client.delete(key))


def bouncing(client, limit: int = 20) -> tuple[int, list[dict]]:
    """(count, up to `limit` entries, newest first) of the messages bouncing now."""
    keys = list(client.scan_iter(match=BOUNCING_PREFIX + "*", count=1000))
    entries = []
    for raw in client.mget(keys) if keys else []:
        if raw is not None:
            try:
                entries.append(json.loads(raw))
            except ValueError:
                continue
    entries.sort(key=lambda e: e.get("at", ""), reverse=True)
    return len(entries), entries[:limit]


def mark_progress(app, queue: str | None) -> None:
    """A run claimed jobs of `queue` just now."""
    if queue:
        _quietly(app, lambda client: client.set(PROGRESS_PREFIX + queue, str(time.time()), ex=PROGRESS_TTL))


def last_progress(client, queue: str) -> float | None:
    """When a run last claimed jobs of `queue` (unix time), or None when none is known."""
    raw = client.get(PROGRESS_PREFIX + queue)
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _quietly(app, write) -> None:
    try:
        with broker_client(app) as client:
            if client is not None:
                write(client)
    except Exception as exc:  # noqa: BLE001 (the broker is away: this bookkeeping can wait)
        log.warning("could not update the broker's bookkeeping (%s: %s)", type(exc).__name__, exc)
