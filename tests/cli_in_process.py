"""`docqa ARGS` run through `docqa.cli.main` inside the test process, with what a process of
its own would have had: its environment, working folder, stdin, stdout and stderr, and
signal handlers, all put back afterwards.

Why: a `docqa` process spends 1.6-4 CPU-seconds importing torch and transformers before it
does anything, and the suite runs a few hundred of them; in the test process those imports
are paid once. What only a process can show stays a process (`subprocess.run`): exit at a
closed pipe, signals, `--follow` killed midway, the `console()` exit path, an environment
read at import time (HF_HUB_OFFLINE). Workers and servers are always processes.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_docqa(args: Sequence[str], env: Mapping[str, str] | None = None, *, cwd=None, input: str | None = None,
              process: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
    """`docqa ARGS` in this process (`docqa_in_process`), or with process=True in a process of
    its own (`python -m docqa`), whose status is what `sys.exit` made of main()'s: for
    signals, pipes, what a process reads at import, and a command that waits by design
    (`--follow`), which `timeout` then bounds (a command in this process has no bound)."""
    if not process:
        return docqa_in_process(args, env, cwd=cwd, input=input)
    return subprocess.run([sys.executable, "-m", "docqa", *map(str, args)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, input=input, check=False)


def docqa_in_process(args: Sequence[str], env: Mapping[str, str] | None = None, *, cwd=None,
                     input: str | bytes | None = None) -> subprocess.CompletedProcess:
    """Run `docqa ARGS` in this process; the result reads like `subprocess.run(..., text=True,
    capture_output=True)`'s. `env` replaces the whole environment for the call (None: this
    process's); an exception the command lets out is printed as Python would, status 1."""
    from docqa.cli import main
    from docqa.cli.options import close_stores

    data = input.encode() if isinstance(input, str) else (input or b"")
    stdout, stderr = _capture(), _capture()
    with _environment(env, cwd), _streams(io.TextIOWrapper(io.BytesIO(data)), stdout, stderr), _handlers():
        try:
            status = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help, --version, a usage error
            status = _exit_status(exc.code)
        except BaseException:  # what the interpreter would print on its way out
            traceback.print_exc()
            status = 1
        finally:
            close_stores()
    return subprocess.CompletedProcess(["docqa", *map(str, args)], status, _text(stdout), _text(stderr))


def _capture() -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    return stream.buffer.getvalue().decode("utf-8", errors="replace")  # type: ignore[attr-defined]


def _exit_status(code) -> int:
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


@contextmanager
def _environment(env: Mapping[str, str] | None, cwd):
    saved, here = dict(os.environ), os.getcwd()
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def _streams(stdin, stdout, stderr):
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
    # A process of its own prints its warnings on stderr (logging's last resort); under
    # pytest the root logger has pytest's handlers, so that handler is added for the call.
    last_resort = logging.StreamHandler(stderr)
    last_resort.setLevel(logging.WARNING)
    logging.getLogger().addHandler(last_resort)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(last_resort)
        sys.stdin, sys.stdout, sys.stderr = saved


@contextmanager
def _handlers():
    """run, submit and schedule make SIGTERM (and schedule SIGINT) stop them: undone afterwards."""
    saved = {number: signal.getsignal(number) for number in _SIGNALS}
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
