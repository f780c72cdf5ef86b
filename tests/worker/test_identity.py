"""Worker names are unique across processes that share a host name; only provably dead
local processes are called dead."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from docqa.worker.identity import dead_local_workers, pid_namespace, worker_name


def test_names_are_unique_even_in_one_process():
    names = {worker_name() for _ in range(100)}
    assert len(names) == 100
    host, pid, namespace, rand = next(iter(names)).split(":")
    assert (host, int(pid), namespace) == (socket.gethostname(), os.getpid(), pid_namespace())
    assert len(rand) == 12


def test_only_gone_processes_of_this_host_and_pid_namespace_are_dead():
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)
    host, ns = socket.gethostname(), pid_namespace()
    mine_dead = f"{host}:{pid}:{ns}:aaaaaaaaaaaa"
    mine_alive = f"{host}:{os.getppid()}:{ns}:bbbbbbbbbbbb"
    # Same host name, another PID namespace (a container with --network host): its PIDs
    # mean nothing here, so it is never called dead from here, whatever the PID.
    other_namespace = f"{host}:{pid}:{ns}0:cccccccccccc"
    other_host = f"{host}-elsewhere:{pid}:{ns}:dddddddddddd"
    old_style = f"{host}:{pid}"
    names = [mine_dead, mine_alive, other_namespace, other_host, old_style]
    assert dead_local_workers(names) == [mine_dead]
