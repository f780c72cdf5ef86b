"""Scheduled indexing: submit sources of documents again and again, one scheduler at a time.

A schedule is a small TOML file:

    # Defaults for every source (each optional).
    interval = "1h"                 # seconds, or "90s", "15m", "2h", "1d", "1h30m"
    model = "distilbert-base-cased-distilled-squad"
    questions = ["Who owns this document?"]

    [[source]]
    name = "handbook"               # unique: the store remembers each source's runs by it
    inputs = ["handbook/", "notes/**/*.md", "records.jsonl"]   # folders, files, glob patterns
    questions = ["Who approves expenses?"]                     # added to the defaults
    interval = "15m"
    params = { top_k = 2 }          # answer parameters (AnswerParams fields)

Relative inputs are relative to the schedule file's folder. Each due source is submitted
like `docqa submit` (or answered in process with an embedded SQLite store, like `docqa
run`): unchanged documents cost nothing, changed ones become new versions and are
answered again. Runs are submissions labelled with the source's name, so `docqa schedule
status` and a restarted scheduler read the last run from the store.

Exactly one scheduler acts at a time: each holds the store's "scheduler" role under a
renewable lease (the same mechanism as the workers' reconciler); others stand by and take
over when the holder stops renewing (it exited or died) for one lease.
"""

from __future__ import annotations

from docqa.core.errors import UsageError

import glob
import os
import re
import secrets
import socket
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docqa.storage.repository import Repository

ROLE = "scheduler"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_INTERVAL = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_SOURCE_KEYS = {"name", "inputs", "questions", "interval", "model", "revision", "params"}
_TOP_KEYS = {"interval", "model", "revision", "questions", "params", "source"}


class ScheduleError(UsageError):
    """The schedule file cannot be used; the message names the file, the source and the key."""


@dataclass(frozen=True)
class Source:
    name: str
    inputs: tuple[str, ...]
    questions: tuple[str, ...]
    interval: float  # seconds
    model: str | None = None
    revision: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Schedule:
    path: Path
    sources: tuple[Source, ...]


def parse_interval(value: Any, where: str) -> float:
    """Seconds from a number or a string like "90s", "15m", "1h30m", "1d"."""
    if isinstance(value, bool):
        raise ScheduleError(f"{where}: interval must be seconds or a duration like \"15m\", not {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        parts = _INTERVAL.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ScheduleError(f"{where}: interval {value!r} is not a duration like \"90s\", \"15m\", \"1h30m\", \"1d\"")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ScheduleError(f"{where}: interval must be seconds or a duration like \"15m\", not {value!r}")
    if seconds < 1:
        raise ScheduleError(f"{where}: interval {value!r} is under one second")
    return seconds


def load_schedule(path: str | os.PathLike) -> Schedule:
    """Read and check a schedule file; ScheduleError names what is wrong and where."""
    path = Path(path)
    data = _read_toml(path)
    _check_keys(data, _TOP_KEYS, f"{path}", "a schedule")
    raw_sources = data.get("source")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise ScheduleError(f"{path}: no sources: add at least one [[source]] table with name and inputs")
    default_questions = _strings(data.get("questions", []), f"{path}: questions")
    default_params = _table(data.get("params", {}), f"{path}")
    sources = []
    names: set[str] = set()
    for n, raw in enumerate(raw_sources, start=1):
        name = _source_name(raw, n, path, names)
        sources.append(_load_source(raw, name, path, data, default_questions, default_params))
    return Schedule(path, tuple(sources))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScheduleError(f"{path}: cannot read the schedule ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ScheduleError(f"{path}: the schedule is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScheduleError(f"{path}: not valid TOML ({exc})") from None


def _check_keys(table: dict[str, Any], known: set[str], where: str, what: str) -> None:
    unknown = set(table) - known
    if unknown:
        raise ScheduleError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; {what} has "
                            f"{', '.join(sorted(known))}")


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScheduleError(f"{where}: params must be a table like {{ top_k = 2 }}")
    return value


def _source_name(raw: Any, n: int, path: Path, names: set[str]) -> str:
    """The name of the n-th source table `raw`, added to `names` (each may be used once)."""
    where = f"{path}: source {n}"
    if not isinstance(raw, dict):
        raise ScheduleError(f"{where}: must be a [[source]] table")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError(f"{where}: needs a name (a non-empty string)")
    if name in names:
        raise ScheduleError(f"{path}: source {name!r}: the name is used twice; each source needs its own")
    names.add(name)
    return name


