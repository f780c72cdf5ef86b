"""POST /v1/submissions and GET /v1/submissions/{id}. Submitting runs on the event loop:
the submission itself in a thread (one at a time per app), a ?wait= as async sleeps
between short store reads in side threads, so waiting requests hold no thread and at
most DOCQA_API_MAX_WAITERS wait."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from docqa.client import POLL_SECONDS, Client
from docqa.core.settings import Settings
from docqa.routes import (BROKER_UNAVAILABLE, MAX_ID, ClientDep, SettingsDep, SideDep, authorized, log,
                          unstorable)

router = APIRouter(dependencies=[Depends(authorized)])


class SubmissionIn(BaseModel):
    """A submission: documents (objects, or plain texts), questions asked of every document,
    answer parameters (AnswerParams fields; the pipeline's defaults)."""

    model_config = ConfigDict(extra="forbid")

    documents: list[Any]
    questions: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None


class Waiters:
    """How many `?wait=` requests wait now, at most `limit` (event loop only: no lock)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0

    def take(self) -> None:
        if self.count >= self.limit:
            raise HTTPException(status_code=503, headers={"Retry-After": "5"}, detail=(
                f"too many waiting requests: {self.limit:,} ?wait= requests wait already (DOCQA_API_MAX_WAITERS); "
                "nothing was stored: retry, or submit without ?wait= and poll GET /v1/submissions/ID"))
        self.count += 1

    def release(self) -> None:
        self.count -= 1


@router.post("/v1/submissions")
async def submit(body: SubmissionIn, request: Request, client: ClientDep, settings: SettingsDep, side: SideDep,
                 wait: float | None = Query(
                     None, ge=0, description="seconds to wait for the answers, at most DOCQA_API_MAX_WAIT_SECONDS")):
    """Store documents and jobs; answer them (embedded) or send them to the workers.
    With ?wait=SECONDS, return once the submission is finished or the time is up."""
    check_submission(body, settings, wait, client)
    waiters: Waiters = request.app.state.waiters
    if wait:
        waiters.take()
    try:
        async with request.app.state.submit_lock:  # an embedded client answers one submission at a time
            sub = await anyio.to_thread.run_sync(lambda: _submit(client, body, settings, wait))
        out: dict[str, Any] = {"submission_id": sub.id, **dataclasses.asdict(sub.summary)}
        out["errors"] = list(sub.summary.errors)
        progress = await _progress(sub, wait or 0.0, request, side)
    finally:
        if wait:
            waiters.release()
    out["progress"] = dataclasses.asdict(progress)
    out["finished"] = progress.finished
    return out


@router.get("/v1/submissions/{submission_id}")
def submission(client: ClientDep, submission_id: int = Path(ge=1, le=MAX_ID)) -> dict:
    try:
        sub = client.submission(submission_id)
    except LookupError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    progress = sub.progress()
    return {"submission_id": submission_id, "progress": dataclasses.asdict(progress),
            "finished": progress.finished}


def _submit(client: Client, body: SubmissionIn, settings: Settings, wait: float | None = None):
    """client.submit, its refusals as HTTP errors: a SubmitError reaches the app's DocqaError
    handler (422, its message), an answer parameter that does not exist (TypeError) is a 422,
    a broker that is down a 503 without its address."""
    try:
        # A caller that waits (?wait=) goes before the bulk backlog; otherwise the Client's default.
        return client.submit(body.documents, body.questions, model=body.model, priority=1 if wait else None,
                             **body.params)
    except TypeError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    except ConnectionError as exc:
        from docqa.storage.db import mask_secrets

        log.warning("submit: %s", mask_secrets(str(exc), settings.broker_url))
        detail = re.sub(r" \(.*\); submission", " (the server's log has the reason); submission", str(exc), count=1)
        raise HTTPException(status_code=503, detail=detail if detail != str(exc) else BROKER_UNAVAILABLE) from None


async def _progress(sub, seconds: float, request: Request, side):
    """The submission's progress once it is finished, `seconds` are over or the caller has gone;
    each read a short one in a `side` thread, async sleeps between them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        progress = await anyio.to_thread.run_sync(sub.progress, limiter=side)
        left = deadline - loop.time()
        if progress.finished or left <= 0 or await request.is_disconnected():
            return progress
        await asyncio.sleep(min(POLL_SECONDS, left))


# -- what no submission may be ----------------------------------------------------------------------
def served_models(settings: Settings) -> tuple[str, ...]:
    """The models a submission may name: DOCQA_API_MODELS (comma-separated), else DOCQA_MODEL."""
    if settings.api_models is None:
        return (settings.model,)
    return tuple(dict.fromkeys(m.strip() for m in settings.api_models.split(",") if m.strip())) or (settings.model,)


def check_submission(body: SubmissionIn, settings: Settings, wait: float | None, client: Client) -> None:
    """HTTPException (413/422, naming the field and the limit) for what no submission may be."""
    _check_limits(body, settings, wait)
    _check_params(body, settings)
    _check_questions(body, settings)
    _check_documents(body, settings, client)


def _check_limits(body: SubmissionIn, settings: Settings, wait: float | None) -> None:
    if wait is not None and wait > settings.api_max_wait_seconds:
        raise HTTPException(status_code=422, detail=(
            f"wait: {wait:g} s is over the limit of {settings.api_max_wait_seconds:g} s (DOCQA_API_MAX_WAIT_SECONDS): "
            "wait less, or poll GET /v1/submissions/ID"))
    if len(body.documents) > settings.api_max_documents:
        raise HTTPException(status_code=413, detail=(
            f"{len(body.documents):,} documents in one request is over the limit of "
            f"{settings.api_max_documents:,} (DOCQA_API_MAX_DOCUMENTS): split the submission"))


def _check_params(body: SubmissionIn, settings: Settings) -> None:
    """Only answer parameters (never the Client's own options: check_model, revision, ...),
    and only a served model."""
    from docqa.core.params import AnswerParams

    unknown = sorted(set(body.params) - set(AnswerParams.model_fields))
    if unknown:
        raise HTTPException(status_code=422, detail=(
            f"params: {', '.join(repr(k[:100]) for k in unknown[:5])} is not an answer parameter; give only "
            f"{', '.join(AnswerParams.model_fields)}; nothing was stored"))
    models = served_models(settings)
    if body.model is not None and body.model not in models:
        raise HTTPException(status_code=422, detail=(
            f"model: {body.model[:200]!r} is not served here; give one of {', '.join(map(repr, models))} "
            "(DOCQA_API_MODELS), or leave model out"))


def _check_questions(body: SubmissionIn, settings: Settings) -> None:
    from docqa.producer.documents import InputError, check_question

    for n, question in enumerate(body.questions):
        try:
            check_question(question, settings.max_question_chars)
        except InputError as exc:
            raise HTTPException(status_code=422, detail=f"questions[{n}]: {exc}") from None
        problem = unstorable(question)
        if problem is not None:
            raise HTTPException(status_code=422, detail=f"questions[{n}]: {problem}; nothing was stored")
    if not _asks_anything(body):
        raise HTTPException(status_code=422, detail=(
            'questions: no question to ask; give "questions": ["..."] (asked of every document), '
            'or "questions" in a document object'))


def _asks_anything(body: SubmissionIn) -> bool:
    """Whether the submission asks a question of at least one document."""
    if any(q.strip() for q in body.questions):
        return True
    return any(isinstance(d, dict) and isinstance(d.get("questions"), list)
               and any(isinstance(q, str) and q.strip() for q in d["questions"]) for d in body.documents)


def _check_documents(body: SubmissionIn, settings: Settings, client: Client) -> None:
    """422 storing nothing when not one document can be used; otherwise those that cannot are
    reported in the answer's `errors` by the submission, and the others stored."""
    if not body.documents:
        raise HTTPException(status_code=422, detail='documents: no document given; "documents": ["text", ...]')
    problems = client.document_problems(body.documents, settings.max_document_chars)
    if len(problems) == len(body.documents):
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5:,} more" if len(problems) > 5 else "")
        raise HTTPException(status_code=422, detail=f"documents: none can be stored, nothing was: {shown}")
