"""Corpus questions in distributed mode: the caller (an HTTP server, a Client) has no model,
so a worker of the model answers. The request goes to the model's *ask queue*, which every
worker polls before its bulk queue (Redis BRPOP takes keys in order), and carries a
deadline after which no worker starts it. The answer comes back on a Redis list of its own
(`docqa:ask:<hex>`) that the caller waits on with its timeout. Imports no torch.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from docqa.core.corpus import MAX_CORPUS_WINDOWS, CorpusResult
from docqa.core.errors import DocqaError, UnreachableError, UsageError

ASK_TASK = "docqa.ask_corpus"
# A reply waits this long for its caller, seconds (then Redis drops it).
REPLY_SECONDS = 60
REPLY_PREFIX = "docqa:ask:"


class NoLiveWorker(UnreachableError):
    """No live worker serves the model a corpus question needs."""


class AskTimeout(DocqaError):
    """No worker answered a corpus question within the caller's timeout."""

    http_status = 504


class AskFailed(DocqaError):
    """The worker that took a corpus question could not answer it."""


class AskMessage(BaseModel):
    """What a worker is asked: schema version 1. Anything else is dead-lettered."""

    model_config = ConfigDict(extra="forbid")

    v: int = Field(1, ge=1, le=1)
    store_id: str | None = None
    reply: str = Field(pattern=r"^docqa:ask:[0-9a-f]{32}$")
    deadline: float
    question: str = Field(min_length=1, max_length=100_000)
    params: dict[str, Any]
    windows: int = Field(ge=1, le=MAX_CORPUS_WINDOWS)
    top: int = Field(ge=1, le=10_000)
    where: dict[str, str] | None = None
    submission_id: int | None = None
    document_ids: list[int] | None = Field(None, max_length=100_000)
    all_versions: bool = False

    def filters(self) -> dict[str, Any]:
        return {"where": self.where, "submission_id": self.submission_id, "document_ids": self.document_ids,
                "all_versions": self.all_versions}


def ask_queue(model_queue: str) -> str:
    """The queue of a model's corpus questions, polled before its bulk queue."""
    return f"{model_queue}.ask"


def ask_workers(app, repo, settings, question: str, *, params, windows: int, top: int, timeout: float,
                **filters) -> CorpusResult:
    """Have a live worker of settings' model answer a corpus question; its CorpusResult.
    Raises NoLiveWorker (none is live), AskTimeout (none answered within `timeout` s),
    AskFailed (the worker could not), UsageError (no Redis broker)."""
    if timeout <= 0:
        raise UsageError(f"timeout must be positive, got {timeout}")
    _check_served(repo, settings)
    message = AskMessage(store_id=repo.store_id(), reply=REPLY_PREFIX + uuid.uuid4().hex,
                         deadline=time.time() + timeout, question=question, params=params.model_dump(),
                         windows=windows, top=top, **filters)
    with app.connection_for_write() as conn:
        client = _redis_of(conn)
        app.send_task(ASK_TASK, args=[message.model_dump()], queue=ask_queue(settings.model_queue),
                      expires=timeout, connection=conn)
        got = client.blpop([message.reply], timeout=max(1, round(timeout)))
    if got is None:
        raise AskTimeout(f"no worker of {settings.model} answered within {timeout:g} s (all busy, or slower than "
                         "that); try again, or give a longer timeout")
    reply = json.loads(got[1])
    if "error" in reply:
        raise AskFailed(f"the worker could not answer: {reply['error']}")
    return CorpusResult.model_validate(reply["result"])


def send_reply(app, reply: str, body: dict) -> None:
    """Put a worker's reply where its caller waits (kept REPLY_SECONDS)."""
    with app.connection_for_write() as conn:
        client = _redis_of(conn)
        client.rpush(reply, json.dumps(body))
        client.expire(reply, REPLY_SECONDS)


def _check_served(repo, settings) -> None:
    live = [w for w in repo.live_workers(seen_within=settings.live_worker_seconds) if w.queue == settings.model_queue]
    if not live:
        raise NoLiveWorker(f"no live worker serves model {settings.model} (queue {settings.model_queue}); "
                           "start one with docqa worker, or ask an embedded store")


def _redis_of(conn):
    client = getattr(conn.default_channel, "client", None)
    if client is None or not hasattr(client, "blpop"):
        raise UsageError("corpus questions in distributed mode need a Redis broker (redis:// or rediss://)")
    return client
