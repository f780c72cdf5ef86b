"""`docqa worker --events` turns on Celery's task events, which Flower and `celery events` read."""

from __future__ import annotations

import threading
from typing import Self

import pytest
from support import docqa, open_repo, wait_for, write_corpus

pytestmark = [pytest.mark.services, pytest.mark.slow]


class EventLog:
    """Celery events of a broker, captured by a real event receiver in a thread."""

    def __init__(self, broker_url: str) -> None:
        from docqa.worker.app import make_celery

        from docqa.core.settings import Settings

        self.app = make_celery(Settings(broker_url=broker_url))
        self.events: list[dict] = []
        self.ready = threading.Event()
        self.receiver = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection_for_read() as conn:
            self.receiver = self.app.events.Receiver(conn, handlers={"*": self.events.append})
            self.receiver.on_consume_ready = lambda *a, **k: self.ready.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> Self:
        self.thread.start()
        assert self.ready.wait(10), "the event receiver did not start"
        return self

    def __exit__(self, *exc) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(10)

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in list(self.events) if e.get("type") == kind]


def test_docqa_worker_events_sends_task_events(distributed_env, workers, tmp_path):
    from docqa.worker.app import TASK_NAME

    env = distributed_env
    docs = tmp_path / "docs"
    write_corpus(docs, 2, seed=31)
    with EventLog(env["DOCQA_BROKER_URL"]) as log:
        workers.start(1, extra=["--events"])
        sub = docqa(["submit", str(docs), "-q", "Where does the river flow?"], env)
        assert sub.returncode == 0, sub.stderr
        repo = open_repo(env["DOCQA_DATABASE_URL"])
        wait_for(lambda: repo.counts()["done"] == 2, timeout=180, what="2 jobs done", logs=workers.logs)
        succeeded = wait_for(lambda: log.of_type("task-succeeded"), timeout=20, what="a task-succeeded event",
                             logs=workers.logs)
    received = {e["uuid"]: e for e in log.of_type("task-received")}
    assert received, f"no task-received event; event types seen: {sorted({e['type'] for e in log.events})}"
    assert {e["name"] for e in received.values()} == {TASK_NAME}
    assert succeeded[0]["uuid"] in received
    assert "task events: ON" in workers.logs(tail=None)
