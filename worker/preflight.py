"""Fail fast: before a worker consumes a single message it checks its store (reachable,
schema current, identity), its broker and its model; any failure stops it with the reason
and a non-zero exit, so a supervisor's restart policy sees it.

The model is loaded once in a separate Python process: the worker's own process forks
its pool afterwards, and a process that has run torch must not fork. Meanwhile the
worker's process imports the model's code (no torch operation), for its pool to inherit.
"""

from __future__ import annotations

from docqa.core.errors import first_line

import os
import subprocess
import sys

# Set once the checks passed in this process (`docqa worker` runs them before Celery starts).
DONE = False
# Longest the model check may take, seconds (a first download of a large model included).
MODEL_CHECK_SECONDS = 900

_LOAD = (
    "import sys\n"
    "from docqa.core.settings import Settings\n"
    "from docqa.worker.engine import Engine\n"
    "from docqa.worker.loading import ModelLoadError\n"
    "try:\n"
    "    Engine.from_settings(Settings()).warm_up()\n"
    "except ModelLoadError as exc:\n"
    "    print(exc, file=sys.stderr); sys.exit(3)\n"
)


def check(settings) -> str | None:
    """None when store, broker and model are usable; else a sentence saying which is not."""
    global DONE
    problem = _check_store(settings) or _check_broker(settings) or _check_model(settings)
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
    from docqa.core.settings import env_name, file_env_name

    env = dict(os.environ)
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is not None and not hasattr(value, "get_secret_value"):  # secrets stay where they were
            env[env_name(name)] = str(value)
            env.pop(file_env_name(name), None)  # DOCQA_<NAME>_FILE beside DOCQA_<NAME> would be refused
    check = subprocess.Popen([sys.executable, "-c", _LOAD], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    preload_model_code(settings.model)  # on the other core, while the check loads the model
    try:
        _, err = check.communicate(timeout=MODEL_CHECK_SECONDS)
    except subprocess.TimeoutExpired:
        check.kill()
        check.communicate()
        return f"model: loading {settings.model!r} took over {MODEL_CHECK_SECONDS} s"
    if check.returncode != 0:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        return f"model: {lines[-1] if lines else f'the model check exited with status {check.returncode}'}"
    return None


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
