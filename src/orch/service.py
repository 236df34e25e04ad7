"""orch's Python API: a project (registry + environment) and what can be done with it.

>>> project = Project.load("databases.yaml", env="staging")  # doctest: +SKIP
>>> [(db.name, db.state) for db in project.status()]  # doctest: +SKIP

This is the layer between the command line and the rest: it reads live
state, plans (with :mod:`orch.planning`, the resolver the run itself uses),
runs (:mod:`orch.run`), rolls back and queries (:mod:`orch.queries`), and
returns typed results.  It never prints, never prompts and never exits:
``orch.cli`` parses options, asks for confirmation, renders what comes back
and turns it into an exit code.  Errors are :class:`~orch.errors.OrchError`
subclasses carrying their exit code and the databases concerned.

A plan is an object (:class:`Plan`): what is shown to an operator, approved
(:meth:`Plan.approve`) and run (:meth:`Project.run`) is one and the same, and
the executor runs an approved plan's steps exactly or refuses the database.

Importing this module imports neither Click nor SQLAlchemy nor Alembic: each
method imports what it needs.  That is the one place in orch where imports of
orch's own modules stay inside functions, for a measured reason: the service
reaches every layer below, and each command needs only a few of them.
Importing all of them at the top made ``orch status`` on the reference
project take 0.24 s instead of 0.17 s (minimum of 9 runs): the lint rules,
the executor, the migration tests and authoring would load for every command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from orch.errors import EXIT_FAILED, MissingVariable, OrchError, RefusedError, UsageError
from orch.outcomes import CheckState, Direction, OnFailure, Outcome, State, Verdict

if TYPE_CHECKING:
    from typing import TypedDict

    from typing_extensions import Unpack

    from orch.authoring.revision import Written
    from orch.authoring.scaffold import InitResult
    from orch.config.registry import EnvironmentSpec, Registry, Target
    from orch.config.releases import Release, Releases
    from orch.planning import plan as planning
    from orch.planning.live import SharedId
    from orch.queries.drift import DriftResult
    from orch.queries.history import History
    from orch.queries.lint.walk import LintFinding, LintReport
    from orch.queries.offline import Preview
    from orch.queries.status import DbStatus, Differing
    from orch.run.execute import DbResult
    from orch.run.testing import DatabaseChecks
    from orch.store.audit import LogRow

    class RunOptions(TypedDict, total=False):
        """The options of :meth:`Project.run` that :meth:`Project.upgrade` and
        :meth:`Project.downgrade` pass on."""

        jobs: int | None
        lock_timeout: float | None
        fail_fast: bool
        on_failure: str
        on_result: Callable[[DbResult], None] | None
        on_step: Callable[[DbResult], None] | None
        on_note: Callable[[str], None] | None
        on_rollback: Callable[[str, list[str]], None] | None
        handle_signals: bool


__all__ = [
    "CheckReport",
    "LogReport",
    "MigrationChecksReport",
    "Plan",
    "Project",
    "Retry",
    "RunResult",
    "SqlResult",
    "StatusMatrix",
    "StatusReport",
    "init",
]


# ---------------------------------------------------------------- results


def _status_problem(cells: Sequence[tuple[str, DbStatus]], check: bool) -> str:
    """Why ``status`` fails, or ''.  Each cell is (where, status).

    It fails when a database could not be read: a status of nothing but
    unreachable or unconfigured databases (a missing variable in CI) must
    not pass a pipeline as if all were well.  *check*: also when one is not
    ``up_to_date``.
    """
    problems = []
    unread = [f"{where} {s.state} ({s.error})" for where, s in cells if not State(s.state).read]
    if unread:
        problems.append("could not read " + "; ".join(unread))
    late = [
        f"{where} {s.state}"
        for where, s in cells
        if s.state != State.UP_TO_DATE and State(s.state).read
    ]
    if check and late:
        problems.append("not up to date: " + ", ".join(late))
    return "; ".join(problems)


@dataclass(frozen=True)
class StatusReport:
    """The status of one environment's databases; iterating gives each :class:`DbStatus`."""

    environment: str
    databases: tuple[DbStatus, ...]
    absent: tuple[str, ...] = ()  # databases this environment leaves out (URL null)
    # the newest release every database read is at (None: between releases, or none)
    release: str | None = None
    tagged: bool = False  # the project has releases (releases.yaml has at least one)

    def __iter__(self) -> Iterator[DbStatus]:
        return iter(self.databases)

    def __len__(self) -> int:
        return len(self.databases)

    def __getitem__(self, name: str) -> DbStatus:
        """The status of database *name*."""
        for s in self.databases:
            if s.name == name:
                return s
        raise KeyError(name)

    def problem(self, check: bool = False) -> str:
        """Why this status is a failure ('' when it is not); *check*: anything not up to date."""
        return _status_problem([(s.name, s) for s in self.databases], check)

    def exit_code(self, check: bool = False) -> int:
        return EXIT_FAILED if self.problem(check) else 0

    def as_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "databases": [s.as_json() for s in self.databases],
            "absent": list(self.absent),
            "release": self.release,
        }


@dataclass(frozen=True)
class StatusMatrix:
    """Every environment's status at once (``status --all-envs``)."""

    databases: tuple[str, ...]  # the rows, in registry order
    environments: tuple[StatusReport, ...]
    # the rows that are fleets: each environment's report has one entry per tenant
    # (FLEET:TENANT), or one entry named FLEET when its tenants could not be listed
    fleets: tuple[str, ...] = ()
    #: revisions that ran with different file contents in different environments
    differing: tuple[Differing, ...] = ()

    def __iter__(self) -> Iterator[StatusReport]:
        return iter(self.environments)

    def fleet_counts(self, fleet: str, report: StatusReport) -> dict[str, int]:
        """How many of *fleet*'s tenants are in each state in *report*'s environment."""
        out: dict[str, int] = {}
        prefix = fleet + ":"
        for s in report:
            if s.name.startswith(prefix) or s.name == fleet:
                out[s.state] = out.get(s.state, 0) + 1
        return out

    def problem(self, check: bool = False) -> str:
        cells = [(f"{r.environment}/{s.name}", s) for r in self.environments for s in r]
        return _status_problem(cells, check)

    def exit_code(self, check: bool = False) -> int:
        return EXIT_FAILED if self.problem(check) else 0


class Retry(NamedTuple):
    """:meth:`Project.plan_retry`: the run retried, its databases to run again, their plan."""

    run_id: str
    databases: list[str]
    plan: Plan | None


