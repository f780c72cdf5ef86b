"""Credentials in store and broker URLs never reach a message (issue 18, item 13): the
password of the userinfo (also with an unencoded `@` in it) and credential query parameters."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from docqa.storage.db import failure_reason, mask_secrets, safe_url, url_secrets


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://docqa:hunter2@db:5432/q", "postgresql://docqa:***@db:5432/q"),
        ("postgresql://u@h/db?password=s3cr3t", "postgresql://u@h/db?password=***"),
        ("postgresql://u@h/db?sslmode=require&PASSWORD=s3cr3t", "postgresql://u@h/db?sslmode=require&PASSWORD=***"),
        ("redis://h:6379/0?password=s3cr3t", "redis://h:6379/0?password=***"),
        ("rediss://h:6379/0?ssl_cert_reqs=required&passwd=s3cr3t",
         "rediss://h:6379/0?ssl_cert_reqs=required&passwd=***"),
        ("redis://h/0?token=s3cr3t&pass=s3cr3t&secret=s3cr3t&api_key=s3cr3t",
         "redis://h/0?token=***&pass=***&secret=***&api_key=***"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@ss@w@rd@h:5432/db?password=x1y2", "postgresql://u:***@h:5432/db?password=***"),
        ("redis://:s3cr3t@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://u:bad:port@h:notaport/db", "postgresql://u:***@h:notaport/db"),
        ("postgresql://u:s3cr3t@h/db#frag", "postgresql://u:***@h/db#frag"),
        ("sqlite:///data/docqa.db", "sqlite:///data/docqa.db"),
        ("sqlite:////abs/a@b.db", "sqlite:////abs/a@b.db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_safe_url_hides_every_credential_form(url: str, shown: str) -> None:
    assert safe_url(url) == shown
    for secret in url_secrets(url):
        assert secret not in safe_url(url)


def test_safe_url_of_a_parsed_url_and_of_an_engine_url() -> None:
    parsed = make_url("postgresql+psycopg://u@h/db?password=s3cr3t")
    assert "s3cr3t" not in safe_url(parsed) and safe_url(parsed).endswith("password=***")
    assert safe_url(make_url("postgresql://u:p@ss@h/db")) == "postgresql://u:***@h/db"


def test_url_secrets_lists_each_credential() -> None:
    assert url_secrets("postgresql://u:p@ss@h/db?password=q&sslmode=require") == ["p@ss", "q"]
    assert url_secrets("postgresql://u@h/db") == []
    assert url_secrets("postgresql://u:pa%40ss@h/db") == ["pa%40ss", "pa@ss"]


def test_driver_messages_lose_the_secrets_of_their_url() -> None:
    # psycopg, given SQLAlchemy's reading of an unencoded @ (password "p", host "ss@h"), names that host.
    url = "postgresql://u:p@ss@127.0.0.1:1/db?password=s3cr3t"
    text = mask_secrets("failed to resolve host 'ss@127.0.0.1': password s3cr3t, p@ss", url)
    assert "s3cr3t" not in text and "ss@" not in text and "p@ss" not in text
    assert text == "failed to resolve host '***@127.0.0.1': password ***, ***"

    class Orig(Exception):
        pass

    from sqlalchemy.exc import OperationalError

    exc = OperationalError("SELECT 1", {}, Orig("auth failed for s3cr3t at ss@127.0.0.1\nDETAIL: more"))
    assert failure_reason(exc, url) == "auth failed for *** at ***@127.0.0.1"
    assert failure_reason(exc, make_url(url)) == "auth failed for *** at ***@127.0.0.1"
