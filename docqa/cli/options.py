"""What the commands share: option groups, settings from flags, errors, the store and broker.

Every flag that sets a `Settings` field is made here from the field itself (its name,
type, choices, description and default), so `--help`, the DOCQA_* variable and the
setting can never disagree. Heavy modules (SQLAlchemy, Celery, torch) are imported by
the functions that need them, so `docqa --help` and `docqa status` start fast.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
import weakref
from typing import Any, Literal

from docqa.cli import exits
from docqa.core.params import AnswerParams
from docqa.core.errors import DocqaError
from docqa.core.settings import FILE_FIELDS, Settings, env_name, file_env_name


class CliError(DocqaError):
    """A problem the user can fix; printed as one line (no traceback), exiting with `status`."""

    def __init__(self, message: str, status: int = exits.USAGE) -> None:
        super().__init__(message)
        self.status = self.exit_status = status


# -- flags made from Settings fields ---------------------------------------------------
def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_help(name: str) -> str:
    field = Settings.model_fields[name]
    default = field.default
    shown = "unset" if default is None else (str(default).lower() if isinstance(default, bool) else default)
    text = f"{field.description} (default {shown}; env {env_name(name)})"
    return text.replace("`", "").replace("%", "%%")  # argparse formats help with %


def add_setting(group, name: str, *flags: str, **kwargs: Any) -> None:
    """Add the flag of Settings field `name` (default None: only a given flag overrides)."""
    annotation = Settings.model_fields[name].annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is Literal:
        kwargs.setdefault("choices", list(typing.get_args(annotation)))
    elif annotation is bool:
        kwargs.setdefault("action", argparse.BooleanOptionalAction)
    elif annotation in (int, float):
        kwargs.setdefault("type", annotation)
    kwargs.setdefault("help", _field_help(name))
    group.add_argument(*(flags or (flag_of(name),)), dest=name, default=None, **kwargs)


def add_model_options(p: argparse.ArgumentParser, *, compute: bool = True) -> None:
    g = p.add_argument_group("model")
    add_setting(g, "model", metavar="MODEL")
    add_setting(g, "revision", metavar="REV")
    if compute:
        add_setting(g, "device", metavar="DEVICE")
        add_setting(g, "dtype")
        add_setting(g, "quantize")
        add_setting(g, "fast")
        add_setting(g, "batch_tokens", metavar="N")
        add_setting(g, "span_path")
        add_setting(g, "trim_seconds", metavar="S")
        add_setting(g, "pad_buckets")
        add_setting(g, "compile")


def add_answer_options(p: argparse.ArgumentParser) -> None:
    """One flag per AnswerParams field; defaults are transformers' pipeline's."""
    g = p.add_argument_group("answers (defaults are transformers' question-answering pipeline's)")
    for name in AnswerParams.model_fields:
        add_setting(g, name, metavar="N" if Settings.model_fields[name].annotation is int else None)
    # Kept from docqa 0.1: the name users know for --no-merge-by-text.
    g.add_argument("--keep-occurrences", dest="merge_by_text", action="store_false", default=None,
                   help="same as --no-merge-by-text (env DOCQA_MERGE_BY_TEXT=false)")


def add_store_option(p: argparse.ArgumentParser) -> None:
    add_setting(p, "database_url", metavar="URL")


def add_broker_options(p: argparse.ArgumentParser) -> None:
    add_setting(p, "broker_url", metavar="URL")
    add_setting(p, "queue", metavar="NAME")


def build_settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags the user gave."""
    overrides = {k: getattr(args, k) for k in Settings.model_fields if getattr(args, k, None) is not None}
    warn_passwords_in_argv(overrides, getattr(args, "command", None))
    try:
        return Settings(**overrides)
    except Exception as exc:  # pydantic ValidationError: name the bad setting
        raise CliError(f"invalid configuration: {_validation_text(exc)}") from None


def url_has_password(url: str) -> bool:
    """True when `url` carries a password (`scheme://user:PASSWORD@host`, or `?password=`)."""
    from urllib.parse import parse_qs, urlsplit

    try:
        parts = urlsplit(url)
        return bool(parts.password) or "password" in parse_qs(parts.query)
    except ValueError:
        return False


def warn_passwords_in_argv(overrides: dict[str, Any], command: str | None) -> None:
    """Warn on stderr for each URL flag that carries a password: any user of the host can read
    a process's arguments (`ps`), but not its environment or a file only it may read."""
    for name in FILE_FIELDS:
        value = overrides.get(name)
        if isinstance(value, str) and url_has_password(value):
            print(f"docqa{' ' + command if command else ''}: warning: the password in {flag_of(name)} is visible "
                  f"to every user of this host in the process list (ps); set {env_name(name)} instead, or "
                  f"{file_env_name(name)} to a file that holds the URL", file=sys.stderr)


def answer_params(settings: Settings) -> AnswerParams:
    try:
        return settings.answer_params()
    except Exception as exc:
        raise CliError(f"invalid answer parameters: {_validation_text(exc)}") from None


