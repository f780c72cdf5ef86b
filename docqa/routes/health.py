"""/healthz (the process) and /readyz (store and broker), both answered on the event loop,
their store and broker reads in side threads: a busy request pool never delays them."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from docqa import __version__
from docqa.routes import (BROKER_UNAVAILABLE, STORE_UNAVAILABLE, ClientDep, SettingsDep, SideDep, bearer_given,
                          log, masked)

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict:
    """The process is up."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz")
async def readyz(request: Request, client: ClientDep, settings: SettingsDep, side: SideDep):
    """The store (and the broker, in distributed mode) answer; the job counts only to a
    caller with the token (or when none is set)."""
    try:
        counts = await anyio.to_thread.run_sync(client.counts, limiter=side)
    except Exception as exc:
        log.warning("readyz: the store is unavailable: %s", masked(exc, settings.database_url))
        return JSONResponse(status_code=503, content={"status": "unavailable", "detail": STORE_UNAVAILABLE})
    if not client.embedded:
        from docqa.worker.queues import broker_facts

        broker = await anyio.to_thread.run_sync(broker_facts, settings, limiter=side)
        if "error" in broker:
            log.warning("readyz: %s", broker["error"])
            return JSONResponse(status_code=503, content={"status": "unavailable", "detail": BROKER_UNAVAILABLE})
    if not bearer_given(request):
        return {"status": "ready"}
    return {"status": "ready", "counts": counts}
