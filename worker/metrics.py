"""Prometheus metrics of a worker: what its processes answered, how fast, and the store's queue.

Off unless the worker runs with `--metrics-port N` (DOCQA_METRICS_PORT). Then the worker's
main process (the one Celery forks its pool processes from), in `serve()`:

- makes a private folder for prometheus_client's multiprocess mode and points
  PROMETHEUS_MULTIPROC_DIR at it before any pool process exists, so every pool process
  writes its counters and histograms there; the folder is removed when the worker exits;
- serves `http://0.0.0.0:N/metrics`: the sum over every pool process's files, and the
  store's job counts by status (`docqa_store_jobs`), read by this process alone with one
  GROUP BY query at most every STORE_TTL_SECONDS, however many pool processes and scrapes;
- marks pool processes that are gone (killed, replaced) as dead on each scrape: their
  live gauges drop out, their counters and histograms stay in the sums (a counter must
  not go down when a process dies).

Pool processes record through `recorder(settings)`: a `NullRecorder` (every method does
nothing) when metrics are off, so embedded mode and `docqa.ask` never import
prometheus_client. The engine and runner know nothing of Prometheus: the worker's runtime
(`tasks.Runtime`) hands the recorder's methods to the engine's `on_forward` hook and
reports each run's `RunStats`.

Gauges in multiprocess mode need a mode. The two that pool processes write,
`docqa_model_info` and `docqa_model_load_seconds`, use "livemax": every pool process of
a worker loads the same model with the same settings, so one series without a pid label
is right (the max of equal values, and the slowest load for the load time), and "live"
drops a dead process's value instead of showing it forever. The store's counts are not a
per-process value at all, so they are no multiprocess gauge: the serving process reads
them (cached) at scrape time.

Labels carry no job, document or question: only status, kind, model, dtype and device.
"""

from __future__ import annotations

from docqa.core.errors import DocqaError, first_line

import atexit
import functools
import glob
import logging
import os
import shutil
import tempfile
import threading
import time
from typing import NamedTuple

log = logging.getLogger(__name__)

DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The store's job counts are read at most this often per worker (one query), seconds.
STORE_TTL_SECONDS = 5.0

FORWARD_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_WINDOWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
JOB_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class Metric(NamedTuple):
    name: str  # as exported (counters end in _total)
    kind: str  # counter, histogram, gauge
    help: str
    labels: tuple[str, ...] = ()


# Every metric a worker exports. The dashboard test checks its queries against this list,
# and the worker test checks that a real worker exports every one of them.
METRICS = (
    Metric("docqa_jobs_total", "counter",
           "jobs by outcome: done (answers stored), failed (marked failed with a reason), retried (handed back "
           "to the queue after a store failure), requeued (taken back from a dead worker by this worker's "
           "sweeper)", labels=("status",)),
    Metric("docqa_windows_total", "counter", "windows (model inputs) run through the model"),
    Metric("docqa_forwards_total", "counter", "model forward calls (a batch of windows is one call)"),
    Metric("docqa_forward_seconds", "histogram",
           "time of one forward call and the copy of its results to the host, seconds"),
    Metric("docqa_forward_batch_windows", "histogram", "windows per forward call"),
    Metric("docqa_forward_tokens_total", "counter",
           "tokens in forward batches: real (window tokens) or padding (padded to the batch's longest window)",
           labels=("kind",)),
    Metric("docqa_answers_written_total", "counter", "answers written to the store"),
    Metric("docqa_job_seconds", "histogram",
           "time from claiming a job to recording its outcome (done or failed), seconds"),
    Metric("docqa_model_load_seconds", "gauge", "time a pool process took to load its model, seconds"),
    Metric("docqa_model_info", "gauge", "the model a worker serves (always 1)", labels=("model", "dtype", "device")),
    Metric("docqa_store_jobs", "gauge",
           "jobs in the store by status, read by the worker's main process at most every few seconds",
           labels=("status",)),
)


