"""`status`, `results` and `health` read a store; they never create one and never print a traceback.

The commands run in the test process (`tests/cli_in_process.py`) but the one into a closed pipe."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_in_process import docqa_in_process


def docqa(args, cwd, env=None):
    return docqa_in_process(args, env, cwd=cwd)


@pytest.mark.slow
def test_status_and_results_in_a_folder_without_a_store_create_nothing(tmp_path):
    for command in (["status", "--no-broker"], ["results"], ["health", "--no-broker"]):
        out = docqa(command, tmp_path)
        # exits.UNREACHABLE: the store cannot be opened; health says unhealthy (1), as probes expect
        assert out.returncode == (1 if command[0] == "health" else 4), out
        assert "no store at sqlite:///docqa.db" in out.stderr and "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_bad_database_url_is_one_line_without_the_password(tmp_path):
    out = docqa(["status", "--no-broker", "--database-url", "postgresql://u:secret@127.0.0.1:notaport/db"], tmp_path)
    assert out.returncode == 2  # a usage error: the port is not a number
    assert "Traceback" not in out.stderr and "secret" not in out.stderr
    lines = out.stderr.strip().splitlines()
    # The error is one line; before it, the warning that a password on the command line is
    # visible to every user of the host (it names the variables to use instead).
    assert "'postgresql://u:***@127.0.0.1:notaport/db' is not a database URL" in lines[-1]
    assert len(lines) == 2 and "DOCQA_DATABASE_URL" in lines[0]


@pytest.mark.slow
def test_status_clips_long_failure_lines(tmp_path, tiny_model):
    from docqa.core.params import AnswerParams
    from docqa.storage.db import make_engine, session_factory, upgrade
    from docqa.storage.repository import Repository

    url = f"sqlite:///{tmp_path / 'docqa.db'}"
    upgrade(url)
    repo = Repository(session_factory(make_engine(url)))
    doc = repo.add_document("text")
    (job,) = repo.add_jobs(doc.id, ["q" * 5000], model="m", revision=None, params=AnswerParams())
    repo.fail(job.id, "e" * 100_000)
    out = docqa(["status", "--no-broker"], tmp_path)
    assert out.returncode == 0
    assert max(len(line) for line in out.stdout.splitlines()) < 1000


@pytest.mark.slow
def test_results_by_external_id_question_and_top_across_documents(tmp_path, tiny_model):
    import json

    lines = [json.dumps({"id": f"doc-{i}", "text": f"River {i} flows north past the mill to the sea at port {i}.",
                         "metadata": {"n": i}}) for i in range(4)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = docqa(["run", "in.jsonl", "-q", "Where does it flow?", "-q", "What passes?", "--model", tiny_model],
                tmp_path)
    assert run.returncode == 0, run.stderr
    one = docqa(["results", "--document", "doc-2"], tmp_path)
    rows = [json.loads(line) for line in one.stdout.splitlines()]
    assert len(rows) == 2 and {r["document_external_id"] for r in rows} == {"doc-2"}
    assert rows[0]["document_metadata"] == {"n": 2} and rows[0]["params"]["top_k"] == 1
    top = docqa(["results", "--question", "Where does it flow?", "--top", "3", "--format", "csv"], tmp_path)
    lines_out = top.stdout.strip().splitlines()
    assert top.returncode == 0 and len(lines_out) == 4 and "margin" in lines_out[0]
    missing = docqa(["results", "--document", "nope"], tmp_path)
    assert missing.returncode == 1 and "no document is named 'nope'" in missing.stderr
    bad = docqa(["results", "--top", "3"], tmp_path)
    assert bad.returncode == 2 and "--top ranks the answers to one --question" in bad.stderr


@pytest.mark.slow
def test_results_into_a_closed_pipe_ends_quietly(tmp_path, tiny_model):
    import os

    (tmp_path / "a.txt").write_text("The river flows north to the sea. " * 50, encoding="utf-8")
    # More output than a pipe holds (64 KiB), so writing goes on after `head` has gone.
    (tmp_path / "q.txt").write_text("\n".join(f"Question number {i}?" for i in range(60)), encoding="utf-8")
    run = docqa(["run", "a.txt", "--questions", "q.txt", "--top-k", "5", "--model", tiny_model], tmp_path)
    assert run.returncode == 0, run.stderr
    env = dict(os.environ)
    out = subprocess.run(f"{sys.executable} -m docqa results --format csv | head -1", shell=True, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.stdout.startswith("answer_id,") and "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr


@pytest.mark.slow
def test_delete_by_external_id_with_a_dry_run_first(tmp_path, tiny_model):
    import json

    lines = [json.dumps({"id": f"doc-{i}", "text": f"River {i} flows north to the sea."}) for i in range(3)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert docqa(["run", "in.jsonl", "-q", "Where?", "--model", tiny_model], tmp_path).returncode == 0
    dry = docqa(["delete", "--document", "doc-1", "--dry-run"], tmp_path)
    assert dry.returncode == 0 and "would delete 1 document (ids [" in dry.stdout and "1 text, 1 job, 1 answer" in dry.stdout
    gone = docqa(["delete", "--document", "doc-1"], tmp_path)
    assert gone.returncode == 0 and "deleted 1 document (ids [" in gone.stdout
    left = docqa(["results"], tmp_path).stdout.splitlines()
    assert len(left) == 2 and all('"doc-1"' not in line for line in left)
    missing = docqa(["delete", "--document", "doc-1"], tmp_path)
    assert missing.returncode == 1 and "no document is named 'doc-1'" in missing.stderr


@pytest.mark.slow
def test_results_offsets_in_utf16_and_utf8_select_the_answer(tmp_path, tiny_model):
    import json

    text = "🚀🚀 Zoë met 👩‍👩‍👧 near 東京 (e\u0301). The river flows north to the sea at dawn."
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    assert docqa(["run", "a.txt", "-q", "Where does the river flow?", "--top-k", "3", "--model", tiny_model],
                 tmp_path).returncode == 0
    for unit, encoding, width in (("utf16", "utf-16-le", 2), ("utf8", "utf-8", 1)):
        out = docqa(["results", "--offsets", unit], tmp_path)
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        assert rows and all(r["offset_unit"] == unit for r in rows)
        data = text.encode(encoding)
        for r in rows:
            assert data[width * r["char_start"] : width * r["char_end"]].decode(encoding) == r["text"]
