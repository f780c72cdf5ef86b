"""Worker identity: a name no other process in the fleet can have.

`hostname:pid` is not unique: containers that share a hostname (`--network host`,
`hostNetwork`) have separate PID namespaces, so two live workers could share a name and
one could be taken for dead by the other. A name here is
`HOST:PID:NAMESPACE:RANDOM` — host name, process id, this process's PID-namespace id
(same value for every process that can see the same PIDs) and 12 random hex digits.
"""

from __future__ import annotations

import os
import secrets
import socket


def pid_namespace() -> str:
    """An id of this process's PID namespace ("-" where unknown, e.g. not Linux)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


def worker_name() -> str:
    """A fresh, globally unique worker name (see the module docstring)."""
    return f"{socket.gethostname()}:{os.getpid()}:{pid_namespace()}:{secrets.token_hex(6)}"


def dead_local_workers(names) -> list[str]:
    """The given worker names whose process is known to be gone: same host and PID
    namespace as this process (so their PID means the same here), and no such process.

    Names from other hosts or namespaces, or of an older form, are never called dead
    here: their leases decide.
    """
    host, namespace = socket.gethostname(), pid_namespace()
    dead = []
    for name in names:
        parts = name.split(":")
        if len(parts) != 4 or parts[0] != host or parts[2] != namespace or namespace == "-":
            continue
        if not parts[1].isdigit() or int(parts[1]) == os.getpid():
            continue
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            dead.append(name)
        except PermissionError:  # alive, owned by someone else
            pass
    return dead
