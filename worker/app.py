"""The Celery application: JSON messages only, late acknowledgement, low prefetch, and
no message that can stop a worker.

`celery -A docqa.worker.app worker` and `docqa worker` both use the `app` built here
from DOCQA_* environment variables. Importing this module imports no torch: producers
use it to send messages.
"""

from __future__ import annotations

from urllib.parse import urlparse

from celery import Celery

from docqa.core.labels import queue_for
from docqa.core.message import JobMessage
from docqa.core.settings import Settings

TASK_NAME = "docqa.run_jobs"
# How long a pool process may take to start (load its model) before Celery kills it,
# seconds. Celery's own 4 s loses that race for real models on a busy host.
PROCESS_START_SECONDS = 300.0


def make_celery(settings: Settings) -> Celery:
    app = Celery("docqa", broker=settings.broker_url, include=["docqa.worker.tasks"])
    conf = dict(
        # JSON only: a pickle on a shared broker is remote code execution.
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,
        # At-least-once: a message is acknowledged only after its jobs are recorded,
        # and handed back if the process running it dies. A task that raises is not
        # acknowledged either (Celery's default acks it, and Redis drops rejected ones).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=False,
        # One message (= up to worker_batch_jobs jobs) at a time per process: batching
        # happens inside a message and from SQL, not by hoarding messages.
        worker_prefetch_multiplier=1,
        # Workers consume their model's queue (also `celery -A docqa.worker.app worker` without -Q).
        task_default_queue=settings.model_queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_proc_alive_timeout=PROCESS_START_SECONDS,
        # Malformed messages are dead-lettered instead of stopping the worker.
        worker_consumer="docqa.worker.consumer:SafeConsumer",
        # A message whose process died unannounced comes back after this long; the SQL
        # sweeper and reconciler have requeued its jobs long before.
        broker_transport_options={"visibility_timeout": max(3600, 2 * settings.lease_seconds)},
    )
    if urlparse(settings.broker_url).scheme in ("redis", "rediss"):
        conf["broker_transport"] = "docqa.worker.transport:Transport"
    app.conf.update(conf)
    app.docqa_settings = settings
    return app


def run_worker(app: Celery, argv: list[str]) -> int:
    """Run `celery worker` with `argv` in this process and return its exit status.

    `app.worker_main` discards it (Celery runs its command line with click's
    standalone_mode off and ignores what that returns), so a worker stopped by an
    "Unrecoverable error" exited 0 and `restart: on-failure` never restarted it.
    """
    from celery.bin.celery import celery as command

    command.params[0].default = app
    try:
        code = command.main(args=argv, standalone_mode=False)
    finally:
        command.params[0].default = None
    return code if isinstance(code, int) else 0


def send_jobs(app: Celery, job_ids: list[int], queue: str, store_id: str | None = None) -> None:
    """Put one message carrying `job_ids` (of the store `store_id`) on the broker."""
    message = JobMessage(job_ids=job_ids, store_id=store_id)
    app.send_task(TASK_NAME, args=[message.model_dump(mode="json")], queue=queue)


class Dispatcher:
    """Sends jobs of one store to their model's queue and records when each was sent.

    Each model and revision has its own queue (`docqa.core.labels.queue_for`), so a job
    waits for a worker of its model. Suspect jobs (attempts > 0: a worker died holding
    them) go one per message, so they never share a run; fresh jobs go `batch_jobs` to a
    message.
    """

    def __init__(self, app: Celery, repo, *, queue: str, batch_jobs: int) -> None:
        self.app = app
        self.repo = repo
        self.base_queue = queue
        self.batch_jobs = batch_jobs
        self.store_id = repo.store_id()

    def queue_of(self, model: str, revision: str | None) -> str:
        return queue_for(self.base_queue, model, revision)

    def send(self, job_ids: list[int], model: str, revision: str | None) -> None:
        """One message for `job_ids` (all of `model`/`revision`); their last_sent_at is now."""
        send_jobs(self.app, list(job_ids), self.queue_of(model, revision), self.store_id)
        self.repo.mark_sent(job_ids)

    def send_queued(self, jobs) -> int:
        """Send `QueuedJob`s (id, model, revision, attempts): suspects alone, fresh ones in
        batches, each to its model's queue. Returns the messages sent."""
        groups: dict[tuple[str, str | None], list] = {}
        for job in jobs:
            groups.setdefault((job.model, job.revision), []).append(job)
        messages = 0
        for (model, revision), group in groups.items():
            fresh = [j.id for j in group if j.attempts == 0]
            for i in range(0, len(fresh), self.batch_jobs):
                self.send(fresh[i : i + self.batch_jobs], model, revision)
                messages += 1
            for job in group:
                if job.attempts > 0:
                    self.send([job.id], model, revision)
                    messages += 1
        return messages

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in `queue` (not counting those workers hold); 0 for a queue the
        broker does not have (a Redis list disappears when it empties or is lost)."""
        from amqp.exceptions import NotFound
        from kombu.exceptions import ChannelError

        with self.app.connection_for_read() as conn:
            try:
                return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
            except (NotFound, ChannelError):  # AMQP brokers say NotFound; kombu's virtual ones ChannelError
                return 0


app = make_celery(Settings())
