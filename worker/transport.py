"""docqa's Redis transport: kombu's, except that a malformed payload is dead-lettered.

kombu decodes each popped list item with json and hands it to the consumer; an item that
is not JSON, or not an envelope a kombu Message can be made of, raised out of the event
loop and stopped the worker ("Unrecoverable error"), and was restored to the queue, so
every new worker died on it too. Here such an item is set aside on the dead-letter list
(`docqa.worker.deadletter`) with its reason and the worker goes on.
"""

from __future__ import annotations

from queue import Empty

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from docqa.worker import deadletter

# Bytes of one queue item at most. A docqa message of MAX_JOB_IDS ids is under 100 kB
# (its envelope base64 included); a larger item is set aside before it is decoded, so a
# 70 MB item cannot hold a worker for a minute and grow it by hundreds of MB.
MAX_MESSAGE_BYTES = 1 << 20


def envelope_problem(message) -> str | None:
    """Why a decoded item is not an envelope kombu can deliver, or None if it is: every
    field kombu's Redis channel reads before Celery sees the message (delivery tag, the
    delivery_info's exchange and routing key its unacked bookkeeping stores, the body)."""
    if not isinstance(message, dict):
        return f"the item is JSON {type(message).__name__}, not a message envelope (an object)"
    properties = message.get("properties")
    if not isinstance(properties, dict) or "delivery_tag" not in properties:
        return "the envelope has no properties.delivery_tag: not a kombu/Celery message"
    if not isinstance(properties["delivery_tag"], str) or not properties["delivery_tag"]:
        return f"the envelope's properties.delivery_tag is {properties['delivery_tag']!r}, not a non-empty string"
    info = properties.get("delivery_info")
    if not isinstance(info, dict):
        return "the envelope has no properties.delivery_info object: not a kombu/Celery message"
    for key in ("exchange", "routing_key"):
        if not isinstance(info.get(key), str):
            return f"the envelope's properties.delivery_info has no {key} string"
    if not isinstance(message.get("body", ""), (str, bytes)):
        return "the envelope's body is not a string"
    if not isinstance(message.get("headers") or {}, dict):
        return "the envelope's headers are not an object"
    return None


def body_problem(channel, message: dict) -> str | None:
    """Why the envelope's body cannot be decoded as its properties.body_encoding says."""
    body = message.get("body")
    if not body:
        return None
    try:
        channel.decode_body(body, message["properties"].get("body_encoding"))
    except Exception as exc:  # noqa: BLE001 (binascii.Error, an unknown encoding, ...)
        return f"the envelope's body cannot be decoded as {message['properties'].get('body_encoding')!r} " \
               f"({type(exc).__name__}: {exc})"
    return None


class Channel(kombu_redis.Channel):
    def _decode_item(self, item, queue: str):
        """The envelope of a popped item, or None after dead-lettering a malformed one."""
        if len(item) > MAX_MESSAGE_BYTES:
            deadletter.push(self.client, f"the item has {len(item):,} bytes, over the limit of {MAX_MESSAGE_BYTES:,} "
                            "for a docqa message", item[:deadletter.PAYLOAD_CHARS], queue=queue)
            return None
        text = bytes_to_str(item)
        try:
            message = loads(text)
        except ValueError as exc:
            deadletter.push(self.client, f"not JSON ({exc})", text, queue=queue)
            return None
        problem = envelope_problem(message) or body_problem(self, message)
        if problem is not None:
            deadletter.push(self.client, problem, text, queue=queue)
            return None
        return message

    def _brpop_read(self, **options):
        try:
            try:
                popped = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # Reconnect on the next poll, as kombu does.
                self.client.connection.disconnect()
                raise
            if not popped:
                raise Empty()
            key, item = popped
            queue = bytes_to_str(key).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            message = self._decode_item(item, queue)
            if message is not None:
                self.connection._deliver(message, queue)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _get(self, queue):
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                item = client.rpop(self._q_for_pri(queue, pri))
                if item:
                    self._maybe_update_queues_expire(client, queue)
                    message = self._decode_item(item, queue)
                    if message is None:
                        raise Empty()
                    return message
            self._maybe_update_queues_expire(client, queue)
            raise Empty()


class Transport(kombu_redis.Transport):
    Channel = Channel
