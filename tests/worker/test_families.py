"""Model families other than DistilBERT give transformers 5.2.0's answers.

tests/fixtures/families holds small random-weight QA checkpoints of several families
(tests/fixtures/build_family_models.py); tests/golden/families/<name>.json holds what
transformers 5.2.0's pipeline answered for them (tests/golden/make_golden.py --family).
"""

from __future__ import annotations

import json
import shutil

import pytest
from golden_answers import FAMILIES, assert_reference_answers, family_goldens, family_params

from docqa.core.params import AnswerParams
from docqa.core.tokenizer import load_tokenizer
from docqa.core.windows import tokenize_document
from docqa.producer.chunking import Chunker
from docqa.worker.engine import Engine, QAItem
from docqa.worker.parts import decode_windows, encode_windows
from docqa.worker.spans import merge_answers

GOLDENS = family_goldens()
CONTEXT_ONLY = family_goldens("families-context-only")
CASES = [(name, case) for name, doc in GOLDENS.items() for case in doc["cases"]]


def test_goldens_cover_the_families_the_readme_lists():
    assert set(GOLDENS) >= {"bert-uncased", "roberta", "xlm-roberta", "albert", "electra", "deberta-v2", "xlnet"}
    for name, doc in GOLDENS.items():
        assert doc["transformers_version"] == "5.2.0", name
        assert sum(1 for c in doc["cases"] if c["n_windows"] >= 3) >= 5, name
        params = [c["params"] for c in doc["cases"]]
        assert {p["top_k"] for p in params} >= {1, 3, 5} and {p["handle_impossible_answer"] for p in params} == {
            True, False}, name
    assert GOLDENS["xlnet"]["padding_side"] == "left"  # the context-first family


@pytest.fixture(scope="module")
def engines():
    """name, reference_spans -> an engine of that family (reference_spans: the drop-in's)."""
    made: dict[tuple, Engine] = {}

    def get(name: str, reference_spans: bool = False) -> Engine:
        if (name, reference_spans) not in made:
            made[name, reference_spans] = Engine(str(FAMILIES / name), device="cpu", reference_spans=reference_spans)
        return made[name, reference_spans]

    return get


def run_cases(engine: Engine, name: str, cases: list[dict]):
    return engine.run([QAItem(c["context"], c["question"], AnswerParams(**family_params(name, c["params"])))
                       for c in cases])


@pytest.fixture(scope="module")
def results(engines):
    return {name: run_cases(engines(name, reference_spans=True), name, doc["cases"]) for name, doc in GOLDENS.items()}


@pytest.mark.parametrize("name,index", [(n, i) for n, doc in GOLDENS.items() for i in range(len(doc["cases"]))],
                         ids=[f"{n}-{c['id']}" for n, c in CASES])
def test_answers_equal_the_reference(results, name, index):
    case, res = GOLDENS[name]["cases"][index], results[name][index]
    assert res.ok, res.error
    assert res.n_windows == case["n_windows"]
    assert_reference_answers([(a.text, a.char_start, a.char_end, a.score) for a in res.answers], case)


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_the_producers_window_plans_are_the_reference_windows(name):
    """The producer fixes each job's windows at submit with the same loader and template."""
    chunker = Chunker.load(str(FAMILIES / name))
    for case in GOLDENS[name]["cases"]:
        p = AnswerParams(**family_params(name, case["params"]))
        plan = chunker.plan(chunker.tokenize(case["context"]), case["question"], p)
        assert [list(w) for w in plan.spans] == case["windows"], case["id"]


GOLDENS_4 = family_goldens("families-4.57")


@pytest.mark.parametrize("name", sorted(GOLDENS_4))
def test_the_checkpoint_template_gives_what_transformers_4_gave(engines, name):
    """The default (pair_template=checkpoint) feeds what the checkpoint says, as transformers
    4.x did and as the models were fine-tuned: 4.57.6's answers, where 5.2.0's differ."""
    doc = GOLDENS_4[name]
    assert doc["transformers_version"].startswith("4.")
    results = engines(name).run([QAItem(c["context"], c["question"], AnswerParams(**c["params"]))
                                 for c in doc["cases"]])
    for case, res in zip(doc["cases"], results):
        assert res.ok and res.n_windows == case["n_windows"], case["id"]
        assert_reference_answers([(a.text, a.char_start, a.char_end, a.score) for a in res.answers], case)


@pytest.mark.parametrize("name", sorted(CONTEXT_ONLY))
def test_stored_answers_of_a_context_first_model_are_spans_of_the_document(engines, name):
    """Without the drop-in's reference spans, only context tokens start or end a span: 5.2.0's
    arithmetic with that mask (make_golden.py --context-only), every answer a document span."""
    cases = CONTEXT_ONLY[name]["cases"]
    for case, res in zip(cases, run_cases(engines(name), name, cases)):
        assert res.ok and res.n_windows == case["n_windows"], case["id"]
        assert_reference_answers([(a.text, a.char_start, a.char_end, a.score) for a in res.answers], case)
        assert all(0 <= a.char_start <= a.char_end <= len(case["context"]) for a in res.answers)


