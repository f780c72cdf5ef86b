"""DELETE /v1/documents?path=|id=|document= and DELETE /v1/documents/{ref}: remove a
document, every version; its text, jobs and answers go only where no other document has them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query

from docqa.client import Client
from docqa.routes import ClientDep, authorized, check_reference, check_text_params

router = APIRouter(dependencies=[Depends(authorized)])


@router.delete("/v1/documents")
def delete_named(
    client: ClientDep,
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
    return _delete(client, dry_run, **named)


@router.delete("/v1/documents/{ref:path}")
def delete_document(client: ClientDep, ref: str, dry_run: bool = False) -> dict:
    """Remove the document `ref` names (a document id, an id given at submit, or a file path; a path's
    slashes may be written as they are or as %2F), every version."""
    check_text_params(ref=ref)
    check_reference("ref", ref)
    return _delete(client, dry_run, document=ref)


def _delete(client: Client, dry_run: bool, **named) -> dict:
    """client.delete; a name that matches no document is a 404."""
    try:
        counts = client.delete(dry_run=dry_run, **named)
    except LookupError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    return {"dry_run": dry_run, **counts._asdict()}
