"""Worker names are unique across processes and machines that share a host name; only
provably dead processes of this machine, boot and PID namespace are called dead."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from docqa.worker.identity import boot_id, dead_local_workers, machine, pid_namespace, start_ticks, worker_name


def test_names_are_unique_even_in_one_process():
    names = {worker_name() for _ in range(100)}
    assert len(names) == 100
    host, pid, place, rand = next(iter(names)).split(":")
    assert (host, int(pid), place) == (socket.gethostname(), os.getpid(), machine())
    assert place.split(".") == [boot_id(), pid_namespace(), start_ticks(os.getpid())]
    assert len(boot_id()) == 32 and len(rand) == 12


@pytest.mark.slow
def test_only_gone_processes_of_this_machine_boot_and_namespace_are_dead():
    code = "import os; from docqa.worker.identity import worker_name; print(worker_name())"
    gone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    host, pid, place, _rand = gone.split(":")
    boot, ns, started = place.split(".")
    parent = os.getppid()
    alive = f"{host}:{parent}:{boot}.{ns}.{start_ticks(parent)}:bbbbbbbbbbbb"
    # The PID of a live process, but a start time it does not have: the PID was reused.
    reused = f"{host}:{parent}:{boot}.{ns}.{int(start_ticks(parent)) - 1}:cccccccccccc"
    # Another machine with the same host name and the same (root) PID-namespace id: its
    # PIDs mean nothing here, so it is never called dead from here, whatever the PID.
    other_machine = f"{host}:{pid}:{'0' * 32}.{ns}.{started}:dddddddddddd"
    other_namespace = f"{host}:{pid}:{boot}.{ns}0.{started}:eeeeeeeeeeee"
    other_host = f"{host}-elsewhere:{pid}:{place}:ffffffffffff"
    older_forms = [f"{host}:{pid}:{ns}:aaaaaaaaaaaa", f"{host}:{pid}"]
    names = [gone, alive, reused, other_machine, other_namespace, other_host, *older_forms]
    assert dead_local_workers(names) == [gone, reused]
