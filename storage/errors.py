"""Errors the store raises on purpose, each with a message a person can act on."""

from __future__ import annotations

from docqa.core.errors import FAILED, UnreachableError


class StoreError(UnreachableError):
    """The store cannot do what was asked: unreachable, wrong encoding, unknown schema, unknown id.

    Messages name the database URL (password hidden) where the database is the problem.
    """


class NotFound(StoreError, LookupError):
    """A job or document id that the store does not hold."""

    exit_status = FAILED
    http_status = 404


class LeaseLost(StoreError):
    """A worker wrote for a job whose lease it no longer holds (taken back after it ran out,
    or claimed by another worker since): the write was not made."""

    def __init__(self, job_id: int, status: str, holder: str | None) -> None:
        super().__init__(f"job {job_id} is no longer this worker's: it is {status}"
                         f"{f' under {holder}' if status == 'running' else ''}")
        self.job_id = job_id
