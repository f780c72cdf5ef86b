"""Running claimed jobs: the part of a worker that is the same in embedded and Celery mode.

A run claims its jobs in SQL (so a job runs under one lease at a time), answers all of
them in one engine call (their windows share forward batches), and writes each job's
answers or its failure. The SQL job table is the source of truth: a job whose run is
cut short (worker killed) keeps its lease until the sweeper hands it out again.
"""

from __future__ import annotations

from docqa.core.errors import UnreachableError, first_line

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, TypedDict

from docqa.storage.errors import LeaseLost, NotFound
from docqa.storage.records import Fence
from docqa.worker.heartbeat import Heartbeat
from docqa.worker.identity import dead_local_workers, worker_name

__all__ = ["JobRunner", "RunStats", "dead_local_workers", "worker_name"]

if TYPE_CHECKING:  # the engine (numpy, the tokenizer) loads only when there is work to answer
    from collections.abc import Mapping

    from docqa.core.windows import DocumentTokens
    from docqa.storage.repository import Repository
    from docqa.worker.engine import Engine, QAResult

log = logging.getLogger(__name__)


class _Claimant(TypedDict):
    """The arguments every claim of a run shares (Repository.claim and claim_queued)."""

    worker: str
    lease_seconds: float
    max_attempts: int | None


class _OfModel(TypedDict):
    """The model whose queued jobs claim_queued takes."""

    model: str
    revision: str


# Jobs of at least this priority have a caller waiting (HTTP ?wait=, a one-document Client
# call): every run of a worker claims them first.
URGENT = 1
# Unless DOCQA_BATCH_WINDOWS is set, a run claims what this worker computes in about this
# many seconds (by its measured windows/s), within these bounds: long enough that a run's
# SQL costs little, short enough that no run is a straggler and a waiting caller waits
# little behind it.
RUN_SECONDS = 3.0
MIN_RUN_WINDOWS = 8
MAX_RUN_WINDOWS = 16384
# Longest wait between two tries of a write while the store is away, seconds: work resumes
# within this long of the store's return.
RETRY_CAP_SECONDS = 5.0


@dataclass
class RunStats:
    claimed: int = 0
    done: int = 0
    failed: int = 0
    answers: int = 0
    forwards: int = 0  # model forward calls this run made (its jobs' windows share them)
    windows: int = 0
    skipped: list[int] = field(default_factory=list)  # not claimable: done, failed, or leased elsewhere
    leftover: list[int] = field(default_factory=list)  # still queued, not taken by this run: send them again
    unknown: list[int] = field(default_factory=list)  # ids the store does not have
    lost: list[int] = field(default_factory=list)  # their lease was taken back mid-run: nothing written
    alone: bool = False  # this run held one suspect job alone (its last worker died holding it)
    split: list[int] = field(default_factory=list)  # jobs this run cut into window-range parts
    parts_done: int = 0  # parts of split jobs this run finished (not counted in `done`)
    merged: int = 0  # split jobs whose last part this run finished: answered (counted in `done`)


class StoreUnavailable(UnreachableError, RuntimeError):
    """The store failed mid-run; the run's claims were handed back where the store allowed
    (`released`: how many)."""

    def __init__(self, message: str, released: int = 0) -> None:
        super().__init__(message)
        self.released = released


