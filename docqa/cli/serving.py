"""Serving: `docqa worker`, a Celery worker running docqa's app with its recommended flags."""

from __future__ import annotations

import argparse
import os

from docqa.cli.options import (
    CliError,
    add_broker_options,
    add_model_options,
    add_setting,
    add_store_option,
    answer_params,
    build_settings,
)
from docqa.core.settings import Settings, env_name


def cmd_worker(args: argparse.Namespace) -> int:
    settings = build_settings(args)
    answer_params(settings)
    # The Celery app and its pool processes build their Settings from the environment.
    for name in Settings.model_fields:
        value = getattr(args, name, None)
        if value is not None:
            os.environ[env_name(name)] = str(value)
    from docqa.worker import preflight

    # Store, broker and model are checked before a single message is consumed.
    problem = preflight.check(settings)
    if problem is not None:
        raise CliError(f"cannot start: {problem}", status=1)
    from docqa.worker.app import app

    argv = [
        "worker",
        "--queues", settings.model_queue,
        "--concurrency", str(args.concurrency),
        "--pool", args.pool,
        "--loglevel", args.loglevel,
        "--prefetch-multiplier", "1",
        "-O", "fair",
        "--without-gossip",
        "--without-mingle",
    ]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    app.worker_main(argv=argv)
    return 0


def register(sub) -> None:
    p = sub.add_parser("worker", help="start a Celery worker that answers queued jobs",
                       description="Start a Celery worker with docqa's app (same as 'celery -A docqa.worker.app "
                       "worker' with docqa's recommended flags). Each pool process loads the model once.")
    add_store_option(p)
    add_broker_options(p)
    p.add_argument("-c", "--concurrency", type=int, default=1,
                   help="pool processes (default 1; torch threads per process = cores / concurrency)")
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"],
                   help="Celery pool (default prefork; use solo for one process per GPU)")
    p.add_argument("--loglevel", default="INFO", help="log level (default INFO)")
    p.add_argument("--hostname", help="Celery node name (default docqa-PID@HOST)")
    g = p.add_argument_group("jobs")
    for name in ("lease_seconds", "max_attempts", "worker_batch_jobs", "torch_threads"):
        add_setting(g, name, metavar="N")
    add_model_options(p)
    p.set_defaults(func=cmd_worker)
