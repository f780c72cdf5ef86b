"""The worker's model check runs in a forked process: how its end is read (`_wait`); and a
local model folder that cannot load is named before that, without torch."""

from __future__ import annotations

import faulthandler
import os
import signal
import time

from docqa.core.settings import Settings
from docqa.worker.preflight import _local_model_problem, _wait


def _child(action) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            action()
        finally:
            os._exit(0)
    return pid


def test_the_checks_exit_status_and_the_signal_that_killed_it_are_told_apart():
    assert _wait(_child(lambda: os._exit(3)), 30) == 3
    assert _wait(_child(lambda: None), 30) == 0
    assert _wait(_child(_crash), 30) == -signal.SIGSEGV


def _crash() -> None:
    faulthandler.disable()  # pytest's would print the child's stack
    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_check_over_its_time_is_killed_and_reaped():
    pid = _child(lambda: time.sleep(60))
    started = time.monotonic()
    assert _wait(pid, 0.3) is None
    assert time.monotonic() - started < 10
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # reaped: what must hold
    else:
        raise AssertionError("the timed-out check was not reaped")


def test_a_local_model_folder_that_cannot_load_is_named_and_a_hub_id_is_left_to_the_check(tmp_path, tiny_model):
    def problem(model: str) -> str | None:
        return _local_model_problem(Settings(model=model))

    (tmp_path / "empty").mkdir()
    assert "there is no such folder" in problem(str(tmp_path / "gone"))
    assert "holds no model (no config.json" in problem(str(tmp_path / "empty"))
    assert problem(str(tmp_path / "empty")).startswith("model: ")
    assert problem(tiny_model) is None
    assert problem("acme/not-cached-qa-model") is None  # a hub id: the forked check probes the hub, once
