"""The words orch's results are made of: states, outcomes, directions.

They are :class:`~enum.StrEnum` members, so each *is* its word: it compares
equal to the plain string, formats as it and is written to JSON as it
(``--json`` documents are unchanged by them).  Code that produces a state
or an outcome uses a member, so a misspelt word is a type error rather than
a row that matches nothing; code that reads one may compare with either.

This module imports nothing of orch: every layer may use it.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """A database's state in one environment (``status``, ``history``)."""

    UP_TO_DATE = "up_to_date"
    BEHIND = "behind"  # revisions pending (or never migrated: no version table yet)
    UNKNOWN_REVISION = "unknown_revision"  # its version row names a revision not in its directory
    EDITED = "edited"  # an applied revision's file no longer matches the hash recorded here
    DIRTY = "dirty"  # a revision failed half-way (MySQL/MariaDB): repair, then stamp
    RUNNING = "running"  # a migration holds its lock now
    UNREACHABLE = "unreachable"  # the revision could not be read
    UNCONFIGURED = "unconfigured"  # no usable URL (a missing variable, no URL written)
    ABSENT = "absent"  # not part of this environment (its URL there is null)

    @property
    def read(self) -> bool:
        """Whether the live revision was read (``status`` exits 1 when one was not)."""
        return self not in (State.UNREACHABLE, State.UNCONFIGURED)


class Outcome(StrEnum):
    """What a run did to one database (and, in its ``rollback`` entry, what undoing it did)."""

    DONE = "done"  # its steps ran
    UNCHANGED = "unchanged"  # already where it was asked to go
    FAILED = "failed"  # a revision or a hook failed; the database is at its last good revision
    SKIPPED = "skipped"  # never started: a dependency did not succeed, --fail-fast, a stop
    LOCKED = "locked"  # its migration lock was not free within the lock timeout
    REFUSED = "refused"  # a rule refused it before anything ran (dirty, dependency rule, ...)

    @property
    def ok(self) -> bool:
        return self in (Outcome.DONE, Outcome.UNCHANGED)

    @property
    def blocking(self) -> bool:
        """Whether the database's dependents are then ``skipped``."""
        return self in (Outcome.FAILED, Outcome.LOCKED, Outcome.REFUSED)


class CheckState(StrEnum):
    """One database's drift check (``check``): its models against its live schema."""

    CLEAN = "clean"
    DRIFT = "drift"
    NOT_CHECKABLE = "not_checkable"  # no ``metadata`` in the registry
    UNREACHABLE = "unreachable"
    UNCONFIGURED = "unconfigured"
    FAILED = "failed"  # the comparison itself failed (the models did not import, ...)


class Verdict(StrEnum):
    """One check of ``orch test`` on one database (single_head, upgrade, stairway, ...)."""

    PASSED = "passed"
    FAILED = "failed"
    NOT_APPLICABLE = "not_applicable"  # nothing to check: no revisions, no metadata, ...


class Direction(StrEnum):
    """What a run does (a plan's and a result's ``command``)."""

    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    STAMP = "stamp"
    ACCEPT = "accept"  # ``orch accept``: an edited revision's file recorded as accepted


class OnFailure(StrEnum):
    """``--on-failure``: what happens to the databases a failed run changed."""

    STOP = "stop"  # each stays at its last good revision
    ROLLBACK = "rollback"  # each goes back to where the run found it
