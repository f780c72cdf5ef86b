"""Schema revisions, oldest first. Hand-written: each must work on SQLite and PostgreSQL."""
