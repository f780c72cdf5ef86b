"""Worker identity: a name no other process in the fleet can have, and that tells whether
its process is known to be gone.

`hostname:pid` is not unique: containers that share a host name (`--network host`,
`hostNetwork`) have separate PID namespaces, and two machines can share a host name
while every root PID namespace has the same id (4026531836 is common). A name here is
`HOST:PID:MACHINE:RANDOM` with MACHINE = `BOOT.NAMESPACE.START`: the kernel's boot id
(unique per machine and boot), this process's PID-namespace id, and the process's start
time in clock ticks since boot (so a PID reused by a later process is not mistaken for
it); RANDOM is 12 hex digits.
"""

from __future__ import annotations

import os
import secrets
import socket

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


def pid_namespace() -> str:
    """An id of this process's PID namespace ("-" where unknown, e.g. not Linux)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


def boot_id() -> str:
    """This machine's boot id, 32 hex digits ("-" where unknown)."""
    try:
        with open(BOOT_ID_FILE, encoding="ascii") as fh:
            return fh.read().strip().replace("-", "") or "-"
    except OSError:
        return "-"


def start_ticks(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot (None: no such process here)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state is field 3
    return fields[19] if len(fields) > 19 else None  # field 22: starttime


def machine() -> str:
    """BOOT.NAMESPACE.START of this process ("-" parts where unknown)."""
    return f"{boot_id()}.{pid_namespace()}.{start_ticks(os.getpid()) or '-'}"


def worker_name() -> str:
    """A fresh, globally unique worker name (see the module docstring)."""
    return f"{socket.gethostname()}:{os.getpid()}:{machine()}:{secrets.token_hex(6)}"


def dead_local_workers(names) -> list[str]:
    """The given worker names whose process is known to be gone: same machine, boot and PID
    namespace as this process (so their PID means the same here), and no process with that
    PID, or one that started at another time (the PID was reused).

    Names of other machines, boots or namespaces, or of an older form, are never called
    dead here: their leases decide.
    """
    host = socket.gethostname()
    here_boot, here_ns = boot_id(), pid_namespace()
    if "-" in (here_boot, here_ns):
        return []
    dead = []
    for name in names:
        parts = name.split(":")
        if len(parts) != 4 or parts[0] != host or not parts[1].isdigit() or int(parts[1]) == os.getpid():
            continue
        place = parts[2].split(".")
        if len(place) != 3 or place[0] != here_boot or place[1] != here_ns or place[2] == "-":
            continue
        if start_ticks(int(parts[1])) != place[2]:  # gone, or its PID now belongs to a later process
            dead.append(name)
    return dead
