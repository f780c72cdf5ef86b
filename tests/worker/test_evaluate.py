"""The official SQuAD v1.1 metric, and `docqa eval` on a fixture scored by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from docqa.cli import main
from docqa.worker.evaluate import DatasetError, exact_match, f1, load_squad, normalize_answer, score

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "squad" / "tiny_squad.json"


def test_normalisation_follows_the_official_script():
    assert normalize_answer("The  Eiffel-Tower, in   Paris!") == "eiffeltower in paris"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_exact_match_and_f1_by_hand():
    assert exact_match("the Paris", "Paris") == 1.0
    assert exact_match("Paris France", "Paris") == 0.0
    # pred {berlin}, gold {berlin, germany}: precision 1, recall 1/2 -> F1 2/3
    assert f1("Berlin", "Berlin Germany") == pytest.approx(2 / 3)
    # pred {a b c d} vs gold {c d e}: 2 common, P=2/4, R=2/3 -> F1 = 4/7
    assert f1("w x c d", "c d e") == pytest.approx(4 / 7)
    assert f1("", "Paris") == 0.0


def test_missing_prediction_scores_zero_and_best_gold_counts():
    qs = load_squad(FIXTURE)
    preds = {"exact": "Paris", "best-of-golds": "Rome"}
    figures = score(qs, preds)
    assert figures["total"] == 6
    assert figures["exact_match"] == pytest.approx(100 * 2 / 6)


def test_docqa_eval_on_the_hand_checked_fixture(tiny_model, capsys):
    # Every context is one word, so whatever the weights the prediction is that word
    # (align_to_words widens any span to it), and the last question is too long to
    # answer: a missing prediction. By hand:
    #   exact 1/1, article-dropped 1/1, wrong 0/0, half-recall 0/(2/3),
    #   best-of-golds 1/1, no-prediction 0/0
    #   EM = 3/6 = 50.0 ; F1 = (3 + 2/3)/6 = 61.11
    status = main(["eval", str(FIXTURE), "--model", tiny_model, "--device", "cpu"])
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert status == 0
    assert out["total"] == 6
    assert out["exact_match"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(100 * (3 + 2 / 3) / 6)
    assert out["skipped_questions"] == 1
    [skipped] = out["skipped"]
    assert skipped["id"] == "no-prediction" and "too long" in skipped["reason"]
    # ...and named on stderr, with why it scores 0
    assert "1 question skipped, each scored 0" in captured.err
    assert "no-prediction (" in captured.err and "too long" in captured.err


def test_a_file_that_is_not_squad_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"nope": 1}')
    with pytest.raises(DatasetError, match='"data" list'):
        load_squad(bad)


@pytest.mark.slow
def test_docqa_eval_refuses_a_file_without_questions(tmp_path, tiny_model):
    import subprocess
    import sys

    empty = tmp_path / "empty.json"
    empty.write_text('{"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Text.", "qas": []}]}]}')
    out = subprocess.run([sys.executable, "-m", "docqa", "eval", str(empty), "--model", tiny_model],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2, out  # an error, not EM 0.0
    assert "holds no questions" in out.stderr and "nothing to score" in out.stderr
    assert out.stdout == "" and "Traceback" not in out.stderr
