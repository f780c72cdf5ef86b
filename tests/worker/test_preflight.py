"""The worker's model check runs in a forked process: how its end is read (`_wait`)."""

from __future__ import annotations

import faulthandler
import os
import signal
import time

from docqa.worker.preflight import _wait


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
