"""The drop-in `docqa.pipeline("question-answering", model=...)` gives transformers 5.2.0's
answers for every model family of tests/fixtures/families (goldens: tests/golden/families)."""

from __future__ import annotations

import pytest
from golden_answers import FAMILIES, FAMILY_TEMPLATE, assert_reference_answers, family_goldens

import docqa

GOLDENS = family_goldens()


@pytest.fixture(scope="module")
def pipelines():
    made = {}

    def get(name: str):
        if name not in made:
            made[name] = docqa.pipeline("question-answering", model=str(FAMILIES / name), device="cpu")
        return made[name]

    return get


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_the_drop_in_gives_the_5_2_answers(pipelines, name):
    qa = pipelines(name)
    extra = {"pair_template": FAMILY_TEMPLATE[name]} if name in FAMILY_TEMPLATE else {}
    for case in GOLDENS[name]["cases"]:
        out = qa(question=case["question"], context=case["context"], **case["params"], **extra)
        answers = [out] if isinstance(out, dict) else out
        assert_reference_answers([(a["answer"], a["start"], a["end"], a["score"]) for a in answers], case)


def test_the_drop_in_takes_a_left_padding_tokenizer_object_as_5_2_did(pipelines):
    """A tokenizer passed as an object keeps its own padding side: XLNet's class pads left,
    so the context goes first (5.2.0 decided by the same attribute)."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    folder = str(FAMILIES / "xlnet")
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.padding_side == "left"
    qa = docqa.pipeline("question-answering", model=AutoModelForQuestionAnswering.from_pretrained(folder),
                        tokenizer=tok, device="cpu")
    case = next(c for c in GOLDENS["xlnet"]["cases"] if c["category"] == "prose")
    want = pipelines("xlnet")(question=case["question"], context=case["context"], **case["params"],
                              pair_template="transformers-5.2")
    got = qa(question=case["question"], context=case["context"], **case["params"], pair_template="transformers-5.2")
    assert got == want


def test_an_unknown_pair_template_is_refused_by_name(pipelines):
    with pytest.raises(ValueError, match="pair_template must be one of checkpoint, transformers-5.2"):
        pipelines("roberta")(question="Who?", context="Ada wrote it.", pair_template="5.2")
