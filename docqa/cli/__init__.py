"""The `docqa` command line, by role: answering (ask, eval), producing (run, submit,
requeue), serving (worker), inspecting (status, results, db).

Every command builds one `Settings` from flags and DOCQA_* environment variables and
passes it down. Errors a user can fix are printed as one sentence (no traceback); exit
statuses are the table in `docqa.cli.exits` (also in `docqa --help` and the README).
"""

from __future__ import annotations

import argparse
import sys

from docqa import __version__
from docqa.cli import answering, exits, inspecting, producing, provenance, scheduling, serving
from docqa.cli.options import CliError
from docqa.core.errors import DocqaError

__all__ = ["CliError", "build_parser", "console", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docqa",
        description="Extractive question answering over long documents: the answers transformers' "
        "question-answering pipeline gave, batched, durable, with character offsets into your text.",
        epilog="Every option can also be set as an environment variable DOCQA_<NAME> "
        "(e.g. DOCQA_MODEL, DOCQA_DATABASE_URL). Run 'docqa COMMAND --help' for a command's options.\n\n"
        + exits.epilog(),
        formatter_class=_KeepIndentedLines,
    )
    parser.add_argument("--version", action="version", version=f"docqa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for role in (answering, producing, serving, inspecting, provenance, scheduling):
        role.register(sub)
    return parser


class _KeepIndentedLines(argparse.HelpFormatter):
    """Fills paragraphs as argparse does, but keeps indented lines (the exit-status table) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            kept = line.startswith(" ") or not line
            lines.append(indent + line if kept else super()._fill_text(line, width, indent))
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        status = _main(argv)
        # Flushed here, not at interpreter exit, so a reader that has gone (`| head`) is seen below.
        sys.stdout.flush()
        return status
    except SystemExit:  # argparse: --help, --version, a usage error
        _flush_or_silence_stdout()
        raise
    except BrokenPipeError:  # `docqa results | head`: the reader has what it wanted
        _silence_stdout()
        return exits.OK


def console() -> None:
    """The `docqa` program (and `python -m docqa`): `main()`, then the process exits.

    After a command that loaded torch and transformers (ask, eval, run), the interpreter's
    last garbage collections walk their millions of objects at exit: 1.1-1.4 s of a
    `docqa run` here, deciding nothing. The stores the command opened are closed first
    (SQLite folds its write-ahead log back into the file), then what exists is frozen
    out of the collector (`gc.freeze`); the exit is otherwise the usual one (atexit
    handlers, buffers flushed, objects released by reference counts): about 0.3 s.
    """
    status = main()
    if "torch" in sys.modules:
        import gc

        from docqa.cli.options import close_stores

        close_stores()
        gc.freeze()
    sys.exit(status)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return exits.USAGE
    try:
        return args.func(args)
    except DocqaError as exc:  # CliError, and any of docqa's own errors a command let through
        print(f"docqa {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print(f"docqa {args.command}: interrupted", file=sys.stderr)
        return exits.INTERRUPTED
    except Exception as exc:
        reason = _store_failure(exc)
        if reason is None:
            raise
        # The store went away (or refused) after the command had opened it: one sentence, no
        # traceback; what was written before stays written.
        print(f"docqa {args.command}: error: the store failed while the command ran ({reason}); check that it "
              "is reachable, then run the command again (what was already stored costs nothing twice)",
              file=sys.stderr)
        return exits.UNREACHABLE


def _store_failure(exc: BaseException) -> str | None:
    """storage.db.store_failure, for an exception that came from SQLAlchemy (storage.db is
    imported only then: a command that never opened a store does not load it here)."""
    if not type(exc).__module__.startswith("sqlalchemy"):
        return None
    from docqa.storage.db import store_failure

    return store_failure(exc)


def _silence_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered is dropped quietly at exit instead of
    raising BrokenPipeError ('Exception ignored ...') during the interpreter's shutdown."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _flush_or_silence_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()


if __name__ == "__main__":
    sys.exit(main())