class JobRunner:
    """Claims, answers and records jobs with one engine and one repository.

    Crash isolation: a job whose worker died holding it (attempts > 0 while queued) is a
    suspect: it never shares a run. A run takes the fresh jobs of its message as a batch,
    or, when there are none, one suspect alone; the rest stay queued (`leftover`) for the
    caller to send again. So a job that kills its process only ever kills itself, and
    ends failed with that reason once its attempts are used up.
    """

    def __init__(
        self,
        repo: Repository,
        engine: Engine,
        *,
        lease_seconds: float,
        max_jobs: int = 64,
        max_attempts: int | None = None,
        name: str | None = None,
        store_retry_seconds: float = 300.0,
        max_windows: int | None = None,
        split_windows: int | None = None,
        on_split: Callable[[list[int]], None] | None = None,
    ):
        self.repo = repo
        # Windows one run claims at most (None: by the engine's device), and the window count
        # above which a job runs as parts (None: max_windows; 0: never).
        self.max_windows_request = max_windows
        self.split_windows_request = split_windows
        self.on_split = on_split  # sends a split job's parts (Celery mode); None: they wait in SQL
        self.windows_per_second: float | None = None  # this worker's measured speed (max_windows)
        self.store_retry_seconds = store_retry_seconds
        self.max_attempts = max_attempts
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.max_jobs = max_jobs
        self.name = name if name is not None else worker_name()

    @classmethod
    def from_settings(cls, repo: Repository, engine: Engine, settings, *, name: str | None = None) -> "JobRunner":
        """A runner with the lease, batch size and attempts of `settings`."""
        return cls(
            repo,
            engine,
            lease_seconds=settings.lease_seconds,
            max_jobs=settings.worker_batch_jobs,
            max_attempts=settings.max_attempts,
            name=name,
            max_windows=settings.batch_windows,
            split_windows=settings.split_windows,
        )

    @property
    def max_windows(self) -> int:
        """Windows one run claims at most: as set; else what this worker ran in RUN_SECONDS
        (its measured windows/s), or before any measure the device's default."""
        from docqa.core.settings import CPU_BATCH_WINDOWS, GPU_BATCH_WINDOWS

        if self.max_windows_request is not None:
            return self.max_windows_request
        if self.windows_per_second is not None:
            return max(MIN_RUN_WINDOWS, min(MAX_RUN_WINDOWS, int(self.windows_per_second * RUN_SECONDS)))
        return GPU_BATCH_WINDOWS if str(self.engine.device).startswith("cuda") else CPU_BATCH_WINDOWS

    def calibrate(self, windows: int = 4) -> float:
        """Time the engine on `windows` full windows of filler text, so the first run's claim
        is already about RUN_SECONDS of this device (a first forward is slower than later
        ones: the estimate errs small). Returns the windows/s measured."""
        from docqa.worker.engine import QAItem

        text = " ".join(f"filler{i % 97}" for i in range(100 * windows))
        hook, self.engine.on_forward = self.engine.on_forward, None  # not work to report in metrics
        try:
            started = time.perf_counter()
            result = self.engine.run([QAItem(text, "What does the filler say?")])[0]
            rate = result.n_windows / max(time.perf_counter() - started, 1e-6)
        finally:
            self.engine.on_forward = hook
        if self.windows_per_second is None:
            self.windows_per_second = rate
        return rate

    def _measure(self, windows: int, seconds: float) -> None:
        """Fold one run's compute speed into windows_per_second (a moving average)."""
        if windows >= MIN_RUN_WINDOWS and seconds > 0:
            rate = windows / seconds
            old = self.windows_per_second
            self.windows_per_second = rate if old is None else 0.7 * old + 0.3 * rate

    @property
    def split_windows(self) -> int:
        """Jobs with more windows than this run as parts (0: never)."""
        return self.max_windows if self.split_windows_request is None else self.split_windows_request

    def run(self, job_ids: list[int], *, fill: bool = True) -> RunStats:
        """Run the given jobs (at most `max_jobs` of them: this worker decides its batch);
        with `fill`, top a fresh batch up with other fresh queued jobs of this model.

        Filling is what lets single-job messages share forwards: while one batch runs,
        newly queued jobs wait in SQL and the next run takes them all. Their own
        messages, when they arrive, find them done and are acknowledged.

        Raises StoreUnavailable when the store fails; the jobs this run claimed are
        handed back to the queue first: while the store is away, handing back is tried
        again as writing answers is (`_retrying`), so they are not left to run out their
        leases and come back as suspects (the message waits with them).
        """
        from sqlalchemy.exc import SQLAlchemyError

        from docqa.storage.errors import StoreError

        claimed: list = []
        try:
            return self._run(list(dict.fromkeys(job_ids)), fill, claimed)
        except (SQLAlchemyError, StoreError) as exc:
            released = 0
            if claimed:
                ids = [c.job_id for c in claimed]
                try:
                    released = len(self._retrying(lambda: self.repo.release(ids, worker=self.name),
                                                  f"handing back {len(ids)} job(s)"))
                except (SQLAlchemyError, StoreError):  # still away: their leases run out instead
                    log.warning("could not hand back %d job(s); the sweeper will requeue them", len(claimed))
            raise StoreUnavailable(first_line(exc, with_type=True),
                                   released) from exc

    def _run(self, ids: list[int], fill: bool, claimed: list) -> RunStats:
        stats = RunStats()
        claimed += self._claim(ids, fill, stats)
        stats.claimed = len(claimed)
        # Every write for these jobs is fenced by this claim: a job whose lease was taken
        # back meanwhile (and maybe given to another worker) is not written by this one.
        fence = Fence(self.name, {c.job_id: c.attempts for c in claimed})
        runnable = self._runnable(claimed, fence, stats)
        forwards, windows = self.engine.forward_calls, self.engine.windows_run
        # Leases are renewed while the batch computes and while its answers wait for the
        # store, so a batch slower than one lease is not taken back and run twice.
        with Heartbeat(self.repo, worker=self.name, job_ids=[j.job_id for j in runnable],
                       lease_seconds=self.lease_seconds):
            started = time.perf_counter()
            answered = self._answer(runnable) if runnable else []
            stats.forwards = self.engine.forward_calls - forwards
            stats.windows = self.engine.windows_run - windows
            self._measure(stats.windows, time.perf_counter() - started)
            refused = self._store([(j, r) for j, r in zip(runnable, answered) if r.ok], fence, stats)
        self._record(runnable, answered, refused, fence, stats)
        claimed.clear()  # every claimed job is recorded now
        return stats

    def _claim(self, ids: list[int], fill: bool, stats: RunStats) -> list:
        """This run's jobs, at most max_jobs and max_windows: with `fill`, the queued jobs a
        caller waits for first; then the fresh ones of the message, else one suspect alone;
        with `fill`, topped up with fresh queued jobs of this model. Long jobs are split
        (`_split_long`). The message's other ids go to stats (leftover, unknown, skipped)."""
        mine = ids[: self.max_jobs]
        claim = _Claimant(worker=self.name, lease_seconds=self.lease_seconds, max_attempts=self.max_attempts)
        of_model = _OfModel(model=self.engine.model_id, revision=self.engine.revision or "")
        # Jobs a caller waits for (priority >= 1) first, whichever message brought this run:
        # they wait behind at most the runs in progress, however long the bulk backlog.
        claimed = self.repo.claim_queued(limit=self.max_jobs, max_windows=self.max_windows, min_priority=URGENT,
                                         **of_model, **claim) if fill else []
        room = self.max_windows - sum(job.n_windows or 1 for job in claimed)
        if room > 0:  # the message's jobs: the first whatever its size, unless callers' jobs came first
            claimed += self.repo.claim(mine, fresh_only=True, max_windows=room, fit=bool(claimed), **claim)
        if not claimed:
            for job_id in mine:  # only suspects (or nothing claimable): one alone
                claimed = self.repo.claim([job_id], **claim)
                if claimed:
                    stats.alone = True
                    break
        self._sort_rest([j for j in ids if j not in {c.job_id for c in claimed}], stats)
        claimed = self._split_long(claimed, stats)
        room = self.max_windows - sum(job.n_windows or 1 for job in claimed)
        if fill and not stats.alone and len(claimed) < self.max_jobs and room > 0:
            claimed += self._split_long(self.repo.claim_queued(
                limit=self.max_jobs - len(claimed), max_windows=room, fit=True, **of_model, **claim), stats)
        return claimed

    def _own_plan(self, job_id: int) -> bool:
        """Whether the job's stored plan was made under this worker's tokenizer: its window
        ranges then index the windows this worker runs (else it runs whole)."""
        plan = self.repo.plans_for([job_id]).get(job_id)
        return plan is not None and plan.tokenizer == self.engine.tokenizer_key

    def _sort_rest(self, rest: list[int], stats: RunStats) -> None:
        """The message's ids this run did not take: unknown, still queued (leftover), or not
        claimable (skipped: done, failed, or leased elsewhere)."""
        statuses = self.repo.job_statuses(rest) if rest else {}
        stats.unknown = [j for j in rest if j not in statuses]
        stats.leftover = [j for j in rest if statuses.get(j) == "queued"]
        stats.skipped = [j for j in rest if j in statuses and statuses[j] != "queued"]

    def _split_long(self, claimed: list, stats: RunStats) -> list:
        """The claimed jobs to run now: a job with more than `split_windows` windows is cut
        into window-range parts instead (queued, sent through `on_split`), which any worker
        may claim, this one included."""
        from docqa.worker.parts import part_ranges

        limit, keep = self.split_windows, []
        for job in claimed:
            if not (limit and job.parent_id is None and (job.n_windows or 0) > limit and self._own_plan(job.job_id)):
                keep.append(job)
                continue
            try:
                parts = self.repo.split_job(job.job_id, part_ranges(job.n_windows, limit),
                                            fence=Fence(self.name, {job.job_id: job.attempts}))
            except (LeaseLost, NotFound) as exc:
                log.warning("did not split job %s: %s", job.job_id, exc)
                continue
            log.info("job %s has %d windows: split into %d parts of at most %d windows (jobs %s-%s)",
                     job.job_id, job.n_windows, len(parts), limit, parts[0], parts[-1])
            stats.split.append(job.job_id)
            if self.on_split is not None:
                self.on_split(parts)
        return keep

    def _runnable(self, claimed: list, fence: Fence, stats: RunStats) -> list:
        """The claimed jobs this worker's model serves; the others fail with the reason."""
        runnable = []
        for job in claimed:
            if job.model == self.engine.model_id and (job.revision or "") == (self.engine.revision or ""):
                runnable.append(job)
                continue
            self.repo.fail(
                job.job_id,
                f"this job asks for model {job.model!r}{' revision ' + repr(job.revision) if job.revision else ''}, "
                f"but the worker that took it serves {self.engine.model_label!r}: run a worker with --model {job.model}",
                fence=fence,
            )
            stats.failed += 1
        return runnable

    def _store(self, done: list, fence: Fence, stats: RunStats) -> dict:
        """Write the batch's answers (and finished parts' windows) through a store outage
        (`_retrying`: the heartbeat renews the leases as soon as the store is back, and the
        fence refuses jobs whose lease was taken meanwhile); merge the split jobs whose last
        part this was. Returns the refused jobs with their errors."""
        from docqa.worker.parts import encode_windows

        whole = [(job.job_id, result.answers) for job, result in done if job.parent_id is None]
        parts = [(job.job_id, encode_windows(result.windows)) for job, result in done if job.parent_id is not None]
        refused: dict = {}
        if whole:
            refused = self._retrying(lambda: self.repo.complete_many(whole, model_label=self.engine.model_label,
                                                                     fence=fence),
                                     f"writing the answers of {len(whole)} job(s)")
        if parts:
            lost, ready = self._retrying(lambda: self.repo.complete_parts(parts, fence=fence),
                                         f"writing {len(parts)} part(s) of split jobs")
            refused.update(lost)
            stats.parts_done += len(parts) - len(lost)
            for job_id in ready:
                answers = self.merge(job_id)
                if answers is not None:
                    stats.merged += 1
                    stats.done += 1
                    stats.answers += answers
        return refused

    def merge(self, job_id: int) -> int | None:
        """Answer split job `job_id` from its parts' windows, once all are done: the same
        merge one run of the whole job makes. Returns the answers written, or None when this
        call wrote none (not ready, or merged elsewhere: one merge wins when several workers
        finish parts together); the parts are then deleted."""
        from docqa.storage.parts import split_fence
        from docqa.worker.parts import decode_windows
        from docqa.worker.spans import merge_answers

        ready = self.repo.split_ready(job_id)
        if ready is None:
            return None
        windows = [w for data in ready.parts for w in decode_windows(data)]
        tokens = text_tokens(self.repo, self.engine, {ready.text_id: ready.text})[ready.text_id]
        answers = merge_answers(ready.text, windows, tokens.offsets, tokens.word_ids, ready.params)
        refused = self.repo.complete_many([(job_id, answers)], model_label=self.engine.model_label,
                                          fence=split_fence(job_id, ready.attempts))
        self.repo.drop_parts(job_id)
        if job_id in refused:
            log.info("split job %s was merged elsewhere (%s)", job_id, refused[job_id])
            return None
        log.info("split job %s answered from its %d parts (%d windows)", job_id, len(ready.parts), len(windows))
        return len(answers)

    def settle_splits(self) -> int:
        """The sweeper's part: merge split jobs whose parts are all done (their last part's
        worker died before merging), and queue again a split job that has no parts left.
        Returns the jobs merged."""
        merged = sum(self.merge(s.job_id) is not None for s in self.repo.split_states() if s.done == s.parts)
        stranded = self.repo.unsplit_orphans()
        if stranded:
            log.warning("queued %d split job(s) again: their parts were gone: %s", len(stranded), stranded[:20])
        return merged

    def _retrying(self, write, what: str):
        """`write()`, tried again while the store is away (1, 2, 4, 5, 5 ... s) for up to
        `store_retry_seconds`: an outage is not the jobs' fault, so their work is kept rather
        than thrown away and counted against them. Other errors, and the last failure, raise."""
        from docqa.storage.db import store_failure

        deadline = time.monotonic() + self.store_retry_seconds
        wait = 1.0
        while True:
            try:
                return write()
            except Exception as exc:
                reason = store_failure(exc)
                if reason is None or time.monotonic() + wait > deadline:
                    raise
                log.warning("the store failed while %s (%s); trying again in %.0f s", what, reason, wait)
                time.sleep(wait)
                wait = min(2 * wait, RETRY_CAP_SECONDS)

    def _record(self, runnable: list, answered: list, refused: dict, fence: Fence, stats: RunStats) -> None:
        """Count the batch's outcome; fail the jobs that could not be answered or stored."""
        for job, result in zip(runnable, answered):
            error = refused.get(job.job_id)
            if result.ok and error is None:
                if job.parent_id is None:
                    stats.done += 1
                    stats.answers += len(result.answers)
            elif isinstance(error, LeaseLost):
                log.warning("dropped the answers of job %s: %s (its lease was taken back; the worker that holds "
                            "it now writes them)", job.job_id, error)
                stats.lost.append(job.job_id)
            elif isinstance(error, NotFound):  # deleted while it ran: nothing left to mark
                log.warning("job %s disappeared while it ran; its answers were dropped", job.job_id)
                stats.failed += 1
            else:
                why = result.error if not result.ok else f"answers could not be stored: {error}"
                try:
                    failed = self.repo.fail(job.job_id, why, fence=fence)
                except NotFound:  # deleted while it ran
                    failed = False
                if failed:
                    stats.failed += 1
                else:
                    stats.lost.append(job.job_id)

    def _answer(self, jobs) -> list[QAResult]:
        """Answer all jobs together; if the shared run breaks, isolate the job that breaks it."""
        from docqa.worker.engine import QAItem, QAResult

        # Tokens and windows the producer made (under this engine's tokenizer): the worker
        # then tokenizes no document, only the questions.
        key = self.engine.tokenizer_key
        plans = self.repo.plans_for({j.plan_job for j in jobs})  # a part runs its job's plan
        tokens = self.repo.tokens_for({j.text_id for j in jobs}, key)
        items = []
        for j in jobs:
            plan = plans.get(j.plan_job)
            doc_tokens = tokens.get(j.text_id)
            if plan is not None and (plan.tokenizer != key or doc_tokens is None):
                plan = None
            part = (j.window_start, j.window_end) if j.parent_id is not None else None
            items.append(QAItem(j.text, j.question, j.params, tokens=doc_tokens, plan=plan, window_range=part))
        try:
            return self.engine.run(items)
        except Exception:
            log.exception("a batch of %d jobs failed; running them one by one to find the cause", len(items))
        results = []
        for item in items:
            try:
                results.append(self.engine.run([item])[0])
            except Exception as exc:  # one job's failure must not take the others down
                results.append(QAResult(error=f"the model failed on this job: {type(exc).__name__}: {exc}"))
        return results


