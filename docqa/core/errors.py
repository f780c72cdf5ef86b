"""docqa's errors: one base, the exit status and HTTP status of each kind, one formatter.

Every error docqa raises on purpose derives from `DocqaError`; its message is one
sentence a person can act on. A class says how the command line exits for it and which
HTTP status the API answers with; a subclass that is also a built-in error (ValueError,
RuntimeError, LookupError) keeps that base, so code catching the built-in still works.

    DocqaError                         exit 1 (FAILED), HTTP 500
    ├── UsageError (ValueError)        exit 2 (USAGE), HTTP 422: bad input or parameters
    │   ├── SubmitError, ScheduleError, InputError, WindowError, ItemError,
    │   └── DatasetError, UnservedModel
    ├── UnreachableError               exit 4 (UNREACHABLE), HTTP 503: a service is down
    │   ├── StoreError                 (the store; NotFound is exit 1, HTTP 404; LeaseLost)
    │   └── StoreUnavailable (RuntimeError)
    ├── ModelLoadError (RuntimeError), TokenizerError (ValueError), ChunkerUnavailable,
    │   MetricsError                   exit 1: the work cannot be done here
    └── CliError                       the status it was given

The exit statuses themselves are `docqa.cli.exits` (the table `docqa --help` prints).
"""

from __future__ import annotations

# Exit statuses (docqa.cli.exits repeats them with their meanings).
OK, FAILED, USAGE, SKIPPED, UNREACHABLE, INTERRUPTED = 0, 1, 2, 3, 4, 130


class DocqaError(Exception):
    """An error docqa raises on purpose; the message says what to do."""

    exit_status: int = FAILED
    http_status: int = 500


class UsageError(DocqaError, ValueError):
    """Bad input or parameters: the caller must change what it asked."""

    exit_status = USAGE
    http_status = 422


class UnreachableError(DocqaError):
    """A service docqa needs (the store, the broker) cannot be reached or failed."""

    exit_status = UNREACHABLE
    http_status = 503


def first_line(exc: BaseException, *, with_type: bool = False) -> str:
    """The first non-empty line of an exception's message (its type's name when it has
    none): how docqa quotes another library's error in one sentence."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    if with_type:
        return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return line or type(exc).__name__
