"""One base error for everything a user can get wrong or that can fail at run time.

Errors carry data and an exit code; the CLI turns them into one line (and a
JSON document with ``--json``) in exactly one place.  Exit codes follow the
contract: 1 ran and something failed, 2 could not start, 3 lock timeout only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3

# Where non-fatal findings go, one line each (a revision id two histories share):
# the command line points this at stderr for one command; library use stays silent.
warning_sink: Callable[[str], None] | None = None


class OrchError(Exception):
    """Base of every error orch reports to a user (never with a traceback unless -v).

    ``databases`` names the databases the error is about, when it is about
    some (an unknown name, a dependency behind, a missing URL): a program
    using :mod:`orch.service` can act on them without parsing the message.
    """

    exit_code: int = EXIT_FAILED

    def __init__(
        self, message: str, *, exit_code: int | None = None, databases: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.databases: tuple[str, ...] = tuple(databases)
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(OrchError):
    """Bad selectors, unknown database or revision, conflicting options: nothing was touched."""

    exit_code = EXIT_USAGE


class RefusedError(OrchError):
    """A rule refused the work (dependency rule, protected environment, dirty database)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One validation problem: where (file and key path) and why."""

    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.reason}"


class RegistryError(OrchError):
    """The registry is invalid; every problem is reported at once."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: Sequence[Problem]) -> None:  # .problems: where and why
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = str(self.problems[0])
        else:
            lines = [f"{len(self.problems)} problems in the registry:"]
            lines += [f"  - {p}" for p in self.problems]
            message = "\n".join(lines)
        super().__init__(message)


class ConfigNotFound(OrchError):
    """No databases.yaml could be found."""

    exit_code = EXIT_USAGE


class MissingVariable(OrchError):
    """An environment variable used by the environment in use is not set."""

    exit_code = EXIT_USAGE


class DatabaseError(OrchError):
    """A database could not be reached or a statement failed (message already redacted)."""

    exit_code = EXIT_FAILED
