"""The HTTP API (`docqa serve`): submit documents, follow submissions, read answers.

Built on FastAPI. Every route but /healthz and /readyz needs `Authorization: Bearer
<DOCQA_API_TOKEN>` when a token is set (the OpenAPI schema at /openapi.json and the docs
pages /docs and /redoc included); a token has at least API_TOKEN_MIN_CHARS characters.
Without one the server binds to loopback only (`docqa serve` refuses other hosts) and
answers only requests whose Host is localhost, 127.0.0.1 or [::1] (DNS rebinding).
Submissions go through `docqa.Client`: answered in process with a SQLite store, sent to
the workers with a broker and PostgreSQL. Limits (request body however it is framed,
documents per request, question length, waiting requests) are refused with 413/422/503
and a message that names the limit; bad input is a 4xx naming the field; a malformed
document is reported by its index and the others are accepted. A store or broker that is
down is a 503 that names neither its address nor its user: the server's log has the reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import itertools
import json
import logging
import re
import threading
from typing import Any

import anyio
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from docqa import __version__
from docqa.client import POLL_SECONDS, Client, SubmitError
from docqa.core.filters import parse_where
from docqa.core.settings import API_TOKEN_MIN_CHARS, Settings
from docqa.storage.answers import result_cursor

# Answers per page at most.
MAX_PAGE = 1000
# The largest id (or rank) a store holds: its id columns are INTEGER (32-bit on PostgreSQL).
# Larger ones are refused with 422, not sent to the store to overflow there.
MAX_ID = 2**31 - 1
# What a tokenless server answers to (Host header, any port).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# Store reads of waiting requests and health checks run in threads of their own (at most
# this many at once), so a full request thread pool never delays them.
SIDE_THREADS = 8
STORE_UNAVAILABLE = "the store is unavailable; try again later (the server's log has the reason)"
BROKER_UNAVAILABLE = "the broker is unavailable (the server's log has the reason)"

log = logging.getLogger("uvicorn.error")


class SubmissionIn(BaseModel):
    """A submission: documents (objects, or plain texts), questions asked of every document,
    answer parameters (AnswerParams fields; the pipeline's defaults)."""

    model_config = ConfigDict(extra="forbid")

    documents: list[Any]
    questions: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None


def token_problem(settings: Settings) -> str | None:
    """Why DOCQA_API_TOKEN cannot be used (empty, or under API_TOKEN_MIN_CHARS characters); None
    when it can, or when none is set."""
    if settings.api_token is None:
        return None
    length = len(settings.api_token.get_secret_value().strip())
    if length >= API_TOKEN_MIN_CHARS:
        return None
    what = "empty" if length == 0 else f"{length} characters long"
    return (f"DOCQA_API_TOKEN is {what}: use a token of at least {API_TOKEN_MIN_CHARS} characters (for example "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'), or unset it to serve 127.0.0.1 only, "
            "without authentication")


def served_models(settings: Settings) -> tuple[str, ...]:
    """The models a submission may name: DOCQA_API_MODELS (comma-separated), else DOCQA_MODEL."""
    if settings.api_models is None:
        return (settings.model,)
    return tuple(dict.fromkeys(m.strip() for m in settings.api_models.split(",") if m.strip())) or (settings.model,)


def create_app(settings: Settings, client: Client | None = None) -> FastAPI:
    """The ASGI app for `settings` (store, broker, model, limits, token). ValueError for a
    token `token_problem` refuses."""
    problem = token_problem(settings)
    if problem is not None:
        raise ValueError(problem)
    client = client or Client(settings=settings, embedded=settings.database_url.startswith("sqlite"))
    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    # The first submission should not wait for the producer's tokenizer to load (about 1 s).
    threading.Thread(target=_quietly, args=(client.warm_up,), name="docqa-warm-up", daemon=True).start()
    app = FastAPI(title="docqa", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  description="Extractive question answering over long documents, with provenance.")
    app.add_middleware(Guard, max_body=settings.api_max_body_bytes, body_timeout=settings.api_header_timeout_seconds,
                       check_host=token is None)
    authorized = _bearer_check(token)
    side = anyio.CapacityLimiter(SIDE_THREADS)
    _add_error_handlers(app, settings)
    _add_schema_routes(app, authorized)
    _add_health_routes(app, client, settings, token, side)
    _add_submit_route(app, client, settings, authorized, side)

    @app.get("/v1/submissions/{submission_id}", dependencies=[Depends(authorized)])
    def submission(submission_id: int = Path(ge=1, le=MAX_ID)) -> dict:
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
        check_text_params(path=path, id=id, document=document)
        check_reference("document", document)
        named = {k: v for k, v in (("path", path), ("id", id), ("document", document)) if v is not None}
        if len(named) != 1:
            raise HTTPException(status_code=422, detail="name the document with exactly one of ?path=, ?id= or "
                                "?document=")
        return delete(dry_run, **named)

    @app.delete("/v1/documents/{ref:path}", dependencies=[Depends(authorized)])
    def delete_document(ref: str, dry_run: bool = False) -> dict:
        """Remove the document `ref` names (a document id, an id given at submit, or a file path; a path's
        slashes may be written as they are or as %2F), every version."""
        check_text_params(ref=ref)
        check_reference("ref", ref)
        return delete(dry_run, document=ref)

    return app


# -- authentication, documentation, errors -----------------------------------------------------------
def _bearer_check(token: str | None):
    """The dependency that refuses a request without `Authorization: Bearer <token>` (401);
    nothing to check without a token. An empty bearer never matches."""

    async def authorized(request: Request) -> None:
        if token is not None and not _has_bearer(request, token):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    return authorized


def _has_bearer(request: Request, token: str) -> bool:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(value) and hmac.compare_digest(value.encode(), token.encode())


def _add_schema_routes(app: FastAPI, authorized) -> None:
    """/openapi.json, /docs and /redoc, behind the token like every /v1 route (a browser
    sends no bearer: with a token, read the schema with curl or a client that sends it)."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    guarded = {"include_in_schema": False, "dependencies": [Depends(authorized)]}

    @app.get("/openapi.json", **guarded)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", **guarded)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="docqa")

    @app.get("/redoc", **guarded)
    async def redoc():
        return get_redoc_html(openapi_url="/openapi.json", title="docqa")


def _add_error_handlers(app: FastAPI, settings: Settings) -> None:
    """A store that fails is a 503 that names neither its address nor its user (the detail
    goes to the server's log, credentials masked); a value the store refuses is a 422."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from sqlalchemy.exc import DataError, SQLAlchemyError

    from docqa.storage.errors import StoreError

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # FastAPI's own answer, written as ASCII JSON: an input it echoes may hold a lone
        # surrogate ("\ud800"), which has no UTF-8 form (a 500 otherwise).
        return _json({"detail": jsonable_encoder(exc.errors())}, status_code=422, ascii_only=True)

    @app.exception_handler(StoreError)
    @app.exception_handler(SQLAlchemyError)
    async def store_unavailable(request: Request, exc: Exception):
        detail = _masked(exc, settings.database_url)
        if isinstance(exc, DataError):  # bad input that got past the checks: the caller's, not an outage
            log.warning("%s %s: the store refused a value: %s", request.method, request.url.path, detail)
            return JSONResponse(status_code=422, content={"detail": "the store refused a value of this request"})
        log.warning("%s %s: the store is unavailable: %s", request.method, request.url.path, detail)
        return JSONResponse(status_code=503, content={"detail": STORE_UNAVAILABLE})


# -- health --------------------------------------------------------------------------------------------
def _add_health_routes(app: FastAPI, client: Client, settings: Settings, token: str | None, side) -> None:
    """/healthz (the process) and /readyz (store and broker), both answered on the event loop,
    their store and broker reads in `side` threads: a busy request pool never delays them."""

    @app.get("/healthz")
    async def healthz() -> dict:
        """The process is up."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz")
    async def readyz(request: Request):
        """The store (and the broker, in distributed mode) answer; the job counts only to a
        caller with the token (or when none is set)."""
        try:
            counts = await anyio.to_thread.run_sync(lambda: client._repo.counts(), limiter=side)
        except Exception as exc:
            log.warning("readyz: the store is unavailable: %s", _masked(exc, settings.database_url))
            return JSONResponse(status_code=503, content={"status": "unavailable", "detail": STORE_UNAVAILABLE})
        if not client.embedded:
            from docqa.worker.queues import broker_facts

            broker = await anyio.to_thread.run_sync(broker_facts, settings, limiter=side)
            if "error" in broker:
                log.warning("readyz: %s", broker["error"])
                return JSONResponse(status_code=503, content={"status": "unavailable", "detail": BROKER_UNAVAILABLE})
        if token is not None and not _has_bearer(request, token):
            return {"status": "ready"}
        return {"status": "ready", "counts": counts}


def _masked(exc: BaseException, url: str) -> str:
    """`exc` in one line for the server's log, `url`'s credentials masked."""
    from docqa.core.errors import first_line
    from docqa.storage.db import mask_secrets

    return mask_secrets(first_line(exc, with_type=True), url)


# -- submitting and waiting -----------------------------------------------------------------------------
class _Waiters:
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


def _add_submit_route(app: FastAPI, client: Client, settings: Settings, authorized, side) -> None:
    """POST /v1/submissions. The route runs on the event loop: the submission itself in a
    thread (one at a time), a ?wait= as async sleeps between short store reads in `side`
    threads, so waiting requests hold no thread and at most DOCQA_API_MAX_WAITERS wait."""
    submit_lock = asyncio.Lock()  # an embedded client answers one submission at a time
    waiters = _Waiters(settings.api_max_waiters)

    @app.post("/v1/submissions", dependencies=[Depends(authorized)])
    async def submit(body: SubmissionIn, request: Request, wait: float | None = Query(
            None, ge=0, description="seconds to wait for the answers, at most DOCQA_API_MAX_WAIT_SECONDS")):
        """Store documents and jobs; answer them (embedded) or send them to the workers.
        With ?wait=SECONDS, return once the submission is finished or the time is up."""
        check_submission(body, settings, wait)
        if wait:
            waiters.take()
        try:
            async with submit_lock:
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


def _submit(client: Client, body: SubmissionIn, settings: Settings, wait: float | None = None):
    """client.submit, its refusals as HTTP errors (a broker that is down: 503 without its address)."""
    try:
        # A caller that waits (?wait=) goes before the bulk backlog; otherwise the Client's default.
        return client.submit(body.documents, body.questions, model=body.model, priority=1 if wait else None,
                             **body.params)
    except (SubmitError, TypeError) as exc:  # TypeError: an answer parameter that does not exist
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


def check_submission(body: SubmissionIn, settings: Settings, wait: float | None) -> None:
    """HTTPException (413/422, naming the field and the limit) for what no submission may be."""
    if wait is not None and wait > settings.api_max_wait_seconds:
        raise HTTPException(status_code=422, detail=(
            f"wait: {wait:g} s is over the limit of {settings.api_max_wait_seconds:g} s (DOCQA_API_MAX_WAIT_SECONDS): "
            "wait less, or poll GET /v1/submissions/ID"))
    if len(body.documents) > settings.api_max_documents:
        raise HTTPException(status_code=413, detail=(
            f"{len(body.documents):,} documents in one request is over the limit of "
            f"{settings.api_max_documents:,} (DOCQA_API_MAX_DOCUMENTS): split the submission"))
    from docqa.core.params import AnswerParams

    unknown = sorted(set(body.params) - set(AnswerParams.model_fields))
    if unknown:  # only answer parameters: never the Client's own options (check_model, revision, ...)
        raise HTTPException(status_code=422, detail=(
            f"params: {', '.join(repr(k[:100]) for k in unknown[:5])} is not an answer parameter; give only "
            f"{', '.join(AnswerParams.model_fields)}; nothing was stored"))
    models = served_models(settings)
    if body.model is not None and body.model not in models:
        raise HTTPException(status_code=422, detail=(
            f"model: {body.model[:200]!r} is not served here; give one of {', '.join(map(repr, models))} "
            "(DOCQA_API_MODELS), or leave model out"))
    from docqa.producer.documents import InputError, check_question

    for n, question in enumerate(body.questions):
        try:
            check_question(question, settings.max_question_chars)
        except InputError as exc:
            raise HTTPException(status_code=422, detail=f"questions[{n}]: {exc}") from None
        problem = _unstorable(question)
        if problem is not None:
            raise HTTPException(status_code=422, detail=f"questions[{n}]: {problem}; nothing was stored")
    if not _asks_anything(body):
        raise HTTPException(status_code=422, detail=(
            'questions: no question to ask; give "questions": ["..."] (asked of every document), '
            'or "questions" in a document object'))
    _check_documents(body, settings)


def _check_documents(body: SubmissionIn, settings: Settings) -> None:
    """422 storing nothing when not one document can be used; otherwise those that cannot are
    reported in the answer's `errors` by the submission, and the others stored."""
    from docqa.client import _source_documents

    if not body.documents:
        raise HTTPException(status_code=422, detail='documents: no document given; "documents": ["text", ...]')
    problems = [d.error for d in _source_documents(body.documents, settings.max_document_chars) if d.error]
    if len(problems) == len(body.documents):
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5:,} more" if len(problems) > 5 else "")
        raise HTTPException(status_code=422, detail=f"documents: none can be stored, nothing was: {shown}")


# -- request parameters -----------------------------------------------------------------------------------
def _unstorable(text: str) -> str | None:
    """Why `text` cannot be stored or looked up (a NUL, a lone surrogate); None when it can."""
    index = text.find("\x00")
    if index >= 0:
        return f"contains a NUL character (U+0000) at index {index}, which no stored text can hold"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode (a lone surrogate at index {exc.start})"
    return None


def check_text_params(**named: str | list[str] | None) -> None:
    """422 naming the first parameter whose text cannot be in the store (NUL, lone surrogate)."""
    for name, value in named.items():
        for text in [value] if isinstance(value, str) else value or []:
            problem = _unstorable(text)
            if problem is not None:
                raise HTTPException(status_code=422, detail=f"{name}: {problem}")


def check_reference(name: str, ref: str | None) -> None:
    """422 for a reference written in digits that no document id can be (over MAX_ID, or not ASCII)."""
    if ref is not None and ref.isdigit() and not (ref.isascii() and int(ref) <= MAX_ID):
        raise HTTPException(status_code=422, detail=(
            f"{name}: {ref[:40]!r} is not a document id (ids are ASCII digits up to {MAX_ID}); name the "
            "document by the id it was submitted with, its path, or its document id"))


def check_cursor(cursor: str | None) -> None:
    """422 for a cursor with an id out of range (the rest of its form is the store's to check)."""
    for part in (cursor or "").split(":"):
        if part.strip().lstrip("+-").isdecimal() and abs(int(part)) > MAX_ID:
            raise HTTPException(status_code=422, detail=(
                f"cursor: {cursor[:80]!r} holds an id out of range: pass the next_cursor of a page as it was given"))


# -- before the app: Host, body size and pace ---------------------------------------------------------------
class Guard:
    """ASGI middleware in front of every route: (1) without a token, a Host other than
    LOOPBACK_HOSTS is refused (421: DNS rebinding); (2) a request body is held to `max_body`
    bytes while it is read, however it is framed (Content-Length or chunked), and refused
    with 413 once over, so memory never holds more; (3) a body that stops arriving for
    `body_timeout` s is refused with 408."""

    def __init__(self, app, *, max_body: int, body_timeout: float, check_host: bool) -> None:
        self.app, self.max_body, self.body_timeout, self.check_host = app, max_body, body_timeout, check_host

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        host = headers.get(b"host", b"").decode("latin-1")
        if self.check_host and host and not _is_loopback(host):
            return await _reply(send, 421, (
                f"Host {host[:100]!r} is not this server: a server without DOCQA_API_TOKEN answers only requests "
                f"addressed to {', '.join(LOOPBACK_HOSTS)} (a guard against DNS rebinding); set a token to serve "
                "other names"))
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            return await _reply(send, 413, self.too_large(f"request body of {int(length):,} bytes"))
        await self.app(scope, self.limited(receive), send)

    def too_large(self, what: str) -> str:
        return (f"{what} is over the limit of {self.max_body:,} (DOCQA_API_MAX_BODY_BYTES): send fewer or "
                "smaller documents per request")

    def limited(self, receive):
        received, done = 0, False

        async def receive_limited():
            nonlocal received, done
            if done:  # the body is in: what follows is a disconnect, waited for as long as it takes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except asyncio.TimeoutError:
                raise StarletteHTTPException(408, f"the request body stopped arriving for {self.body_timeout:g} s "
                                                  "(DOCQA_API_HEADER_TIMEOUT_SECONDS)") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if received > self.max_body:
                    raise StarletteHTTPException(413, self.too_large("the request body")) from None
            return message

        return receive_limited


def _is_loopback(host: str) -> bool:
    name = host.lower()
    if not name.startswith("["):
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    elif "]" in name:
        name = name[: name.index("]") + 1]
    return name in LOOPBACK_HOSTS


async def _reply(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def header_timeout_protocol(seconds: float):
    """uvicorn's h11 protocol, closing a connection that has not sent a whole request head
    within `seconds` of opening or of its previous response (uvicorn itself has no such
    limit: a client sending a header byte now and then held its connection for ever)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # a whole request head is in (or the connection failed)
            elif self._head_timer is None:
                self._arm()  # waiting for the next request's head

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expire(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutH11


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


def _json(content: Any, status_code: int = 200, ascii_only: bool = False) -> Response:
    # Records are plain JSON values already: dumping them directly is several times faster
    # than FastAPI's generic encoder on pages of hundreds of answers.
    return Response(json.dumps(content, ensure_ascii=ascii_only), status_code=status_code,
                    media_type="application/json")

