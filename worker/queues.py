"""What the broker holds for one model: its queue's depth, the dead letters and the messages
bouncing between workers, as `docqa status` and the HTTP API's status report them."""

from __future__ import annotations

from docqa.storage.db import mask_secrets, safe_url


def broker_facts(settings) -> dict:
    """Queue depth and dead letters from the broker, or {"error": why} (never hangs long;
    "unreachable": True when the broker did not answer)."""
    from urllib.parse import urlparse

    if urlparse(settings.broker_url).scheme not in ("redis", "rediss"):
        return {"error": "not a Redis broker: queue depth and dead letters are not shown"}
    import redis

    from docqa.worker.bounces import bouncing
    from docqa.worker.deadletter import DEAD_LETTER_KEY

    client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        count, entries = bouncing(client, limit=5)
        return {"queue": settings.model_queue, "queue_depth": int(client.llen(settings.model_queue)),
                "dead_letters": int(client.llen(DEAD_LETTER_KEY)), "bouncing": count, "bouncing_messages": entries}
    except redis.RedisError as exc:
        reason = mask_secrets(str(exc), settings.broker_url)
        return {"error": f"broker {safe_url(settings.broker_url)} not reachable ({reason})", "unreachable": True}
    finally:
        client.close()
