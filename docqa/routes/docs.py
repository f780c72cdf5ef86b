"""/openapi.json, /docs and /redoc, behind the token like every /v1 route (a browser sends
no bearer: with a token, read the schema with curl or a client that sends it)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse

from docqa.routes import authorized

router = APIRouter(include_in_schema=False, dependencies=[Depends(authorized)])


@router.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def docs():
    return get_swagger_ui_html(openapi_url="/openapi.json", title="docqa")


@router.get("/redoc")
async def redoc():
    return get_redoc_html(openapi_url="/openapi.json", title="docqa")
