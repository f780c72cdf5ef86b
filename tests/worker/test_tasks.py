"""Worker-process set-up that needs no broker: thread sharing, JSON-only app, message schema."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from docqa.worker.app import TASK_NAME, make_celery
from docqa.core.message import JobMessage
from docqa.core.settings import Settings
from docqa.worker.tasks import torch_threads


def test_threads_share_the_cores_between_pool_processes(monkeypatch):
    assert torch_threads(1, cores=2) == 2
    assert torch_threads(2, cores=2) == 1
    assert torch_threads(4, cores=2) == 1  # never zero
    assert torch_threads(2, cores=16) == 8
    monkeypatch.setenv("DOCQA_TORCH_THREADS", "3")
    assert torch_threads(2, cores=16, override=Settings().torch_threads) == 3


def test_app_accepts_json_only_and_acknowledges_late():
    app = make_celery(Settings(broker_url="redis://127.0.0.1:6379/15"))
    conf = app.conf
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    import docqa.worker.tasks  # noqa: F401  (registers the task on the module's app)
    from docqa.worker.app import app as module_app

    assert TASK_NAME in module_app.tasks


def test_messages_carry_a_schema_version_and_refuse_unknown_ones():
    msg = JobMessage(job_ids=[1, 2])
    assert msg.model_dump(mode="json") == {"schema_version": 2, "job_ids": [1, 2], "store_id": None}
    assert JobMessage.model_validate({"schema_version": 1, "job_ids": [1]}).store_id is None  # older producers
    with pytest.raises(ValidationError, match="schema_version 3 is not supported"):
        JobMessage.model_validate({"schema_version": 3, "job_ids": [1]})
    with pytest.raises(ValidationError):
        JobMessage.model_validate({"schema_version": 2, "job_ids": []})
    with pytest.raises(ValidationError):
        JobMessage.model_validate({"schema_version": 1, "job_ids": [1], "pickle": "x"})


@pytest.mark.slow
def test_producer_modules_import_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, docqa.producer.submit, docqa.producer.documents, docqa.core.message, docqa.worker.app, docqa.storage.repository; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
