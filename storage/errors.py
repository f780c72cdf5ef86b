"""Errors the store raises on purpose, each with a message a person can act on."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot do what was asked: unreachable, wrong encoding, unknown schema, unknown id.

    Messages name the database URL (password hidden) where the database is the problem.
    """


class NotFound(StoreError, LookupError):
    """A job or document id that the store does not hold."""
