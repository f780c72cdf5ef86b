"""Keeping a batch's leases alive while it computes.

A lease is short (the sweeper takes back jobs whose lease ran out: their worker is
presumed dead), but a batch of long documents can take longer than one lease on a CPU.
While a batch runs, a `Heartbeat` thread pushes its jobs' leases forward every third of
a lease, so only a worker that stopped beating loses its jobs.
"""

from __future__ import annotations

from docqa.core.errors import first_line

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from docqa.storage.repository import Repository

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews the leases of `job_ids` held by `worker` until the `with` block ends.

    Renewal interval: lease_seconds / 3 (two renewals may fail before a lease runs out).
    Jobs the store no longer gives this worker (taken back meanwhile) drop out of the
    renewals and are listed in `lost`; a failed renewal (store away) is retried on the
    next beat.
    """

    def __init__(self, repo: Repository, *, worker: str, job_ids: Iterable[int], lease_seconds: float) -> None:
        self.repo = repo
        self.worker = worker
        self.lease_seconds = lease_seconds
        self.interval = lease_seconds / 3
        self.held = sorted(set(job_ids))
        self.lost: list[int] = []
        self.beats = 0  # renewals that reached the store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="docqa-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        if self.held:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while self.held and not self._stop.wait(self.interval):
            try:
                kept = self.repo.extend_lease(self.held, worker=self.worker, lease_seconds=self.lease_seconds)
            except Exception as exc:  # the store is away: try again next beat, the lease still runs
                log.warning("could not renew the lease of %d job(s) (%s); retrying in %.0f s", len(self.held),
                            first_line(exc, with_type=True), self.interval)
                continue
            self.beats += 1
            lost = sorted(set(self.held) - set(kept))
            if lost:
                log.warning("lost the lease of %d job(s) to another worker: %s", len(lost), lost[:20])
                self.lost += lost
                self.held = kept
