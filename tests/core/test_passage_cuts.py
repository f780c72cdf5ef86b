"""How texts are cut into passages for retrieval, and how a question becomes an FTS5 query."""

from __future__ import annotations

import random

import pytest

from docqa.core.passages import PASSAGE_CHARS, fts5_query, query_words, split_passages


@pytest.mark.parametrize("seed", range(20))
def test_passages_cover_the_text_end_to_end_and_stay_within_the_size(seed):
    rng = random.Random(seed)
    words = ["river", "Zürich", "東京", "a", "\n\n", "naïve", "x" * 700, "👩‍👩‍👧", "\t"]
    text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 600)))
    ranges = split_passages(text)
    assert "".join(text[s:e] for s, e in ranges) == text
    assert all(0 < e - s <= PASSAGE_CHARS for s, e in ranges)
    # Cut after whitespace wherever the last 120 characters before the limit hold some.
    for s, e in ranges[:-1]:
        if e - s < PASSAGE_CHARS:
            assert text[e - 1] in " \n"


def test_an_empty_text_has_no_passages_and_the_size_must_be_positive():
    assert split_passages("") == []
    with pytest.raises(ValueError, match="at least 1"):
        split_passages("text", 0)


def test_a_question_becomes_quoted_words_without_stopwords_or_operators():
    assert query_words("Where does the River Seine flow? the river!") == ["river", "seine", "flow"]
    assert fts5_query('NEAR(a b) OR "x" AND y* -z') == '"near" OR "b" OR "x" OR "y" OR "z"'
    assert fts5_query("東京 café") == '"東京" OR "café"'
    assert fts5_query("the? a! ...") is None
