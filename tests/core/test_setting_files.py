"""URLs that carry a password come from a file (DOCQA_<NAME>_FILE, e.g. a Docker secret)
rather than from argv, where every user of the host can read them with `ps`."""

from __future__ import annotations

import pytest

from docqa.cli import main
from docqa.core.settings import Settings

PASSWORD = "s3cret-Pw"


@pytest.fixture(autouse=True)
def _no_url_variables(monkeypatch):
    for name in ("DOCQA_BROKER_URL", "DOCQA_BROKER_URL_FILE", "DOCQA_DATABASE_URL", "DOCQA_DATABASE_URL_FILE"):
        monkeypatch.delenv(name, raising=False)


def test_a_url_is_read_from_the_file_its_variable_names(tmp_path, monkeypatch):
    broker = tmp_path / "broker_url"
    broker.write_text(f"rediss://:{PASSWORD}@redis.example:6380/0?ssl_cert_reqs=required\n")  # as `echo` leaves it
    database = tmp_path / "database_url"
    database.write_text(f"  postgresql+psycopg://docqa:{PASSWORD}@db.example/docqa?sslmode=require  ")
    monkeypatch.setenv("DOCQA_BROKER_URL_FILE", str(broker))
    monkeypatch.setenv("DOCQA_DATABASE_URL_FILE", str(database))
    settings = Settings()
    assert settings.broker_url == f"rediss://:{PASSWORD}@redis.example:6380/0?ssl_cert_reqs=required"
    assert settings.database_url == f"postgresql+psycopg://docqa:{PASSWORD}@db.example/docqa?sslmode=require"
    # A keyword argument (what a flag becomes) wins over the file, which is then not even read.
    broker.unlink()
    assert Settings(broker_url="redis://other:6379/1").broker_url == "redis://other:6379/1"


@pytest.mark.parametrize("case", ["missing", "empty", "both"])
def test_a_bad_url_file_is_a_one_line_error_naming_the_variable_and_the_file(case, tmp_path, monkeypatch, capsys):
    path = tmp_path / "broker_url"
    if case != "missing":
        path.write_text("\n" if case == "empty" else "redis://127.0.0.1:6379/0")
    if case == "both":
        monkeypatch.setenv("DOCQA_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("DOCQA_BROKER_URL_FILE", str(path))
    status = main(["status", "--database-url", f"sqlite:///{tmp_path / 'docqa.db'}"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    expected = {
        "missing": f"DOCQA_BROKER_URL_FILE={path}: cannot read it (No such file or directory)",
        "empty": f"DOCQA_BROKER_URL_FILE={path}: the file is empty",
        "both": "both DOCQA_BROKER_URL and DOCQA_BROKER_URL_FILE are set: set only one of them",
    }[case]
    assert expected in err, err


def test_a_password_given_on_the_command_line_is_warned_about_and_not_echoed(tmp_path, capsys):
    missing_store = f"sqlite:///{tmp_path / 'none.db'}"
    main(["status", "--database-url", missing_store, "--broker-url", f"redis://:{PASSWORD}@127.0.0.1:1/0"])
    err = capsys.readouterr().err
    assert "warning: the password in --broker-url is visible to every user of this host" in err, err
    assert "set DOCQA_BROKER_URL instead, or DOCQA_BROKER_URL_FILE" in err
    assert PASSWORD not in err

    main(["status", "--database-url", f"postgresql+psycopg://docqa:{PASSWORD}@127.0.0.1:1/docqa"])
    err = capsys.readouterr().err
    assert "the password in --database-url" in err and "DOCQA_DATABASE_URL_FILE" in err, err
    assert PASSWORD not in err

    # No password, no warning.
    main(["status", "--database-url", missing_store, "--broker-url", "redis://127.0.0.1:1/0"])
    assert "warning" not in capsys.readouterr().err
