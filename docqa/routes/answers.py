"""GET /v1/answers: answers with provenance, a page (JSON), the best N to one question, or
every answer streamed (NDJSON); offsets in code points, UTF-16 or UTF-8 units."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse

from docqa.client import Client
from docqa.core.filters import parse_where
from docqa.core.offsets import record_converter
from docqa.routes import MAX_ID, MAX_PAGE, ClientDep, authorized, check_reference, check_text_params, json_response
from docqa.storage.answers import result_cursor

router = APIRouter(dependencies=[Depends(authorized)])

# Answers read from the store at a time while streaming.
STREAM_BATCH = 500

Convert = Callable[[object], dict]


@router.get("/v1/answers")
def answers(
    request: Request,
    client: ClientDep,
    submission: int | None = Query(None, ge=1, le=MAX_ID),
    document: str | None = Query(None, description="a document id, an id given at submit, or a file path"),
    question: str | None = None,
    model: str | None = None,
    rank: int = Query(0, ge=0, le=MAX_ID, description="answers of this rank only (0: each job's best)"),
    all_ranks: bool = Query(False, description="every rank of every job (overrides rank)"),
    where: list[str] = Query([], description="KEY=VALUE: document metadata equal to VALUE (repeatable)"),
    all_versions: bool = Query(False, description="include documents replaced by a newer version"),
    order: str = Query("answer", pattern="^(answer|reference|margin)$",
                       description="answer (as stored), reference (pipeline score) or margin, highest first"),
    top: int | None = Query(None, ge=1, le=MAX_PAGE, description="with question: best N across documents"),
    cursor: str | None = Query(None, description="the next_cursor of the previous page (same order)"),
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    offsets: str = Query("codepoints", pattern="^(codepoints|utf16|utf8)$",
                         description="offset units: code points (Python), utf16 (Java/JS), utf8 (bytes)"),
):
    """Answers with provenance, paged by answer id (JSON), or streamed as NDJSON with
    `Accept: application/x-ndjson`."""
    check_text_params(document=document, question=question, model=model, where=where, cursor=cursor)
    check_reference("document", document)
    check_cursor(cursor)
    filters = dict(document=document, question=question, model=model, where=_where(where),
                   all_versions=all_versions, rank=None if all_ranks else rank, submission=submission)
    convert = record_converter(offsets, client.text_of)
    if top is not None:
        return _best(client, top, order, filters, convert)
    if "application/x-ndjson" in request.headers.get("accept", ""):
        records = _first_read(client.answers(order=order, after=cursor, batch=STREAM_BATCH, **filters))
        return StreamingResponse(_lines(records, convert), media_type="application/x-ndjson")
    records = _first_read(client.answers(order=order, after=cursor, batch=limit, **filters))
    return _page(records, order, limit, convert)


def check_cursor(cursor: str | None) -> None:
    """422 for a cursor with an id out of range (the rest of its form is the store's to check)."""
    for part in (cursor or "").split(":"):
        if part.strip().lstrip("+-").isdecimal() and abs(int(part)) > MAX_ID:
            raise HTTPException(status_code=422, detail=(
                f"cursor: {cursor[:80]!r} holds an id out of range: pass the next_cursor of a page as it was given"))


def _where(items: list[str]) -> dict[str, str]:
    """The metadata filter of `where=KEY=VALUE` items (422 naming the malformed one)."""
    try:
        return parse_where(items)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=f"where={exc}") from None


def _best(client: Client, top: int, order: str, filters: dict, convert: Convert) -> Response:
    """The best `top` answers to the question across documents: one page, no cursor."""
    if filters["question"] is None:
        raise HTTPException(status_code=422, detail="top ranks the answers to one question: give question=")
    try:
        records = client.best_documents(top=top, order="margin" if order == "answer" else order, **filters)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return json_response({"answers": [convert(r) for r in records], "next_cursor": None})


def _first_read(records: Iterator) -> Iterator:
    """`records` with its first read done: a malformed cursor or metadata key fails there,
    answered as a 422 (before a stream has begun)."""
    try:
        first = next(records, None)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return itertools.chain([] if first is None else [first], records)


def _lines(records: Iterator, convert: Convert) -> Iterator[str]:
    for rec in records:
        yield json.dumps(convert(rec), ensure_ascii=False) + "\n"


def _page(records: Iterator, order: str, limit: int, convert: Convert) -> Response:
    """The first `limit` records, and the cursor of the next page when there may be one."""
    page = []
    last = None
    for rec in records:
        page.append(convert(rec))
        last = rec
        if len(page) == limit:
            break
    next_cursor = result_cursor(last, order) if len(page) == limit else None
    return json_response({"answers": page, "next_cursor": next_cursor})
