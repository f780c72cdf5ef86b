"""Character offsets in other units, for consumers in other languages.

docqa's offsets are Python `str` indices (Unicode code points), end exclusive. Java,
JavaScript and Elasticsearch count UTF-16 code units (an emoji outside the Basic
Multilingual Plane is two); byte-oriented consumers count UTF-8 bytes. Combining marks
are code points of their own in every unit, so only astral characters (UTF-16) and
non-ASCII characters (UTF-8) shift offsets.
"""

from __future__ import annotations

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