def exported_series() -> set[str]:
    """Every series name a worker's /metrics can carry (histograms as _bucket/_sum/_count)."""
    names = set()
    for m in METRICS:
        if m.kind == "histogram":
            names.update(m.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(m.name)
    return names


def _spec(name: str) -> Metric:
    return next(m for m in METRICS if m.name == name)


def _never_raises(method):
    """Metrics must never fail a job: a recording that raises (a full disk, say) is logged once."""

    @functools.wraps(method)
    def safe(self, *args, **kwargs):
        try:
            method(self, *args, **kwargs)
        except Exception:
            if not self._warned:
                self._warned = True
                log.warning("metrics: recording failed; metrics of this process may be incomplete", exc_info=True)

    return safe


# -- recording (pool processes) ------------------------------------------------------------
class NullRecorder:
    """Metrics off: every method does nothing."""

    active = False

    def forward(self, windows: int, real_tokens: int, padded_tokens: int, seconds: float) -> None:
        pass

    def run(self, stats, seconds: float) -> None:
        pass

    def jobs(self, status: str, n: int) -> None:
        pass

    def model_loaded(self, *, model: str, dtype: str, device: str, seconds: float) -> None:
        pass


class Recorder(NullRecorder):
    """Writes this process's metrics into the multiprocess folder."""

    active = True

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self._warned = False

        def make(cls, name, **kwargs):
            spec = _spec(name)
            return cls(name, spec.help, spec.labels, registry=None, **kwargs)

        self._jobs = make(Counter, "docqa_jobs_total")
        self._windows = make(Counter, "docqa_windows_total")
        self._forwards = make(Counter, "docqa_forwards_total")
        self._forward_seconds = make(Histogram, "docqa_forward_seconds", buckets=FORWARD_SECONDS_BUCKETS)
        self._batch_windows = make(Histogram, "docqa_forward_batch_windows", buckets=BATCH_WINDOWS_BUCKETS)
        tokens = make(Counter, "docqa_forward_tokens_total")
        self._real_tokens, self._padding_tokens = tokens.labels("real"), tokens.labels("padding")
        self._answers = make(Counter, "docqa_answers_written_total")
        self._job_seconds = make(Histogram, "docqa_job_seconds", buckets=JOB_SECONDS_BUCKETS)
        self._load_seconds = make(Gauge, "docqa_model_load_seconds", multiprocess_mode="livemax")
        self._model_info = make(Gauge, "docqa_model_info", multiprocess_mode="livemax")

    @_never_raises
    def forward(self, windows: int, real_tokens: int, padded_tokens: int, seconds: float) -> None:
        """One forward call of `windows` windows: `real_tokens` of `padded_tokens` were not padding."""
        self._forwards.inc()
        self._windows.inc(windows)
        self._forward_seconds.observe(seconds)
        self._batch_windows.observe(windows)
        self._real_tokens.inc(real_tokens)
        self._padding_tokens.inc(max(0, padded_tokens - real_tokens))

    @_never_raises
    def run(self, stats, seconds: float) -> None:
        """One runner run (a `RunStats`) that took `seconds` from its claim to its last record."""
        self.jobs("done", stats.done)
        self.jobs("failed", stats.failed)
        if stats.answers:
            self._answers.inc(stats.answers)
        for _ in range(stats.done + stats.failed):
            self._job_seconds.observe(seconds)

    @_never_raises
    def jobs(self, status: str, n: int) -> None:
        if n:
            self._jobs.labels(status).inc(n)

    @_never_raises
    def model_loaded(self, *, model: str, dtype: str, device: str, seconds: float) -> None:
        self._load_seconds.set(seconds)
        self._model_info.labels(model, dtype, device).set(1)


_recorder: NullRecorder | None = None
_recorder_pid: int | None = None


def recorder(settings) -> NullRecorder:
    """This process's recorder: a real one when the worker serves metrics (`serve()` ran in
    its main process, so PROMETHEUS_MULTIPROC_DIR names our folder), else a NullRecorder."""
    global _recorder, _recorder_pid
    if _recorder is None or _recorder_pid != os.getpid():
        folder = os.environ.get(DIR_ENV)
        on = settings.metrics_port is not None and folder is not None and os.path.isdir(folder)
        _recorder = Recorder() if on else NullRecorder()
        _recorder_pid = os.getpid()
    return _recorder


# -- serving (the worker's main process) ----------------------------------------------------
class MetricsError(DocqaError, RuntimeError):
    """The metrics cannot be served (the port is taken, say); the message says why."""


class _PoolFiles:
    """The pool processes' files, summed; processes that are gone are marked dead first."""

    def __init__(self, folder: str) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.folder = folder
        self._files = MultiProcessCollector(None, path=folder)

    def collect(self):
        from prometheus_client import multiprocess

        for pid in pids_in(self.folder):
            if pid != os.getpid() and not process_alive(pid):
                multiprocess.mark_process_dead(pid, self.folder)
        return self._files.collect()


def pids_in(folder: str) -> set[int]:
    """The processes that wrote metric files in `folder` (files are named ..._<pid>.db)."""
    pids = set()
    for path in glob.glob(os.path.join(folder, "*.db")):
        tail = os.path.basename(path)[: -len(".db")].rsplit("_", 1)[-1]
        if tail.isdigit():
            pids.add(int(tail))
    return pids


def process_alive(pid: int) -> bool:
    """True while process `pid` exists and is not a zombie (exited, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:  # not Linux, or gone meanwhile
        return True


class _StoreJobs:
    """`docqa_store_jobs{status}`: one `Repository.counts()` query at most every `ttl` seconds."""

    def __init__(self, database_url: str, ttl: float = STORE_TTL_SECONDS) -> None:
        self.database_url = database_url
        self.ttl = ttl
        self._repo = None
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._counts: dict[str, int] | None = None
        self._failing = False

    def counts(self) -> dict[str, int] | None:
        with self._lock:
            now = time.monotonic()
            if self._read_at is None or now - self._read_at >= self.ttl:
                self._read_at = now
                try:
                    self._counts = self._repository().counts()
                    self._failing = False
                except Exception as exc:  # the store is away: no gauge rather than a stale one
                    self._counts = None
                    if not self._failing:
                        log.warning("metrics: cannot read the store's job counts (%s)",
                                    first_line(exc, with_type=True))
                    self._failing = True
            return self._counts

    def _repository(self):
        if self._repo is None:
            from docqa.storage.db import make_engine, session_factory
            from docqa.storage.repository import Repository
            from sqlalchemy.pool import NullPool

            # No pooled connection: this process forks pool processes, and a connection
            # must not cross a fork. One connect per read, at most one read per ttl.
            self._repo = Repository(session_factory(make_engine(self.database_url, poolclass=NullPool)))
        return self._repo

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        counts = self.counts()
        if counts is None:
            return []
        spec = _spec("docqa_store_jobs")
        family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
        for status, n in counts.items():
            family.add_metric([status], n)
        return [family]


class Server(NamedTuple):
    port: int
    folder: str
    httpd: object


_server: Server | None = None


def serve(settings) -> Server | None:
    """In the worker's main process, before its pool starts: set up multiprocess mode in a
    private folder and serve /metrics on `settings.metrics_port`. None when that is unset.
    MetricsError when the port cannot be had."""
    global _server
    if settings.metrics_port is None:
        return None
    if _server is not None and _server.port == settings.metrics_port:
        return _server
    folder = tempfile.mkdtemp(prefix="docqa-metrics-")
    os.environ[DIR_ENV] = folder
    from prometheus_client import values

    # Metrics made after this point (in this process and its pool processes) write to files,
    # even if prometheus_client was imported before the variable was set.
    values.ValueClass = values.get_value_class()
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(_PoolFiles(folder))
    registry.register(_StoreJobs(settings.database_url))
    try:
        httpd, _thread = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        del os.environ[DIR_ENV]
        raise MetricsError(f"cannot serve metrics on port {settings.metrics_port}: {exc}") from None
    owner = os.getpid()
    # Pool processes do not serve: they close their copy of the listening socket, so a pool
    # process that outlives its parent cannot keep the port.
    os.register_at_fork(after_in_child=httpd.socket.close)
    atexit.register(_remove_folder, folder, owner)
    _server = Server(settings.metrics_port, folder, httpd)
    log.info("docqa worker metrics on http://%s:%d/metrics (pool process files in %s)",
             settings.metrics_host, settings.metrics_port, folder)
    return _server


def _remove_folder(folder: str, owner: int) -> None:
    if os.getpid() == owner:  # never from a pool process that happens to run exit handlers
        shutil.rmtree(folder, ignore_errors=True)
