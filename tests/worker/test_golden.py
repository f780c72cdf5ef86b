"""docqa gives the answers transformers 5.2.0's question-answering pipeline gave.

tests/golden/golden.json holds the pipeline's outputs for the tiny model, made by
tests/golden/make_golden.py in a virtualenv with transformers 5.2.0 (see its header).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from golden_answers import assert_reference_answers
from transformers import AutoTokenizer

from docqa.core.windows import plan_windows, tokenize_document
from docqa.worker.engine import QAItem
from docqa.core.params import AnswerParams

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "golden" / "golden.json").read_text(encoding="utf-8"))
CASES = GOLDEN["cases"]


def test_golden_set_covers_what_matters():
    assert GOLDEN["transformers_version"] == "5.2.0"
    assert len(CASES) >= 100
    assert sum(1 for c in CASES if c["n_windows"] >= 3) >= 20
    params = [c["params"] for c in CASES]
    assert {p["top_k"] for p in params} >= {1, 5}
    assert {p["handle_impossible_answer"] for p in params} == {True, False}
    assert {p["align_to_words"] for p in params} == {True, False}
    assert len({p["max_answer_len"] for p in params}) >= 3
    text = "".join(c["context"] for c in CASES)
    for needle in ("é", "東", "👩\u200d👩", "e\u0301", "\u200b", "  ", "\n\n"):
        assert needle in text, needle


@pytest.fixture(scope="module")
def results(engine):
    items = [QAItem(c["context"], c["question"], AnswerParams(**c["params"])) for c in CASES]
    return engine.run(items)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c["id"] for c in CASES])
def test_answers_equal_the_reference(results, index):
    case, res = CASES[index], results[index]
    assert res.ok, res.error
    assert res.n_windows == case["n_windows"]
    assert_reference_answers([(a.text, a.char_start, a.char_end, a.score) for a in res.answers], case)


def test_windows_are_the_reference_windows(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    checked = Counter()
    for case in CASES:
        doc = tokenize_document(tok, case["context"])
        q = len(tok(case["question"], add_special_tokens=False)["input_ids"])
        p = case["params"]
        windows = plan_windows(len(doc), q, max_seq_len=p["max_seq_len"], doc_stride=p["doc_stride"])
        assert [list(w) for w in windows] == case["windows"], case["id"]
        checked[len(windows) >= 3] += 1
    assert checked[True] >= 20


def test_device_span_path_gives_the_same_positive_answers(tiny_model, results):
    """The GPU's span path (run here on CPU tensors) agrees with the exact path on every case,
    except for the zero-score filler spans only the exact path reproduces."""
    from docqa.worker.engine import Engine

    engine = Engine(tiny_model, device="cpu", span_path="device")
    assert engine.span_path == "device"
    items = [QAItem(c["context"], c["question"], AnswerParams(**c["params"])) for c in CASES]
    device = engine.run(items)
    for case, exact, dev in zip(CASES, results, device):
        want = [(a.text, a.char_start, a.char_end) for a in exact.answers if a.score > 0]
        got = [(a.text, a.char_start, a.char_end) for a in dev.answers if a.score > 0]
        assert got == want, case["id"]
        for a in dev.answers:
            assert case["context"][a.char_start : a.char_end] == a.text
