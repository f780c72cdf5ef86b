"""Settings and answer parameters are declared once; everything else follows from them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from docqa.cli import build_parser
from docqa.core.params import IDENTITY_FIELDS_V1, AnswerParams
from docqa.core.settings import (
    FILE_FIELDS,
    Settings,
    env_name,
    file_env_name,
    settings_table,
)

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _options(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {s for action in sub.choices[command]._actions for s in action.option_strings}


@pytest.mark.parametrize("command", ["ask", "eval", "run", "submit"])
def test_every_answer_parameter_has_a_flag_on_every_answering_command(command):
    options = _options(command)
    for name, field in AnswerParams.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in options, f"docqa {command} has no {flag}"
        if field.annotation is bool:
            assert "--no-" + name.replace("_", "-") in options


def test_every_answer_parameter_is_a_setting_with_the_same_default_and_bounds(monkeypatch):
    for name, field in AnswerParams.model_fields.items():
        setting = Settings.model_fields[name]
        assert (setting.default, setting.description, setting.metadata) == (field.default, field.description, field.metadata)
    monkeypatch.setenv("DOCQA_TOP_K", "3")
    monkeypatch.setenv("DOCQA_ALIGN_TO_WORDS", "false")
    params = Settings().answer_params()
    assert (params.top_k, params.align_to_words) == (3, False)
    monkeypatch.setenv("DOCQA_TOP_K", "0")
    with pytest.raises(ValueError, match="top_k"):
        Settings()


def test_flags_override_the_environment(monkeypatch):
    from docqa.cli.options import build_settings

    monkeypatch.setenv("DOCQA_TOP_K", "3")
    monkeypatch.setenv("DOCQA_MAX_SEQ_LEN", "256")
    args = build_parser().parse_args(["run", "x.txt", "--top-k", "5", "--no-align-to-words", "--keep-occurrences"])
    settings = build_settings(args)
    assert (settings.top_k, settings.max_seq_len, settings.align_to_words, settings.merge_by_text) == (5, 256, False, False)


def test_the_readme_table_is_the_settings_table():
    assert settings_table() in README, "regenerate the table: python -m docqa.core.settings"
    documented = set(re.findall(r"`(DOCQA_[A-Z_]+)`", README.split("## Configuration", 1)[1].split("\n## ", 1)[0]))
    # Every setting, and the DOCQA_<NAME>_FILE variables of those that may carry a password.
    assert documented == {env_name(n) for n in Settings.model_fields} | {file_env_name(n) for n in FILE_FIELDS}


def test_no_module_reads_a_docqa_variable_outside_settings():
    reads = re.compile(r"(environ\.get|getenv|environ\[)\(?\s*[\"']DOCQA_")
    offenders = []
    for folder in ("docqa", "worker", "producer", "storage"):
        for path in (ROOT / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if reads.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders


def test_a_new_answer_parameter_at_its_default_keeps_every_job_identity():
    """Adding a field must not silently re-run every stored job: at its default the digest
    is the one stored before the field existed; set otherwise, it is a new identity."""

    class WithNewKnob(AnswerParams):
        new_knob: int = 7

    base = AnswerParams(top_k=3)
    assert WithNewKnob(top_k=3).digest() == base.digest()
    assert WithNewKnob(top_k=3, new_knob=8).digest() != base.digest()
    # The first fields always count, default or not, as they did when jobs were first stored.
    assert set(AnswerParams.model_fields) >= IDENTITY_FIELDS_V1
    assert '"top_k":1' in AnswerParams().canonical_json()


def test_the_identity_of_the_first_parameter_set_is_unchanged():
    # The digest stored with every job before this layout; it must never move.
    assert AnswerParams().canonical_json() == (
        '{"align_to_words":true,"doc_stride":128,"handle_impossible_answer":false,'
        '"max_answer_len":15,"max_seq_len":384,"merge_by_text":true,"top_k":1}'
    )