@dataclass(frozen=True)
class Plan:
    """What a run will do: its ordered steps (:class:`orch.planning.plan.PlanStep`), the live
    revisions they start from, and the rules the run will check again under each lock.

    Show it, :meth:`approve` it and hand it to :meth:`Project.run`: an approved
    plan's database whose steps changed in between is refused, never run
    differently from what was shown.
    """

    environment: str
    planned: planning.Plan
    statuses: tuple[DbStatus, ...] = ()  # the live reads it was made from (() when none)
    targets: Mapping[str, Target] = field(default_factory=dict, repr=False)
    check_deps: bool = True  # the dependency rule, checked again under each lock
    approved: bool = False
    release: str | None = None  # upgrade/downgrade --to: the release tag it brings to
    #: what the run selects, recorded in its audit rows (see Project.retry_selection)
    scope: str | None = None

    @property
    def direction(self) -> Direction:
        return self.planned.direction

    @property
    def steps(self) -> tuple[planning.PlanStep, ...]:
        return self.planned.steps

    @property
    def names(self) -> list[str]:
        return self.planned.names

    @property
    def pending(self) -> int:
        """Revisions the plan runs, over all databases (of those whose revision was read)."""
        return sum(len(s.revisions) for s in self.steps)

    @property
    def unreadable(self) -> dict[str, DbStatus]:
        """Databases whose live revision could not be read (their steps are not resolved)."""
        return {s.name: s for s in self.statuses if s.current is None}

    @property
    def currents(self) -> dict[str, tuple[str, ...] | None]:
        """The live revisions read for the plan, by database (None: could not be read)."""
        return {s.name: tuple(s.current) if s.current is not None else None for s in self.statuses}

    def approve(self) -> Plan:
        """This plan, shown and accepted: the run executes exactly its resolved steps."""
        return dataclasses.replace(self, planned=self.planned.announced(), approved=True)

    def refused(self, why: str) -> list[DbResult]:
        """Each database of the plan as ``refused`` before anything ran, saying *why*
        (the per-database answer to a run nobody confirmed)."""
        from orch.run.execute import DbResult

        return [
            DbResult(
                s.db,
                self.direction,
                Outcome.REFUSED,
                start=list(s.current) if s.current is not None else None,
                end=list(s.current) if s.current is not None else None,
                error=why,
            )
            for s in self.steps
            if s.part == 0  # a database once, however many steps it has
        ]

    def check_configured(self) -> None:
        """MissingVariable when a database the plan read has no usable URL (what the run
        would refuse with exit 2)."""
        _require_urls(self.targets, [s.name for s in self.statuses] or self.names)

    def steps_json(self) -> list[dict[str, Any]]:
        return [
            {
                "name": s.db,
                "direction": s.direction,
                "target": s.target,
                "level": s.level,
                "from": list(s.current) if s.current is not None else None,
                "to": list(s.resolved.target) if s.resolved else None,
                "revisions": list(s.revisions),
            }
            for s in self.steps
        ]


@dataclass
class RunResult:
    """A run's per-database outcomes (plan order), and the exit code they make."""

    environment: str
    direction: Direction
    on_failure: OnFailure
    databases: list[DbResult]
    exit_code: int
    interrupted: str | None = None  # SIGINT/SIGTERM when a signal stopped the run
    rolled_back: bool = False  # --on-failure rollback acted (or reported what it could not)

    def __iter__(self) -> Iterator[DbResult]:
        return iter(self.databases)

    def __getitem__(self, name: str) -> DbResult:
        for r in self.databases:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def stop_reason(self) -> str | None:
        return f"interrupted by {self.interrupted}" if self.interrupted else None

    @property
    def error(self) -> str | None:
        """One line naming what did not succeed (None for a run that did)."""
        if not self.exit_code:
            return None
        bad = [f"{r.name} {r.outcome}" for r in self.databases if not r.outcome.ok]
        bad += [
            f"{r.name} rollback {r.rollback['outcome']}"
            for r in self.databases
            if r.rollback is not None and not Outcome(r.rollback["outcome"]).ok
        ]
        if self.stop_reason:
            bad.insert(0, self.stop_reason)
        return "; ".join(bad)

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "environment": self.environment,
            "command": self.direction,
            "on_failure": self.on_failure,
            "interrupted": self.interrupted,
            "databases": [r.as_json() for r in self.databases],
            "exit_code": self.exit_code,
        }
        if self.exit_code:
            doc["error"] = self.error
        return doc


@dataclass(frozen=True)
class SqlResult:
    """``--sql``: the SQL of every step in execution order, and the files written."""

    preview: Preview
    files: tuple[Path, ...] = ()

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.preview.failed else 0

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "environment": self.preview.environment,
            "command": self.preview.direction,
            "sql": True,
            "databases": [s.as_json() for s in self.preview.sections],
            "files": [str(f) for f in self.files],
            "exit_code": self.exit_code,
        }
        if self.preview.failed:
            doc["error"] = "; ".join(
                f"{s.name}: {s.failed_revision}: {s.error}" for s in self.preview.failed
            )
        return doc


@dataclass(frozen=True)
class CheckReport:
    """Drift between each database's models and its live schema, and history problems."""

    environment: str
    databases: tuple[DriftResult, ...]
    problems: tuple[SharedId, ...]  # revision ids two databases' histories declare
    warnings: tuple[str, ...]  # alembic.ini disagreeing with the registry
    exit_code: int

    def __iter__(self) -> Iterator[DriftResult]:
        return iter(self.databases)

    @property
    def error(self) -> str | None:
        if not self.exit_code:
            return None
        fine = (CheckState.CLEAN, CheckState.NOT_CHECKABLE)
        found = [f"{r.name} {r.state}" for r in self.databases if r.state not in fine]
        found += [f"revision id {s.revision} shared by two databases" for s in self.problems]
        return "; ".join(found) or "; ".join(f"{r.name} not_checkable" for r in self.databases)

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "environment": self.environment,
            "databases": [r.as_json() for r in self.databases],
            "problems": [s.as_json() for s in self.problems],
            "warnings": list(self.warnings),
            "exit_code": self.exit_code,
        }
        if self.exit_code:
            doc["error"] = self.error
        return doc


@dataclass(frozen=True)
class MigrationChecksReport:
    """``orch test``: every check of each database's migrations, on throwaway databases."""

    environment: str
    databases: tuple[DatabaseChecks, ...]

    def __iter__(self) -> Iterator[DatabaseChecks]:
        return iter(self.databases)

    def __getitem__(self, name: str) -> DatabaseChecks:
        for r in self.databases:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def failures(self) -> list[str]:
        """One line per failed check (and one per schema difference under it)."""
        from orch.run.testing import failures

        return failures(self.databases)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if any(r.failed for r in self.databases) else 0

    @property
    def error(self) -> str | None:
        failed = [
            f"{r.name} {c.check}" + (f" at {c.revision}" if c.revision else "")
            for r in self.databases
            for c in r.checks
            if c.state == Verdict.FAILED
        ]
        return "failed: " + ", ".join(failed) if failed else None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "environment": self.environment,
            "databases": [r.as_json() for r in self.databases],
            "exit_code": self.exit_code,
        }
        if self.exit_code:
            doc["error"] = self.error
        return doc


