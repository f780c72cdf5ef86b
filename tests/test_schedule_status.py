"""`docqa schedule status` while a run is under way: the last finished run's counts, and
the run under way named, never a run of nothing (seen: "0 documents seen" for a run that
had not yet written its counts)."""

from __future__ import annotations

from docqa.cli.scheduling import _status_line
from docqa.schedule import Scheduler, load_schedule, source_status
from docqa.storage.db import make_engine, session_factory, upgrade
from docqa.storage.repository import Repository
from docqa.storage.submissions import SubmissionCounts


def _scheduler(tmp_path) -> Scheduler:
    (tmp_path / "schedule.toml").write_text(
        'questions = ["Where?"]\n[[source]]\nname = "folder"\ninputs = ["docs"]\ninterval = "1h"\n', encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    return Scheduler(load_schedule(tmp_path / "schedule.toml"), client=None,
                     repo=Repository(session_factory(make_engine(url))))


def _start(repo) -> int:
    return repo.start_submission(command="submit", model="m", revision=None, label="folder")


def test_a_run_under_way_is_named_and_the_last_finished_one_keeps_its_counts(tmp_path):
    scheduler = _scheduler(tmp_path)
    repo = scheduler.repo
    first = _start(repo)
    (row,) = source_status(scheduler)
    assert row["last_run"] is None and row["running_submission_id"] == first and not row["due"]
    assert "a run is under way (submission 1)" in _status_line(row) and "no run finished yet" in _status_line(row)

    repo.finish_submission(first, SubmissionCounts(documents=2, new_documents=2, jobs=2, new_jobs=2, input_errors=0))
    second = _start(repo)
    (row,) = source_status(scheduler)
    assert (row["submission_id"], row["documents"], row["new"]) == (first, 2, 2)
    assert row["running_submission_id"] == second
    line = _status_line(row)
    assert "(submission 1): 2 documents seen" in line and line.endswith("a run is under way (submission 2)")

    repo.finish_submission(second, SubmissionCounts(documents=2, new_documents=0, jobs=2, new_jobs=0, input_errors=0))
    (row,) = source_status(scheduler)
    assert (row["submission_id"], row["documents"], row["running_submission_id"]) == (second, 2, None)
    assert "next " in _status_line(row)
