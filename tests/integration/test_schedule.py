"""Scheduled indexing: schedule files checked, sources submitted on their interval, and
exactly one of several schedulers acting (the others take over when it dies)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import TINY_MODEL, docqa, open_repo, prose, wait_for

from docqa.schedule import ScheduleError, load_schedule, parse_interval


def write_schedule(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def test_schedule_files_are_checked_with_errors_that_name_the_place(tmp_path):
    assert parse_interval("1h30m", "x") == 5400 and parse_interval(90, "x") == 90 and parse_interval("2d", "x") == 172800
    cases = {
        'interval = "5 minutes"\n[[source]]\nname = "a"\ninputs = ["d"]\nquestions = ["Q?"]': "not a duration",
        '[[source]]\nname = "a"\ninputs = ["d"]\nquestions = ["Q?"]': "no interval",
        'interval = 60\n[[source]]\nname = "a"\ninputs = []\nquestions = ["Q?"]': "inputs must list",
        'interval = 60\n[[source]]\nname = "a"\ninputs = ["d"]': "no questions",
        'interval = 60\nquestions = ["Q?"]\n[[source]]\nname = "a"\ninputs = ["d"]\n'
        '[[source]]\nname = "a"\ninputs = ["e"]': "used twice",
        'interval = 60\nquestions = ["Q?"]\n[[source]]\nname = "a"\ninputs = ["d"]\nparams = { top_k = 0 }': "top_k",
        'interval = 60\nquestions = ["Q?"]\n[[source]]\nname = "a"\ninputs = ["d"]\nparams = { topk = 2 }': "topk",
        'interval = 60\nquestions = ["Q?"]\n[[source]]\nname = "a"\npaths = ["d"]': "unknown key(s) paths",
        'interval = 60\nquestions = ["Q?"]': "no sources",
        "interval = ": "not valid TOML",
    }
    for n, (body, message) in enumerate(cases.items()):
        path = write_schedule(tmp_path / f"s{n}.toml", body)
        with pytest.raises(ScheduleError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_schedule(path)
    ok = load_schedule(write_schedule(tmp_path / "ok.toml", 'interval = "15m"\nquestions = ["Q?"]\n[[source]]\n'
                                      'name = "a"\ninputs = ["d/*.txt"]\nquestions = ["R?"]\ninterval = 30\n'))
    assert ok.sources[0].questions == ("Q?", "R?") and ok.sources[0].interval == 30
    example = load_schedule(Path(__file__).resolve().parents[2] / "examples" / "schedule.toml")
    assert [(s.name, s.interval, s.params) for s in example.sources] == [("examples", 900, {"top_k": 2})]
    cli = docqa(["schedule", "run", str(tmp_path / "s0.toml"), "--once"], {"PATH": "/usr/bin"} | dict(
        __import__("os").environ, DOCQA_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}"))
    assert cli.returncode == 2 and "s0.toml" in cli.stderr and "not a duration" in cli.stderr


def test_embedded_schedule_answers_once_then_only_changed_documents(tmp_path):
    import os

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text(prose(40, seed=41), encoding="utf-8")
    (docs / "b.md").write_text(prose(40, seed=42), encoding="utf-8")
    schedule = write_schedule(tmp_path / "schedule.toml", (
        'interval = "1h"\nquestions = ["Where does the river flow?"]\n'
        '[[source]]\nname = "notes"\ninputs = ["docs/*.txt", "docs/*.md", "missing/*.txt"]\n'
    ))
    env = dict(os.environ, HF_HUB_OFFLINE="1", DOCQA_DATABASE_URL=f"sqlite:///{tmp_path / 'docqa.db'}",
               DOCQA_MODEL=TINY_MODEL)
    first = docqa(["schedule", "run", str(schedule), "--once"], env)
    assert first.returncode == 3, first.stdout + first.stderr  # the pattern that matched nothing is named
    assert "2 documents (2 new, 0 changed)" in first.stdout and "'missing/*.txt' matched no files" in first.stdout
    not_due = docqa(["schedule", "run", str(schedule), "--once"], env)  # within the hour: nothing to do
    assert not_due.returncode == 0 and "submission" not in not_due.stdout
    status = json.loads(docqa(["schedule", "status", str(schedule), "--format", "json"], env).stdout)
    (row,) = status["sources"]
    assert (row["documents"], row["new"], row["changed"], row["jobs_failed"], row["due"]) == (2, 2, 0, 0, False)
    answers = [json.loads(line) for line in docqa(["results"], env).stdout.splitlines()]
    assert len(answers) == 2


@pytest.mark.services
def test_two_schedulers_started_at_once_one_acts_and_the_other_takes_over(distributed_env, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text(prose(30, seed=51), encoding="utf-8")
    (docs / "b.txt").write_text(prose(30, seed=52), encoding="utf-8")
    schedule = write_schedule(tmp_path / "schedule.toml", (
        'questions = ["Where does the river flow?"]\n'
        '[[source]]\nname = "shared-folder"\ninputs = ["docs"]\ninterval = "2s"\n'
    ))
    env = dict(distributed_env, DOCQA_LEASE_SECONDS="3")
    from docqa.storage.db import upgrade

    upgrade(env["DOCQA_DATABASE_URL"])  # so this test can read the store from the start
    logs = [tmp_path / "s0.log", tmp_path / "s1.log"]
    procs = [
        subprocess.Popen([sys.executable, "-m", "docqa.cli", "schedule", "run", str(schedule)], env=env,
                         stdout=open(log, "w"), stderr=subprocess.STDOUT)
        for log in logs
    ]
    repo = open_repo(env["DOCQA_DATABASE_URL"])

    def runs():
        with repo.engine.connect() as conn:
            from sqlalchemy import text

            return conn.execute(text(
                "SELECT id, created_at, documents, new_documents, changed_documents FROM submissions "
                "WHERE label = 'shared-folder' ORDER BY id")).all()

    def text_of(n):
        return logs[n].read_text()

    try:
        wait_for(lambda: len(runs()) >= 3, timeout=60, what="three scheduled runs",
                 logs=lambda: text_of(0) + text_of(1))
        active = [n for n in (0, 1) if "is the active scheduler" in text_of(n)]
        assert len(active) == 1, (text_of(0), text_of(1))
        (leader,) = active
        other = 1 - leader
        assert "standing by" in text_of(other) and "submission" not in text_of(other)
        first = runs()
        assert (first[0].documents, first[0].new_documents) == (2, 2)
        assert all(r.new_documents == 0 and r.changed_documents == 0 for r in first[1:])
        gaps = [(b.created_at - a.created_at).total_seconds() for a, b in zip(first, first[1:])]
        assert min(gaps) >= 1.9, gaps  # one scheduler: never two runs within one interval

        # The active one dies without a word; the other takes over within a lease or so,
        # and a changed file becomes a new version on its next run.
        procs[leader].send_signal(signal.SIGKILL)
        procs[leader].wait(10)
        (docs / "a.txt").write_text(prose(30, seed=61), encoding="utf-8")
        wait_for(lambda: "is the active scheduler" in text_of(other), timeout=30, what="the standby to take over",
                 logs=lambda: text_of(other))
        wait_for(lambda: any(r.changed_documents == 1 for r in runs()), timeout=30, what="the changed file",
                 logs=lambda: text_of(other))
        all_runs = runs()
        gaps = [(b.created_at - a.created_at).total_seconds() for a, b in zip(all_runs, all_runs[1:])]
        assert min(gaps) >= 1.9, gaps

        status = docqa(["schedule", "status", str(schedule)], env)
        assert status.returncode == 0 and "shared-folder: last run" in status.stdout
        assert "2 documents seen" in status.stdout and "active scheduler:" in status.stdout

        procs[other].send_signal(signal.SIGTERM)
        assert procs[other].wait(30) == 0
        assert "stopped" in text_of(other)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        repo.engine.dispose()
        time.sleep(0)
