"""Windows are slices of one tokenization, and exactly the windows the reference builds."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from docqa.core.windows import WindowError, plan_windows, tokenize_document, tokenize_documents


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def _prose(n_words: int, seed: int) -> str:
    rng = random.Random(seed)
    vocab = "the tower was built in Paris by Gustave Eiffel café naïve 東京 engineers iron 1889 , . ( )".split()
    return " ".join(rng.choice(vocab) for _ in range(n_words))


def _reference_windows(tokenizer, question, context, max_seq_len, doc_stride):
    """Context token ids of each window, as the tokenizer's own overflow encoding makes them."""
    enc = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=max_seq_len,
        stride=doc_stride,
        return_overflowing_tokens=True,
        padding="do_not_pad",
    )
    out = []
    for i in range(len(enc["input_ids"])):
        seq = enc.sequence_ids(i)
        out.append([t for t, s in zip(enc["input_ids"][i], seq) if s == 1])
    return out


@pytest.mark.parametrize("n_words", [1, 5, 80, 300, 301, 1000, 2500])
@pytest.mark.parametrize("max_seq_len,doc_stride", [(384, 128), (128, 32), (64, 16), (256, 100)])
def test_windows_equal_the_tokenizers_overflow_windows(tokenizer, n_words, max_seq_len, doc_stride):
    context = _prose(n_words, seed=n_words)
    question = "Who built the tower in Paris?"
    doc = tokenize_document(tokenizer, context)
    q_len = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    windows = plan_windows(len(doc), q_len, max_seq_len=max_seq_len, doc_stride=doc_stride)
    expected = _reference_windows(tokenizer, question, context, max_seq_len, doc_stride)
    assert [doc.ids[s:e].tolist() for s, e in windows] == expected
    # every context token is in at least one window, and neighbours share doc_stride tokens
    covered = set()
    for s, e in windows:
        covered.update(range(s, e))
        assert e - s <= max_seq_len - q_len - 3
    assert covered == set(range(len(doc)))
    for (_s0, e0), (s1, _e1) in zip(windows, windows[1:]):
        assert e0 - s1 == doc_stride


def test_offsets_point_into_the_original_text(tokenizer):
    text = "  Zürich\u200b café\t\tnaïve e\u0301 東京 👩\u200d👩\u200d👧 end.\n\n"
    doc = tokenize_document(tokenizer, text)
    assert len(doc) > 0
    for (s, e), tid in zip(doc.offsets.tolist(), doc.ids.tolist()):
        assert 0 <= s <= e <= len(text)
        assert text[s:e].strip() != "" or tid == tokenizer.unk_token_id
    assert doc.word_ids.min() >= 0


def test_batch_tokenization_equals_one_at_a_time(tokenizer):
    texts = [_prose(n, seed=n) for n in (3, 50, 700)]
    for one, many in zip([tokenize_document(tokenizer, t) for t in texts], tokenize_documents(tokenizer, texts)):
        assert one.ids.tolist() == many.ids.tolist()
        assert one.offsets.tolist() == many.offsets.tolist()


def test_question_too_long_names_the_numbers():
    with pytest.raises(WindowError, match=r"question is too long.*400 tokens.*max_seq_len 384"):
        plan_windows(1000, 400, max_seq_len=384, doc_stride=128)


def test_stride_not_smaller_than_budget_names_the_numbers():
    # question of 300 tokens leaves 81 context tokens per window; stride 128 cannot work
    with pytest.raises(WindowError, match=r"doc_stride \(128\) must be smaller than the context budget.*81 tokens"):
        plan_windows(1000, 300, max_seq_len=384, doc_stride=128)


def test_stride_is_irrelevant_when_one_window_holds_the_document():
    # The reference answers such inputs (no truncation happens), so docqa does too.
    assert plan_windows(50, 300, max_seq_len=384, doc_stride=128) == [(0, 50)]


def test_empty_document_and_question_are_refused():
    with pytest.raises(WindowError, match="document is empty"):
        plan_windows(0, 5)
    with pytest.raises(WindowError, match="question is empty"):
        plan_windows(10, 0)


def test_slow_tokenizer_is_refused():
    from docqa.core.windows import require_fast

    class Slow:
        is_fast = False

    with pytest.raises(WindowError, match="not a fast tokenizer"):
        require_fast(Slow())
