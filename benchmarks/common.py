"""Measurement helpers shared by benchmarks/measure.py and benchmarks/services.py.

Standard library only at module level: measure.py also runs under the transformers
5.2.0 reference venv, which has no docqa (torch is imported inside set_threads, and
both venvs have torch).

Import order among the benchmark modules (no cycles):

    run.py      -> corpus
    measure.py  -> common, corpus; services (imported only when a service configuration runs)
    services.py -> common, corpus
"""

from __future__ import annotations

import resource
import time


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_pressure_us() -> int | None:
    """Total microseconds some task waited for a CPU (Linux PSI), or None where absent."""
    try:
        with open("/proc/pressure/cpu") as fh:
            for line in fh:
                if line.startswith("some"):
                    return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


class Timed:
    """Wall time, this process's CPU time and the machine's CPU pressure over a block.

    cpu_util = CPU seconds / (wall seconds x threads): about 1 when the process had the
    cores it asked for, lower when other processes took them (a noisy neighbour).
    pressure = share of the wall time in which some task waited for a CPU.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __enter__(self) -> "Timed":
        self._psi = cpu_pressure_us()
        self._ru = resource.getrusage(resource.RUSAGE_SELF)
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self._t
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu_s = (ru.ru_utime - self._ru.ru_utime) + (ru.ru_stime - self._ru.ru_stime)
        psi = cpu_pressure_us()
        self.pressure = (psi - self._psi) / 1e6 / self.wall_s if psi is not None and self._psi is not None else None

    def fields(self) -> dict:
        return {"wall_s": self.wall_s, "cpu_s": self.cpu_s, "cpu_util": self.cpu_s / (self.wall_s * self.threads),
                "pressure": self.pressure}
