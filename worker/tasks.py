"""Celery tasks and worker-process set-up. Tasks stay thin: parse, delegate, report.

Per process (after fork): one engine (model loaded once), one repository, one sweeper
thread, and torch's thread count set from the worker's concurrency and the cores this
process may use, so processes do not oversubscribe the CPU.

What a message can meet, and what happens (the message is acknowledged only once its
jobs are recorded: answered, failed, or handed back to the queue):

- not a docqa message (wrong body, schema version, no job ids): dead-lettered, acked;
- another store's message: refused loudly and put back for the right workers;
- job ids the store does not have: dead-lettered (the known ones still run);
- the store or broker fails mid-run: claims handed back, the message put back after a
  backoff (never dropped);
- a message put back DOCQA_MAX_REDELIVERIES times (counted in a header, `bounces`) is
  dead-lettered with its reason instead; its jobs stay in the store and the reconciler
  sends the queued ones again;
- its process dies: Celery puts the message back (reject_on_worker_lost) and the jobs'
  leases run out within `lease_seconds`; they come back as suspects that run alone.
"""

from __future__ import annotations

from docqa.core.errors import first_line

import logging
import os
import threading
import time

from celery import signals
from celery.exceptions import Reject
from pydantic import ValidationError

from docqa.core.message import JobMessage
from docqa.worker import deadletter
from docqa.worker.app import TASK_NAME, Dispatcher, app
from docqa.worker.interactive import ASK_TASK

log = logging.getLogger(__name__)

# Seconds a worker waits before putting back another store's message (so a fleet of
# wrong workers does not spin on it).
FOREIGN_MESSAGE_PAUSE = 5.0
# Longest wait before putting back a message whose run met a store/broker failure, seconds.
MAX_BACKOFF = 15.0

_runtime = None
_runtime_pid = None
_concurrency = 1
_start_failures = 0  # failed attempts to set this process up, in a row


