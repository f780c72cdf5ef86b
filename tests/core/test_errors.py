"""One error tree: every exception class docqa defines derives from DocqaError and says
its exit status and HTTP status."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from docqa.core.errors import FAILED, UNREACHABLE, USAGE, DocqaError, UsageError, first_line


def _docqa_modules() -> list[str]:
    """Every module of docqa (worker, producer and storage install from their own folders)."""
    import docqa.producer
    import docqa.storage
    import docqa.worker

    names = []
    for package in (docqa, docqa.worker, docqa.producer, docqa.storage):
        names += [info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    return sorted({n for n in names if ".migrations" not in n and not n.endswith("__main__")})


def _docqa_exception_classes() -> list[type]:
    found = []
    for name in _docqa_modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found.append(obj)
    return found


def test_every_exception_docqa_defines_is_a_docqa_error():
    classes = _docqa_exception_classes()
    assert len(classes) >= 15
    strays = [f"{c.__module__}.{c.__name__}" for c in classes if not issubclass(c, DocqaError)]
    assert not strays, strays


def test_the_statuses_follow_the_kind_and_built_in_bases_stay():
    from docqa.cli.options import CliError
    from docqa.client import SubmitError
    from docqa.core.loading import ModelLoadError
    from docqa.core.windows import WindowError
    from docqa.storage.errors import NotFound, StoreError

    assert (SubmitError.exit_status, SubmitError.http_status) == (USAGE, 422) and issubclass(SubmitError, ValueError)
    assert issubclass(WindowError, UsageError) and issubclass(WindowError, ValueError)
    assert (StoreError.exit_status, StoreError.http_status) == (UNREACHABLE, 503)
    assert (NotFound.exit_status, NotFound.http_status) == (FAILED, 404) and issubclass(NotFound, LookupError)
    assert ModelLoadError.exit_status == FAILED and issubclass(ModelLoadError, RuntimeError)
    assert CliError("x", status=UNREACHABLE).exit_status == UNREACHABLE


def test_first_line_quotes_another_librarys_error_in_one_line():
    assert first_line(ValueError("  bad port\nTraceback details")) == "bad port"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(OSError("no route"), with_type=True) == "OSError: no route"
    assert first_line(KeyError(), with_type=True) == "KeyError"