def answer_queued(runner: JobRunner, *, model: str, revision: str | None,
                  on_run: Callable[[RunStats], None] | None = None) -> RunStats:
    """Embedded mode: run every queued job of `model` here, in batches of the runner's size,
    until none is left or a pass takes none (suspects run one per pass). Returns the totals;
    `on_run` sees each run's stats (a progress bar)."""
    total = RunStats()
    pending = runner.repo.queued_job_ids(model=model, revision=revision or "")
    while pending:
        progressed = False
        for i in range(0, len(pending), runner.max_jobs):
            stats = runner.run(pending[i : i + runner.max_jobs], fill=False)
            total.claimed += stats.claimed
            total.done += stats.done
            total.merged += stats.merged
            total.failed += stats.failed
            total.answers += stats.answers
            progressed = progressed or stats.claimed > 0 or bool(stats.split)
            if on_run is not None:
                on_run(stats)
        if not progressed:
            break
        pending = runner.repo.queued_job_ids(model=model, revision=revision or "")
    return total


def text_tokens(repo: Repository, engine: Engine, texts: Mapping[int, str]) -> dict[int, DocumentTokens]:
    """Each text's tokens under the engine's tokenizer: those the producer stored, else the
    same tokenization made here."""
    from docqa.core.windows import tokenize_documents

    tokens = repo.tokens_for(texts, engine.tokenizer_key)
    missing = [t for t in texts if t not in tokens]
    tokens.update(zip(missing, tokenize_documents(engine.tokenizer, [texts[t] for t in missing])))
    return tokens
