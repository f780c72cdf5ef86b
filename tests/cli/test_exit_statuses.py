"""Exit statuses agree with the README's table: the usage errors through real `docqa` processes,
the rest through `docqa.cli.main` in the test process."""

from __future__ import annotations


import pytest
from cli_in_process import run_docqa

from docqa.cli import exits


def docqa(args, cwd, env=None, *, process=False):
    """`docqa ARGS` run from `cwd`: in this process, or with process=True a real one (tests/cli_in_process.py)."""
    return run_docqa(args, env, cwd=cwd, process=process, timeout=180)


@pytest.mark.slow
@pytest.mark.parametrize("url", ["mysql://root@localhost/test", "not a url", "redis://127.0.0.1:6379/0"])
def test_a_database_url_docqa_cannot_use_is_a_usage_error(tmp_path, url):
    out = docqa(["status", "--no-broker", "--database-url", url], tmp_path, process=True)
    assert out.returncode == exits.USAGE, out.stderr
    assert ("is not a database URL" in out.stderr or "docqa keeps its store in SQLite or PostgreSQL" in out.stderr)
    assert "sqlite:///FILE" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_retry_names_the_jobs_it_did_not_retry(tmp_path, tiny_model):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    (tmp_path / "doc.txt").write_text("The mill stood by the river until 1901.", encoding="utf-8")
    assert docqa(["run", "doc.txt", "-q", "When?", "--model", tiny_model, "--database-url", url],
                 tmp_path).returncode == exits.OK
    none = docqa(["retry", "--here", "--job", "99999", "--database-url", url], tmp_path)
    assert none.returncode == exits.FAILED
    assert "job 99999 not retried: there is no such job" in none.stderr
    done = docqa(["retry", "--here", "--job", "1", "--database-url", url], tmp_path)
    assert done.returncode == exits.FAILED and "job 1 not retried: it is done, not failed" in done.stderr


@pytest.mark.slow
@pytest.mark.services
def test_status_of_a_distributed_store_with_its_broker_down_is_unreachable(tmp_path, postgres_url):
    assert docqa(["db", "upgrade", "--database-url", postgres_url], tmp_path).returncode == exits.OK
    down = docqa(["status", "--database-url", postgres_url, "--broker-url", "redis://127.0.0.1:1/0"], tmp_path)
    assert down.returncode == exits.UNREACHABLE, down.stderr
    assert "not reachable" in down.stdout  # what the store says is printed all the same
    skipped = docqa(["status", "--no-broker", "--database-url", postgres_url], tmp_path)
    assert skipped.returncode == exits.OK, skipped.stderr


@pytest.mark.slow
def test_a_run_whose_only_input_does_not_exist_is_a_usage_error_and_stores_nothing(tmp_path, tiny_model):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    out = docqa(["run", "missing.txt", "-q", "Who?", "--model", tiny_model, "--database-url", url], tmp_path)
    assert out.returncode == exits.USAGE
    assert "no input exists: missing.txt: no such file or directory" in out.stderr
    assert not (tmp_path / "store.db").exists()
    (tmp_path / "doc.txt").write_text("The mill stood by the river until 1901.", encoding="utf-8")
    some = docqa(["run", "missing.txt", "doc.txt", "-q", "Who?", "--model", tiny_model, "--database-url", url], tmp_path)
    assert some.returncode == exits.SKIPPED and "missing.txt: no such file or directory" in some.stderr
