"""Celery's consumer, except that no message can stop the worker.

Celery hands a message that decodes but is not a valid task (a body that is not
`[args, kwargs, embed]`, unknown headers, an unregistered task name) to handlers that
either raise out of the consumer, killing the worker, or reject it, which on Redis drops
it. Here each such message is dead-lettered with its reason and acknowledged.
"""

from __future__ import annotations

from celery.worker.consumer import Consumer

from docqa.worker import deadletter


class SafeConsumer(Consumer):
    def _set_aside(self, message, reason: str) -> None:
        info = getattr(message, "delivery_info", None) or {}
        queue = info.get("routing_key") or info.get("exchange")
        try:
            payload = {"headers": message.headers, "body": message.body}
        except Exception:
            payload = repr(message)
        deadletter.push_via(self.app, reason, payload, queue=queue)
        try:
            message.ack()
        except Exception:  # the connection went away: the message comes back and is set aside again
            pass

    def on_unknown_message(self, body, message):
        self._set_aside(message, "not a Celery task message (no task header)")

    def on_unknown_task(self, body, message, exc):
        name = (getattr(message, "headers", None) or {}).get("task")
        self._set_aside(message, f"unknown task {name!r}: this worker runs only docqa.run_jobs")

    def on_invalid_task(self, body, message, exc):
        self._set_aside(message, f"invalid task message: {exc}")

    def on_decode_error(self, message, exc):
        self._set_aside(message, f"cannot decode the body ({type(exc).__name__}: {exc})")

    def create_task_handler(self, *args, **kwargs):
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message):
            try:
                return handle(message)
            except Exception as exc:  # a body Celery cannot unpack, and anything else
                self._set_aside(message, f"malformed task message ({type(exc).__name__}: {exc})")

        return on_task_received
