"""The README's Python example runs as written (from the repository root)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_python_api_example_runs(monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 (our own README)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6  # two questions, three answers each
    assert {line.split()[0] for line in lines} == {"Who", "How"}
    assert os.path.isdir(ROOT / "tests" / "fixtures" / "tiny-distilbert-qa")


def test_client_example_runs(monkeypatch, tmp_path, capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    code = next(b for b in blocks if "docqa.Client(" in b)
    # In a folder of its own (the example writes answers.db), seeing the repository's examples.
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 (our own README)
    out = capsys.readouterr().out.splitlines()
    assert "queued=0, running=0" in out[0] and "failed=0" in out[0]
    assert any(line.startswith("memo-7 Who signed? 0 ") for line in out)
    assert (tmp_path / "answers.db").exists()


@pytest.mark.slow
def test_http_delete_by_path_example_runs(tmp_path):
    """The README's curl that deletes a document by its file path, run as written against a
    real `docqa serve` on the store the quick start's `docqa run` filled."""
    import json
    import subprocess
    import sys
    import time

    import httpx

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Documents and texts", 1)[1]
    block = re.search(r"```bash\n(curl -s -X DELETE.*?)```", section, re.S).group(1)
    command, expected = block.split("\n# ", 1)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    env = dict(os.environ, HF_HUB_OFFLINE="1", DOCQA_API_TOKEN="readme-token-0123456789", DOCQA_DEVICE="cpu")
    env.pop("DOCQA_DATABASE_URL", None)
    quick = readme.split("## Quick start", 1)[1]
    run = re.search(r"(docqa run examples/documents [^&\n]*?)(?: &&|\n)", quick).group(1).split()
    assert subprocess.run([sys.executable, "-m", "docqa.cli", *run[1:]], cwd=tmp_path, env=env,
                          capture_output=True).returncode == 0
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "docqa", "serve", "--port", str(port), "--model",
                               str(ROOT / "tests" / "fixtures" / "tiny-distilbert-qa")], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
        out = subprocess.run(["bash", "-c", command.replace("8000", str(port))], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
    finally:
        server.terminate()
        server.wait(30)
    assert json.loads(out.stdout) == json.loads(expected.strip())


def test_corpus_question_example_runs(monkeypatch, tmp_path, capsys, tiny_model):
    """The README's ask_corpus example, on a store holding the HTTP example's memo."""
    import docqa

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Ask the whole corpus", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DOCQA_MODEL", tiny_model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    docqa.Client("sqlite:///docqa.db").submit(
        [{"id": "memo-7", "text": "Bob signed the memo.", "metadata": {"team": "ops"}},
         {"id": "memo-8", "text": "Ann signed the memo.", "metadata": {"team": "sales"}}], ["Who signed?"])
    exec(compile("import docqa\n" + code, "README.md", "exec"), {})  # noqa: S102 (our own README)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("memo-7 ")
