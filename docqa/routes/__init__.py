"""The HTTP API's routes (`docqa.service` assembles them) and what they share: the
dependencies that hand a route its app's Client, settings and side-thread limiter (all
on `app.state`, one set per app), the bearer-token check, and the checks of request
parameters that several routes make.

One router per noun: `docs` (schema and docs pages), `health`, `submissions`, `answers`,
`documents`.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Annotated, Any

import anyio
from fastapi import Depends, HTTPException, Request
from fastapi.responses import Response

from docqa.client import Client
from docqa.core.settings import Settings

# Answers per page at most.
MAX_PAGE = 1000
# The largest id (or rank) a store holds: its id columns are INTEGER (32-bit on PostgreSQL).
# Larger ones are refused with 422, not sent to the store to overflow there.
MAX_ID = 2**31 - 1
# Store reads of waiting requests and health checks run in threads of their own (at most
# this many at once), so a full request thread pool never delays them.
SIDE_THREADS = 8
STORE_UNAVAILABLE = "the store is unavailable; try again later (the server's log has the reason)"
BROKER_UNAVAILABLE = "the broker is unavailable (the server's log has the reason)"

log = logging.getLogger("uvicorn.error")


# -- dependencies: what create_app put on app.state ------------------------------------------------
# All async: they run on the event loop, never in the request thread pool.
async def get_client(request: Request) -> Client:
    return request.app.state.client


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_side(request: Request) -> anyio.CapacityLimiter:
    """The limiter of the app's side threads (at most SIDE_THREADS)."""
    return request.app.state.side


ClientDep = Annotated[Client, Depends(get_client)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SideDep = Annotated[anyio.CapacityLimiter, Depends(get_side)]


async def authorized(request: Request) -> None:
    """Refuses a request without `Authorization: Bearer <token>` (401); nothing to check
    without a token."""
    if not bearer_given(request):
        raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


def bearer_given(request: Request) -> bool:
    """Whether the request carries the app's token (True when none is set). An empty
    bearer never matches."""
    token: str | None = request.app.state.token
    if token is None:
        return True
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(value) and hmac.compare_digest(value.encode(), token.encode())


# -- request parameters -----------------------------------------------------------------------------
def unstorable(text: str) -> str | None:
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
            problem = unstorable(text)
            if problem is not None:
                raise HTTPException(status_code=422, detail=f"{name}: {problem}")


def check_reference(name: str, ref: str | None) -> None:
    """422 for a reference written in digits that no document id can be (over MAX_ID, or not ASCII)."""
    if ref is not None and ref.isdigit() and not (ref.isascii() and int(ref) <= MAX_ID):
        raise HTTPException(status_code=422, detail=(
            f"{name}: {ref[:40]!r} is not a document id (ids are ASCII digits up to {MAX_ID}); name the "
            "document by the id it was submitted with, its path, or its document id"))


# -- answers and the server's log -----------------------------------------------------------------------
def json_response(content: Any, status_code: int = 200, ascii_only: bool = False) -> Response:
    # Records are plain JSON values already: dumping them directly is several times faster
    # than FastAPI's generic encoder on pages of hundreds of answers.
    return Response(json.dumps(content, ensure_ascii=ascii_only), status_code=status_code,
                    media_type="application/json")


def masked(exc: BaseException, url: str) -> str:
    """`exc` in one line for the server's log, `url`'s credentials masked."""
    from docqa.core.errors import first_line
    from docqa.storage.db import mask_secrets

    return mask_secrets(first_line(exc, with_type=True), url)
