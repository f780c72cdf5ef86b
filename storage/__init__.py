"""docqa storage (`docqa.storage`): the SQL store of documents, jobs and answers.

By noun: `documents`, `jobs`, `leases` (the job state machine), `answers` (writes and
exports), all behind the `repository.Repository` facade callers use; `transactions`
(their shared base), `records` (the plain values they return, one row-to-record mapping
each), `models` (tables and JobStatus), `columns` (UTC timestamps, string enums),
`identity` (sha256 of text, text the store refuses), `db` (engines, sessions,
`upgrade`/`ensure_schema`), `errors` (StoreError, NotFound), `migrations/` (Alembic;
run through `docqa.storage.db`, no alembic.ini needed).

Imports nothing from docqa.worker or docqa.producer: only the shared contracts in
docqa.core.
"""
