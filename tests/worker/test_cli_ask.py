"""`docqa ask`: JSON answers with offsets; one clear sentence for every user error."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from docqa.cli import main

DOC = "The tower was finished in 1889.\n\nIt stands in Paris, near the river Seine.  Café naïve 東京.\n"


def test_ask_prints_answers_whose_offsets_slice_the_document(tmp_path, tiny_model, capsys):
    f = tmp_path / "doc.txt"
    f.write_text(DOC, encoding="utf-8")
    status = main(["ask", "--model", tiny_model, "-q", "Where does it stand?", "-q", "When?", "--top-k", "3", str(f)])
    out = json.loads(capsys.readouterr().out)
    assert status == 0
    assert [r["question"] for r in out["results"]] == ["Where does it stand?", "When?"]
    for r in out["results"]:
        assert 1 <= len(r["answers"]) <= 3
        for a in r["answers"]:
            assert DOC[a["char_start"] : a["char_end"]] == a["text"]
            assert {"score", "window_index", "token_start", "start_logit", "end_logit"} <= a.keys()


def test_ask_reads_standard_input(tiny_model, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(DOC.encode())))
    assert main(["ask", "--model", tiny_model, "-q", "Where?", "-"]) == 0
    out = json.loads(capsys.readouterr().out)
    a = out["results"][0]["answers"][0]
    assert DOC[a["char_start"] : a["char_end"]] == a["text"]


@pytest.mark.parametrize(
    "content,expected",
    [
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR", "binary file"),
        (b"caf\xe9 au lait", "not valid UTF-8"),
    ],
)
def test_ask_refuses_unusable_files_in_one_line(tmp_path, tiny_model, capsys, content, expected):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    assert main(["ask", "--model", tiny_model, "-q", "What?", str(f)]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(f) in err
    assert err.count("\n") == 1


def test_ask_rejects_bad_parameters_by_name(tmp_path, tiny_model, capsys):
    f = tmp_path / "doc.txt"
    f.write_text(DOC)
    assert main(["ask", "--model", tiny_model, "-q", "What?", "--doc-stride", "400", str(f)]) == 2
    assert "doc_stride (400) must be smaller than max_seq_len (384)" in capsys.readouterr().err
    assert main(["ask", "--model", tiny_model, "-q", "What?", "--top-k", "0", str(f)]) == 2
    assert "--top-k (env DOCQA_TOP_K): Input should be greater than or equal to 1" in capsys.readouterr().err


@pytest.mark.slow
def test_unknown_model_is_one_sentence_without_traceback(tmp_path):
    f = tmp_path / "doc.txt"
    f.write_text(DOC)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "docqa.cli", "ask", "--model", "acme/missing-qa-model", "-q", "What?", str(f)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "acme/missing-qa-model" in proc.stderr and "--model PATH" in proc.stderr
    assert proc.stdout == ""
