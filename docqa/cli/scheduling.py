"""`docqa schedule run FILE` and `docqa schedule status FILE`: scheduled indexing."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from docqa.cli import exits
from docqa.core.text import plural
from docqa.cli.options import (
    CliError,
    add_broker_options,
    add_model_options,
    add_setting,
    add_store_option,
    build_settings,
    open_repo,
)


def _scheduler(args: argparse.Namespace, *, create: bool):
    from docqa.client import Client
    from docqa.schedule import ScheduleError, Scheduler, load_schedule

    try:
        schedule = load_schedule(args.file)
    except ScheduleError as exc:
        raise CliError(str(exc)) from None
    settings = build_settings(args)
    repo = open_repo(settings, create=create)  # a clear error when the store is missing or unreachable
    client = Client(settings=settings, open_store=lambda: repo)

    def log(line: str) -> None:
        print(line, flush=True)

    return Scheduler(schedule, client, repo=repo, lease_seconds=settings.lease_seconds, log=log)


def cmd_schedule_run(args: argparse.Namespace) -> int:
    scheduler = _scheduler(args, create=True)
    names = ", ".join(f"{s.name} (every {s.interval:g} s)" for s in scheduler.schedule.sources)
    print(f"docqa schedule: {plural(len(scheduler.schedule.sources), 'source')} from {args.file}: {names}", flush=True)
    if args.once:
        outcomes = scheduler.run_once()
        scheduler.release()
        if scheduler._state is False:
            print("docqa schedule: another scheduler is active; nothing run", file=sys.stderr)
            return exits.OK
        if any(o.failure for o in outcomes):
            return exits.UNREACHABLE
        return exits.SKIPPED if any(o.errors for o in outcomes) else exits.OK

    def stop(signum, _frame) -> None:
        print(f"docqa schedule: {signal.Signals(signum).name}: stopping after the current source", flush=True)
        scheduler.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scheduler.run_forever()
    print("docqa schedule: stopped", flush=True)
    return exits.OK


def cmd_schedule_status(args: argparse.Namespace) -> int:
    from docqa.schedule import ROLE, source_status

    scheduler = _scheduler(args, create=False)
    rows = source_status(scheduler)
    holder = scheduler.repo.role_holder(ROLE)
    if args.format == "json":
        print(json.dumps({"active_scheduler": holder, "sources": rows}, ensure_ascii=False))
        return exits.OK
    print(f"active scheduler: {holder or 'none'}")
    for row in rows:
        print(_status_line(row))
    return exits.OK


def _status_line(row: dict) -> str:
    """One source of `docqa schedule status`, for people."""
    from datetime import datetime

    under_way = f"a run is under way (submission {row['running_submission_id']})" \
        if row["running_submission_id"] is not None else None
    if row["last_run"] is None:
        return f"{row['source']}: {under_way or 'never run'} (every {row['interval_seconds']:g} s; no run finished yet)"
    when = datetime.fromisoformat(row["last_run"]).strftime("%Y-%m-%d %H:%M:%S UTC")
    upcoming = under_way or ("due now" if row["due"] else
                             "next " + datetime.fromisoformat(row["next_run"]).strftime("%H:%M:%S UTC"))
    return (f"{row['source']}: last run {when} (submission {row['submission_id']}): "
            f"{plural(row['documents'], 'document')} seen, {row['new']} new, {row['changed']} changed, "
            f"{plural(row['inputs_skipped'], 'input')} skipped, {plural(row['jobs_failed'], 'job')} failed, "
            f"{row['jobs_pending']} pending; {upcoming}")


def register(sub) -> None:
    p = sub.add_parser(
        "schedule", help="scheduled indexing: submit sources of documents on an interval (one scheduler at a time)",
        description="Submit each source of a schedule file (TOML: folders, files or glob patterns, questions, an "
        "interval) again whenever its interval has passed. Unchanged documents cost nothing; changed ones become "
        "new versions and are answered again. Several schedulers may run: one acts, the others stand by and take "
        "over within one lease (DOCQA_LEASE_SECONDS) when it stops. See 'Scheduled indexing' in the README.",
    )
    actions = p.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)

    run = actions.add_parser("run", help="run the schedule until stopped (SIGTERM/Ctrl-C end it after the "
                             "current source)",
                             description="Run the schedule: submit each source when it is due, forever (or once "
                             "with --once). With a SQLite store and no broker the jobs are answered in this process, "
                             "as 'docqa run' does; otherwise they go to the workers, as 'docqa submit' does.")
    run.add_argument("file", metavar="FILE", help="the schedule, a TOML file")
    run.add_argument("--once", action="store_true", help="run the sources that are due now, then exit (for cron)")
    add_store_option(run)
    add_broker_options(run)
    add_model_options(run)
    add_setting(run, "lease_seconds", metavar="S")
    run.set_defaults(func=cmd_schedule_run)

    status = actions.add_parser("status", help="each source's last run: documents seen, new, changed, failed",
                                description="Print each source's last run (from the store): when, its submission, "
                                "documents seen, new, changed, inputs skipped, jobs failed and pending, and when it "
                                "is next due; and which scheduler is active.")
    status.add_argument("file", metavar="FILE", help="the schedule, a TOML file")
    status.add_argument("--format", choices=["text", "json"], default="text",
                        help="text for people (default) or json: {active_scheduler, sources: [...]}")
    add_store_option(status)
    status.set_defaults(func=cmd_schedule_status)
