"""A batch slower than its lease keeps its jobs: the heartbeat renews the leases."""

from __future__ import annotations

import threading
import time

from docqa.core.params import AnswerParams
from docqa.storage.db import make_engine, session_factory, upgrade
from docqa.storage.repository import Repository
from docqa.worker.engine import Engine
from docqa.worker.runner import JobRunner

LEASE = 1.0  # seconds


class SlowEngine(Engine):
    """The real engine, taking `delay` seconds longer per run (a long batch on a slow CPU)."""

    delay = 3 * LEASE

    def run(self, items):
        time.sleep(self.delay)
        return super().run(items)


def test_a_batch_that_outlives_its_lease_is_not_taken_back(tiny_model, sqlite_url):
    upgrade(sqlite_url)
    repo = Repository(session_factory(make_engine(sqlite_url)))
    doc = repo.add_document("The tower was designed by Gustave Eiffel in Paris.")
    (job,) = repo.add_jobs(doc.id, ["Who designed the tower?"], model=tiny_model, revision=None, params=AnswerParams())
    runner = JobRunner(repo, SlowEngine(tiny_model, device="cpu"), lease_seconds=LEASE, max_attempts=3, name="w1")
    taken_back: list[int] = []

    def sweeper():  # what every other worker's sweeper does meanwhile
        deadline = time.monotonic() + SlowEngine.delay
        while time.monotonic() < deadline:
            taken_back.extend(repo.requeue_expired(max_attempts=3))
            time.sleep(0.1)

    sweeping = threading.Thread(target=sweeper)
    sweeping.start()
    stats = runner.run([job.id], fill=False)
    sweeping.join()
    assert taken_back == []
    assert stats.done == 1
    record = repo.job(job.id)
    assert (record.status, record.attempts, record.worker) == ("done", 1, "w1")


def test_without_renewal_the_same_batch_would_be_taken_back(tiny_model, sqlite_url):
    """The check above can fail: a lease that is not renewed runs out within the batch."""
    upgrade(sqlite_url)
    repo = Repository(session_factory(make_engine(sqlite_url)))
    doc = repo.add_document("The tower was designed by Gustave Eiffel in Paris.")
    (job,) = repo.add_jobs(doc.id, ["Who designed the tower?"], model=tiny_model, revision=None, params=AnswerParams())
    repo.claim([job.id], worker="w1", lease_seconds=LEASE)
    time.sleep(1.5 * LEASE)
    assert repo.requeue_expired(max_attempts=3) == [job.id]
