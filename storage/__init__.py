"""docqa storage: SQLAlchemy models, the repository that reads and writes them, migrations."""
