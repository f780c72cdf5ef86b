"""The store's facade: every read and write, as short transactions safe under concurrency.

Many producer and worker processes may use one database at once, on PostgreSQL or on
SQLite. `Repository` is the one object callers hold; its operations live by noun:
`documents` (stored once per text), `jobs` (created once per identity, counted,
failed), `leases` (claims, renewals, expiry: the job state machine), `answers`
(idempotent writes with the offset invariant, exports), `submissions` (what one run or
submit asked for), `fleet` (the store's identity, the worker registry, fleet-wide
roles), `plans` (tokens and window plans the producer made), `parts` (long jobs run as
window ranges). `transactions` is their
shared base.

What keeps them correct:

- Idempotent inserts: documents are unique by sha256 and jobs by their identity;
  `INSERT ... ON CONFLICT DO NOTHING` (both dialects) then a lookup, so two producers
  submitting the same thing get the same ids and neither fails.
- Claims are exclusive (see `leases`).
- Answers are replaced, never appended: a job run twice (at-least-once delivery) has
  one set of rows.

Methods that change a job raise NotFound for an unknown id; getters return None.
"""

from __future__ import annotations

from docqa.storage.answers import Answers
from docqa.storage.documents import Documents
from docqa.storage.fleet import Fleet
from docqa.storage.jobs import Jobs
from docqa.storage.leases import Leases, give_up_message
from docqa.storage.parts import Parts
from docqa.storage.passages import Passages
from docqa.storage.plans import Plans
from docqa.storage.submissions import Submissions

__all__ = ["Repository", "give_up_message"]


class Repository(Documents, Jobs, Leases, Answers, Submissions, Fleet, Plans, Parts, Passages):
    """The store's operations. Each method is one short transaction; no data is cached."""

    @classmethod
    def open(cls, url: str) -> Repository:
        """The store at `url`, its schema created (or an older docqa's migrated) first."""
        from docqa.storage.db import ensure_schema, make_engine, session_factory

        db = make_engine(url)
        ensure_schema(db)
        return cls(session_factory(db))
