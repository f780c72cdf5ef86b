"""docqa worker side: the QA engine, span decoding and the Celery app.

Importing this package imports no torch: `worker.messages` and `worker.settings`
are used by producers, which must stay light.
"""