def _validation_text(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for e in errors():
        loc = ".".join(map(str, e.get("loc", ()))) or "parameters"
        where = f"{flag_of(loc)} (env {env_name(loc)})" if loc in Settings.model_fields else loc
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


# -- store and broker ---------------------------------------------------------------------
def open_repo(settings: Settings, *, create: bool = True):
    """The store's Repository, schema created (or, with create=False, required) and checked.

    Commands that only read (status, results, health) pass create=False: they never
    leave an empty store behind where there was none. CliError if the store is unusable.
    """
    import os

    from docqa.storage.db import SCHEMA_HEAD, StoreError, current_revision, ensure_schema, make_engine, session_factory
    from docqa.storage.repository import Repository

    url = settings.database_url
    parsed = _store_url(url)
    try:
        if not create and parsed.get_backend_name() == "sqlite" and parsed.database and not os.path.exists(parsed.database):
            raise CliError(
                f"there is no store at {safe_url(url)} (no such file): answer something first ('docqa run' or "
                "'docqa submit'), or point --database-url / DOCQA_DATABASE_URL at your store",
                status=exits.UNREACHABLE,
            )
        db = make_engine(url)
        _OPENED_STORES.add(db)
        if create:
            ensure_schema(db)
        else:
            revision = current_revision(db)
            if revision is None:
                raise CliError(f"{safe_url(url)} holds no docqa store (no schema): run 'docqa db upgrade' or "
                               "'docqa run'/'docqa submit' first", status=exits.UNREACHABLE)
            if revision != SCHEMA_HEAD:
                ensure_schema(db)  # an older docqa's store: migrated, as every command does
    except CliError:
        raise
    except StoreError as exc:
        raise CliError(str(exc), status=exits.UNREACHABLE) from None
    except Exception as exc:  # an unparsable URL, a bad port, a missing driver
        raise CliError(f"cannot open the store {safe_url(url)}: {type(exc).__name__}: {masked(str(exc), url)}",
                       status=exits.UNREACHABLE) from None
    return Repository(session_factory(db))


def _store_url(url: str):
    """The parsed URL of a store docqa can use; a usage error (2) for any other."""
    from sqlalchemy.engine import make_url

    usage = "give --database-url / DOCQA_DATABASE_URL as sqlite:///FILE or postgresql+psycopg://USER@HOST/DB"
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy's ArgumentError, or a bad port
        raise CliError(f"{safe_url(url)!r} is not a database URL ({masked(str(exc), url)}): {usage}",
                       status=exits.USAGE) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise CliError(f"docqa keeps its store in SQLite or PostgreSQL, not {parsed.get_backend_name()} "
                       f"({safe_url(url)!r}): {usage}", status=exits.USAGE)
    return parsed


# The stores this process opened with open_repo (weakly: one gone is closed already).
_OPENED_STORES: weakref.WeakSet = weakref.WeakSet()


def close_stores() -> None:
    """Close the connections of every store open_repo opened that is still alive (on SQLite
    the last close folds the write-ahead log back into the database file)."""
    for db in list(_OPENED_STORES):
        db.dispose()
    _OPENED_STORES.clear()


def connect_broker(settings: Settings):
    """docqa's Celery app, after checking that its broker answers (CliError if not)."""
    from docqa.worker.app import make_celery

    app = make_celery(settings)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        raise CliError(f"cannot reach the broker at {safe_url(settings.broker_url)}: "
                       f"{masked(str(exc), settings.broker_url)}", status=exits.UNREACHABLE) from None
    return app


def load_engine(settings, command: str | None = None):
    """A warm engine for `settings` (CliError with the reason when the model cannot load);
    with --fast, the mode it chose is said on stderr."""
    from docqa.worker.engine import Engine
    from docqa.worker.loading import ModelLoadError

    try:
        engine = Engine.from_settings(settings).warm_up()
    except ModelLoadError as exc:
        raise CliError(str(exc), status=exits.FAILED) from None
    say_fast_mode(engine, command)
    return engine


def say_fast_mode(engine, command: str | None = None) -> None:
    """With --fast, the mode the engine chose, in one line on stderr."""
    if engine.fast_note:
        print(f"docqa{' ' + command if command else ''}: {engine.fast_note}", file=sys.stderr)


def safe_url(url: str) -> str:
    """A URL fit to print: any password replaced (`docqa.storage.db.safe_url`, imported on use)."""
    from docqa.storage.db import safe_url as store_safe_url

    return store_safe_url(url)


def masked(text: str, url: str) -> str:
    """`text` (an exception's message) without `url`'s credentials (`docqa.storage.db.mask_secrets`)."""
    from docqa.storage.db import mask_secrets

    return mask_secrets(text, url)


# -- output ---------------------------------------------------------------------------------
def progress_line(message: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r" + message)
        sys.stderr.flush()


def progress_bar(total: int | None, unit: str, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not sys.stderr.isatty(), file=sys.stderr, leave=False)
