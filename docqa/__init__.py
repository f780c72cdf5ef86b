"""docqa: extractive question answering over long documents."""

__version__ = "0.2.0"
