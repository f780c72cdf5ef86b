"""POST /v1/ask: a question over every stored document (retrieve with the store's full-text
search, read with the model, rank by margin). Embedded, the server's model reads; otherwise
a live worker of the model does, within the request's timeout."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from docqa.client import Client
from docqa.core.corpus import MAX_CORPUS_WINDOWS, CorpusResult
from docqa.routes import MAX_ID, MAX_PAGE, ClientDep, SettingsDep, authorized, check_reference, check_text_params

router = APIRouter(dependencies=[Depends(authorized)])


class AskIn(BaseModel):
    """A corpus question: `where` metadata (top-level keys equal to the values), `windows`
    passages read, `top` answers returned; `params`: answer parameters (AnswerParams fields)."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    where: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=32)
    windows: int = Field(32, ge=1, le=MAX_CORPUS_WINDOWS)
    top: int = Field(10, ge=1, le=MAX_PAGE)
    document: str | None = None
    submission: int | None = Field(None, ge=1, le=MAX_ID)
    all_versions: bool = False
    timeout: float | None = Field(None, gt=0, description="seconds to wait for a worker (distributed)")
    params: dict[str, Any] = Field(default_factory=dict)


@router.post("/v1/ask", response_model=CorpusResult)
async def ask(body: AskIn, request: Request, client: ClientDep, settings: SettingsDep) -> CorpusResult:
    """Answers to `question` from every stored document the filters keep, best first."""
    check_text_params(question=body.question, document=body.document, where=[*body.where, *map(str, body.where.values())])
    check_reference("document", body.document)
    timeout = min(body.timeout or settings.api_max_wait_seconds, settings.api_max_wait_seconds)
    if client.embedded:  # the server's one model answers one request at a time
        async with request.app.state.submit_lock:
            return await anyio.to_thread.run_sync(lambda: _ask(client, body, timeout))
    waiters = request.app.state.waiters
    waiters.take()
    try:
        return await anyio.to_thread.run_sync(lambda: _ask(client, body, timeout))
    finally:
        waiters.release()


def _ask(client: Client, body: AskIn, timeout: float) -> CorpusResult:
    try:
        return client.ask_corpus(body.question, windows=body.windows, top=body.top, where=body.where or None,
                                 document=body.document, submission=body.submission, all_versions=body.all_versions,
                                 timeout=timeout, **body.params)
    except TypeError as exc:  # an answer parameter that does not exist
        raise HTTPException(status_code=422, detail=str(exc)) from None