def test_xlnet_puts_the_context_first_and_spans_may_fall_on_question_tokens(engines):
    engine = engines("xlnet", reference_spans=True)
    template = engine.template()
    assert not template.question_first
    assert engine.tokenizer.convert_ids_to_tokens(list(template.suffix))[-1] == "<cls>"  # CLS last
    # The reference allowed every token of a context-first window: some golden answers map
    # through question tokens (their offsets are the question's, start after end).
    odd = [a for c in GOLDENS["xlnet"]["cases"] for a in c["answers"] if a["start"] > a["end"]]
    assert odd, "the goldens no longer exercise spans over question tokens"


def test_a_split_context_first_job_merges_to_the_whole_jobs_answers(engines):
    """Parts keep the question layout a context-first window's spans need."""
    engine = engines("xlnet", reference_spans=True)
    case = next(c for c in GOLDENS["xlnet"]["cases"] if c["n_windows"] >= 4)
    params = AnswerParams(**case["params"])
    whole = engine.run([QAItem(case["context"], case["question"], params)])[0]
    n = whole.n_windows
    parts = engine.run([QAItem(case["context"], case["question"], params, window_range=r)
                        for r in ((0, n // 2), (n // 2, n))])
    windows = [w for part in parts for w in decode_windows(encode_windows(part.windows))]
    doc = tokenize_document(engine.tokenizer, case["context"])
    merged = merge_answers(case["context"], windows, doc.offsets, doc.word_ids, params)
    assert [(a.text, a.char_start, a.char_end, a.score) for a in merged] == [
        (a.text, a.char_start, a.char_end, a.score) for a in whole.answers]


def test_xlm_roberta_checkpoint_template_is_the_default_and_differs_from_5_2(engines):
    engine = engines("xlm-roberta")
    checkpoint, five_two = engine.template(), engine.template(AnswerParams(pair_template="transformers-5.2"))
    tokens = engine.tokenizer.convert_ids_to_tokens
    assert tokens(list(checkpoint.middle)) == ["</s>", "</s>"]  # tokenizer.json: <s> q </s></s> c </s>
    assert tokens(list(five_two.middle)) == ["</s>"]  # transformers 5.2.0's class: <s> q </s> c </s>
    cases = GOLDENS["xlm-roberta"]["cases"]
    got = engine.run([QAItem(c["context"], c["question"], AnswerParams(**c["params"])) for c in cases])
    same = sum(1 for c, r in zip(cases, got)
               if [(a.text, a.char_start) for a in r.answers] == [(a["answer"], a["start"]) for a in c["answers"]])
    assert same < len(cases), "the checkpoint's template should change some answers"


def test_a_tokenizer_class_that_disagrees_with_tokenizer_json_is_reported_and_the_file_wins(tmp_path, caplog):
    """A checkpoint whose tokenizer.json joins pairs unlike its class: docqa says so at load
    and answers with the file's template."""
    folder = tmp_path / "odd-bert"
    shutil.copytree(FAMILIES / "bert-uncased", folder)
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}},
                 {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
        "special_tokens": {t: {"id": t, "ids": [spec["model"]["vocab"][t]], "tokens": [t]} for t in ("[CLS]", "[SEP]")},
    }
    (folder / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with caplog.at_level("WARNING", logger="docqa.core.tokenizer"):
        qat = load_tokenizer(str(folder), compare_class=True)
    if qat.disagreement is None:
        pytest.skip("the installed transformers loads tokenizer.json as it is for BERT: nothing disagrees")
    assert "[CLS] Q [SEP][SEP] C [SEP]" in qat.disagreement and "docqa uses the checkpoint's" in qat.disagreement
    assert qat.disagreement in caplog.text
    assert qat.template().n_special == 4
    engine = Engine(str(folder), device="cpu")
    assert engine.tokenizer_note == qat.disagreement
    assert engine.run([QAItem("Ada wrote it in 1843.", "Who wrote it?")])[0].ok


def test_a_checkpoint_without_tokenizer_json_is_loaded_by_its_class_and_says_so(tmp_path, caplog):
    """Old checkpoints ship only vocab files: the installed class builds the tokenizer (its
    answers may then change with the transformers release), and the log says so."""
    from transformers import AutoTokenizer

    folder = tmp_path / "vocab-only"
    folder.mkdir()
    vocab = AutoTokenizer.from_pretrained(str(FAMILIES / "bert-uncased")).get_vocab()
    (folder / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                              "do_lower_case": True}), encoding="utf-8")
    shutil.copy(FAMILIES / "bert-uncased" / "config.json", folder)
    with caplog.at_level("WARNING", logger="docqa.core.tokenizer"):
        qat = load_tokenizer(str(folder), compare_class=True)
    assert qat.source == "class" and "has no tokenizer.json" in caplog.text
    assert qat.template().describe(qat.hf) == "[CLS] Q [SEP] C [SEP]"
