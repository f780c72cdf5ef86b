"""`docqa run` (embedded: SQLite, in process) with good and bad input mixed."""

from __future__ import annotations

import json

from support import TINY_MODEL, docqa, open_repo, prose, write_corpus


def _env(tmp_path):
    import os

    env = dict(os.environ, HF_HUB_OFFLINE="1", DOCQA_DATABASE_URL=f"sqlite:///{tmp_path / 'docqa.db'}")
    env.pop("DOCQA_MODEL", None)
    return env


def test_bad_inputs_are_reported_by_name_and_good_documents_all_answered(tmp_path):
    docs = tmp_path / "in"
    good = write_corpus(docs, 4, seed=3)
    (docs / "empty.txt").write_bytes(b"")
    (docs / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    (docs / "latin1.txt").write_bytes("café crème, s'il vous plaît".encode("latin-1"))
    (docs / "huge.txt").write_text(prose(3000, seed=1), encoding="utf-8")
    lines = [
        json.dumps({"id": "ok-1", "text": prose(60, seed=8), "metadata": {"lang": "en"}}),
        '{"id": "broken", "text": "no closing brace"',
        json.dumps({"id": "long-q", "text": prose(40, seed=9), "questions": [" ".join(["river"] * 500) + "?"]}),
    ]
    (docs / "batch.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    env = _env(tmp_path)
    run = docqa(
        ["run", str(docs), "-q", "Where does the river flow?", "--model", TINY_MODEL, "--max-document-chars", "8000",
         "--max-question-chars", "5000"],
        env,
    )
    assert run.returncode == 1  # something failed, and the exit status says so
    err = run.stderr
    assert "Traceback" not in err
    assert "empty.txt: is empty" in err
    assert "image.png: looks like a binary file" in err
    assert "latin1.txt: is not valid UTF-8" in err
    assert "huge.txt: has" in err and "over the limit of 8,000" in err
    assert "batch.jsonl:2: malformed JSON line" in err
    assert "failed job" in err and "question is too long" in err

    repo = open_repo(env["DOCQA_DATABASE_URL"])
    counts = repo.counts()
    # 4 good files + the good JSONL line, one question each; the long-q line asks 2 questions
    # (the global one, answered, and its own, failed).
    assert counts == {"queued": 0, "running": 0, "done": 6, "failed": 1}
    [failure] = repo.failures()
    assert "question is too long" in failure.error and "long-q" in failure.document

    results = docqa(["results"], env)
    rows = [json.loads(x) for x in results.stdout.splitlines()]
    answered = {r["document_source"] for r in rows}
    assert {str(p) for p in good} <= answered
    texts = {str(p): p.read_bytes().decode("utf-8") for p in good}  # keep \r\n as stored
    for r in rows:
        if r["document_source"] in texts:
            assert texts[r["document_source"]][r["char_start"] : r["char_end"]] == r["text"]


def test_running_again_creates_and_runs_nothing(tmp_path):
    docs = tmp_path / "in"
    write_corpus(docs, 6, seed=4)
    env = _env(tmp_path)
    args = ["run", str(docs), "-q", "Who watched?", "-q", "When?", "--model", TINY_MODEL]
    first = docqa(args, env)
    assert first.returncode == 0, first.stderr
    assert "12 jobs (12 new" in first.stdout
    from docqa.worker.hardware import faster_cpu_mode

    # float32 on a CPU with a faster mode: the first run of the store names it
    mode = faster_cpu_mode()
    assert ("hint:" in first.stderr) == (mode is not None)
    if mode is not None:
        assert "--fast" in first.stderr and mode[0] in first.stderr
    before = docqa(["results"], env).stdout
    second = docqa(args, env)
    assert second.returncode == 0, second.stderr
    assert "12 jobs (0 new, 12 in the store before); 0 answered now" in second.stdout
    assert "hint:" not in second.stderr  # nothing ran
    assert docqa(["results"], env).stdout == before


def test_unknown_model_stops_the_run_before_anything_is_stored(tmp_path):
    docs = tmp_path / "in"
    write_corpus(docs, 2, seed=5)
    env = _env(tmp_path)
    run = docqa(["run", str(docs), "-q", "Where?", "--model", "acme/no-such-qa-model"], env)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "acme/no-such-qa-model" in run.stderr and "--model PATH" in run.stderr
    assert not (tmp_path / "docqa.db").exists()


def test_status_and_results_formats(tmp_path):
    docs = tmp_path / "in"
    write_corpus(docs, 2, seed=6)
    env = _env(tmp_path)
    assert docqa(["run", str(docs), "-q", "Where?", "--top-k", "2", "--model", TINY_MODEL], env).returncode == 0
    status = json.loads(docqa(["status", "--format", "json"], env).stdout)
    assert status["counts"]["done"] == 2 and status["failures"] == []
    csv_out = docqa(["results", "--format", "csv", "--all-ranks"], env).stdout.splitlines()
    assert csv_out[0].startswith("answer_id,document_id,")
    assert len(csv_out) == 1 + 4  # header + 2 documents x top 2
    best = docqa(["results"], env).stdout.splitlines()  # each job's best answer by default
    assert [json.loads(line)["rank"] for line in best] == [0, 0]
    follow = docqa(["results", "--follow", "--until-done", "--interval", "0.1", "--all-ranks"], env, timeout=60,
                   process=True)  # a process: it waits by design, and the timeout bounds it
    assert follow.returncode == 0 and len(follow.stdout.splitlines()) == 4
    both = docqa(["results", "--rank", "1", "--all-ranks"], env)
    assert both.returncode == 2 and "--all-ranks" in both.stderr


def test_jobs_of_an_interrupted_run_are_resumed_without_waiting_for_the_lease(tmp_path):
    import subprocess
    import sys

    from docqa.storage.db import upgrade
    from docqa.core.settings import Settings

    docs = tmp_path / "in"
    [path] = write_corpus(docs, 1, seed=12)
    env = _env(tmp_path)
    url = env["DOCQA_DATABASE_URL"]
    upgrade(url)
    repo = open_repo(url)
    doc = repo.add_document(path.read_bytes().decode("utf-8"), source=str(path))
    [(job_id, _)] = repo.add_jobs(doc.id, ["Who watched?"], model=TINY_MODEL, revision=None,
                                  params=Settings().answer_params())
    code = "from docqa.worker.identity import worker_name; print(worker_name())"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert repo.claim([job_id], worker=dead, lease_seconds=900)  # as if that process was killed mid-run

    run = docqa(["run", str(docs), "-q", "Who watched?", "--model", TINY_MODEL], env)
    assert run.returncode == 0, run.stderr
    assert "1 answered now" in run.stdout
    assert repo.counts()["done"] == 1


def test_questions_over_the_character_limit_are_refused_by_name(tmp_path):
    docs = tmp_path / "in"
    write_corpus(docs, 1, seed=3)
    (docs / "batch.jsonl").write_text(
        json.dumps({"id": "long-q", "text": prose(40, seed=9), "questions": ["why " * 300]}) + "\n", encoding="utf-8"
    )
    env = _env(tmp_path)
    run = docqa(["run", str(docs), "-q", "Where?", "--model", TINY_MODEL], env)
    assert run.returncode == 3  # exits.SKIPPED: answered, but an input was skipped
    assert "batch.jsonl:1: a question of 1,199 characters is over the limit of 1,000" in run.stderr
    refused = docqa(["run", str(docs), "-q", "x" * 1001, "--model", TINY_MODEL], env)
    assert refused.returncode == 2 and "over the limit of 1,000" in refused.stderr
    status = docqa(["status", "--no-broker"], env)
    assert status.returncode == 0 and "done: 2" in status.stdout  # the good questions were answered


def test_changed_files_and_ids_become_new_versions_and_results_show_the_latest(tmp_path):
    docs = tmp_path / "in"
    docs.mkdir()
    (docs / "a.txt").write_text(prose(40, seed=21), encoding="utf-8")
    (docs / "b.txt").write_text(prose(40, seed=22), encoding="utf-8")
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"id": "r1", "text": prose(30, seed=23), "metadata": {"lang": "en"}}) + "\n",
                       encoding="utf-8")
    env = _env(tmp_path)
    ask = ["-q", "Where does the river flow?", "--model", TINY_MODEL]
    first = docqa(["run", str(docs), str(records), *ask], env)
    assert first.returncode == 0, first.stderr
    # Again, unchanged: nothing new, nothing changed, nothing answered.
    same = docqa(["run", str(docs), str(records), *ask], env)
    assert same.returncode == 0 and "3 documents (0 new;" in same.stdout and "0 answered now" in same.stdout
    # One file and the JSONL id get new content; the other file stays.
    (docs / "a.txt").write_text(prose(40, seed=31), encoding="utf-8")
    records.write_text(json.dumps({"id": "r1", "text": prose(30, seed=33), "metadata": {"lang": "de"}}) + "\n",
                       encoding="utf-8")
    second = docqa(["run", str(docs), str(records), *ask], env)
    assert second.returncode == 0, second.stderr
    assert "3 documents (2 new, 2 changed;" in second.stdout and "2 answered now" in second.stdout

    latest = [json.loads(line) for line in docqa(["results"], env).stdout.splitlines()]
    assert len(latest) == 3 and not any(r["superseded"] for r in latest)
    assert sorted(r["document_version"] for r in latest) == [1, 2, 2]
    every = [json.loads(line) for line in docqa(["results", "--all-versions"], env).stdout.splitlines()]
    assert len(every) == 5 and sorted(r["document_version"] for r in every if r["superseded"]) == [1, 1]
    # By path (relative, as given) or id: the latest version unless all are asked for.
    (a_latest,) = [json.loads(x) for x in docqa(["results", "--document", str(docs / "a.txt")], env).stdout.splitlines()]
    assert a_latest["document_version"] == 2
    r1 = docqa(["results", "--document", "r1", "--all-versions"], env).stdout.splitlines()
    assert [(json.loads(x)["document_version"], json.loads(x)["document_metadata"]["lang"]) for x in r1] == [
        (1, "en"), (2, "de")]
    assert [json.loads(x)["document_external_id"] for x in docqa(["results", "--where", "lang=de"], env).stdout.splitlines()] == ["r1"]
    bad = docqa(["results", "--where", "lang"], env)
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr


def test_windows_shows_the_plan_fixed_at_submit(tmp_path):
    text = prose(900, seed=71)
    (tmp_path / "long.txt").write_text(text, encoding="utf-8")
    env = _env(tmp_path)
    ask = ["-q", "Where does the river flow?", "--model", TINY_MODEL, "--max-seq-len", "128", "--doc-stride", "32"]
    assert docqa(["run", str(tmp_path / "long.txt"), *ask], env).returncode == 0
    out = docqa(["windows", "--document", str(tmp_path / "long.txt"), "--show-text"], env)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) > 3 and [r["window_index"] for r in rows] == list(range(len(rows)))
    assert all(text[r["char_start"]:r["char_end"]] == r["text"] for r in rows)
    assert rows[0]["char_start"] == 0 and rows[-1]["char_end"] == len(text.rstrip())
    assert all(a["token_end"] - b["token_start"] == 32 for a, b in zip(rows, rows[1:]))  # doc_stride tokens shared
    # The answers came from those windows.
    (answer,) = [json.loads(line) for line in docqa(["results"], env).stdout.splitlines()]
    window = rows[answer["window_index"]]
    assert (answer["window_char_start"], answer["window_char_end"]) == (window["char_start"], window["char_end"])
    readable = docqa(["windows", "--document", str(tmp_path / "long.txt"), "--format", "text"], env)
    assert readable.returncode == 0 and f"{len(rows)} windows" in readable.stdout
    missing = docqa(["windows", "--document", "nothing-by-that-name"], env)
    assert missing.returncode == 1 and "no document is named" in missing.stderr


