"""The README's Python example runs as written (from the repository root)."""

from __future__ import annotations

import os
import re
from pathlib import Path

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
