"""Serving: `docqa worker`, a Celery worker running docqa's app with its recommended flags."""

from __future__ import annotations

import argparse
import os
import sys

from docqa.cli import exits
from docqa.cli.options import (
    CliError,
    add_broker_options,
    add_model_options,
    add_setting,
    add_store_option,
    answer_params,
    build_settings,
)
from docqa.core.settings import API_TOKEN_MIN_CHARS, Settings, env_name, file_env_name


def cmd_worker(args: argparse.Namespace) -> int:
    settings = build_settings(args)
    answer_params(settings)
    # The Celery app and its pool processes build their Settings from the environment.
    for name in Settings.model_fields:
        value = getattr(args, name, None)
        if value is not None:
            os.environ[env_name(name)] = str(value)
            os.environ.pop(file_env_name(name), None)  # the flag won over DOCQA_<NAME>_FILE
    from docqa.worker import preflight

    # Store, broker and model are checked before a single message is consumed.
    problem = preflight.check(settings)
    if problem is not None:
        unreachable = problem.startswith(("store:", "broker:"))
        raise CliError(f"cannot start: {problem}", status=exits.UNREACHABLE if unreachable else exits.FAILED)
    from docqa.worker.app import app
    from docqa.worker.interactive import ask_queue

    argv = [
        "worker",
        "--queues", f"{ask_queue(settings.model_queue)},{settings.model_queue}",  # corpus questions first
        "--concurrency", str(args.concurrency),
        "--pool", args.pool,
        "--loglevel", args.loglevel,
        "--prefetch-multiplier", "1",
        "-O", "fair",
        "--without-gossip",
        "--without-mingle",
    ]
    argv += ["--hostname", args.hostname or default_node_name()]
    if args.events:
        argv.append("--task-events")
    from docqa.worker.app import run_worker

    code = run_worker(app, argv)
    if code != 0:  # the reason is in the log above (e.g. "Unrecoverable error: ...")
        print(f"docqa worker: stopped with status {code}: see the log above", file=sys.stderr)
        return exits.FAILED
    return exits.OK


def default_node_name() -> str:
    """A Celery node name of its own for this worker: Celery's default, celery@HOST, is the
    same for every worker of a host, and Celery warns of (and mixes up) duplicate names."""
    import secrets

    return f"docqa-{os.getpid()}-{secrets.token_hex(2)}@%h"


def register(sub) -> None:
    p = sub.add_parser("worker", help="start a Celery worker that answers queued jobs",
                       description="Start a Celery worker with docqa's app (same as 'celery -A docqa.worker.app "
                       "worker' with docqa's recommended flags). Each pool process loads the model once.")
    add_store_option(p)
    add_broker_options(p)
    p.add_argument("-c", "--concurrency", type=int, default=1,
                   help="pool processes (default 1; torch threads per process = cores / the docqa worker "
                   "processes on the host)")
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"],
                   help="Celery pool (default prefork; use solo for one process per GPU)")
    p.add_argument("--loglevel", default="INFO", help="log level (default INFO)")
    p.add_argument("--hostname", help="Celery node name, as its banner and Flower show it (default: "
                   "docqa-PID-XXXX@HOST, so several workers on one host never share a name; %%h in it stands for "
                   "the host name)")
    p.add_argument("-E", "--events", action="store_true",
                   help="send Celery task events (received, started, succeeded, failed), for Flower or "
                   "'celery events'; off by default (they cost broker traffic for every message)")
    g = p.add_argument_group("jobs")
    for name in ("lease_seconds", "max_attempts", "worker_batch_jobs", "batch_windows", "split_windows",
                 "torch_threads"):
        add_setting(g, name, metavar="N")
    add_setting(p, "metrics_port", metavar="PORT")
    add_setting(p, "metrics_host", metavar="HOST")
    add_model_options(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("serve", help="serve the HTTP API (submit, follow, read answers)",
                       description="Serve docqa's HTTP API: POST /v1/submissions (?wait=SECONDS), "
                       "GET /v1/submissions/ID, GET /v1/answers (JSON pages or NDJSON), DELETE /v1/documents, "
                       "/healthz, /readyz; OpenAPI at /openapi.json, docs at /docs. With a SQLite store submissions "
                       "are answered in this process; with PostgreSQL and a broker, by 'docqa worker' processes. "
                       "Every request but /healthz and /readyz (the schema and docs included) needs the bearer token "
                       f"DOCQA_API_TOKEN when one is set; a token has at least {API_TOKEN_MIN_CHARS} characters "
                       "(an empty or shorter one is refused). Without one only loopback is served, and only to "
                       "requests addressed to localhost, 127.0.0.1 or [::1].")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    add_store_option(p)
    add_broker_options(p)
    for name in ("api_max_body_bytes", "api_max_documents", "max_question_chars", "max_document_chars",
                 "api_max_waiters"):
        add_setting(p, name, metavar="N")
    for name in ("api_max_wait_seconds", "api_header_timeout_seconds"):
        add_setting(p, name, metavar="S")
    add_setting(p, "api_models", metavar="MODEL[,MODEL...]")
    add_model_options(p)
    p.set_defaults(func=cmd_serve)


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def cmd_serve(args: argparse.Namespace) -> int:
    settings = build_settings(args)
    answer_params(settings)
    problem = settings.api_token_problem()  # refused before the web stack is imported: at once
    if problem is not None:
        raise CliError(f"refusing to serve: {problem}")
    if settings.api_token is None and args.host not in LOOPBACK:
        raise CliError(
            f"refusing to serve on {args.host} without a token: set DOCQA_API_TOKEN (at least {API_TOKEN_MIN_CHARS} "
            "characters; every request then needs 'Authorization: Bearer <token>'), or serve on 127.0.0.1"
        )
    import uvicorn

    from docqa.service import create_app, header_timeout_protocol

    if settings.api_token is None:
        print(f"docqa serve: no DOCQA_API_TOKEN set: serving on {args.host} only, without authentication, to "
              "requests addressed to localhost, 127.0.0.1 or [::1]", file=sys.stderr)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
                http=header_timeout_protocol(settings.api_header_timeout_seconds))
    return 0
