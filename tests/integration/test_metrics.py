"""`docqa worker --metrics-port`: a real prefork worker (two pool processes) answers jobs and
its /metrics says so, summed over its processes, with the store's counts and the model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from docqa.worker import metrics
from support import TINY_MODEL, docqa, free_port, open_repo, wait_for, write_corpus

pytestmark = [pytest.mark.services, pytest.mark.slow]

QUESTIONS = ["Where does the river flow?", "Who watched the tower?"]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """{(series name, sorted labels): value} of a worker's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode("utf-8")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def total(samples, name: str) -> float:
    return sum(v for (n, _labels), v in samples.items() if n == name)


def test_a_prefork_worker_exports_what_its_processes_answered(distributed_env, tmp_path):
    env = dict(distributed_env)
    tmp = tmp_path / "tmp"  # the worker's TMPDIR: where its private metrics folder goes
    tmp.mkdir()
    env["TMPDIR"] = str(tmp)
    port = free_port()
    with open(tmp_path / "worker.log", "wb") as log:  # the worker writes to its own copy
        worker = subprocess.Popen(
            [sys.executable, "-m", "docqa.cli", "worker", "--concurrency", "2", "--pool", "prefork",
             "--metrics-port", str(port), "--hostname", f"metrics-{port}@%h", "--loglevel", "INFO"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def logs() -> str:
        return (tmp_path / "worker.log").read_text(errors="replace")[-6000:]

    try:
        docs = tmp_path / "docs"
        write_corpus(docs, 6)
        sub = docqa(["submit", str(docs), *[a for q in QUESTIONS for a in ("-q", q)]], env)
        assert sub.returncode == 0, sub.stderr
        jobs = 6 * len(QUESTIONS)
        repo = open_repo(env["DOCQA_DATABASE_URL"])
        wait_for(lambda: repo.counts()["done"] == jobs, timeout=180, what=f"{jobs} jobs done", logs=logs)

        # A pool process records a run's outcome right after the store does: poll briefly.
        def done_counted():
            s = scrape(port)
            return s if value(s, "docqa_jobs_total", status="done") == jobs else None

        samples = wait_for(done_counted, timeout=30, what="docqa_jobs_total{status=done} == jobs", logs=logs)
        assert value(samples, "docqa_jobs_total", status="failed") is None
        windows = value(samples, "docqa_windows_total")
        forwards = value(samples, "docqa_forwards_total")
        assert windows >= jobs and 1 <= forwards <= windows
        assert value(samples, "docqa_forward_seconds_count") == forwards
        assert value(samples, "docqa_forward_seconds_sum") > 0
        assert value(samples, "docqa_forward_batch_windows_count") == forwards
        assert value(samples, "docqa_forward_batch_windows_sum") == windows
        real = value(samples, "docqa_forward_tokens_total", kind="real")
        padding = value(samples, "docqa_forward_tokens_total", kind="padding")
        assert real >= windows and padding >= 0
        with repo.engine.connect() as conn:
            from sqlalchemy import text

            answers = conn.execute(text("SELECT count(*) FROM answers")).scalar_one()
        assert value(samples, "docqa_answers_written_total") == answers == jobs  # top_k 1
        assert value(samples, "docqa_job_seconds_count") == jobs
        assert value(samples, "docqa_job_seconds_bucket", le="+Inf") == jobs
        assert value(samples, "docqa_model_info", model=TINY_MODEL, dtype="float32", device="cpu") == 1
        assert value(samples, "docqa_model_load_seconds") > 0
        for status, n in {"queued": 0, "running": 0, "done": jobs, "failed": 0}.items():
            assert value(samples, "docqa_store_jobs", status=status) == n
        # Every series the metrics module declares (the dashboard's vocabulary) is really exported.
        assert metrics.exported_series() <= {name for name, _labels in samples}

        # `docqa status --watch` reads windows/s from the worker's /metrics (no new windows: 0).
        watch = subprocess.Popen(
            [sys.executable, "-m", "docqa", "status", "--watch", "--interval", "0.3", "--format", "json",
             "--metrics-url", f"http://127.0.0.1:{port}/metrics"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            snaps = [json.loads(watch.stdout.readline()) for _ in range(3)]
        finally:
            watch.send_signal(signal.SIGINT)
            assert watch.wait(timeout=30) == 0, watch.stderr.read()
        assert snaps[-1]["counts"]["done"] == jobs and snaps[-1]["live_workers"] >= 1
        assert snaps[0]["windows_per_second"] is None and snaps[-1]["windows_per_second"] == 0

        # Multiprocess mode: both pool processes wrote files into the worker's private folder.
        (folder,) = tmp.glob("docqa-metrics-*")
        children = metrics.pids_in(str(folder)) - {worker.pid}
        assert len(children) == 2, sorted(p.name for p in folder.iterdir())
        # A pool process that dies: its live gauges go, the counts it made stay.
        victim = min(children)
        os.kill(victim, signal.SIGKILL)

        def victim_gone():
            s = scrape(port)
            return s if not list(folder.glob(f"gauge_live*_{victim}.db")) else None

        samples = wait_for(victim_gone, timeout=30, what="the killed process marked dead", logs=logs)
        assert value(samples, "docqa_jobs_total", status="done") == jobs
        assert value(samples, "docqa_windows_total") == windows
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    # The private folder goes with the worker.
    assert list(Path(tmp).glob("docqa-metrics-*")) == [], logs()
