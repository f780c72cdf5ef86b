"""The HTTP API (`docqa serve`): submit documents, follow submissions, read answers.

Built on FastAPI; the OpenAPI schema is served at /openapi.json and a docs page at /docs.
Every /v1 route needs `Authorization: Bearer <DOCQA_API_TOKEN>` when a token is set;
without one the server binds to loopback only (`docqa serve` refuses other hosts).
Submissions go through `docqa.Client`: answered in process with a SQLite store, sent to
the workers with a broker and PostgreSQL. Limits (request body, documents per request,
question length) are refused with 413/422 and a message that names the limit; a
malformed document is reported by its index and the others are accepted.
"""

from __future__ import annotations

import dataclasses
import hmac
import itertools
import json
import threading
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from docqa import __version__
from docqa.client import Client, SubmitError
from docqa.core.filters import parse_where
from docqa.core.settings import Settings
from docqa.storage.answers import result_cursor

# Longest ?wait= a caller may ask for, seconds.
MAX_WAIT_SECONDS = 600.0
# Answers per page at most.
MAX_PAGE = 1000


class SubmissionIn(BaseModel):
    """A submission: documents (objects, or plain texts), questions asked of every document,
    answer parameters (AnswerParams fields; the pipeline's defaults)."""

    model_config = ConfigDict(extra="forbid")

    documents: list[Any]
    questions: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None


