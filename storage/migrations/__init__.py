"""Alembic migrations of the docqa store (run them with `docqa.storage.db.upgrade`).

A package only so that it is installed with docqa; `env.py` is run by Alembic, never
imported.
"""
