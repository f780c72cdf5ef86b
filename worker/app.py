"""The Celery application: JSON messages only, late acknowledgement, low prefetch.

`celery -A docqa.worker.app worker` and `docqa worker` both use the `app` built here from
DOCQA_* environment variables. Importing this module imports no torch: producers use
it to send messages.
"""

from __future__ import annotations

from celery import Celery

from docqa.core.settings import Settings

TASK_NAME = "docqa.run_jobs"


def make_celery(settings: Settings) -> Celery:
    app = Celery("docqa", broker=settings.broker_url, include=["docqa.worker.tasks"])
    app.conf.update(
        # JSON only: a pickle on a shared broker is remote code execution.
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,
        # At-least-once: a message is acknowledged only after its jobs are recorded,
        # and handed back if the process running it dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message (= up to worker_batch_jobs jobs) at a time per process: batching
        # happens inside a message and from SQL, not by hoarding messages.
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # A message whose process died unannounced comes back after this long; the SQL
        # sweeper usually requeues the job well before.
        broker_transport_options={"visibility_timeout": max(3600, 2 * settings.lease_seconds)},
    )
    app.docqa_settings = settings
    return app


def send_jobs(app: Celery, job_ids: list[int], queue: str) -> None:
    """Put one message carrying `job_ids` on the broker."""
    from docqa.core.message import JobMessage

    app.send_task(TASK_NAME, args=[JobMessage(job_ids=job_ids).model_dump(mode="json")], queue=queue)


app = make_celery(Settings())