def test_jsonl_lines_the_store_would_refuse_are_skipped_by_name(tmp_path, postgres_url):
    """NUL characters, lone surrogates, overlong ids and infinite numbers are reported per
    line before anything is stored; the good lines are answered (PostgreSQL refuses an
    index entry for a 3,000-character id: it used to stop the submission half-way)."""
    lines = [
        json.dumps({"id": "good", "text": prose(40, seed=1)}),
        json.dumps({"id": "x" * 3000, "text": prose(40, seed=2)}),
        json.dumps({"id": "nul", "text": "before\u0000after, a river"}),
        '{"id": "surrogate", "text": "a lone \\ud800 half"}',
        '{"id": "inf", "text": "the river flows", "metadata": {"depth": Infinity}}',
        json.dumps({"id": "good-2", "text": prose(40, seed=3)}),
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = dict(_env(tmp_path), DOCQA_DATABASE_URL=postgres_url)
    run = docqa(["run", str(tmp_path / "in.jsonl"), "-q", "Where does the river flow?", "--model", TINY_MODEL], env)
    assert run.returncode == 3, run.stderr  # done, with inputs skipped
    assert "Traceback" not in run.stderr
    assert "in.jsonl:2: its id has 3,000 characters, over the limit of 512" in run.stderr
    assert "in.jsonl:3: its text" in run.stderr and "NUL" in run.stderr
    assert "in.jsonl:4: its text" in run.stderr and "surrogate" in run.stderr
    assert "in.jsonl:5: its metadata: inf is not a finite number" in run.stderr
    ids = {json.loads(r)["document_external_id"] for r in docqa(["results"], env).stdout.splitlines()}
    assert ids == {"good", "good-2"}