@dataclass(frozen=True)
class LogReport:
    """The audit trail, newest first, and the databases whose trail could not be read."""

    environment: str
    entries: tuple[LogRow, ...]
    unreadable: Mapping[str, str]

    def __iter__(self) -> Iterator[LogRow]:
        return iter(self.entries)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.unreadable else 0

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "environment": self.environment,
            "entries": [r.as_json() for r in self.entries],
            "unreadable": dict(self.unreadable),
        }
        if self.unreadable:
            doc["error"] = "; ".join(f"{n}: {e}" for n, e in self.unreadable.items())
            doc["exit_code"] = self.exit_code
        return doc


# ---------------------------------------------------------------- the project


def _silent(_note: str) -> None:
    return None


def _require_urls(targets: Mapping[str, Target], names: Sequence[str]) -> None:
    for name in names:
        t = targets[name]
        if t.url is None:
            raise MissingVariable(f"{name}: {t.missing}", databases=(name,))


class Project:
    """A registry (databases.yaml) and the environment to work in, loaded once.

    *env* None means ``$ORCH_ENV``, else the registry's ``default_env``.  An
    unknown environment is an error when it is first used (``status_all``
    needs none).
    """

    def __init__(self, registry: Registry, env: str | None = None) -> None:
        self.registry = registry  # every database and environment, as written
        self.env = env or os.environ.get("ORCH_ENV") or None
        self._scoped: Registry | None = None

    @classmethod
    def load(cls, config: str | os.PathLike[str] | None = None, env: str | None = None) -> Project:
        """Read and validate the registry: *config*, else ``$ORCH_CONFIG``, else the
        databases.yaml of the working directory or the nearest one above it."""
        from orch.config.registry import load_registry

        return cls(load_registry(config), env)

    # -- the environment

    @property
    def scoped(self) -> Registry:
        """The registry as the environment sees it (the databases it leaves out, out)."""
        if self._scoped is None:
            self._scoped = _with_tenants(self.registry.in_environment(self.env), self.env)
        return self._scoped

    @property
    def environment(self) -> EnvironmentSpec:
        return self.registry.environment(self.env)

    @property
    def environment_name(self) -> str:
        return self.environment.name

    @property
    def protected(self) -> bool:
        """Runs here need an approved plan (:meth:`Plan.approve`) or ``yes=True``."""
        return self.environment.protected

    @property
    def absent(self) -> list[str]:
        """The databases this environment leaves out (URL null), in registry order."""
        return [n for n in self.registry.databases if n in self.scoped.left_out]

    def targets(self) -> dict[str, Target]:
        """Each database of the environment with its resolved URL (or why there is none)."""
        return {t.name: t for t in self.scoped.targets(self.env)}

    def _check_names(self, registry: Registry, names: Sequence[str]) -> list[str]:
        """*names* as databases: a fleet or ``fleet:glob`` becomes its tenants."""
        out: list[str] = []
        for name in names:
            out += registry.select(name)  # UsageError naming it
        return list(dict.fromkeys(out))

    # -- reading

    def status(
        self, databases: Sequence[str] | None = None, *, shard: tuple[int, int] | None = None
    ) -> StatusReport:
        """Current revision, heads, pending count and :class:`~orch.outcomes.State` of each
        (or each named) database, read concurrently; writes nothing.  *shard* (I, N): only
        the databases of that shard (see :mod:`orch.planning.shards`)."""
        from orch.planning.live import graphs_for
        from orch.planning.shards import in_shard
        from orch.queries import status as st

        registry = self.scoped
        names = self._check_names(registry, databases or ()) or None
        if shard is not None:
            names = in_shard(names or registry.databases, shard)
        graphs = graphs_for(registry, names)
        env = registry.environment(self.env).name
        rows = st.collect(registry, env, names, graphs=graphs)
        return self._with_releases(StatusReport(env, tuple(rows), tuple(self.absent)))

    def status_all(self, databases: Sequence[str] | None = None) -> StatusMatrix:
        """Every environment's status, every cell queried at once."""
        from orch.planning.live import graphs_for
        from orch.queries import status as st

        registry = self.registry
        for name in databases or ():
            registry.database(name)  # UsageError naming it (a fleet by its own name)
        names = list(databases) if databases else None
        fleets = [n for n in names or registry.databases if registry.databases[n].is_fleet]
        if fleets:  # each environment's tenants, read for that environment
            return self._status_all_fleets(names, fleets)
        graphs = graphs_for(registry, names)
        reports = []
        found = st.collect_all(registry, names, graphs=graphs)
        for env, rows in found:
            spec = registry.environments[env]
            absent = [n for n in names or registry.databases if n in spec.absent]
            reports.append(self._with_releases(StatusReport(env, tuple(rows), tuple(absent))))
        return StatusMatrix(
            tuple(names or registry.databases),
            tuple(reports),
            differing=tuple(st.differing(found)),
        )

    def _with_releases(self, report: StatusReport) -> StatusReport:
        """*report* with the release each database and the environment is at.

        A database is at the newest release whose heads for it are exactly its
        current revisions (a database a release does not list counts as at
        base there); the environment is at the newest release every database
        read is at together.  An unread database is at none.
        """
        releases = self.releases()
        if not len(releases):
            return report
        currents = {s.name: s.current for s in report.databases}
        for s in report.databases:
            s.release = releases.matching({s.name: s.current})
        release = releases.matching(currents) if currents else None
        return dataclasses.replace(report, release=release, tagged=True)

    def _status_all_fleets(self, names: list[str] | None, fleets: list[str]) -> StatusMatrix:
        """``status_all`` of a registry with fleets: the other databases as always, each
        fleet's tenants listed and read per environment (a source that fails there makes
        that environment's fleet cell ``unconfigured``, saying why)."""
        from orch.planning.live import graphs_for
        from orch.queries import status as st
        from orch.queries.status import DbStatus

        registry = self.registry
        rows = list(names or registry.databases)
        plain = [n for n in rows if n not in fleets]
        reports = []
        by_env: dict[str, list[DbStatus]] = {env: [] for env in registry.environments}
        if plain:
            graphs = graphs_for(registry, plain)
            for env, found in st.collect_all(registry, plain, graphs=graphs):
                by_env[env] += found
        for env, spec in registry.environments.items():
            present = [f for f in fleets if f not in spec.absent]
            if present:
                try:
                    view = _with_tenants(registry.in_environment(env), env)
                    members = [m for f in present for m in view.fleets.get(f, ())]
                    if members:
                        graphs = graphs_for(view, members)
                        by_env[env] += st.collect(view, env, members, graphs=graphs)
                except OrchError as exc:
                    for f in present:
                        by_env[env].append(
                            DbStatus(f, None, None, [], None, State.UNCONFIGURED, str(exc))
                        )
            absent = [n for n in rows if n in spec.absent]
            reports.append(StatusReport(env, tuple(by_env[env]), tuple(absent)))
        differing = st.differing(list(by_env.items()))
        return StatusMatrix(tuple(rows), tuple(reports), tuple(fleets), tuple(differing))

    def history(self, database: str) -> History:
        """The revisions of *database*, newest first, the ones applied here marked.

        A tenant (``tenant:acme``) is marked from its own database or schema; a
        fleet's own name lists its revisions unmarked (which tenant's would it be?).
        """
        from orch.queries.history import History, entries, history

        fleet, sep, _tenant = database.partition(":")
        spec = self.registry.databases.get(fleet)
        if spec is not None and spec.is_fleet and fleet not in self.environment.absent:
            if sep:
                return history(self.scoped, self.env, database)
            from orch.planning.live import graphs_for

            graph = graphs_for(self.registry, [fleet])[fleet]
            return History(
                database=fleet,
                environment=self.environment_name,
                current=None,
                heads=graph.heads,
                state=State.UNCONFIGURED,
                error=f"{fleet} has tenants: name one ({fleet}:TENANT) to see what is applied",
                entries=tuple(entries(graph, None)),
            )
        return history(self.registry, self.env, database)

    def log(self, databases: Sequence[str] | None = None, limit: int | None = 50) -> LogReport:
        """The audit trail of the environment's (or the named) databases, newest first.
        *limit* None: all entries."""
        from orch.store.audit import collect_log

        registry = self.scoped
        env = registry.environment(self.env).name
        names = self._check_names(registry, databases or ()) or list(registry.databases)
        _require_urls(self.targets(), names)
        view = collect_log(registry, env, names, limit or None)
        return LogReport(env, tuple(view.rows), view.unreadable)

    def check(self, databases: Sequence[str] | None = None) -> CheckReport:
        """Drift between models (registry ``metadata``) and live schemas; read-only."""
        from orch.config.alembic_ini import disagreements
        from orch.planning import live
        from orch.queries import drift

        registry = self.scoped
        named = self._check_names(registry, databases or ())
        env = registry.environment(self.env).name
        results = drift.check(registry, env, named or None)
        full = self.registry  # plain alembic sees every directory, in every environment
        shared = [
            s
            for s in live.shared_ids(full, live.graphs_for(full, warn=False))
            if not named or set(named) & {*s.databases[0], *s.databases[1]}
        ]
        code = drift.exit_code(results, named)
        if shared:
            code = EXIT_FAILED  # a finding, like drift
        return CheckReport(env, tuple(results), tuple(shared), tuple(disagreements(full)), code)

    def test_migrations(
        self,
        databases: Sequence[str] | None = None,
        *,
        on_note: Callable[[str], None] | None = None,
    ) -> MigrationChecksReport:
        """``orch test``: check each (or each named) database's migrations, in dependency order.

        single_head, upgrade, stairway, no_trace and models_match (see
        :mod:`orch.run.testing`), on throwaway databases created on the
        environment's servers with its logins (SQLite: in a temporary
        directory) and dropped afterwards, also on failure and on Ctrl-C.
        The environment's own databases are never touched.  *on_note* gets
        the progress lines.  (Not named ``test``: pytest would collect it.)
        """
        from orch.run.testing import check_migrations

        registry = self.scoped
        self._check_names(registry, databases or ())
        env = registry.environment(self.env).name
        names = list(dict.fromkeys(databases or ())) or None
        results = check_migrations(self.registry, self.env, names, say=on_note or _silent)
        return MigrationChecksReport(env, tuple(results))

    def retry_selection(self, run_id: str | None = None) -> tuple[str, list[str]]:
        """(the run, its databases to run again) for ``upgrade --retry [RUN_ID]``.

        The run is *run_id* (a prefix such as ``orch log`` shows will do),
        else the environment's last run, found in orch's audit rows
        (``log_table``) of every database of the environment.  A database is
        run again when that run left a ``failed`` or interrupted row in it,
        or when the run selected it, left no row in it (skipped, locked,
        refused before its lock, unreachable) and it is not up to date now;
        a database the run finished is left alone, and so is one the run
        did not select (another fleet, another runner's ``--shard``: the
        selection is recorded in the run's rows; rows of an orch before it
        did say nothing, and then every database without a row counts).
        """
        chosen, again, _scope = self._retry(run_id)
        return chosen, again

    def plan_retry(self, run_id: str | None = None) -> Retry:
        """What ``upgrade --retry [RUN_ID]`` runs: a :class:`Retry` (its ``plan`` None when
        nothing is left to retry).

        The databases of :meth:`retry_selection`, planned with their
        dependencies; the plan's audit rows record the retried run's
        selection, so a retry of a retry stays inside it.
        """
        chosen, again, scope = self._retry(run_id)
        plan = self.plan(again, with_deps=True, scope=scope) if again else None
        return Retry(chosen, again, plan)

    def _retry(self, run_id: str | None) -> tuple[str, list[str], str | None]:
        """The run retried, its databases to run again, and the selection it recorded."""
        from orch.queries import status as st
        from orch.store.audit import collect_log

        registry = self.scoped
        env = registry.environment(self.env).name
        targets = self.targets()
        names = [n for n in registry.databases if targets[n].url is not None]
        view = collect_log(registry, env, names, 200)
        runs = {r.run_id for r in view.rows}
        if run_id:
            matching = sorted(r for r in runs if r.startswith(run_id))
            if not matching:
                raise UsageError(f"no run {run_id!r} in the audit rows of environment {env!r}")
            if len(matching) > 1:
                raise UsageError(f"run {run_id!r} is ambiguous: {', '.join(matching)}")
            chosen = matching[0]
        elif view.rows:
            chosen = view.rows[0].run_id  # newest first: the environment's last run
        else:
            raise UsageError(f"no run in the audit rows of environment {env!r}: nothing to retry")
        rows = [r for r in view.rows if r.run_id == chosen]
        scope = next((r.scope for r in rows if r.scope), None)
        touched = {r.db for r in rows}
        bad = {
            r.db
            for r in rows
            if r.outcome == "failed" or (r.outcome == "running" and r.interrupted)
        }
        selected = _scope_names(registry, scope)
        untouched = [n for n in names if n not in touched and (selected is None or n in selected)]
        graphs = None
        if untouched:
            from orch.planning.live import graphs_for

            graphs = graphs_for(registry, untouched)
            for s in st.collect(registry, env, untouched, graphs=graphs):
                if s.state not in (State.UP_TO_DATE, State.UNCONFIGURED):
                    bad.add(s.name)
        return chosen, [n for n in registry.databases if n in bad], scope

    # -- planning

    def _read(
        self,
        names: Sequence[str],
        *,
        read: bool = True,
        skip: Callable[[str], bool] | None = None,
        settle_only: bool = False,
    ) -> tuple[dict[str, Target], Mapping[str, Any], dict[str, Any], list[DbStatus]]:
        """Targets, revision graphs, live revisions of *names* (None if unreadable), statuses.

        ``read=False`` connects to nothing (every revision None) but still
        imports the drivers here, once, before any worker forks.  *skip*: the
        databases not read here (their revision None) when reading.
        """
        from orch.planning.live import graphs_for
        from orch.queries import status as st

        registry = self.scoped
        targets = {t.name: t for t in registry.targets(self.env)}
        graphs = graphs_for(registry)
        histories = {id(g.revs): g for g in graphs.values()}.values()  # a fleet shares one
        if (not read or skip is not None) and any(
            r.requires for g in histories for r in g.revs.values()
        ):
            # requirements across databases: the order depends on every revision
            read, skip = True, None
        if not read:
            from orch.store.db import preload_drivers

            preload_drivers(targets[n].url for n in names)
            return targets, graphs, dict.fromkeys(names), []
        read_here = [n for n in names if skip is None or not skip(n)]
        if len(read_here) < len(names):  # the skipped ones' drivers, before any worker forks
            from orch.store.db import preload_drivers

            preload_drivers(targets[n].url for n in names if skip is not None and skip(n))
        statuses = (
            st.collect(registry, self.env, read_here, graphs=graphs, settle_only=settle_only)
            if read_here
            else []
        )
        currents: dict[str, Any] = dict.fromkeys(names)
        currents.update(
            {s.name: tuple(s.current) if s.current is not None else None for s in statuses}
        )
        return targets, graphs, currents, statuses

    def plan(
        self,
        selectors: Sequence[str] = (),
        *,
        all: bool = False,
        with_deps: bool = False,
        ignore_deps: bool = False,
        read_live: bool = True,
        shard: tuple[int, int] | None = None,
        scope: str | None = None,
    ) -> Plan:
        """The upgrade plan from the live revisions: what :meth:`upgrade` would run.

        *selectors* are ``DB`` or ``DB@TARGET`` (head, +N, a revision).
        *scope*: the selection its audit rows record, when not this one
        (:meth:`plan_retry` keeps the retried run's).
        ``read_live=False`` with *all* plans every database to head without
        connecting: with ``--all`` the live revisions change nothing in the
        plan (no dependency can be left behind) and the executor reads each
        database again under its lock anyway, so a run that shows nothing
        saves a connection per database.
        """
        from orch.planning import plan as planning
        from orch.planning.live import graphs_for
        from orch.planning.plan import parse_selectors, related

        registry = self.scoped
        sels = parse_selectors(registry, selectors, command="upgrade")
        if all and sels:
            raise UsageError("--all cannot be combined with database selectors")
        involved = (
            list(registry.databases) if all else _with_dependencies(registry, [s.db for s in sels])
        )
        if not all:  # and the databases requirements relate them to
            involved = related(registry, graphs_for(registry), involved)
        # a fleet's tenants are read first (concurrently, read-only, on shared connections):
        # those already at head are settled without a lock (see _settled); tenants that are
        # databases of their own are not: a second connection to each costs more than the
        # migration, so each is read under its lock only (orch.run.execute)
        fleet_run = all and bool(registry.fleets)
        settling = all and not read_live  # nothing is shown: the read only settles tenants

        def own_database(name: str) -> bool:
            db = registry.databases[name]
            return db.fleet is not None and db.schema is None

        targets, graphs, currents, statuses = self._read(
            involved,
            read=read_live or not all or fleet_run,
            skip=own_database if settling else None,
            settle_only=settling,
        )
        planned = planning.plan_upgrade(
            registry,
            sels,
            all_=all,
            graphs=graphs,
            currents=currents,
            with_deps=with_deps,
            ignore_deps=ignore_deps,
        )
        planned = _sharded(planned, shard)
        _require_urls(targets, planned.names)
        return Plan(
            registry.environment(self.env).name,
            planned,
            tuple(statuses),
            targets,
            check_deps=not ignore_deps,
            scope=scope if scope is not None else _scope_text(selectors, all, shard),
        )

    def plan_downgrade(
        self,
        selectors: Sequence[str],
        *,
        force: bool = False,
        cascade: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> Plan:
        """The downgrade plan (explicit targets: DB@-1, DB@REV, DB@base), dependents first.

        *force*: downgrade even when dependents are not at base.  *cascade*:
        first downgrade, just far enough, the databases whose applied revisions
        require (``orch_requires``) a revision this removes.
        """
        from orch.planning.live import graphs_for
        from orch.planning.plan import parse_selectors, plan_downgrade, related

        registry = self.scoped
        sels = parse_selectors(registry, selectors, require_target=True, command="downgrade")
        names = [s.db for s in sels]
        involved = list(dict.fromkeys(names + [d for n in names for d in registry.dependents(n)]))
        involved = related(registry, graphs_for(registry), involved, up=False)
        targets, graphs, currents, statuses = self._read(involved)
        planned = plan_downgrade(
            registry, sels, graphs=graphs, currents=currents, force=force, cascade=cascade
        )
        planned = _sharded(planned, shard)
        _require_urls(targets, planned.names)
        env = registry.environment(self.env).name
        return Plan(env, planned, tuple(statuses), targets, check_deps=not force)

    def plan_stamp(self, selectors: Sequence[str], *, read_live: bool = False) -> Plan:
        """The stamp plan (DB@REVISION, DB@head, DB@base).  A stamp's steps do not depend
        on the live revisions; *read_live* reads them only to show where each database is."""
        from orch.planning.live import graphs_for
        from orch.planning.plan import parse_selectors, plan_stamp

        registry = self.scoped
        sels = parse_selectors(registry, selectors, require_target=True, command="stamp")
        targets = {t.name: t for t in registry.targets(self.env)}
        graphs = graphs_for(registry, [s.db for s in sels])
        planned = plan_stamp(registry, sels, graphs=graphs, currents={})
        _require_urls(targets, planned.names)
        statuses: list[DbStatus] = []
        if read_live:
            statuses = self._read(planned.names)[3]
        env = registry.environment(self.env).name
        return Plan(env, planned, tuple(statuses), targets, check_deps=False)

    # -- releases

    @property
    def releases_path(self) -> Path:
        """``releases.yaml`` beside the revisions (the registry's script location)."""
        from orch.config.releases import releases_path

        return releases_path(self.registry.script_location)

    def releases(self) -> Releases:
        """The project's release tags, oldest first (none when there is no releases.yaml)."""
        from orch.config.releases import load_releases

        return load_releases(self.releases_path)

    def release(self, tag: str, message: str = "") -> Release:
        """Tag the current *file* heads of every database as release *tag* in releases.yaml.

        The heads of the files, not what some environment has applied: a
        release is what the repository ships, the same in every environment,
        and made without connecting to any database (so the tag can be made
        and reviewed in the commit that adds the revisions).  A tag is written
        once.  Every database of the registry is recorded, whatever the
        environment leaves out.
        """
        import datetime

        from orch.config.releases import Release, add_release, check_tag
        from orch.planning.live import graphs_for

        check_tag(tag)
        graphs = graphs_for(self.registry)  # checks orch_requires across every database
        heads = {name: tuple(graphs[name].heads) for name in self.registry.databases}
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        made = Release(tag, now, message, heads)
        add_release(self.releases_path, made)
        return made

    def plan_to(self, tag: str, direction: str, *, keep_new: bool = False) -> Plan:
        """The plan bringing every database of the environment to release *tag*.

        *direction* ``upgrade`` or ``downgrade``; *keep_new* (downgrade): leave
        databases added after the tag alone instead of taking them to base.
        The order satisfies every requirement across databases and
        ``depends_on``; the database-level rules do not apply between
        databases that all move to one release (see
        :func:`orch.planning.plan.plan_release`).
        """
        from orch.planning.plan import plan_release

        if direction not in (Direction.UPGRADE, Direction.DOWNGRADE):
            raise UsageError(f"--to: {direction!r} is not upgrade or downgrade")
        if keep_new and direction == Direction.UPGRADE:
            raise UsageError("--keep-new goes with 'downgrade --to' (upgrade --to leaves them)")
        release = self.releases().get(tag)
        registry = self.scoped
        targets, graphs, currents, statuses = self._read(list(registry.databases))
        planned = plan_release(
            registry,
            tag,
            release.heads,
            Direction(direction),
            graphs=graphs,
            currents=currents,
            keep_new=keep_new,
        )
        _require_urls(targets, planned.names)
        env = registry.environment(self.env).name
        return Plan(env, planned, tuple(statuses), targets, check_deps=False, release=tag)

    def upgrade_to(
        self, tag: str, *, yes: bool = False, **options: Unpack[RunOptions]
    ) -> RunResult:
        """Bring every database of the environment up to release *tag* (see :meth:`plan_to`)."""
        return self.run(self.plan_to(tag, Direction.UPGRADE), yes=yes, **options)

    def downgrade_to(
        self,
        tag: str,
        *,
        keep_new: bool = False,
        yes: bool = False,
        **options: Unpack[RunOptions],
    ) -> RunResult:
        """Bring every database of the environment down to release *tag* (see :meth:`plan_to`)."""
        plan = self.plan_to(tag, Direction.DOWNGRADE, keep_new=keep_new)
        return self.run(plan, yes=yes, **options)

    # -- running

    def upgrade(
        self,
        selectors: Sequence[str] = (),
        *,
        all: bool = False,
        with_deps: bool = False,
        ignore_deps: bool = False,
        yes: bool = False,
        shard: tuple[int, int] | None = None,
        **options: Unpack[RunOptions],
    ) -> RunResult:
        """Plan and run an upgrade, dependencies before dependents.

        *options* are :meth:`run`'s (jobs, lock_timeout, fail_fast, on_failure,
        on_result, on_note, on_rollback, handle_signals).  In a protected
        environment, *yes* must say the run is wanted (or plan, show,
        :meth:`Plan.approve` and :meth:`run`).
        """
        plan = self.plan(
            selectors,
            all=all,
            with_deps=with_deps,
            ignore_deps=ignore_deps,
            read_live=False,
            shard=shard,
        )
        return self.run(plan, yes=yes, **options)

    def downgrade(
        self,
        selectors: Sequence[str],
        *,
        force: bool = False,
        cascade: bool = False,
        yes: bool = False,
        shard: tuple[int, int] | None = None,
        **options: Unpack[RunOptions],
    ) -> RunResult:
        """Plan and run a downgrade to explicit targets, dependents first (see :meth:`upgrade`).

        *cascade*: see :meth:`plan_downgrade`."""
        plan = self.plan_downgrade(selectors, force=force, cascade=cascade, shard=shard)
        return self.run(plan, yes=yes, **options)

    def stamp(
        self, selectors: Sequence[str], *, yes: bool = False, lock_timeout: float | None = None
    ) -> RunResult:
        """Set databases' versions without running migrations (baseline, repair)."""
        return self.run(self.plan_stamp(selectors), yes=yes, jobs=1, lock_timeout=lock_timeout)

    def plan_accept(self, selector: str) -> Plan:
        """The plan of :meth:`accept` (``DB@REV``; a unique prefix or label names REV too),
        for showing before it runs."""
        from orch.planning import plan as planning
        from orch.planning.live import graphs_for
        from orch.planning.plan import parse_selectors

        registry = self.scoped
        (sel,) = parse_selectors(registry, [selector], require_target=True, command="accept")
        assert sel.target is not None
        rev = graphs_for(registry, [sel.db])[sel.db].resolve(sel.target)
        targets = {t.name: t for t in registry.targets(self.env)}
        _require_urls(targets, [sel.db])
        step = planning.PlanStep(sel.db, Direction.ACCEPT, rev, 0)
        env = registry.environment(self.env).name
        return Plan(env, planning.Plan(Direction.ACCEPT, (step,)), (), targets, check_deps=False)

    def accept(
        self,
        selector: str | Plan,
        why: str,
        *,
        yes: bool = False,
        lock_timeout: float | None = None,
    ) -> RunResult:
        """Record an applied revision's file, as it is now, as accepted (``DB@REV``).

        For a revision edited after it ran here: ``status`` stops calling the
        database ``edited`` and a protected environment runs it again.  The
        audit row says who (OS user, host) and *why* (required).  Under the
        database's migration lock; protected like :meth:`stamp` (an approved
        plan from :meth:`plan_accept`, or *yes*).
        """
        import uuid

        from orch.run.execute import Task, exit_code, run_one
        from orch.store.audit import git_commit

        if not why.strip():
            raise UsageError("accept needs a reason: -m WHY (it goes into the audit trail)")
        plan = selector if isinstance(selector, Plan) else self.plan_accept(selector)
        if self.protected and not (plan.approved or yes):
            raise RefusedError(
                f"environment {self.environment_name!r} is protected: accept needs an approved "
                "plan or yes; nothing was changed",
                databases=plan.names,
            )
        registry = self.scoped
        (step,) = plan.steps
        target = plan.targets[step.db]
        settings = registry.settings
        task = Task(
            registry,
            target,
            step,
            str(uuid.uuid4()),
            settings.lock_timeout if lock_timeout is None else lock_timeout,
            git_commit=git_commit(registry.root),
            accept=(step.target, why.strip()),
        )
        result = run_one(task)
        return RunResult(
            plan.environment, Direction.ACCEPT, OnFailure.STOP, [result], exit_code([result])
        )

    def run(
        self,
        plan: Plan,
        *,
        yes: bool = False,
        jobs: int | None = None,
        lock_timeout: float | None = None,
        fail_fast: bool = False,
        on_failure: str = OnFailure.STOP,
        on_result: Callable[[DbResult], None] | None = None,
        on_step: Callable[[DbResult], None] | None = None,
        on_note: Callable[[str], None] | None = None,
        on_rollback: Callable[[str, list[str]], None] | None = None,
        handle_signals: bool = True,
    ) -> RunResult:
        """Execute *plan*; with ``on_failure="rollback"``, undo what a failed run changed.

        Failures are outcomes, not exceptions: each database's
        :class:`~orch.outcomes.Outcome` is in the result, with the run's exit
        code.  *on_result* is called as each database finishes (*on_step* as each
        step does: a database whose run interleaves with another's has several); *on_note* with
        a line worth telling (``jobs`` capped); *on_rollback* with why and which
        databases when a rollback starts.
        *handle_signals*: SIGINT/SIGTERM (main thread only) finish the
        revisions in flight and start nothing new; the result then says
        ``interrupted`` and its exit code is 130/143.
        """
        import uuid

        from orch.alembic_bridge.runner import check_project
        from orch.run import rollback
        from orch.run.execute import effective_jobs, execute, exit_code
        from orch.stopping import Stop

        if on_failure not in tuple(OnFailure):
            known = ", ".join(OnFailure)
            raise UsageError(f"on_failure {on_failure!r}: use one of {known}")
        policy = OnFailure(on_failure)
        registry = self.scoped
        if self.protected and not (plan.approved or yes):
            raise RefusedError(
                f"environment {self.environment_name!r} is protected: {plan.direction} needs an "
                "approved plan or yes; nothing was changed",
                databases=plan.names,
            )
        check_project(registry)  # a broken alembic.ini: exit 2 before any database is touched
        jobs, note = effective_jobs(registry, jobs, len(plan.steps))
        if note and on_note is not None:
            on_note(f"note: {note}")
        run_id = str(uuid.uuid4())
        stop = Stop()
        rolled_back = False
        planned, settled, ahead = _settled(registry, plan)
        for r in settled.values():
            if on_result is not None:
                on_result(r)
        with stop.installed() if handle_signals else contextlib.nullcontext(stop):
            results = execute(
                registry,
                planned,
                dict(plan.targets),
                jobs=jobs,
                lock_timeout=lock_timeout,
                fail_fast=fail_fast,
                on_result=on_result,
                on_step=on_step,
                run_id=run_id,
                scope=plan.scope,
                settled=ahead,
                check_deps=plan.check_deps,
                # a release plan has no database-level rule but keeps the requirements
                check_requirements=plan.check_deps or plan.release is not None,
            )
            if settled:  # back in plan order
                ran = {r.name: r for r in results}
                results = [settled.get(n) or ran[n] for n in plan.names]
            if policy == OnFailure.ROLLBACK and rollback.wanted(results, stop.requested()):
                rolled_back = self._roll_back(
                    plan,
                    results,
                    stop,
                    jobs,
                    lock_timeout,
                    run_id,
                    on_result,
                    on_rollback,
                    on_step,
                )
        code = exit_code(results)
        if stop.exit_code is not None:
            code = stop.exit_code
        return RunResult(
            plan.environment,
            plan.direction,
            policy,
            results,
            code,
            stop.name or None,
            rolled_back,
        )

    def _roll_back(
        self,
        plan: Plan,
        results: list[DbResult],
        stop: Any,
        jobs: int | None,
        lock_timeout: float | None,
        run_id: str,
        on_result: Callable[[DbResult], None] | None,
        on_rollback: Callable[[str, list[str]], None] | None,
        on_step: Callable[[DbResult], None] | None = None,
    ) -> bool:
        """Undo a failed run (see :mod:`orch.run.rollback`); each outcome is attached to its
        database's result."""
        from orch.run import rollback
        from orch.run.execute import execute

        registry = self.scoped
        rb_plan, cannot = rollback.plan(registry, results, plan.direction)
        by_name = {r.name: r for r in results}
        for name, (outcome, why) in cannot.items():
            by_name[name].rollback = rollback.refused(by_name[name], why, outcome)
        if not rb_plan.steps:
            return bool(cannot)
        if on_rollback is not None:
            why = stop.reason() if stop.requested() else "the run did not succeed"
            on_rollback(why, rb_plan.names)
        stop.new_phase()
        for r in execute(
            registry,
            rb_plan,
            dict(plan.targets),
            jobs=jobs,
            lock_timeout=lock_timeout,
            on_result=on_result,
            on_step=on_step,
            run_id=run_id,
            purpose="rollback",
        ):
            undone = by_name[r.name]
            undone.rollback = rollback.entry(r, undone.end)
            undone.end = undone.rollback["to"]  # TO is where the database is now
        return True

    def sql(
        self,
        direction: str,
        selectors: Sequence[str] = (),
        *,
        froms: Sequence[str] = (),
        out_dir: str | os.PathLike[str] | None = None,
        all: bool = False,
        with_deps: bool = False,
        ignore_deps: bool = False,
        force: bool = False,
        cascade: bool = False,
        to: str | None = None,
        keep_new: bool = False,
    ) -> SqlResult:
        """The SQL an upgrade or downgrade would run, per database in execution order;
        runs nothing.  *froms*: ``DB@REV`` starting points instead of the live revisions.
        *out_dir*: also write one file per database there.  *to*: the SQL of bringing
        every database to that release (*keep_new* as for :meth:`plan_to`)."""
        from orch.queries import offline

        registry = self.scoped
        out = Path(out_dir) if out_dir is not None else None
        if out is not None:
            offline.check_out_dir(out)  # before anything is read or rendered
        options: dict[str, Any] = (
            {"all_": all, "with_deps": with_deps, "ignore_deps": ignore_deps}
            if direction == Direction.UPGRADE
            else {"force": force, "cascade": cascade}
        )
        if to is not None:
            if selectors or any(options.values()):
                raise UsageError("--to TAG brings every database to the release: name no database")
            if keep_new and direction == Direction.UPGRADE:
                raise UsageError("--keep-new goes with 'downgrade --to'")
            release = (to, self.releases().get(to).heads)
            preview = offline.build(
                registry, self.env, direction, (), froms=froms, release=release, keep_new=keep_new
            )
        else:
            preview = offline.build(
                registry, self.env, direction, selectors, froms=froms, **options
            )
        # the full registry: stale files of a database this environment leaves out go too
        files = offline.write_files(preview.sections, out, self.registry) if out else []
        return SqlResult(preview, tuple(files))

    def lint(
        self, databases: Sequence[str] | None = None, *, range: str | None = None
    ) -> LintReport:
        """Dangerous DDL in the pending revisions of each (or each named) database.

        Each revision is rendered alone, offline, for the environment's
        dialect and its SQL parsed (see :mod:`orch.queries.lint`).  Without
        *range* the current revisions are read (read-only); *range*
        ``FROM:TO`` lints the revisions after FROM up to TO and connects to
        nothing.  ``exit_code`` is 1 on any ``error`` finding.
        """
        from orch.queries.lint.walk import lint

        names = self._check_names(self.scoped, databases or ())
        return lint(self.scoped, self.env, names, range_text=range)

    def lint_plan(self, plan: Plan) -> list[LintFinding]:
        """Lint findings of exactly the revisions an upgrade *plan* applies (none for others).

        What a protected environment's prompt shows beside the plan, so the
        operator approves the revisions knowing what ``orch lint`` says of
        them.  Steps whose live revision is unknown are left out.
        """
        from orch.queries.lint.walk import lint_planned

        if plan.direction != Direction.UPGRADE:
            return []
        steps: dict[str, tuple[Sequence[str], Sequence[str]]] = {}
        for s in plan.steps:  # an interleaved database: from its first step, every revision
            if s.current is not None and s.revisions:
                start, revs = steps.get(s.db, (s.current, ()))
                steps[s.db] = (start, (*revs, *s.revisions))
        return lint_planned(self.scoped, self.env, steps) if steps else []

    # -- authoring

    def revision(
        self,
        database: str,
        message: str,
        *,
        autogenerate: bool = False,
        allow_empty: bool = False,
        rev_id: str | None = None,
    ) -> Written:
        """A new revision file on *database*'s head (autogenerate: from its live schema)."""
        from orch.authoring.revision import new_revision

        return new_revision(
            self.registry,
            self.env,
            database,
            message,
            autogenerate=autogenerate,
            allow_empty=allow_empty,
            rev_id=rev_id,
        )

    def merge(
        self, database: str, message: str | None = None, *, rev_id: str | None = None
    ) -> Written:
        """A merge revision of *database*'s heads."""
        from orch.authoring.revision import merge_heads

        return merge_heads(self.registry, database, message, rev_id=rev_id)


def init(
    directory: str | os.PathLike[str], database: str = "main", metadata: str | None = None
) -> InitResult:
    """Scaffold a project in *directory* (never overwrites a file)."""
    from orch.authoring.scaffold import init_project

    return init_project(Path(directory), database, metadata)


def _settled(
    registry: Registry, plan: Plan
) -> tuple[planning.Plan, dict[str, DbResult], dict[str, DbResult]]:
    """The steps left to run, the tenants of a fleet already settled as ``unchanged``, and
    those of a staged rollout that will be when their group starts.

    A fleet's ``upgrade --all`` reads every tenant first (:meth:`Project.plan`);
    a tenant read ``up_to_date`` whose step resolved to nothing has nothing to
    run, so it is reported ``unchanged`` without a migration connection, a lock
    or its audit table: 1,000 tenants with nothing pending cost about one
    ``status``.  Everything else (and every database that is not a tenant)
    runs as planned and is read again under its lock.  A staged rollout's
    tenants stay in the plan (a group the run never starts is ``skipped``,
    whatever its state); those read at head are finished as ``unchanged``
    when the scheduler reaches them, still without a worker or a lock (see
    :func:`orch.run.execute.execute`'s *settled*).
    """
    from orch.run.execute import DbResult

    if plan.direction != Direction.UPGRADE or not plan.statuses or not registry.fleets:
        return plan.planned, {}, {}
    states = {s.name: s.state for s in plan.statuses}
    steps_of: dict[str, list[Any]] = {}
    for step in plan.steps:
        steps_of.setdefault(step.db, []).append(step)
    settled: dict[str, DbResult] = {}
    ahead: dict[str, DbResult] = {}
    for name, steps in steps_of.items():
        db = registry.databases.get(name)
        if db is None or db.fleet is None or states.get(name) != State.UP_TO_DATE:
            continue
        step = steps[0]
        if len(steps) > 1 or step.resolved is None or step.resolved.path:
            continue
        at = list(step.current or ())
        result = DbResult(
            name,
            Direction.UPGRADE,
            Outcome.UNCHANGED,
            start=at,
            end=at,
            lines=[f"{name}: already at {', '.join(at) or 'base'}"],
        )
        (ahead if db.rollout else settled)[name] = result
    if not settled:
        return plan.planned, {}, ahead
    rest = tuple(s for s in plan.steps if s.db not in settled)
    return dataclasses.replace(plan.planned, steps=rest), settled, ahead


def _scope_text(selectors: Sequence[str], all_: bool, shard: tuple[int, int] | None) -> str:
    """What an upgrade run selected, as its audit rows record it (compact JSON).

    The selectors as given (``tenant``, ``tenant:eu-*``, ``core@abc``), not
    the databases they named: a fleet's run would otherwise write thousands
    of names into every row.  :func:`_scope_names` reads it back.
    """
    import json

    doc: dict[str, Any] = {"all": True} if all_ else {"selectors": list(selectors)}
    if shard is not None:
        doc["shard"] = list(shard)
    return json.dumps(doc, separators=(",", ":"))


def _scope_names(registry: Registry, text: str | None) -> set[str] | None:
    """The databases of *registry* a recorded selection covers (None: anything may be).

    A selection's databases with their dependencies and the databases
    requirements relate them to (what the run planned from), then its
    shard.  A text this orch cannot read (none, another shape, a database
    since removed) covers everything: the retry then errs on the side of
    running what is behind, as before the selection was recorded.
    """
    import json

    from orch.planning.live import graphs_for
    from orch.planning.plan import related
    from orch.planning.shards import in_shard

    if not text:
        return None
    try:
        doc = json.loads(text)
        if doc.get("all"):
            names = list(registry.databases)
        else:
            picked: list[str] = []
            for sel in doc["selectors"]:
                picked += registry.select(str(sel).partition("@")[0].strip())
            names = related(registry, graphs_for(registry), _with_dependencies(registry, picked))
        shard = doc.get("shard")
        if shard:
            names = in_shard(names, (int(shard[0]), int(shard[1])))
    except (OrchError, ValueError, KeyError, TypeError, IndexError):
        return None
    return set(names)


def _sharded(planned: planning.Plan, shard: tuple[int, int] | None) -> planning.Plan:
    """*planned* with only the steps of *shard* (``--shard I/N``); the same plan for None."""
    if shard is None:
        return planned
    from orch.planning.shards import in_shard

    keep = set(in_shard(planned.names, shard))
    return dataclasses.replace(planned, steps=tuple(s for s in planned.steps if s.db in keep))


def _with_tenants(view: Registry, env: str | None) -> Registry:
    """*view* with each fleet as one database per tenant, its ``query``/``command``
    sources read now; names that are not tenant names are reported (warnings)."""
    if not any(db.is_fleet for db in view.databases.values()):
        return view
    from orch import errors
    from orch.planning.fleets import read_sources

    expanded = view.with_tenants(read_sources(view, env))
    sink = errors.warning_sink
    for fleet, problems in expanded.rejected.items():
        for why in problems:
            if sink is not None:
                sink(f"{fleet}: {why}: not run")
    return expanded


def _with_dependencies(registry: Registry, names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        for d in [n, *registry.dependencies(n)]:
            if d not in out:
                out.append(d)
    return out