def create_app(settings: Settings, client: Client | None = None) -> FastAPI:
    """The ASGI app for `settings` (store, broker, model, limits, token)."""
    client = client or Client(settings=settings, embedded=settings.database_url.startswith("sqlite"))
    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    submit_lock = threading.Lock()  # an embedded client answers one submission at a time
    # The first submission should not wait for the producer's tokenizer to load (about 1 s).
    threading.Thread(target=_quietly, args=(client.warm_up,), name="docqa-warm-up", daemon=True).start()
    app = FastAPI(title="docqa", version=__version__,
                  description="Extractive question answering over long documents, with provenance.")

    def authorized(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.api_max_body_bytes:
            return JSONResponse(status_code=413, content={
                "detail": f"request body of {int(length):,} bytes is over the limit of {settings.api_max_body_bytes:,} "
                          "(DOCQA_API_MAX_BODY_BYTES): send fewer or smaller documents per request"})
        return await call_next(request)

    from sqlalchemy.exc import SQLAlchemyError

    from docqa.storage.errors import StoreError

    @app.exception_handler(StoreError)
    @app.exception_handler(SQLAlchemyError)
    async def store_unavailable(request: Request, exc: Exception):
        return JSONResponse(status_code=503, content={
            "detail": f"the store is unavailable: {type(exc).__name__}: {_first(exc)}; try again later"})

    @app.get("/healthz")
    def healthz() -> dict:
        """The process is up."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz")
    def readyz():
        """The store (and the broker, in distributed mode) answer."""
        try:
            counts = client._repo.counts()
        except Exception as exc:
            return JSONResponse(status_code=503, content={"status": "unavailable",
                                                          "detail": f"store: {type(exc).__name__}: {_first(exc)}"})
        if not client.embedded:
            from docqa.cli.inspecting import broker_facts

            broker = broker_facts(settings)
            if "error" in broker:
                return JSONResponse(status_code=503, content={"status": "unavailable", "detail": broker["error"]})
        return {"status": "ready", "counts": counts}

    @app.post("/v1/submissions", dependencies=[Depends(authorized)])
    def submit(body: SubmissionIn, wait: float | None = Query(None, ge=0, le=MAX_WAIT_SECONDS,
                                                              description="seconds to wait for the answers")):
        """Store documents and jobs; answer them (embedded) or send them to the workers.
        With ?wait=SECONDS, return once the submission is finished or the time is up."""
        if len(body.documents) > settings.api_max_documents:
            raise HTTPException(status_code=413, detail=(
                f"{len(body.documents):,} documents in one request is over the limit of "
                f"{settings.api_max_documents:,} (DOCQA_API_MAX_DOCUMENTS): split the submission"))
        from docqa.producer.documents import InputError, check_question

        try:
            for q in body.questions:
                check_question(q, settings.max_question_chars)
        except InputError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        if not _asks_anything(body):
            raise HTTPException(status_code=422, detail=(
                'questions: no question to ask; give "questions": ["..."] (asked of every document), '
                'or "questions" in a document object'))
        with submit_lock:
            try:
                # Documents as given: texts or objects {"id", "text", "metadata", "questions"}; one
                # that cannot be used is reported by its index and the others are accepted.
                sub = client.submit(body.documents, body.questions, model=body.model, **body.params)
            except SubmitError as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from None
            except TypeError as exc:  # an answer parameter that does not exist
                raise HTTPException(status_code=422, detail=str(exc)) from None
            except ConnectionError as exc:
                raise HTTPException(status_code=503, detail=str(exc)) from None
        out: dict[str, Any] = {"submission_id": sub.id, **dataclasses.asdict(sub.summary)}
        out["errors"] = list(sub.summary.errors)
        try:
            progress = sub.wait(timeout=wait) if wait else sub.progress()
        except TimeoutError:
            progress = sub.progress()
        out["progress"] = dataclasses.asdict(progress)
        out["finished"] = progress.finished
        return out

    @app.get("/v1/submissions/{submission_id}", dependencies=[Depends(authorized)])
    def submission(submission_id: int) -> dict:
        try:
            sub = client.submission(submission_id)
        except LookupError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        progress = sub.progress()
        return {"submission_id": submission_id, "progress": dataclasses.asdict(progress),
                "finished": progress.finished}

    @app.get("/v1/answers", dependencies=[Depends(authorized)])
    def answers(
        request: Request,
        submission: int | None = None,
        document: str | None = Query(None, description="a document id, an id given at submit, or a file path"),
        question: str | None = None,
        model: str | None = None,
        rank: int = Query(0, ge=0, description="answers of this rank only (0: each job's best)"),
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
        repo = client._repo
        texts: dict[int, str] = {}

        def as_dict(rec) -> dict:
            if offsets == "codepoints":
                return rec.as_dict()
            from docqa.core.offsets import record_in_unit

            if rec.text_id not in texts:
                if len(texts) > 256:
                    texts.clear()
                texts[rec.text_id] = repo.text_of(rec.text_id)
            return record_in_unit(rec.as_dict(), texts[rec.text_id], offsets)

        document_ids = None if document is None else repo.resolve_documents(document)
        try:
            metadata = parse_where(where)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=f"where={exc}") from None
        filters = dict(document_ids=document_ids, question=question, model=model, where=metadata,
                       all_versions=all_versions, rank=None if all_ranks else rank, submission_id=submission)
        if top is not None:
            if question is None:
                raise HTTPException(status_code=422, detail="top ranks the answers to one question: give question=")
            try:
                records = repo.top_results(top=top, order="margin" if order == "answer" else order, **filters)
            except ValueError as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from None
            return _json({"answers": [as_dict(r) for r in records], "next_cursor": None})
        stream = "application/x-ndjson" in request.headers.get("accept", "")
        iterator = repo.iter_results(order=order, after=cursor, batch=500 if stream else limit, **filters)
        try:  # a malformed cursor or metadata key fails on the first read: say so as a 422
            first = next(iterator, None)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        iterator = itertools.chain([] if first is None else [first], iterator)
        if stream:
            def lines():
                for rec in iterator:
                    yield json.dumps(as_dict(rec), ensure_ascii=False) + "\n"

            return StreamingResponse(lines(), media_type="application/x-ndjson")
        page = []
        last = None
        for rec in iterator:
            page.append(as_dict(rec))
            last = rec
            if len(page) == limit:
                break
        next_cursor = result_cursor(last, order) if len(page) == limit else None
        return _json({"answers": page, "next_cursor": next_cursor})

    def delete(dry_run: bool, **named) -> dict:
        try:
            counts = client.delete(dry_run=dry_run, **named)
        except LookupError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        return {"dry_run": dry_run, **counts._asdict()}

    @app.delete("/v1/documents", dependencies=[Depends(authorized)])
    def delete_named(
        path: str | None = Query(None, description="the file path it was read from (any spelling of it)"),
        id: str | None = Query(None, description="the id it was submitted with"),  # noqa: A002
        document: str | None = Query(None, description="a document id, an id given at submit, or a file path"),
        dry_run: bool = False,
    ) -> dict:
        """Remove one document, every version (give exactly one of path, id, document); its
        text, jobs and answers go only where no remaining document has them."""
        named = {k: v for k, v in (("path", path), ("id", id), ("document", document)) if v is not None}
        if len(named) != 1:
            raise HTTPException(status_code=422, detail="name the document with exactly one of ?path=, ?id= or "
                                "?document=")
        return delete(dry_run, **named)

    @app.delete("/v1/documents/{ref:path}", dependencies=[Depends(authorized)])
    def delete_document(ref: str, dry_run: bool = False) -> dict:
        """Remove the document `ref` names (a document id, an id given at submit, or a file path; a path's
        slashes may be written as they are or as %2F), every version."""
        return delete(dry_run, document=ref)

    return app


def _asks_anything(body: SubmissionIn) -> bool:
    """Whether the submission asks a question of at least one document."""
    if any(q.strip() for q in body.questions):
        return True
    return any(isinstance(d, dict) and isinstance(d.get("questions"), list)
               and any(isinstance(q, str) and q.strip() for q in d["questions"]) for d in body.documents)


def _quietly(work) -> None:
    try:
        work()
    except Exception:  # the store or model is not there yet: the first request says why
        pass


def _json(content: Any) -> Response:
    # Records are plain JSON values already: dumping them directly is several times faster
    # than FastAPI's generic encoder on pages of hundreds of answers.
    return Response(json.dumps(content, ensure_ascii=False), media_type="application/json")


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