def _load_source(raw: dict[str, Any], name: str, path: Path, data: dict[str, Any],
                 default_questions: tuple[str, ...], default_params: dict[str, Any]) -> Source:
    """A checked source; the top-level `data` gives its defaults."""
    where = f"{path}: source {name!r}"
    _check_keys(raw, _SOURCE_KEYS, where, "a source")
    inputs = _strings(raw.get("inputs"), f"{where}: inputs")
    if not inputs:
        raise ScheduleError(f"{where}: inputs must list folders, files or glob patterns")
    questions = tuple(dict.fromkeys(default_questions + _strings(raw.get("questions", []), f"{where}: questions")))
    if not questions:
        raise ScheduleError(f"{where}: no questions (give questions here or at the top of the file)")
    if "interval" not in raw and "interval" not in data:
        raise ScheduleError(f"{where}: no interval (give one here or at the top of the file, e.g. \"1h\")")
    interval = parse_interval(raw.get("interval", data.get("interval")), where)
    params = {**default_params, **_table(raw.get("params", {}), where)}
    _check_params(params, where)
    model = raw.get("model", data.get("model"))
    revision = raw.get("revision", data.get("revision"))
    for key, value in (("model", model), ("revision", revision)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ScheduleError(f"{where}: {key} must be a non-empty string")
    return Source(name=name, inputs=tuple(inputs), questions=questions, interval=interval, model=model,
                  revision=revision, params=params)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ScheduleError(f"{where}: must be a list of non-empty strings")
    return tuple(v.strip() for v in value)


def _check_params(params: dict[str, Any], where: str) -> None:
    from docqa.core.params import AnswerParams

    unknown = set(params) - set(AnswerParams.model_fields)
    if unknown:
        raise ScheduleError(f"{where}: unknown answer parameter(s) {', '.join(sorted(unknown))}; known: "
                            f"{', '.join(AnswerParams.model_fields)}")
    try:
        AnswerParams(**params)
    except ValueError as exc:
        raise ScheduleError(f"{where}: invalid params: {exc}") from None


def expand_inputs(source: Source, base: Path) -> tuple[list[Path], list[str]]:
    """The source's inputs as paths (globs expanded, sorted), and a sentence per pattern
    that matched nothing. Relative inputs are taken from `base`."""
    paths: list[Path] = []
    problems: list[str] = []
    for item in source.inputs:
        full = item if os.path.isabs(item) else str(base / item)
        if glob.has_magic(item):
            matched = sorted(p for p in glob.glob(full, recursive=True) if os.path.isfile(p))
            if not matched:
                problems.append(f"source {source.name!r}: pattern {item!r} matched no files")
            paths.extend(Path(p) for p in matched)
        else:
            paths.append(Path(full))
    return paths, problems


@dataclass
class RunOutcome:
    source: str
    submission_id: int | None
    documents: int = 0
    new_documents: int = 0
    changed_documents: int = 0
    new_jobs: int = 0
    errors: tuple[str, ...] = ()
    failure: str | None = None  # the run itself failed (store or broker down): tried again later


class Scheduler:
    """Runs a schedule's due sources through a `docqa.Client`, holding the scheduler role."""

    def __init__(
        self,
        schedule: Schedule,
        client,
        *,
        repo: Repository | None = None,
        lease_seconds: float = 30.0,
        log: Callable[[str], None] = print,
        holder: str | None = None,
    ) -> None:
        self.schedule = schedule
        self.client = client
        self._repo = repo
        self.lease_seconds = lease_seconds
        self.log = log
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.stop = threading.Event()
        self._retry_at: dict[str, float] = {}  # a failed run waits before trying again
        self._state: bool | None = None  # holds the role; None before the first try

    @property
    def repo(self) -> Repository:
        """The store of the role and of the sources' last runs: `repo` as given (the client's
        own store), else one opened from the client's settings."""
        if self._repo is None:
            from docqa.storage.repository import Repository

            self._repo = Repository.open(self.client.settings.database_url)
        return self._repo

    # -- the role ------------------------------------------------------------------
    def hold(self) -> bool:
        """Take or renew the scheduler role; says so when this process starts or stops acting."""
        held = self.repo.hold_role(ROLE, self.holder, seconds=self.lease_seconds)
        if held and self._state is not True:
            self.log(f"docqa schedule: {self.holder} is the active scheduler")
        elif not held and self._state is not False:
            self.log(f"docqa schedule: standing by: another scheduler ({self.repo.role_holder(ROLE)}) is active")
        self._state = held
        return held

    @property
    def _active(self) -> bool:
        return self._state is True

    def release(self) -> None:
        if self._active:
            self.repo.release_role(ROLE, self.holder)
            self._state = None

    # -- running -------------------------------------------------------------------
    def due(self, now: float | None = None) -> list[Source]:
        """Sources whose last run started at least one interval ago (or never ran)."""
        now = time.time() if now is None else now
        due = []
        for source in self.schedule.sources:
            if self._retry_at.get(source.name, 0) > now:
                continue
            last = self.repo.last_labelled(source.name)
            if last is None or last.created_at.timestamp() + source.interval <= now:
                due.append(source)
        return due

    def next_due_in(self, now: float | None = None) -> float:
        """Seconds until the next source is due (0 if one is due now)."""
        now = time.time() if now is None else now
        waits = []
        for source in self.schedule.sources:
            last = self.repo.last_labelled(source.name)
            at = 0.0 if last is None else last.created_at.timestamp() + source.interval
            waits.append(max(at, self._retry_at.get(source.name, 0.0)) - now)
        return max(0.0, min(waits))

    def run_source(self, source: Source) -> RunOutcome:
        """Submit one source now (while renewing the role in the background)."""
        paths, problems = expand_inputs(source, self.schedule.path.parent)
        renewing = threading.Event()
        renewer = threading.Thread(target=self._renew_while, args=(renewing,), daemon=True)
        renewer.start()
        try:
            submission = self.client.submit(
                paths, list(source.questions), model=source.model, revision=source.revision, label=source.name,
                **source.params,
            )
        except Exception as exc:  # the store or broker is down: try this source again later
            wait = min(source.interval, 60.0)
            self._retry_at[source.name] = time.time() + wait
            outcome = RunOutcome(source=source.name, submission_id=None, failure=f"{type(exc).__name__}: {exc}")
            self.log(f"docqa schedule: source {source.name!r} failed ({outcome.failure}); trying again in {wait:.0f} s")
            return outcome
        finally:
            renewing.set()
            renewer.join()
        self._retry_at.pop(source.name, None)
        s = submission.summary
        outcome = RunOutcome(source=source.name, submission_id=submission.id, documents=s.documents,
                             new_documents=s.new_documents, changed_documents=s.changed_documents,
                             new_jobs=s.new_jobs, errors=tuple(problems) + s.errors)
        from docqa.core.text import plural

        self.log(
            f"docqa schedule: source {source.name!r}: submission {submission.id}: {plural(s.documents, 'document')} "
            f"({s.new_documents} new, {s.changed_documents} changed), {plural(s.new_jobs, 'new job')}, "
            f"{plural(len(outcome.errors), 'input')} skipped"
        )
        for problem in outcome.errors[:10]:
            self.log(f"docqa schedule:   {problem}")
        return outcome

    def _renew_while(self, done: threading.Event) -> None:
        while not done.wait(self.lease_seconds / 3):
            try:
                self.repo.hold_role(ROLE, self.holder, seconds=self.lease_seconds)
            except Exception:  # the store is down: the run itself will say so
                pass

    def run_once(self) -> list[RunOutcome]:
        """Run every due source once if this process holds the role; [] otherwise."""
        if not self.hold():
            return []
        outcomes = []
        for source in self.due():
            if self.stop.is_set() or not self.hold():
                break
            outcomes.append(self.run_source(source))
        return outcomes

    def run_forever(self, *, tick: float | None = None) -> None:
        """Until `stop` is set: run due sources while holding the role, stand by otherwise."""
        tick = tick if tick is not None else max(0.2, min(5.0, self.lease_seconds / 3))
        try:
            while not self.stop.is_set():
                try:
                    self.run_once()
                    wait = min(tick, self.next_due_in()) if self._active else tick
                except Exception as exc:  # the store is down: say so, keep trying
                    self.log(f"docqa schedule: cannot reach the store ({type(exc).__name__}: {exc}); "
                             f"trying again in {tick:.0f} s")
                    self._state = None
                    wait = tick
                self.stop.wait(max(0.05, wait))
        finally:
            try:
                self.release()
            except Exception:
                pass


def source_status(scheduler: Scheduler) -> list[dict[str, Any]]:
    """Each source's last finished run and what it amounted to, a run under way, and when
    the next is due, for `docqa schedule status`. A run still storing its documents has no
    counts yet: it is named (`running_submission_id`), not shown as a run of nothing."""
    repo = scheduler.repo
    rows = []
    now = time.time()
    for source in scheduler.schedule.sources:
        newest = repo.last_labelled(source.name)  # the scheduler's clock: finished or not
        running = newest is not None and newest.finished_at is None
        last = repo.last_labelled(source.name, finished=True) if running else newest
        row: dict[str, Any] = {"source": source.name, "interval_seconds": source.interval, "last_run": None,
                               "running_submission_id": newest.id if running else None,
                               "due": newest is None or newest.created_at.timestamp() + source.interval <= now}
        if newest is not None:
            row["next_run"] = (newest.created_at + timedelta(seconds=source.interval)).isoformat()
        if last is not None:
            row.update(_last_run(repo, last))
        rows.append(row)
    return rows


def _last_run(repo, last) -> dict[str, Any]:
    progress = repo.submission_progress(last.id)
    return dict(last_run=last.created_at.isoformat(), submission_id=last.id, documents=last.documents,
                new=last.new_documents, changed=last.changed_documents, inputs_skipped=last.input_errors,
                jobs=last.jobs, new_jobs=last.new_jobs, jobs_failed=progress["failed"],
                jobs_pending=progress["queued"] + progress["running"])
