"""The README's Python example runs as written (from the repository root)."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_python_api_example_runs(monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 (our own README)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6  # two questions, three answers each
    assert {line.split()[0] for line in lines} == {"Who", "How"}
    assert os.path.isdir(ROOT / "tests" / "fixtures" / "tiny-distilbert-qa")
