"""The Celery application: JSON messages only, late acknowledgement, low prefetch, and
no message that can stop a worker.

`celery -A docqa.worker.app worker` and `docqa worker` both use the `app` built here
from DOCQA_* environment variables. Importing this module imports no torch: producers
use it to send messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlparse

from celery import Celery
from kombu import Exchange, Queue

from docqa.core.labels import queue_for
from docqa.core.message import JobMessage
from docqa.core.settings import Settings
from docqa.worker.interactive import ask_queue

if TYPE_CHECKING:
    from docqa.storage.repository import Repository

TASK_NAME = "docqa.run_jobs"
# How long a pool process may take to start (load its model) before Celery kills it,
# seconds. Celery's own 4 s loses that race for real models on a busy host.
PROCESS_START_SECONDS = 300.0


def _direct(name: str) -> Queue:
    """Queue `name` on an exchange of its own name, routed by its name: what Celery makes of a
    bare queue name (a Queue given only its name would take the default queue's exchange and
    key, and receive that queue's messages too)."""
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


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
        # Workers consume their model's queue (also `celery -A docqa.worker.app worker` without -Q),
        # after its corpus questions' queue: Redis pops the first non-empty queue in this order.
        task_default_queue=settings.model_queue,
        task_queues=[_direct(ask_queue(settings.model_queue)), _direct(settings.model_queue)],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_proc_alive_timeout=PROCESS_START_SECONDS,
        # Malformed messages are dead-lettered instead of stopping the worker.
        worker_consumer="docqa.worker.consumer:SafeConsumer",
        # A message whose process died unannounced comes back after this long; the SQL
        # sweeper and reconciler have requeued its jobs long before.
        broker_transport_options={"visibility_timeout": max(3600, 2 * settings.lease_seconds),
                                  "queue_order_strategy": "priority"},
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

    def __init__(self, app: Celery, repo: Repository, *, queue: str, batch_jobs: int,
                 batch_windows: int | None = None) -> None:
        from docqa.core.settings import CPU_BATCH_WINDOWS

        self.app = app
        self.repo = repo
        self.base_queue = queue
        self.batch_jobs = batch_jobs
        self.batch_windows = batch_windows if batch_windows is not None else CPU_BATCH_WINDOWS
        self.store_id = repo.store_id()

    def queue_of(self, model: str, revision: str | None) -> str:
        return queue_for(self.base_queue, model, revision)

    def send(self, job_ids: list[int], model: str, revision: str | None) -> None:
        """One message for `job_ids` (all of `model`/`revision`); their last_sent_at is now."""
        send_jobs(self.app, list(job_ids), self.queue_of(model, revision), self.store_id)
        self.repo.mark_sent(job_ids)

    def send_queued(self, jobs) -> int:
        """Send `QueuedJob`s (id, model, revision, attempts, windows): suspects alone, fresh
        ones in messages of at most `batch_windows` windows (a job without a plan counts one;
        a longer job goes alone: its worker splits it) and `batch_jobs` jobs, each to its
        model's queue. Returns the messages sent."""
        groups: dict[tuple[str, str | None], list] = {}
        for job in jobs:
            groups.setdefault((job.model, job.revision), []).append(job)
        messages = 0
        for (model, revision), group in groups.items():
            batches = self.by_windows([j for j in group if j.attempts == 0])
            batches += [[j.id] for j in group if j.attempts > 0]
            for ids in batches:
                self.send(ids, model, revision)
            messages += len(batches)
        return messages

    def by_windows(self, jobs) -> list[list[int]]:
        """Job ids in consecutive messages of at most batch_windows windows and batch_jobs jobs."""
        batches: list[list[int]] = []
        current: list[int] = []
        windows = 0
        for job in jobs:
            n = job.n_windows or 1
            if current and (windows + n > self.batch_windows or len(current) >= self.batch_jobs):
                batches.append(current)
                current, windows = [], 0
            current.append(job.id)
            windows += n
        if current:
            batches.append(current)
        return batches

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
