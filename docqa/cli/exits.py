"""docqa's exit statuses: one table, used by every command, printed by `docqa --help`
and repeated in the README.

When several apply, the first of FAILED, SKIPPED wins (a run with failed jobs and skipped
inputs exits FAILED). `docqa health` exits 1 for every unhealthy state, as container
healthchecks expect.
"""

from __future__ import annotations

# The numbers live with the error classes that carry them (docqa.core.errors):
# OK 0: everything asked for was done. FAILED 1: some jobs failed, or the work could not be
# done (a model that cannot be loaded, no such document). USAGE 2: bad usage or input
# (argparse's own status). SKIPPED 3: the rest was done, but some inputs were skipped (each
# named on stderr). UNREACHABLE 4: the store or the broker cannot be reached or opened (or
# the store failed mid-command). INTERRUPTED 130: Ctrl-C.
from docqa.core.errors import FAILED, INTERRUPTED, OK, SKIPPED, UNREACHABLE, USAGE  # noqa: F401

TABLE = (
    (OK, "all done"),
    (FAILED, "some jobs failed, or the command could not do its work (e.g. no model)"),
    (USAGE, "usage error: a missing or invalid argument or option"),
    (SKIPPED, "done, but some inputs were skipped (each is named on stderr)"),
    (UNREACHABLE, "the store or the broker cannot be reached or opened, or the store failed mid-command"),
    (INTERRUPTED, "interrupted (Ctrl-C; SIGTERM for docqa submit)"),
)


def epilog() -> str:
    """The exit-status table as `docqa --help` prints it."""
    return "exit status:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in TABLE)
