"""`docqa status --watch`: a real subprocess on a SQLite store, jobs finishing under it, Ctrl-C."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from docqa.cli.watch import Rates, Sample, duration


def make_store(tmp_path, n_jobs: int):
    from docqa.storage.db import make_engine, session_factory, upgrade
    from docqa.storage.repository import Repository

    from docqa.core.params import AnswerParams

    url = f"sqlite:///{tmp_path / 'docqa.db'}"
    upgrade(url)
    repo = Repository(session_factory(make_engine(url)))
    doc = repo.add_document("The river flows north to the sea.")
    jobs = repo.add_jobs(doc.id, [f"Question {i}?" for i in range(n_jobs)], model="m", revision=None,
                         params=AnswerParams())
    return url, repo, [j.id for j in jobs]


class Watch:
    """`docqa status --watch` with stdout on a pipe (not a terminal); lines read as they come."""

    def __init__(self, url: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "docqa", "status", "--watch", "--interval", "0.2", "--no-broker",
             "--database-url", url, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def until(self, predicate, timeout: float = 60) -> list[str]:
        """Lines read until one satisfies `predicate` (AssertionError with them otherwise)."""
        seen, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            seen.append(line)
            if predicate(line):
                return seen
        raise AssertionError(f"no such line within {timeout} s; got {seen[-5:]}")

    def interrupt(self) -> subprocess.CompletedProcess:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, "", self.proc.stderr.read())


def finish(repo, job_ids: list[int]) -> None:
    """Finish jobs as a worker would: claim them, store one empty answer list, fail one."""
    claimed = repo.claim(job_ids, worker="test-worker", lease_seconds=30)
    assert len(claimed) == len(job_ids)
    refused = repo.complete_many([(j, []) for j in job_ids[1:]], model_label="m")
    assert not refused
    repo.fail(job_ids[0], "failed on purpose")


@pytest.mark.slow
def test_watch_prints_a_line_per_interval_with_counts_rate_and_eta_and_exits_0_on_ctrl_c(tmp_path):
    url, repo, ids = make_store(tmp_path, 6)
    watch = Watch(url)
    try:
        first = watch.until(lambda line: "queued 6" in line)[-1]
        assert "running 0  done 0  failed 0" in first and "6 left" in first
        finish(repo, ids[:4])
        line = watch.until(lambda line: "done 3" in line)[-1]
        assert "queued 2" in line and "failed 1" in line and "2 left" in line
        # Four jobs finished within the last 30 s: a positive rate and an ETA for the other two.
        rate = float(line.split(" jobs/s")[0].rsplit(" ", 1)[-1])
        assert rate > 0 and "ETA " in line and "ETA ?" not in line
    finally:
        done = watch.interrupt()
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_watch_json_lines_and_a_bad_interval(tmp_path):
    url, repo, ids = make_store(tmp_path, 3)
    watch = Watch(url, "--format", "json")
    try:
        snap = json.loads(watch.until(lambda line: True)[-1])
        assert snap["counts"] == {"queued": 3, "running": 0, "done": 0, "failed": 0}
        assert snap["windows_per_second"] is None and snap["live_workers"] == 0
        finish(repo, ids)
        snap = json.loads(watch.until(lambda line: json.loads(line)["counts"]["queued"] == 0)[-1])
        assert snap["counts"] == {"queued": 0, "running": 0, "done": 2, "failed": 1}
        assert snap["jobs_per_second"] > 0 and snap["eta_seconds"] == 0
    finally:
        done = watch.interrupt()
    assert done.returncode == 0, done.stderr
    bad = subprocess.run([sys.executable, "-m", "docqa", "status", "--watch", "--interval", "0", "--no-broker",
                          "--database-url", url], capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "--interval must be positive" in bad.stderr


def test_rates_over_a_sliding_window_and_durations():
    rates = Rates(window=10)
    assert rates.jobs_per_second() is None
    for t, finished, windows in [(0, 0, None), (5, 10, 100.0), (10, 20, 300.0), (14, 60, 700.0)]:
        rates.add(Sample(float(t), finished, windows))
    # The rate spans back to the newest sample at least 10 s old (0 s); windows only where known.
    assert rates.jobs_per_second() == 60 / 14
    assert rates.windows_per_second() == (700 - 100) / 9
    rates.add(Sample(25.0, 100, 1000.0))  # now 14 s is the newest sample at least 10 s old
    assert rates.jobs_per_second() == (100 - 60) / 11
    assert rates.windows_per_second() == (1000 - 700) / 11
    assert [duration(s) for s in (4.4, 200, 7500)] == ["4 s", "3 min 20 s", "2 h 05 min"]
