"""Fail fast: before a worker consumes a single message it checks its store (reachable,
schema current, identity), its broker and its model; any failure stops it with the reason
and a non-zero exit, so a supervisor's restart policy sees it.

The model is loaded once in a process forked for the check: the worker's own process
imports the model's code (no torch operation), then forks the check, which inherits those
imports, loads and runs the model, and exits with its verdict. The worker's process never
runs torch, because it forks its pool afterwards and a process that has run torch must not
fork. Forking instead of starting a new interpreter saves the check importing torch and
transformers again: about 3.5 of the 8.5 CPU-seconds a worker start cost on a small CPU.
"""

from __future__ import annotations

import os
import signal
import time
from typing import NoReturn

from docqa.core.errors import first_line

# Set once the checks passed in this process (`docqa worker` runs them before Celery starts).
DONE = False
# Longest the model check may take, seconds (a first download of a large model included).
MODEL_CHECK_SECONDS = 900


def check(settings) -> str | None:
    """None when store, broker and model are usable; else a sentence saying which is not."""
    global DONE
    problem = (_check_store(settings) or _check_broker(settings) or _local_model_problem(settings)
               or _check_model(settings))
    DONE = problem is None
    return problem


def _check_store(settings) -> str | None:
    from docqa.storage.db import StoreError, ensure_schema, make_engine, session_factory
    from docqa.storage.repository import Repository

    try:
        db = make_engine(settings.database_url)
        ensure_schema(db)
        Repository(session_factory(db)).store_id()
        db.dispose()
    except StoreError as exc:
        return f"store: {exc}"
    except Exception as exc:
        return f"store: {first_line(exc, with_type=True)}"
    return None


def _check_broker(settings) -> str | None:
    from docqa.worker.app import make_celery

    try:
        with make_celery(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=2, interval_start=0.5)
    except Exception as exc:
        from docqa.storage.db import safe_url

        return f"broker: cannot reach {safe_url(settings.broker_url)} ({exc})"
    return None


def _check_model(settings) -> str | None:
    preload_model_code(settings.model)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the check: only this process runs the model
        os.close(read)
        _load_and_exit(settings, write)
    os.close(write)
    with os.fdopen(read, "rb") as verdict:
        status = _wait(pid, MODEL_CHECK_SECONDS)
        reason = verdict.read().decode("utf-8", "replace").strip()
    if status is None:
        return f"model: loading {settings.model!r} took over {MODEL_CHECK_SECONDS} s"
    if status < 0:
        return f"model: the model check died of {signal.Signals(-status).name} while loading {settings.model!r}"
    if status != 0:
        return f"model: {reason or f'the model check exited with status {status}'}"
    return None


def _local_model_problem(settings) -> str | None:
    """Why a model given as a local path cannot load (no such folder, no config, no weights),
    said before torch is imported: in half a second instead of three. A hub id is left to
    the check, so the hub is probed once."""
    from docqa.core.loading import ModelLoadError, locate_model, looks_like_path

    if not (os.path.exists(settings.model) or looks_like_path(settings.model)):
        return None
    try:
        locate_model(settings.model, settings.revision)
    except ModelLoadError as exc:
        return f"model: {exc}"
    return None


def _load_and_exit(settings, out: int) -> NoReturn:
    """In the forked check: load and warm up the model, write why not to `out`, and exit
    (status 0 when it loaded) without running the worker's exit handlers."""
    status = 3
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)  # libraries' warnings stay out of the worker's log
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        from docqa.worker.engine import Engine
        from docqa.worker.loading import ModelLoadError

        try:
            Engine.from_settings(settings).warm_up()
            status = 0
        except ModelLoadError as exc:
            os.write(out, str(exc).encode()[:4000])
        except Exception as exc:  # noqa: BLE001 - reported as the reason the worker cannot start
            os.write(out, first_line(exc, with_type=True).encode()[:4000])
    finally:
        os._exit(status)


def _wait(pid: int, seconds: float) -> int | None:
    """The exit status of child `pid` (negative: the signal that killed it), or None when it
    ran over `seconds`. Over time, or interrupted here, the child is killed; it is always reaped."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                pid = 0
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        return None
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def preload_model_code(model: str) -> None:
    """Import torch, transformers and the model's QA class here, before the pool forks, so each
    pool process inherits them instead of importing them again (about 2 s a process on a
    small CPU). Importing runs no torch operation, so forking afterwards stays safe; only
    running one would not. Best effort: a model whose config cannot be read here is checked,
    with its reason, by the model check."""
    try:
        import torch  # noqa: F401
        import transformers
        from transformers import AutoConfig, AutoModelForQuestionAnswering, PreTrainedTokenizerFast  # noqa: F401
        from transformers.models.auto.modeling_auto import MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES as names

        import docqa.worker.engine  # noqa: F401

        config = AutoConfig.from_pretrained(model, local_files_only=True)
        getattr(transformers, names[config.model_type])
    except Exception:  # noqa: BLE001 - only an optimisation; the check says what is wrong
        pass
