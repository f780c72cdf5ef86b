"""Character offsets in other units, for consumers in other languages.

docqa's offsets are Python `str` indices (Unicode code points), end exclusive. Java,
JavaScript and Elasticsearch count UTF-16 code units (an emoji outside the Basic
Multilingual Plane is two); byte-oriented consumers count UTF-8 bytes. Combining marks
are code points of their own in every unit, so only astral characters (UTF-16) and
non-ASCII characters (UTF-8) shift offsets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

UNITS = ("codepoints", "utf16", "utf8")


def convert(text: str, offset: int, unit: str) -> int:
    """`offset` (a code point index into `text`) in `unit`."""
    if unit == "codepoints":
        return offset
    if unit == "utf16":
        # One code unit per code point, plus one more for each astral one before `offset`.
        return offset + sum(1 for ch in text[:offset] if ord(ch) > 0xFFFF)
    if unit == "utf8":
        return len(text[:offset].encode("utf-8", errors="surrogatepass"))
    raise ValueError(f"unknown offset unit {unit!r}; use one of {', '.join(UNITS)}")


# Offset fields of an answer record.
OFFSET_FIELDS = ("char_start", "char_end", "window_char_start", "window_char_end")


def record_in_unit(record: dict, text: str, unit: str) -> dict:
    """A result record (as a dict) with its offsets in `unit` and `offset_unit` naming it."""
    if unit == "codepoints":
        return {**record, "offset_unit": unit}
    out = dict(record)
    for name in OFFSET_FIELDS:
        if out.get(name) is not None:
            out[name] = convert(text, out[name], unit)
    out["offset_unit"] = unit
    return out


# Stored texts a record converter keeps at most before it starts over.
TEXTS_KEPT = 256


def record_converter(unit: str, text_of: Callable[[int], str | None]) -> Callable[[Any], dict]:
    """A function from an answer record (`as_dict()`, `text_id`) to its dict, offsets in
    `unit`. Other units than code points need the record's text: `text_of` reads each one
    once (kept until over TEXTS_KEPT are); LookupError when a text is gone (deleted, with its
    answers, after the record was read)."""
    if unit == "codepoints":
        return lambda rec: rec.as_dict()
    texts: dict[int, str] = {}

    def convert_record(rec: Any) -> dict:
        if rec.text_id not in texts:
            if len(texts) > TEXTS_KEPT:
                texts.clear()
            text = text_of(rec.text_id)
            if text is None:
                raise LookupError(f"text {rec.text_id} was deleted while its answers were being read")
            texts[rec.text_id] = text
        return record_in_unit(rec.as_dict(), texts[rec.text_id], unit)

    return convert_record
