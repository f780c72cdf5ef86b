"""docqa storage: SQLAlchemy models, the repository that reads and writes them, migrations.

Modules: `models` (tables and JobStatus), `columns` (UTC timestamps, string enums),
`identity` (sha256 of text, text the store refuses), `db` (engines, sessions,
`upgrade`/`ensure_schema`), `repository` (every read and write, concurrency-safe),
`records` (the plain values it returns), `errors` (StoreError, NotFound),
`migrations/` (Alembic; run through `docqa.storage.db`, no alembic.ini needed).
"""
