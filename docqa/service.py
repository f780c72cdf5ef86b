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

This module builds the app (state, middleware, error handlers) and the server's guards;
the routes are `docqa.routes`, one router per noun.
"""

from __future__ import annotations

import asyncio
import json
import threading

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from docqa import __version__
from docqa.client import Client
from docqa.core.errors import DocqaError, UnreachableError
from docqa.core.settings import Settings
from docqa.routes import SIDE_THREADS, STORE_UNAVAILABLE, json_response, log, masked
from docqa.routes import answers, ask, docs, documents, health, submissions
from docqa.routes.submissions import Waiters

# What a tokenless server answers to (Host header, any port).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def create_app(settings: Settings, client: Client | None = None) -> FastAPI:
    """The ASGI app for `settings` (store, broker, model, limits, token). ValueError for a
    token `Settings.api_token_problem` refuses."""
    problem = settings.api_token_problem()
    if problem is not None:
        raise ValueError(problem)
    client = client or Client(settings=settings, embedded=settings.database_url.startswith("sqlite"))
    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    if settings.api_warm_up:  # the first submission then waits for no model (~5 s) or tokenizer (~1 s)
        threading.Thread(target=_quietly, args=(client.warm_up,), name="docqa-warm-up", daemon=True).start()
    app = FastAPI(title="docqa", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  description="Extractive question answering over long documents, with provenance.")
    # What the routes' dependencies read (docqa.routes): one set per app, never module globals.
    app.state.client, app.state.settings, app.state.token = client, settings, token
    app.state.side = anyio.CapacityLimiter(SIDE_THREADS)
    app.state.submit_lock = asyncio.Lock()  # an embedded client answers one submission at a time
    app.state.waiters = Waiters(settings.api_max_waiters)
    app.add_middleware(Guard, max_body=settings.api_max_body_bytes, body_timeout=settings.api_header_timeout_seconds,
                       check_host=token is None)
    _add_error_handlers(app)
    for module in (docs, health, submissions, answers, documents, ask):
        app.include_router(module.router)
    return app


# -- errors --------------------------------------------------------------------------------------------
def _add_error_handlers(app: FastAPI) -> None:
    """A docqa error is its class's HTTP status with its message; a store that fails is a 503
    that names neither its address nor its user (the detail goes to the server's log,
    credentials masked); a value the store refuses is a 422."""
    from fastapi.exceptions import RequestValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from docqa.storage.errors import StoreError

    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(DocqaError, _docqa_error)
    for unavailable in (StoreError, UnreachableError, SQLAlchemyError):
        app.add_exception_handler(unavailable, _store_unavailable)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    from fastapi.encoders import jsonable_encoder

    # FastAPI's own answer, written as ASCII JSON: an input it echoes may hold a lone
    # surrogate ("\ud800"), which has no UTF-8 form (a 500 otherwise).
    return json_response({"detail": jsonable_encoder(exc.errors())}, status_code=422, ascii_only=True)


async def _docqa_error(request: Request, exc: Exception) -> Response:
    if exc.http_status >= 500:  # the server's fault: the log has it too
        log.warning("%s %s: %s", request.method, request.url.path, masked(exc, request.app.state.settings.database_url))
    return JSONResponse(status_code=exc.http_status, content={"detail": str(exc)})


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    from sqlalchemy.exc import DataError

    detail = masked(exc, request.app.state.settings.database_url)
    if isinstance(exc, DataError):  # bad input that got past the checks: the caller's, not an outage
        log.warning("%s %s: the store refused a value: %s", request.method, request.url.path, detail)
        return JSONResponse(status_code=422, content={"detail": "the store refused a value of this request"})
    log.warning("%s %s: the store is unavailable: %s", request.method, request.url.path, detail)
    return JSONResponse(status_code=503, content={"detail": STORE_UNAVAILABLE})


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


def _quietly(work) -> None:
    try:
        work()
    except Exception:  # the store or model is not there yet: the first request says why
        pass
