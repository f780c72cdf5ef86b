"""The `docqa` command line, by role: answering (ask, eval), producing (run, submit,
requeue), serving (worker), inspecting (status, results, db).

Every command builds one `Settings` from flags and DOCQA_* environment variables and
passes it down. Errors a user can fix are printed as one sentence (no traceback) with
exit status 2 for bad usage/input and 1 for failures at run time.
"""

from __future__ import annotations

import argparse
import sys

from docqa import __version__
from docqa.cli import answering, inspecting, producing, serving
from docqa.cli.options import CliError

__all__ = ["CliError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docqa",
        description="Extractive question answering over long documents: the answers transformers' "
        "question-answering pipeline gave, batched, durable, with character offsets into your text.",
        epilog="Every option can also be set as an environment variable DOCQA_<NAME> "
        "(e.g. DOCQA_MODEL, DOCQA_DATABASE_URL). Run 'docqa COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"docqa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for role in (answering, producing, serving, inspecting):
        role.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except CliError as exc:
        print(f"docqa {args.command}: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"docqa {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `docqa results | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