def backoff_seconds(failures: int) -> float:
    """Wait before putting a message back after the `failures`-th failure in a row: 1, 2, 4 ... MAX_BACKOFF s."""
    return min(MAX_BACKOFF, 2.0 ** (failures - 1))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def torch_threads(concurrency: int, cores: int | None = None, override: int | None = None, others: int = 0) -> int:
    """Intra-op threads per worker process: the cores shared out, at least one.

    The cores are shared among this worker's `concurrency` pool processes and `others`, the
    other docqa worker processes live on this host (see `other_local_workers`):
    max(1, cores // (concurrency + others)). `override` (Settings.torch_threads) wins when given.
    """
    if override is not None:
        return max(1, override)
    cores = usable_cores() if cores is None else cores
    return max(1, cores // (max(1, concurrency) + max(0, others)))


def other_local_workers(workers, name: str) -> int:
    """How many of `workers` (live WorkerInfo rows) are other docqa worker processes on this
    host: its host name, not `name`, not known to be gone (identity.dead_local_workers), and
    not a pool sibling of this process (a prefork child of the same parent: the worker's
    concurrency counts those already, registered or not)."""
    import socket

    from docqa.worker.identity import dead_local_workers

    host = socket.gethostname()
    names = [w.name for w in workers if w.host == host and w.name != name]
    skip = set(dead_local_workers(names)) | _pool_siblings(names)
    return sum(1 for n in names if n not in skip)


def _pool_siblings(names: list[str]) -> set[str]:
    """The `names` of processes with this process's parent, when this is a Celery pool child
    (same boot and PID namespace, so their PIDs mean the same here); none otherwise (a solo
    worker's parent may be a supervisor that started other workers)."""
    from billiard.process import current_process

    from docqa.worker.identity import boot_id, pid_namespace

    if not current_process()._identity:  # the main process: solo or threads pool, or no pool at all
        return set()
    boot, namespace = boot_id(), pid_namespace()
    if "-" in (boot, namespace):
        return set()
    parent = os.getppid()
    siblings = set()
    for name in names:
        parts = name.split(":")
        if len(parts) != 4 or not parts[1].isdigit() or not parts[2].startswith(f"{boot}.{namespace}."):
            continue
        try:
            with open(f"/proc/{parts[1]}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if len(fields) > 1 and fields[1] == str(parent):
            siblings.add(name)
    return siblings


class Runtime:
    """What one worker process holds: settings, engine, repository, runner, sweeper."""

    def __init__(self, settings) -> None:
        import socket

        import torch

        from docqa.core.labels import model_label
        from docqa.storage.repository import Repository
        from docqa.worker import metrics
        from docqa.worker.engine import Engine
        from docqa.worker.identity import worker_name
        from docqa.worker.runner import JobRunner

        self.settings = settings
        self.name = worker_name()
        self.repo = Repository.open(settings.database_url)
        self.store_id = self.repo.store_id()
        threads, cores, why = self._threads()
        torch.set_num_threads(threads)  # before the model loads
        self.metrics = metrics.recorder(settings)  # does nothing unless the worker serves metrics
        loading = time.perf_counter()
        self.engine = Engine.from_settings(settings).warm_up()
        if self.engine.fast_note:  # DOCQA_FAST / --fast: the mode it chose, in one line
            log.info("docqa worker: %s", self.engine.fast_note)
        self.metrics.model_loaded(model=model_label(settings.model, settings.revision), dtype=self.engine.precision,
                                  device=str(self.engine.device), seconds=time.perf_counter() - loading)
        if self.metrics.active:
            self.engine.on_forward = self.metrics.forward
        self.runner = JobRunner.from_settings(self.repo, self.engine, settings, name=self.name)
        if settings.batch_windows is None:  # a first claim of about 3 s of this device, not a guess
            log.info("docqa worker: %.1f windows/s measured on filler text", self.runner.calibrate())
        self.dispatcher = Dispatcher(app, self.repo, queue=settings.queue, batch_jobs=settings.worker_batch_jobs,
                                     batch_windows=self.runner.max_windows)
        # A split job's parts go out at once, so other workers take them while this one runs.
        self.runner.on_split = lambda ids: self.dispatcher.send_queued(self.repo.queued_jobs(ids))
        self.failures = 0  # store/broker failures in a row (backoff)
        self.repo.register_worker(
            self.name, host=socket.gethostname(), pid=os.getpid(),
            model=model_label(settings.model, settings.revision), queue=settings.model_queue,
            threads=threads, cores=cores,
        )
        log.info(
            "docqa worker process %s ready: model %s on %s, %d torch threads (%s), %d tokens a forward",
            self.name, self.engine.model_label, self.engine.device, threads, why, self.engine.batch_tokens,
        )
        self.sweep_seconds = settings.sweep_seconds
        # Since when the sweeper has reached the store without a failure (None: not yet).
        self._store_ok_since: float | None = time.monotonic() - settings.live_worker_seconds
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_forever, name="docqa-sweeper", daemon=True)
        self._sweeper.start()

    def _threads(self) -> tuple[int, int, str]:
        """(torch threads, usable cores, why): the cores shared with this worker's pool and the
        other docqa workers live on this host (ones starting at the same moment may miss each
        other: `docqa status` warns when a host's cores end up oversubscribed)."""
        cores, settings = usable_cores(), self.settings
        if settings.torch_threads is not None:
            return torch_threads(_concurrency, cores, override=settings.torch_threads), cores, "DOCQA_TORCH_THREADS"
        others = other_local_workers(self.repo.live_workers(seen_within=settings.live_worker_seconds), self.name)
        why = (f"{cores} usable cores / {_concurrency + others} docqa worker processes on this host: "
               f"concurrency {_concurrency} + {others} other live")
        return torch_threads(_concurrency, cores, others=others), cores, why

    # -- the sweeper: liveness, dead workers' jobs, the reconciler ---------------------
    def sweep(self) -> list[int]:
        """Beat this worker's row; requeue jobs whose worker died (lease out, or its process
        gone from this host) and send each alone; reconcile when this process holds the role.

        Leases that ran out are judged only once this worker has reached the store for
        `live_worker_seconds`: after a store outage every worker's leases look expired, and
        their holders get that long to renew them (and write the answers they kept) before
        anyone takes them back. A process known to be gone is judged at once."""
        from docqa.worker.identity import dead_local_workers

        self.repo.beat_worker(self.name)
        now = time.monotonic()
        if self._store_ok_since is None:
            self._store_ok_since = now
        settled = now - self._store_ok_since >= self.settings.live_worker_seconds
        dead = dead_local_workers(self.repo.running_workers())
        gave_up: list[int] = []
        ids = self.repo.requeue_expired(max_attempts=self.settings.max_attempts, dead_workers=dead, given_up=gave_up,
                                        expired=settled)
        self.metrics.jobs("requeued", len(ids))
        self.metrics.jobs("failed", len(gave_up))
        if gave_up:
            log.warning("marked %d job(s) failed: their attempts ran out (%d) with their worker gone: %s",
                        len(gave_up), self.settings.max_attempts, gave_up[:20])
        self.dispatcher.send_queued(self.repo.queued_jobs(ids))  # suspects: one message each, run alone
        if ids:
            why = f"their worker process is gone ({', '.join(dead)})" if dead else "their lease ran out"
            log.warning("requeued %d job(s) because %s: %s", len(ids), why, ids[:20])
        self.runner.settle_splits()
        if self.repo.hold_role("reconciler", self.name, seconds=self.settings.live_worker_seconds):
            self.reconcile()
        return ids

    def reconcile(self) -> int:
        """Send again the queued jobs that have had no message for `reconcile_seconds`, unless
        their queue is draining: messages wait on it and a run claimed jobs from it within
        `reconcile_seconds` (a queue of messages that only bounce does not count as
        draining). Returns the messages sent."""
        stale = self.repo.unsent_queued(older_than=self.settings.reconcile_seconds)
        draining: dict[str, bool] = {}
        for job in stale:
            queue = self.dispatcher.queue_of(job.model, job.revision)
            if queue not in draining:
                draining[queue] = self._draining(queue)
        stale = [j for j in stale if not draining[self.dispatcher.queue_of(j.model, j.revision)]]
        if not stale:
            return 0
        sent = self.dispatcher.send_queued(stale)
        log.warning(
            "reconciler: sent %d queued job(s) again in %d message(s): they had no message for %d s "
            "(lost by the broker, or never sent)", len(stale), sent, self.settings.reconcile_seconds,
        )
        return sent

    def _draining(self, queue: str) -> bool:
        from docqa.worker import bounces

        if self.dispatcher.queue_depth(queue) == 0:
            return False
        with bounces.broker_client(app) as client:
            last = bounces.last_progress(client, queue) if client is not None else time.time()
        return last is not None and time.time() - last < self.settings.reconcile_seconds

    def _sweep_forever(self) -> None:
        while not self._stop.wait(self.sweep_seconds):
            try:
                self.sweep()
            except Exception as exc:  # store or broker away: try again next time
                self._store_ok_since = None
                log.warning("sweeper pass failed (%s); retrying in %.0f s",
                            first_line(exc, with_type=True), self.sweep_seconds)

    def stop(self) -> None:
        self._stop.set()
        try:
            self.repo.release_role("reconciler", self.name)
            self.repo.stop_worker(self.name)
        except Exception:
            log.warning("could not record this worker's stop", exc_info=True)

    def backoff(self) -> float:
        self.failures += 1
        return backoff_seconds(self.failures)


def runtime() -> Runtime:
    """This process's runtime, created on first use after fork."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        _runtime = Runtime(app.docqa_settings)
        _runtime_pid = os.getpid()
    return _runtime


@signals.worker_init.connect
def _remember_concurrency_and_check(sender=None, **_kwargs) -> None:
    global _concurrency
    _concurrency = int(getattr(sender, "concurrency", 1) or 1)
    from docqa.worker import preflight

    if not preflight.DONE:  # `celery -A docqa.worker.app worker`: check before consuming
        problem = preflight.check(app.docqa_settings)
        if problem is not None:
            log.critical("docqa worker cannot start: %s", problem)
            raise SystemExit(1)
    from docqa.worker import metrics

    try:  # before the pool forks: its processes inherit the metrics folder
        metrics.serve(app.docqa_settings)
    except metrics.MetricsError as exc:
        log.critical("docqa worker cannot start: %s", exc)
        raise SystemExit(1) from None


@signals.worker_process_init.connect
def _load_in_child(**_kwargs) -> None:
    runtime()  # load the model when the pool process starts, not on its first message


@signals.worker_process_shutdown.connect
def _stop_in_child(**_kwargs) -> None:
    if _runtime is not None and _runtime_pid == os.getpid():
        _runtime.stop()


@signals.worker_ready.connect
def _load_in_solo(sender=None, **_kwargs) -> None:
    pool = getattr(sender, "pool_cls", None)
    name = getattr(pool, "__module__", "") if pool is not None else ""
    if "solo" in name or "thread" in name:
        runtime()


@signals.worker_shutdown.connect
def _stop_in_solo(**_kwargs) -> None:
    if _runtime is not None and _runtime_pid == os.getpid():
        _runtime.stop()


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_jobs(self, message=None, *args, **kwargs) -> dict:
    queue = (self.request.delivery_info or {}).get("routing_key")
    if args or kwargs or message is None:
        deadletter.push_via(app, "a docqa.run_jobs task takes one message argument", [message, args, kwargs],
                            queue=queue)
        return {"dead_letter": True}
    try:
        msg = JobMessage.model_validate(message)
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors()[:5])
        deadletter.push_via(app, f"not a docqa job message: {reason}", message, queue=queue)
        return {"dead_letter": True}
    back = _PutBack(self, message, msg, queue)
    try:
        rt = runtime()
    except Exception as exc:  # the store (or the model) cannot be had right now: put back, try later
        global _start_failures
        _start_failures += 1
        return back(f"this worker process cannot run jobs ({first_line(exc, with_type=True)})",
                    backoff_seconds(_start_failures))
    if msg.store_id is not None and msg.store_id != rt.store_id:
        log.error(
            "refused a message for store %s: this worker serves store %s (%s); put back for that "
            "store's workers. Point every producer and worker of one fleet at the same "
            "DOCQA_DATABASE_URL.", msg.store_id, rt.store_id, rt.settings.model_queue,
        )
        return back(f"a message of store {msg.store_id}, which no worker of queue {queue} serves (they serve store "
                    f"{rt.store_id})", FOREIGN_MESSAGE_PAUSE)
    from docqa.worker.runner import StoreUnavailable

    # Celery drops (rejects without requeue) the message of a task that raises: every
    # failure below puts the message back instead, after a backoff.
    try:
        started = time.perf_counter()
        stats = rt.runner.run(msg.job_ids)
        seconds = time.perf_counter() - started
        rt.metrics.run(stats, seconds)
        if stats.leftover:  # more than this worker's batch, or suspects that must run alone
            rt.dispatcher.send_queued(rt.repo.queued_jobs(stats.leftover))
    except StoreUnavailable as exc:
        rt.metrics.jobs("retried", exc.released)
        return back(f"the store failed during a run ({exc})", rt.backoff())
    except Exception as exc:
        # Not the store: the broker, or a fault of docqa's own. The claims stand (their
        # attempts count), so a job that keeps failing is failed by its attempts.
        log.exception("a run failed (%s: %s)", type(exc).__name__, exc)
        return back(f"a run failed ({first_line(exc, with_type=True)})", rt.backoff())
    rt.failures = 0
    back.ran(stats.claimed > 0)
    if stats.unknown:
        deadletter.push_via(app, f"job ids unknown to store {rt.store_id}: {stats.unknown[:20]}", message,
                            queue=queue)
    log.info(
        "docqa run: message jobs %s: claimed %d%s, done %d, failed %d, answers %d, skipped %d, "
        "windows %d in %d forwards, %.3f s",
        msg.job_ids[:5], stats.claimed, " (alone: its last worker died holding it)" if stats.alone else "",
        stats.done, stats.failed, stats.answers, len(stats.skipped), stats.windows, stats.forwards, seconds,
    )
    return {"done": stats.done, "failed": stats.failed}


@app.task(name=ASK_TASK, bind=True, acks_late=False, ignore_result=True)
def ask_corpus(self, message=None, *args, **kwargs) -> dict:
    """A corpus question (`docqa.worker.interactive`): answered now, the reply put where the
    caller waits. A question past its deadline is not started; a malformed one is
    dead-lettered. Not retried: its caller has a timeout, and asks again if it wants."""
    from docqa.worker.interactive import AskMessage, send_reply

    queue = (self.request.delivery_info or {}).get("routing_key")
    try:
        if args or kwargs:
            raise ValueError("a docqa.ask_corpus task takes one message argument")
        msg = AskMessage.model_validate(message)
    except (ValidationError, ValueError) as exc:
        deadletter.push_via(app, f"not a docqa corpus question: {first_line(exc)}", [message, args, kwargs],
                            queue=queue)
        return {"dead_letter": True}
    if time.time() > msg.deadline:
        log.info("corpus question dropped: its caller stopped waiting %.1f s ago", time.time() - msg.deadline)
        return {"expired": True}
    try:
        body = {"result": _answer_corpus(msg).model_dump(mode="json")}
    except Exception as exc:  # the caller hears why; the worker goes on
        log.warning("corpus question failed: %s", first_line(exc, with_type=True))
        body = {"error": first_line(exc)}
    send_reply(app, msg.reply, body)
    return {"answered": "result" in body}


def _answer_corpus(msg):
    from docqa.core.params import AnswerParams
    from docqa.worker.corpus import ask_corpus

    rt = runtime()
    if msg.store_id is not None and msg.store_id != rt.store_id:
        raise ValueError(f"the question is for store {msg.store_id}; this worker serves store {rt.store_id}")
    return ask_corpus(rt.engine, rt.repo, msg.question, params=AnswerParams(**msg.params), windows=msg.windows,
                      top=msg.top, **msg.filters())


class _PutBack:
    """Puts a message that could not run back on its queue as a copy that counts the times
    (worker.bounces), or dead-letters it once that reaches Settings.max_redeliveries."""

    def __init__(self, task, message: dict, msg: JobMessage, queue: str | None) -> None:
        from docqa.worker import bounces

        self.message, self.msg, self.queue = message, msg, queue
        self.bounces = int(getattr(task.request, bounces.BOUNCES_HEADER, None) or 0)
        self.key = bounces.message_key(msg.job_ids, msg.store_id)

    def __call__(self, reason: str, wait: float) -> dict:
        from docqa.worker import bounces

        limit = app.docqa_settings.max_redeliveries
        if self.bounces >= limit:
            bounces.clear(app, self.key)
            deadletter.push_via(app, f"{reason}; put back {self.bounces} times (DOCQA_MAX_REDELIVERIES={limit}): its "
                                "jobs stay in the store, and the reconciler sends the queued ones again",
                                self.message, queue=self.queue)
            return {"dead_letter": True}
        log.warning("%s; message put back in %.0f s (time %d of %d)", reason, wait, self.bounces + 1, limit)
        time.sleep(wait)
        bounces.record(app, self.key, reason=reason, bounces=self.bounces + 1, queue=self.queue,
                       job_ids=self.msg.job_ids)
        try:
            app.send_task(TASK_NAME, args=[self.message], queue=self.queue,
                          headers={bounces.BOUNCES_HEADER: self.bounces + 1})
        except Exception:  # the broker is away: the original goes back where it was (kombu restores it)
            raise Reject(reason, requeue=True) from None
        return {"put_back": self.bounces + 1}

    def ran(self, claimed: bool) -> None:
        from docqa.worker import bounces

        if self.bounces:
            bounces.clear(app, self.key)
        if claimed:
            bounces.mark_progress(app, self.queue)

