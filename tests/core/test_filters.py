"""One meaning of `where` for the CLI, HTTP and the Python client."""

import pytest

from docqa.core.filters import parse_where, where_text


def test_parse_where_keeps_the_value_as_written_and_strips_the_key() -> None:
    assert parse_where(["lang=en", " year =2024", "note=a=b", "empty="]) == {
        "lang": "en", "year": "2024", "note": "a=b", "empty": "",
    }
    assert parse_where(None) == {} and parse_where([]) == {}


@pytest.mark.parametrize("bad", ["lang", "=en", "  =en"])
def test_parse_where_names_the_malformed_item(bad: str) -> None:
    with pytest.raises(ValueError, match="write KEY=VALUE") as err:
        parse_where(["ok=1", bad])
    assert repr(bad) in str(err.value)


def test_where_text_compares_non_strings_as_json() -> None:
    assert where_text({"lang": "en", "year": 2024, "draft": False, "score": 1.5}) == {
        "lang": "en", "year": "2024", "draft": "false", "score": "1.5",
    }
    assert where_text(None) is None
