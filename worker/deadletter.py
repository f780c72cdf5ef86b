"""The dead-letter list: malformed messages set aside with a reason, never fatal.

A message that is not JSON, not a Celery envelope, not a docqa message, of an unknown
schema version or naming job ids the store does not have is logged once and pushed, with
its reason, onto one Redis list of the broker (`DEAD_LETTER_KEY`), newest first, capped
at `DEAD_LETTER_MAX` entries. `docqa status` counts it; `docqa dead-letters` prints it.
"""

from __future__ import annotations

import json
import logging
import socket
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger(__name__)

# The broker key of the list (a Redis list, one per broker database).
DEAD_LETTER_KEY = "docqa.dead-letters"
# Entries kept at most; older ones are dropped.
DEAD_LETTER_MAX = 10_000
# Characters of a payload kept in an entry.
PAYLOAD_CHARS = 65_536


def entry(reason: str, payload: Any, *, queue: str | None) -> str:
    """One dead-letter entry as JSON text."""
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", errors="replace")
    if not isinstance(payload, str):
        try:
            payload = json.dumps(payload, ensure_ascii=False, default=repr)
        except (TypeError, ValueError):
            payload = repr(payload)
    return json.dumps(
        {
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "queue": queue,
            "reason": reason,
            "worker": socket.gethostname(),
            "payload": payload[:PAYLOAD_CHARS],
        },
        ensure_ascii=False,
    )


def push(client, reason: str, payload: Any, *, queue: str | None) -> None:
    """Set a message aside on `client` (a redis-py client); log it once either way."""
    log.error("dead-lettered a message from queue %s: %s", queue, reason)
    text = entry(reason, payload, queue=queue)
    try:
        with client.pipeline() as pipe:
            pipe.lpush(DEAD_LETTER_KEY, text)
            pipe.ltrim(DEAD_LETTER_KEY, 0, DEAD_LETTER_MAX - 1)
            pipe.execute()
    except Exception:  # the broker is away: the log line above is all that is left
        log.error("could not store the dead letter; its payload was: %s", text[:2000], exc_info=True)


def push_via(app, reason: str, payload: Any, *, queue: str | None) -> None:
    """`push` through a Celery app's broker connection (Redis brokers; others only log)."""
    try:
        with app.connection_for_write() as conn:
            client = getattr(conn.default_channel, "client", None)
            if client is None:
                log.error("dead-lettered (broker keeps no list) a message from queue %s: %s: %s",
                          queue, reason, entry(reason, payload, queue=queue)[:2000])
                return
            push(client, reason, payload, queue=queue)
    except Exception:
        log.error("could not reach the broker to dead-letter a message (%s): %s", reason,
                  entry(reason, payload, queue=queue)[:2000], exc_info=True)


def read(client, limit: int = 20) -> tuple[int, list[dict]]:
    """(count, the newest `limit` entries) of the list on `client`."""
    count = int(client.llen(DEAD_LETTER_KEY))
    entries = [json.loads(raw) for raw in client.lrange(DEAD_LETTER_KEY, 0, max(0, limit - 1))] if limit else []
    return count, entries
