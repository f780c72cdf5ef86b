"""Offsets in UTF-16 code units and UTF-8 bytes select the same text as code points do."""

from __future__ import annotations

import pytest

from docqa.core.offsets import convert, record_converter, record_in_unit

TEXT = "Zoë met 👩‍👩‍👧 at the café (e\u0301) near 東京 🚀 station."


@pytest.mark.parametrize("answer", ["station", "東京", "🚀", "👩‍👩‍👧", "e\u0301", "café"])
def test_each_unit_selects_the_same_answer(answer):
    start = TEXT.index(answer)
    end = start + len(answer)
    utf16 = TEXT.encode("utf-16-le")
    s16, e16 = convert(TEXT, start, "utf16"), convert(TEXT, end, "utf16")
    assert utf16[2 * s16 : 2 * e16].decode("utf-16-le") == answer
    utf8 = TEXT.encode("utf-8")
    s8, e8 = convert(TEXT, start, "utf8"), convert(TEXT, end, "utf8")
    assert utf8[s8:e8].decode("utf-8") == answer
    assert convert(TEXT, start, "codepoints") == start


def test_astral_characters_shift_utf16_offsets_and_combining_marks_do_not():
    rocket = TEXT.index("🚀")
    family = TEXT.index("👩")
    assert convert(TEXT, rocket, "utf16") == rocket + 3  # three astral women before it (ZWJs are BMP)
    mark = TEXT.index("\u0301")
    assert convert(TEXT, mark, "utf16") == mark + 3 and convert(TEXT, family, "utf16") == family
    record = {"char_start": rocket, "char_end": rocket + 1, "window_char_start": 0, "window_char_end": None}
    out = record_in_unit(record, TEXT, "utf16")
    assert out == {"char_start": rocket + 3, "char_end": rocket + 5, "window_char_start": 0,
                   "window_char_end": None, "offset_unit": "utf16"}
    with pytest.raises(ValueError, match="unknown offset unit"):
        convert(TEXT, 0, "utf32")


class _Record:
    def __init__(self, text_id: int, start: int, end: int) -> None:
        self.text_id, self.start, self.end = text_id, start, end

    def as_dict(self) -> dict:
        return {"char_start": self.start, "char_end": self.end, "window_char_start": None, "window_char_end": None}


def test_a_record_converter_reads_each_text_once_and_names_a_text_that_is_gone():
    reads = []

    def text_of(text_id: int):
        reads.append(text_id)
        return TEXT if text_id == 1 else None

    rocket = TEXT.index("🚀")
    to_utf8 = record_converter("utf8", text_of)
    assert to_utf8(_Record(1, rocket, rocket + 1))["char_start"] == len(TEXT[:rocket].encode("utf-8"))
    to_utf8(_Record(1, 0, 3))
    assert reads == [1]
    with pytest.raises(LookupError, match="text 2 was deleted"):
        to_utf8(_Record(2, 0, 1))
    assert record_converter("codepoints", text_of)(_Record(1, 0, 3)) == _Record(1, 0, 3).as_dict()
    assert reads == [1, 2]  # code points need no text
