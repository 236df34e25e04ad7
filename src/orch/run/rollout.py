"""Staged rollout of a fleet's tenants (``databases.<fleet>.rollout``), for the executor.

The tenants of a run are put in the fleet's groups in order: each group
takes the tenants not taken yet whose name matches its ``match`` (no match:
all that are left); tenants no group takes form one more group at the end,
without a limit.  The executor asks :meth:`Rollout.may_start` before it
starts a tenant: only when every tenant of the earlier groups has finished,
and while fewer than the group's ``parallel`` are running.  It tells
:meth:`Rollout.finished` each result: once a group has more failures than
its ``max_failures`` (a count, or a percentage of the group), the run stops
(nothing new starts: the later groups are ``skipped``).  Inside a group one
tenant's failure does not stop the others (``--fail-fast`` does).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field

from orch.config.fleets import RolloutGroup
from orch.config.registry import Registry
from orch.outcomes import Outcome


@dataclass
class _Group:
    fleet: str
    index: int  # 1-based, as users count them
    spec: RolloutGroup
    members: list[str] = field(default_factory=list)
    running: int = 0
    finished: int = 0
    failed: int = 0

    @property
    def done(self) -> bool:
        return self.finished >= len(self.members)


class Rollout:
    """Which tenant may start now, and whether a group's failures stop the run."""

    def __init__(self, groups: dict[str, list[_Group]]) -> None:
        self.groups = groups
        self.of: dict[str, _Group] = {m: g for gs in groups.values() for g in gs for m in g.members}
        self.active: set[str] = set()

    @classmethod
    def of_run(cls, registry: Registry, names: Sequence[str]) -> Rollout | None:
        """The rollout of the tenants among *names* (in plan order); None when no fleet of
        them has one."""
        by_fleet: dict[str, list[str]] = {}
        for name in names:
            db = registry.databases.get(name)
            if db is not None and db.fleet is not None and db.rollout:
                by_fleet.setdefault(db.fleet, []).append(name)
        if not by_fleet:
            return None
        groups: dict[str, list[_Group]] = {}
        for fleet, members in by_fleet.items():
            specs = registry.databases[members[0]].rollout
            left = list(members)
            made: list[_Group] = []
            for i, spec in enumerate(specs, start=1):
                group = _Group(fleet, i, spec)
                rest: list[str] = []
                for name in left:
                    tenant = name.partition(":")[2]
                    if spec.match is None or fnmatch.fnmatchcase(tenant, spec.match):
                        group.members.append(name)
                    else:
                        rest.append(name)
                left = rest
                made.append(group)
            if left:
                made.append(_Group(fleet, len(specs) + 1, RolloutGroup(max_failures_pct=100.0)))
                made[-1].members = left
            groups[fleet] = [g for g in made if g.members]
        return cls(groups)

    def may_start(self, name: str) -> bool:
        """True when *name* may start now (always for a database outside any rollout)."""
        group = self.of.get(name)
        if group is None:
            return True
        for earlier in self.groups[group.fleet]:
            if earlier is group:
                break
            if not earlier.done:
                return False
        return group.spec.parallel is None or group.running < group.spec.parallel

    def started(self, name: str) -> None:
        group = self.of.get(name)
        if group is not None:
            group.running += 1
            self.active.add(name)

    def finished(self, name: str, outcome: Outcome) -> str | None:
        """Count *name*'s result; the reason the run stops, when its group is over budget."""
        group = self.of.get(name)
        if group is None:
            return None
        if name in self.active:
            self.active.discard(name)
            group.running -= 1
        group.finished += 1
        if not outcome.blocking:
            return None
        group.failed += 1
        allowed = group.spec.allowed(len(group.members))
        if group.failed <= allowed:
            return None
        return (
            f"rollout: group {group.index} of {group.fleet} has {group.failed} failure(s) "
            f"of {len(group.members)}, more than max_failures allows ({allowed})"
        )
