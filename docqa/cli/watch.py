"""`docqa status --watch`: job counts, throughput and an ETA, every few seconds, until Ctrl-C.

On a terminal the view is redrawn in place; otherwise (a pipe, a log file) one line is
printed per interval, or with `--format json` one JSON object per interval. Rates are
measured over the last RATE_WINDOW_SECONDS: jobs/s from the store's finished (done +
failed) count, windows/s from the workers' `docqa_windows_total` when `--metrics-url`
names their /metrics (unknown otherwise). The ETA is the unfinished jobs over the jobs/s.
A store or worker that does not answer is reported on that line and asked again next time.
"""

from __future__ import annotations

from docqa.core.errors import first_line

import json
import sys
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from docqa.storage.repository import Repository

# Rates are measured over this many seconds of samples.
RATE_WINDOW_SECONDS = 30.0
# Seconds a worker's /metrics may take to answer.
SCRAPE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    finished: int  # done + failed jobs
    windows: float | None  # the workers' docqa_windows_total summed, when known


class Rates:
    """Jobs/s and windows/s over a sliding window of samples."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        self.window = window
        self.samples: deque[Sample] = deque()

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        while len(self.samples) > 2 and sample.at - self.samples[1].at >= self.window:
            self.samples.popleft()

    def jobs_per_second(self) -> float | None:
        if len(self.samples) < 2:
            return None
        first, last = self.samples[0], self.samples[-1]
        return max(0.0, last.finished - first.finished) / max(last.at - first.at, 1e-9)

    def windows_per_second(self) -> float | None:
        known = [(s.at, s.windows) for s in self.samples if s.windows is not None]
        if len(known) < 2:
            return None
        (first_at, first), (last_at, last) = known[0], known[-1]
        if last_at <= first_at:
            return None
        return max(0.0, last - first) / (last_at - first_at)


def scrape_windows(urls: list[str], timeout: float = SCRAPE_TIMEOUT_SECONDS) -> float | None:
    """`docqa_windows_total` summed over the workers' /metrics URLs; None unless all answer
    (a partial sum would read as a drop in throughput)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                text = resp.read().decode("utf-8")
        except (OSError, ValueError):
            return None
        for family in text_string_to_metric_families(text):
            total += sum(s.value for s in family.samples if s.name == "docqa_windows_total")
    return total


def duration(seconds: float) -> str:
    """'45 s', '3 min 20 s', '2 h 05 min'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def snapshot(counts: dict[str, int], workers: int, rates: Rates, metrics: bool) -> dict:
    """What one redraw shows, as plain values (the JSON lines are exactly this)."""
    left = counts.get("queued", 0) + counts.get("running", 0)
    jobs_rate = rates.jobs_per_second()
    windows_rate = rates.windows_per_second() if metrics else None
    eta = None
    if left == 0:
        eta = 0.0
    elif jobs_rate:
        eta = left / jobs_rate
    return {
        "time": datetime.now().astimezone().isoformat(timespec="seconds"),
        "counts": counts,
        "live_workers": workers,
        "jobs_per_second": None if jobs_rate is None else round(jobs_rate, 3),
        "windows_per_second": None if windows_rate is None else round(windows_rate, 3),
        "eta_seconds": None if eta is None else round(eta, 1),
    }


def _rate(value: float | None, unit: str) -> str:
    return f"{unit} ?" if value is None else f"{value:.2f} {unit}"


def lines_of(snap: dict, metrics: bool) -> list[str]:
    counts = snap["counts"]
    parts = [f"{name} {n}" for name, n in counts.items()]
    rates = [_rate(snap["jobs_per_second"], "jobs/s")]
    if metrics:
        rates.append(_rate(snap["windows_per_second"], "windows/s"))
    eta = snap["eta_seconds"]
    left = counts.get("queued", 0) + counts.get("running", 0)
    eta_text = "done" if left == 0 else ("ETA ?" if eta is None else f"ETA {duration(eta)}")
    return ["  ".join(parts), f"{' '.join(rates)}  {eta_text}  ({left} left, {snap['live_workers']} live workers)"]


def watch(repo: Repository, settings, *, interval: float, metrics_urls: list[str] | None = None,
          json_lines: bool = False, out=None) -> int:
    """Redraw until Ctrl-C (exit 0)."""
    out = sys.stdout if out is None else out
    tty = out.isatty() and not json_lines
    metrics = bool(metrics_urls)
    rates = Rates(max(RATE_WINDOW_SECONDS, 2 * interval))
    drawn = 0  # lines of the previous redraw (terminal only)
    try:
        while True:
            try:
                counts = repo.counts()
                workers = len(repo.live_workers(seen_within=settings.live_worker_seconds))
            except Exception as exc:  # the store is away: say so, ask again next time
                counts, problem = None, f"store: {first_line(exc, with_type=True)}"
            if counts is not None:
                windows = scrape_windows(metrics_urls) if metrics_urls else None
                rates.add(Sample(at=time.monotonic(), finished=counts.get("done", 0) + counts.get("failed", 0),
                                 windows=windows))
                snap = snapshot(counts, workers, rates, metrics)
            if json_lines:
                out.write(json.dumps(snap if counts is not None else {"error": problem}) + "\n")
            else:
                body = lines_of(snap, metrics) if counts is not None else [problem]
                stamp = datetime.now().strftime("%H:%M:%S")
                if tty:
                    head = f"docqa status --watch  {stamp}  (every {interval:g} s; Ctrl-C stops)"
                    out.write((f"\x1b[{drawn}F\x1b[J" if drawn else "") + "\n".join([head, *body]) + "\n")
                    drawn = 1 + len(body)
                else:
                    out.write(f"{stamp}  " + "  |  ".join(body) + "\n")
            out.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
