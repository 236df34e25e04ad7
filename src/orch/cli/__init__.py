"""The ``orch`` command line: parse, call, render, exit.  Nothing else.

Global options (``--config/-c``, ``--env/-e``, ``--json``, ``-v``) are accepted
before or after the command name; the last one given wins.  Every error is
an :class:`~orch.errors.OrchError` turned into one line (or one JSON document)
here, in :func:`main`, with the documented exit code.  Heavy modules
(SQLAlchemy, Alembic, drivers) are imported inside the commands.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.exceptions import Exit  # commands leave with Click's own Exit(code)

from orch import __version__
from orch.errors import EXIT_FAILED, EXIT_USAGE, OrchError, RefusedError

if TYPE_CHECKING:
    from orch.config.registry import Registry
    from orch.run.execute import DbResult

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    """Options shared by every command, wherever they were given on the line."""

    config: str | None = None
    env: str | None = None
    json: bool = False
    verbose: int = 0
    _registry: Registry | None = field(default=None, repr=False)
    _warned: set[str] = field(default_factory=set, repr=False)

    def registry(self) -> Registry:
        from orch import errors
        from orch.config.registry import load_registry

        if self._registry is None:
            self._registry = load_registry(self.config)
            errors.warning_sink = self.warn  # what reading the revision graphs finds
        return self._registry

    def warn(self, message: str) -> None:
        """One ``warning:`` line on stderr, once per command however often it is found."""
        if message not in self._warned:
            self._warned.add(message)
            err(f"warning: {message}")

    def env_name(self) -> str | None:
        return self.env or os.environ.get("ORCH_ENV") or None

    def env_registry(self) -> Registry:
        """The registry as the chosen environment sees it (its ``null`` databases left out)."""
        return self.registry().in_environment(self.env_name())


def _state() -> State:
    ctx = click.get_current_context()
    return ctx.find_root().ensure_object(State)


def _set(attr: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        state = ctx.find_root().ensure_object(State)
        if attr == "verbose":
            if value:
                state.verbose = max(state.verbose, value)
        elif attr == "json":
            if value:
                state.json = True
        elif value is not None:
            setattr(state, attr, value)

    return callback


def global_options(f: F) -> F:
    """Attach --config/--env/--json/-v to a command (and to the group)."""
    opts = [
        click.option(
            "--config",
            "-c",
            metavar="PATH",
            expose_value=False,
            is_eager=True,
            callback=_set("config"),
            help="Registry file (default: $ORCH_CONFIG, else databases.yaml here or above).",
        ),
        click.option(
            "--env",
            "-e",
            metavar="NAME",
            expose_value=False,
            callback=_set("env"),
            help="Environment (default: $ORCH_ENV, else the registry's default_env).",
        ),
        click.option(
            "--json",
            "json_",
            is_flag=True,
            default=False,
            expose_value=False,
            callback=_set("json"),
            help="One JSON document on stdout (also on failure).",
        ),
        click.option(
            "--verbose",
            "-v",
            count=True,
            expose_value=False,
            callback=_set("verbose"),
            help="More detail; tracebacks for errors.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def emit_json(doc: dict[str, Any]) -> None:
    """Print one JSON document, passwords hidden in every string *before* encoding.

    Scrubbing only the encoded text would miss a password that JSON escapes
    (a quote, a backslash, any non-ASCII character); the text pass stays as a
    second net.
    """
    from orch.redact import redact, redact_data
    from orch.render import dumps
    from orch.streams import result

    click.echo(redact(dumps(redact_data(doc))), file=result())


def out(text: str = "") -> None:
    """A line of the command's result: the real stdout (see :mod:`orch.streams`)."""
    from orch.redact import redact
    from orch.streams import result

    click.echo(redact(text), file=result())


def err(text: str) -> None:
    """A diagnostic line: no password, and no control sequence from text orch did not write."""
    from orch.redact import redact
    from orch.render import printable

    click.echo(printable(redact(text), keep_colour=True), err=True)


def _output_options(
    cmd: click.Command, ctx: click.Context, args: Sequence[str], *, interspersed: bool | None = None
) -> None:
    """Record ``--json`` and ``-v`` of arguments Click refused, as Click's own parser reads them.

    A usage error stops Click before the option callbacks run, so the
    :class:`State` does not know yet whether the error is wanted as JSON or
    with a traceback.  The command's own parser, told to skip unknown
    options, reads the same arguments again: ``-eprev`` stays ``--env prev``
    and ``--env -v`` an environment named ``-v``, never a ``-v`` (a hand-made
    scan of argv got both wrong).  For the group, the subcommand's arguments
    are read by the subcommand's parser; after an unknown command name
    (*interspersed*), only the global options can be known.
    """
    parser = cmd.make_parser(ctx)
    parser.ignore_unknown_options = True
    parser.allow_interspersed_args = (
        cmd.allow_interspersed_args if interspersed is None else interspersed
    )
    try:
        opts, rest, _order = parser.parse_args(list(args))
    except click.UsageError:
        return
    state = ctx.find_root().ensure_object(State)
    if opts.get("json_") is True:
        state.json = True
    count = opts.get("verbose")
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        state.verbose = max(state.verbose, count)
    if isinstance(cmd, click.Group) and interspersed is None:
        for i, token in enumerate(rest):
            sub = cmd.get_command(ctx, token)
            if sub is not None:
                _output_options(sub, ctx, rest[i + 1 :])
                return


class OrchCommand(click.Command):
    """A subcommand: its usage errors still honour ``--json`` and ``-v`` (see
    :func:`_output_options`), and while it runs, stdout is its result only.

    Revision code, env.py and the modules they import run inside commands
    and may print; :func:`orch.streams.result_to_private_stdout` sends that
    to stderr (descriptor 1 too, so worker processes inherit it) and keeps
    the real stdout for :func:`out` and :func:`emit_json`.  Help, version
    and usage errors come before it and are unaffected.
    """

    def invoke(self, ctx: click.Context) -> Any:
        from orch.streams import result_to_private_stdout

        with result_to_private_stdout():
            return super().invoke(ctx)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError:
            _output_options(self, ctx, given)
            raise


class OrchGroup(click.Group):
    command_class = OrchCommand

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError:
            _output_options(self, ctx, given)
            raise

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:  # an unknown command: its global options still count
            _output_options(self, ctx, args[1:], interspersed=True)
            raise

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        formatter.write_text(
            "Exit codes: 0 ok; 1 ran and something failed (a database failed or is dirty, "
            "or a check found work/drift, or status could not read a database); 2 could "
            "not start (usage, registry, refusal); 3 only a lock timed out; 130/143 "
            "stopped by SIGINT/SIGTERM after the revisions in flight."
        )


@click.group(cls=OrchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="orch", message="%(prog)s %(version)s")
@global_options
def cli() -> None:
    """Run Alembic migrations for several databases that belong together.

    The registry (databases.yaml) names the databases, their dependencies and
    each environment's URLs.  Selectors name databases: DB, or DB@TARGET where
    TARGET is head, +N, -N, base or a revision (id or unique prefix).
    """


# ---------------------------------------------------------------- helpers


def _live_currents(
    registry: Registry, env: str | None, names: Sequence[str], *, read: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Targets of the environment and the live revisions of *names* (None if unreadable).

    ``read=False`` connects to nothing (every revision None) but still
    imports the drivers here, once, before any worker forks.
    """
    from orch.planning.live import graphs_for as live_graphs_for
    from orch.queries import status as st

    targets = {t.name: t for t in registry.targets(env)}
    graphs = live_graphs_for(registry)
    if not read:
        from orch.store.db import preload_drivers

        preload_drivers(targets[n].url for n in names)
        return targets, {"graphs": graphs, "currents": dict.fromkeys(names), "statuses": []}
    statuses = st.collect(registry, env, list(names), graphs=graphs)
    currents: dict[str, Any] = {}
    for s in statuses:
        currents[s.name] = tuple(s.current) if s.current is not None else None
    return targets, {"graphs": graphs, "currents": currents, "statuses": statuses}


def _require_urls(targets: dict[str, Any], names: Sequence[str]) -> None:
    from orch.errors import MissingVariable

    for name in names:
        t = targets[name]
        if t.url is None:
            raise MissingVariable(f"{name}: {t.missing}")


def _confirm_protected(
    state: State,
    registry: Registry,
    env: str | None,
    yes: bool,
    plan: Any,
    *,
    currents: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> bool:
    """In a protected environment, show the plan and make the operator type the env's name.

    True when the plan was shown and confirmed: the run must then be that
    plan (see :meth:`orch.planning.plan.Plan.announced`).

    Typing the name (not just "y") is the point: it is the moment an operator
    notices they are about to touch prod.  Without a terminal on stdin and
    stderr there is nobody to ask, so the command refuses (exit 2) unless
    ``--yes`` was given; a refusal writes nothing anywhere.  *currents* gives
    live revisions for plans that do not carry them (stamp).
    """
    environment = registry.environment(env)
    if not environment.protected or yes:
        return False
    name = environment.name
    direction = plan.direction
    rows = _confirm_rows(plan, currents)
    hooks = [f"{h}: {cmd}" for h, cmd in environment.hooks.items() if h.endswith(f"_{direction}")]
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    if not interactive:
        reason = (
            f"environment {name!r} is protected: {direction} needs --yes when there is no "
            "terminal to confirm on; nothing was changed"
        )
        if state.json:
            from orch.run.execute import DbResult

            emit_json(
                {
                    "environment": name,
                    "command": direction,
                    "protected": True,
                    "databases": [
                        DbResult(
                            s.db,
                            direction,
                            "refused",
                            start=list(s.current) if s.current is not None else None,
                            end=list(s.current) if s.current is not None else None,
                            error="protected environment: not confirmed (no terminal, no --yes)",
                        ).as_json()
                        for s in plan.steps
                    ],
                    "plan": _plan_json(plan),
                    "error": reason,
                    "exit_code": EXIT_USAGE,
                }
            )
            raise Exit(EXIT_USAGE)
        _show_confirm_plan(name, rows, hooks, notes)
        raise RefusedError(reason)
    _show_confirm_plan(name, rows, hooks, notes)
    try:
        answer = click.prompt(
            click.style(f"Type the environment's name ({name}) to {direction}", bold=True),
            default="",
            err=True,
            show_default=False,
        )
    except click.exceptions.Abort:  # Ctrl-C or end of input at the prompt
        answer = ""
        click.echo(err=True)
    if answer.strip() != name:
        raise RefusedError(f"not confirmed; nothing was changed in {name!r}")
    return True


def _confirm_rows(plan: Any, currents: dict[str, Any] | None) -> list[list[str]]:
    from orch.render import short

    if currents is None:
        return _plan_rows(plan)
    rows = []
    for s in plan.steps:
        cur = currents.get(s.db)
        frm = short(list(cur)) if cur is not None else "?"
        to = short(s.resolved.target) if s.resolved else s.target
        rows.append([str(s.level), s.db, s.direction, f"{frm} -> {to}", "-"])
    return rows


def _show_confirm_plan(
    name: str, rows: list[list[str]], hooks: Sequence[str], notes: Sequence[str]
) -> None:
    from orch.render import table

    headers = ["GROUP", "DATABASE", "DIRECTION", "FROM -> TO", "REVISIONS"]
    err(f"Environment {name!r} is protected. This is what would run:")
    err(table(headers, rows, stream=sys.stderr))
    for h in hooks:
        err(f"hook per database: {h}")
    for n in notes:
        err(n)


def _plan_rows(plan: Any) -> list[list[str]]:
    from orch.render import short

    rows = []
    for s in plan.steps:
        to = short(s.resolved.target) if s.resolved else s.target
        frm = short(s.current)
        revs = ", ".join(s.revisions) if s.resolved else "(live revision unknown)"
        rows.append([str(s.level), s.db, s.direction, f"{frm} -> {to}", revs or "-"])
    return rows


def _plan_json(plan: Any) -> list[dict[str, Any]]:
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
        for s in plan.steps
    ]


def _run_and_report(
    state: State,
    registry: Registry,
    plan: Any,
    targets: dict[str, Any],
    *,
    jobs: int | None,
    lock_timeout: float | None,
    fail_fast: bool = False,
    on_failure: str = "stop",
    check_deps: bool = False,
) -> None:
    """Execute *plan*, roll back if asked, print the summary, exit with the run's code.

    *check_deps*: check the dependency rule again under each database's lock
    (upgrade without ``--ignore-deps``, downgrade without ``--force``).

    SIGINT/SIGTERM are handled for the whole of it (see :mod:`orch.stopping`):
    the summary is always printed, and the exit code is then 130/143.
    """
    import uuid

    from orch.alembic_bridge.runner import check_project
    from orch.run import rollback
    from orch.run.execute import effective_jobs, execute, exit_code
    from orch.stopping import Stop

    check_project(registry)  # a broken alembic.ini: exit 2 before any database is touched
    jobs, note = effective_jobs(registry, jobs, len(plan.steps))
    if note:
        err(f"orch: note: {note}")

    def on_result(r: DbResult) -> None:
        if state.json:
            return
        for line in r.lines:
            err(line)
        if r.outcome in ("failed", "locked", "refused", "skipped") and r.error:
            err(f"{r.name}: {r.outcome}: {r.error}")

    run_id = str(uuid.uuid4())
    stop = Stop()
    rolled_back = False
    with stop.installed():
        results = execute(
            registry,
            plan,
            targets,
            jobs=jobs,
            lock_timeout=lock_timeout,
            fail_fast=fail_fast,
            on_result=on_result,
            run_id=run_id,
            check_deps=check_deps,
        )
        if on_failure == "rollback" and rollback.wanted(results, stop.requested()):
            rolled_back = _roll_back(
                state,
                registry,
                plan.direction,
                results,
                targets,
                stop,
                jobs,
                lock_timeout,
                run_id,
                on_result,
            )
    code = exit_code(results)
    if stop.exit_code is not None:
        code = stop.exit_code
    _report_run(state, registry, plan, results, code, stop, on_failure, rolled_back)
    raise Exit(code)


def _roll_back(
    state: State,
    registry: Registry,
    direction: str,
    results: list[DbResult],
    targets: dict[str, Any],
    stop: Any,
    jobs: int | None,
    lock_timeout: float | None,
    run_id: str,
    on_result: Callable[[DbResult], None],
) -> bool:
    """Undo a failed *direction* run (see :mod:`orch.run.rollback`); attach each outcome to its
    database's result."""
    from orch.run import rollback
    from orch.run.execute import execute

    rb_plan, cannot = rollback.plan(registry, results, direction)
    by_name = {r.name: r for r in results}
    for name, (outcome, why) in cannot.items():
        by_name[name].rollback = rollback.refused(by_name[name], why, outcome)
    if not rb_plan.steps:
        return bool(cannot)
    if not state.json:
        why = stop.reason() if stop.requested() else "the run did not succeed"
        err(
            f"orch: {why}; --on-failure rollback: returning "
            f"{', '.join(rb_plan.names)} to where this run found them"
        )
    stop.new_phase()
    for r in execute(
        registry,
        rb_plan,
        targets,
        jobs=jobs,
        lock_timeout=lock_timeout,
        on_result=on_result,
        run_id=run_id,
        purpose="rollback",
    ):
        undone = by_name[r.name]
        undone.rollback = rollback.entry(r, undone.end)
        undone.end = undone.rollback["to"]  # TO is where the database is now
    return True


def _report_run(
    state: State,
    registry: Registry,
    plan: Any,
    results: Sequence[DbResult],
    code: int,
    stop: Any,
    on_failure: str,
    rolled_back: bool,
) -> None:
    from orch.render import short, table
    from orch.run import rollback

    interrupted = stop.name or None
    if state.json:
        doc: dict[str, Any] = {
            "environment": registry.environment(state.env_name()).name,
            "command": plan.direction,
            "on_failure": on_failure,
            "interrupted": interrupted,
            "databases": [r.as_json() for r in results],
            "exit_code": code,
        }
        if code:
            bad = [
                f"{r.name} {r.outcome}" for r in results if r.outcome not in ("done", "unchanged")
            ]
            bad += [
                f"{r.name} rollback {r.rollback['outcome']}"
                for r in results
                if r.rollback is not None and r.rollback["outcome"] not in ("done", "unchanged")
            ]
            if interrupted:
                bad.insert(0, stop.reason())
            doc["error"] = "; ".join(bad)
        emit_json(doc)
        return
    headers = ["DATABASE", "OUTCOME", "FROM", "TO", "STEPS", "TIME", "DETAIL"]
    if rolled_back:
        headers.insert(4, "ROLLBACK")
    rows = []
    for r in results:
        detail = ""
        if r.outcome not in ("done", "unchanged"):
            detail = (f"{r.revision}: " if r.revision else "") + (r.error or "")
        undo = rollback.detail(r.rollback)
        if undo:
            detail = f"{detail}; {undo}" if detail else undo
        row = [
            r.name,
            r.outcome,
            short(r.start),
            short(r.end),
            str(len(r.applied)),
            f"{r.duration:.2f}s",
            detail,
        ]
        if rolled_back:
            row.insert(4, _rollback_cell(r))
            if undo:
                err(f"{r.name}: {undo}")
        rows.append(row)
    out(table(headers, rows))
    if interrupted:
        err(f"orch: {stop.reason()}: stopped after the revisions in flight (exit {code})")


def _rollback_cell(r: DbResult) -> str:
    """The ROLLBACK column: '-' (nothing to undo), 'done -> REV', or the outcome."""
    from orch.render import short

    rb = r.rollback
    if rb is None:
        return "-"
    if rb["outcome"] in ("done", "unchanged"):
        return f"{rb['outcome']} -> {short(rb.get('to'))}"
    return str(rb["outcome"])


_jobs_opt = click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help=(
        "Databases migrated at once, in worker processes (default: settings.jobs, else "
        "2 per CPU, at most 8; never more than the run's databases, nor than 32, with a "
        "note); 1 runs them one by one in this process."
    ),
)
if TYPE_CHECKING:
    _FloatParam = click.ParamType[float, Any]
else:  # click < 8.2: ParamType is not generic at run time
    _FloatParam = click.ParamType


class _Seconds(_FloatParam):
    """A finite number of seconds within the registry's bounds (``nan`` and ``inf`` refused).

    ``click.FloatRange`` lets NaN through (every comparison with it is false),
    and a NaN deadline is never reached: the lock wait spun forever.
    """

    name = "seconds"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        from orch.config.registry import seconds_problem

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        problem = seconds_problem(number)
        if problem:
            self.fail(problem, param, ctx)
        return number


def _on_failure_opt(undo: str) -> Callable[[F], F]:
    """``--on-failure stop|rollback`` of upgrade and downgrade; *undo* says what rollback does."""
    return click.option(
        "--on-failure",
        type=click.Choice(["stop", "rollback"]),
        default="stop",
        show_default=True,
        help="stop: each database stays at its last good revision. rollback: when anything "
        f"fails (or the run is interrupted), {undo}.",
    )


_lock_opt = click.option(
    "--lock-timeout",
    type=_Seconds(),
    default=None,
    metavar="SECONDS",
    help="Wait this long for each database's migration lock (default: registry setting).",
)
_yes_opt = click.option(
    "--yes", "-y", is_flag=True, help="Do not ask for confirmation (protected environments)."
)


def _sql_options(f: F) -> F:
    """--sql / --from / --out: review the exact SQL instead of running it (orch.queries.offline)."""
    opts = [
        click.option(
            "--sql",
            is_flag=True,
            help="Print the SQL of exactly the pending migrations, one section per database in "
            "execution order; run nothing, write nothing.",
        ),
        click.option(
            "--from",
            "from_",
            multiple=True,
            metavar="[DB@]REV",
            help="With --sql: start DB from REV (or base) instead of its live revision, e.g. "
            "when it is unreachable. Repeatable.",
        ),
        click.option(
            "--out",
            "out_dir",
            type=click.Path(file_okay=False),
            default=None,
            metavar="DIR",
            help="With --sql: write one file per database (NN_DB.sql, in execution order).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _sql_only(sql: bool, from_: Sequence[str], out_dir: str | None) -> None:
    if not sql and (from_ or out_dir):
        raise click.UsageError("--from and --out only work with --sql")


def _sql_preview(
    state: State,
    direction: str,
    selectors: Sequence[str],
    from_: Sequence[str],
    out_dir: str | None,
    **plan_options: bool,
) -> None:
    """The ``--sql`` branch of upgrade/downgrade: render, print or write files, exit."""
    from pathlib import Path

    from orch.queries import offline

    registry = state.env_registry()
    if out_dir:
        offline.check_out_dir(Path(out_dir))  # before anything is read or rendered
    preview = offline.build(
        registry, state.env_name(), direction, selectors, froms=from_, **plan_options
    )
    # the full registry: stale files of a database this environment leaves out go too
    files = (
        offline.write_files(preview.sections, Path(out_dir), state.registry()) if out_dir else []
    )
    failed = preview.failed
    code = EXIT_FAILED if failed else 0
    if state.json:
        doc: dict[str, Any] = {
            "environment": preview.environment,
            "command": direction,
            "sql": True,
            "databases": [s.as_json() for s in preview.sections],
            "files": [str(f) for f in files],
            "exit_code": code,
        }
        if failed:
            doc["error"] = "; ".join(f"{s.name}: {s.failed_revision}: {s.error}" for s in failed)
        emit_json(doc)
        raise Exit(code)
    names = ", ".join(s.name for s in preview.sections)
    if out_dir:
        for f in files:
            out(str(f))
        if not files:
            err("nothing to run: no file written")
    else:
        out(
            f"-- orch {direction} --sql: environment {preview.environment}; databases in "
            f"execution order: {names}"
        )
        out("-- nothing has been run: review, then run 'orch " + direction + "' without --sql")
        for s in preview.sections:
            out()
            out(s.text().rstrip("\n"))
    for s in preview.sections:
        what = f"{len(s.revisions)} revision(s)" if s.has_work else "nothing to run"
        failure = f"; FAILED at {s.failed_revision}: {s.error}" if s.error else ""
        err(f"{s.name}: {what}{failure}")
    raise Exit(code)


# ---------------------------------------------------------------- commands


@cli.command()
@click.argument("selectors", nargs=-1, metavar="[DB[@TARGET]]...")
@click.option("--all", "all_", is_flag=True, help="Every database, to head.")
@click.option(
    "--with-deps", is_flag=True, help="Bring dependencies of the named databases to head first."
)
@click.option("--ignore-deps", is_flag=True, help="Do not check that dependencies are at head.")
@click.option("--fail-fast", is_flag=True, help="Start nothing new after the first failure.")
@_on_failure_opt(
    "downgrade every database this run changed back to where it started, dependents first"
)
@_jobs_opt
@_lock_opt
@_yes_opt
@_sql_options
@global_options
def upgrade(
    selectors: tuple[str, ...],
    all_: bool,
    with_deps: bool,
    ignore_deps: bool,
    fail_fast: bool,
    on_failure: str,
    jobs: int | None,
    lock_timeout: float | None,
    yes: bool,
    sql: bool,
    from_: tuple[str, ...],
    out_dir: str | None,
) -> None:
    """Migrate databases up, dependencies before dependents (--sql: only show the SQL)."""
    state = _state()
    _sql_only(sql, from_, out_dir)
    if sql:
        _sql_preview(
            state,
            "upgrade",
            selectors,
            from_,
            out_dir,
            all_=all_,
            with_deps=with_deps,
            ignore_deps=ignore_deps,
        )
    registry = state.env_registry()
    env = state.env_name()
    plan, targets, _live = _upgrade_plan(
        registry,
        env,
        selectors,
        all_=all_,
        with_deps=with_deps,
        ignore_deps=ignore_deps,
        read_live=registry.environment(env).protected and not yes,  # the plan is shown
    )
    _require_urls(targets, plan.names)
    notes = []
    if on_failure == "rollback":
        notes.append("on failure: every database this run changed goes back to where it started")
    if _confirm_protected(state, registry, env, yes, plan, notes=notes):
        plan = plan.announced()
    _run_and_report(
        state,
        registry,
        plan,
        targets,
        jobs=jobs,
        lock_timeout=lock_timeout,
        fail_fast=fail_fast,
        on_failure=on_failure,
        check_deps=not ignore_deps,
    )


def _upgrade_plan(
    registry: Registry,
    env: str | None,
    selectors: Sequence[str],
    *,
    all_: bool,
    with_deps: bool,
    ignore_deps: bool,
    read_live: bool = True,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The upgrade plan from the live revisions: shared by ``upgrade`` and ``plan``.

    Returns (plan, targets by name, live reads: graphs, currents, statuses).
    ``read_live=False`` (``upgrade --all`` with no plan to show) plans every
    database to head without connecting: with ``--all`` the live revisions
    change nothing in the plan (no dependency can be left behind), and the
    executor reads each database again under its lock anyway.  That saves a
    connection per database before the run starts (a server process each,
    hundreds for a fleet).  The drivers are still imported here, once,
    before the workers fork.
    """
    from orch.planning.plan import parse_selectors, plan_upgrade

    sels = parse_selectors(registry, selectors, command="upgrade")
    if all_ and sels:
        raise click.UsageError("--all cannot be combined with database selectors")
    involved = (
        list(registry.databases) if all_ else _with_dependencies(registry, [s.db for s in sels])
    )
    targets, live = _live_currents(registry, env, involved, read=read_live or not all_)
    plan = plan_upgrade(
        registry,
        sels,
        all_=all_,
        graphs=live["graphs"],
        currents=live["currents"],
        with_deps=with_deps,
        ignore_deps=ignore_deps,
    )
    return plan, targets, live


def _with_dependencies(registry: Registry, names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        for d in [n, *registry.dependencies(n)]:
            if d not in out:
                out.append(d)
    return out


@cli.command()
@click.argument("selectors", nargs=-1, metavar="DB@TARGET...")
@click.option("--force", is_flag=True, help="Downgrade even if dependents are not at base.")
@click.option("--fail-fast", is_flag=True, help="Start nothing new after the first failure.")
@_on_failure_opt(
    "upgrade every database this run changed back to exactly the revisions it started at, "
    "dependencies first"
)
@_jobs_opt
@_lock_opt
@_yes_opt
@_sql_options
@global_options
def downgrade(
    selectors: tuple[str, ...],
    force: bool,
    fail_fast: bool,
    on_failure: str,
    jobs: int | None,
    lock_timeout: float | None,
    yes: bool,
    sql: bool,
    from_: tuple[str, ...],
    out_dir: str | None,
) -> None:
    """Migrate databases down to an explicit target (DB@-1, DB@REV, DB@base); dependents first."""
    from orch.planning.plan import parse_selectors, plan_downgrade

    state = _state()
    _sql_only(sql, from_, out_dir)
    if sql:
        _sql_preview(state, "downgrade", selectors, from_, out_dir, force=force)
    registry = state.env_registry()
    env = state.env_name()
    sels = parse_selectors(registry, selectors, require_target=True, command="downgrade")
    names = [s.db for s in sels]
    involved = list(dict.fromkeys(names + [d for n in names for d in registry.dependents(n)]))
    targets, live = _live_currents(registry, env, involved)
    plan = plan_downgrade(
        registry, sels, graphs=live["graphs"], currents=live["currents"], force=force
    )
    _require_urls(targets, plan.names)
    notes = []
    if on_failure == "rollback":
        notes.append("on failure: every database this run changed goes back up to where it started")
    if _confirm_protected(state, registry, env, yes, plan, notes=notes):
        plan = plan.announced()
    _run_and_report(
        state,
        registry,
        plan,
        targets,
        jobs=jobs,
        lock_timeout=lock_timeout,
        fail_fast=fail_fast,
        on_failure=on_failure,
        check_deps=not force,
    )


@cli.command()
@click.argument("selectors", nargs=-1, metavar="DB@REVISION...")
@_lock_opt
@_yes_opt
@global_options
def stamp(selectors: tuple[str, ...], lock_timeout: float | None, yes: bool) -> None:
    """Set the version of databases without running migrations (baseline, repair)."""
    from orch.planning.live import graphs_for
    from orch.planning.plan import parse_selectors, plan_stamp

    state = _state()
    registry = state.env_registry()
    env = state.env_name()
    sels = parse_selectors(registry, selectors, require_target=True, command="stamp")
    targets = {t.name: t for t in registry.targets(env)}
    graphs = graphs_for(registry, [s.db for s in sels])
    plan = plan_stamp(registry, sels, graphs=graphs, currents={})
    _require_urls(targets, plan.names)
    if registry.environment(env).protected and not yes:
        _, live = _live_currents(registry, env, plan.names)  # read-only: the FROM column
        _confirm_protected(state, registry, env, yes, plan, currents=live["currents"])
    _run_and_report(state, registry, plan, targets, jobs=1, lock_timeout=lock_timeout)


@cli.command()
@click.argument("databases", nargs=-1, metavar="[DB]...")
@click.option(
    "--check", is_flag=True, help="Exit 1 also when any database is not up_to_date (CI gate)."
)
@click.option(
    "--all-envs",
    is_flag=True,
    help="Every environment as a matrix, all queried at once (each within connect_timeout).",
)
@global_options
def status(databases: tuple[str, ...], check: bool, all_envs: bool) -> None:
    """Current revision, head, pending count and state of each database.

    Exit 0 when every database was read; 1 when any could not be read
    (unreachable, or unconfigured: a missing variable), its cell saying why,
    or with --check when any is not up_to_date; 2 when it could not start.
    """
    from orch.planning.live import graphs_for as live_graphs_for
    from orch.queries import status as st
    from orch.render import short, table

    state = _state()
    # one environment: its view (naming a database it leaves out is an error)
    registry = state.registry() if all_envs else state.env_registry()
    for name in databases:
        registry.database(name)
    names = list(databases) or None
    graphs = live_graphs_for(registry, names)
    if all_envs:
        matrix = dict(st.collect_all(registry, names, graphs=graphs))
        envs = list(matrix)
        cells = [(f"{e}/{s.name}", s) for e, rows in matrix.items() for s in rows]
        code, problem = _status_exit(cells, check)
        absent = {
            e: [n for n in names or registry.databases if n in registry.environments[e].absent]
            for e in envs
        }
        if state.json:
            doc: dict[str, Any] = {
                "environments": [
                    {
                        "environment": e,
                        "databases": [s.as_json() for s in rows],
                        "absent": absent[e],
                    }
                    for e, rows in matrix.items()
                ]
            }
            if code:
                doc["error"], doc["exit_code"] = problem, code
            emit_json(doc)
        else:
            dbs = names or list(registry.databases)
            rows = []
            for name in dbs:
                row = [name]
                for e in envs:
                    cell = next((s for s in matrix[e] if s.name == name), None)
                    if cell is None:  # not part of that environment (its URL is null)
                        row.append("absent")
                        continue
                    extra = f" ({cell.pending})" if cell.state == "behind" and cell.pending else ""
                    row.append(cell.state + extra)
                rows.append(row)
            out(table(["DATABASE", *envs], rows))
            notes = [
                [f"{e}/{s.name}", f"{s.state}: {s.error}"]
                for e, rs in matrix.items()
                for s in rs
                if s.error
            ]
            if notes:
                out()
                out(table(["WHERE", "WHY"], notes))
            if code:
                err(f"orch: {problem}")
        raise Exit(code)
    env = registry.environment(state.env_name()).name
    rows_ = st.collect(registry, env, names, graphs=graphs)
    code, problem = _status_exit([(s.name, s) for s in rows_], check)
    left_out = [n for n in state.registry().databases if n in registry.left_out]
    if state.json:
        doc = {
            "environment": env,
            "databases": [s.as_json() for s in rows_],
            "absent": left_out,
        }
        if code:
            doc["error"], doc["exit_code"] = problem, code
        emit_json(doc)
    else:
        rows = [
            [
                s.name,
                s.state,
                short(s.current),
                short(s.heads, "-"),
                "" if s.pending is None else str(s.pending),
                s.error or s.url or "",
            ]
            for s in rows_
        ]
        out(f"environment: {env}")
        out(table(["DATABASE", "STATE", "CURRENT", "HEAD", "PENDING", "URL / ERROR"], rows))
        if left_out and not names:
            out(f"not part of {env} (URL null): {', '.join(left_out)}")
        if code:
            err(f"orch: {problem}")
    raise Exit(code)


# states of a database whose revision could not be read: status exits 1
UNREAD = ("unreachable", "unconfigured")


def _status_exit(cells: Sequence[tuple[str, Any]], check: bool) -> tuple[int, str]:
    """Exit code of ``status`` and, when it is 1, the one line that says why.

    0 only when every database was read: a status of nothing but unreachable
    or unconfigured databases (a missing variable in CI) must not pass a
    pipeline as if all were well.  With ``--check``, anything not
    ``up_to_date`` fails too.  Each cell is (where, DbStatus).
    """
    problems = []
    unread = [f"{where} {s.state} ({s.error})" for where, s in cells if s.state in UNREAD]
    if unread:
        problems.append("could not read " + "; ".join(unread))
    late = [f"{where} {s.state}" for where, s in cells if s.state not in ("up_to_date", *UNREAD)]
    if check and late:
        problems.append("not up to date: " + ", ".join(late))
    return (EXIT_FAILED if problems else 0), "; ".join(problems)


@cli.command()
@click.argument("selectors", nargs=-1, metavar="[DB[@TARGET]]...")
@click.option("--all", "all_", is_flag=True, help="Every database (the default without selectors).")
@click.option("--with-deps", is_flag=True, help="Include dependencies that are behind.")
@click.option("--ignore-deps", is_flag=True, help="Do not check dependencies.")
@global_options
def plan(selectors: tuple[str, ...], all_: bool, with_deps: bool, ignore_deps: bool) -> None:
    """Show what 'upgrade' would run (reads live revisions; writes nothing)."""
    from orch.render import table

    state = _state()
    registry = state.env_registry()
    env = state.env_name()
    the_plan, targets, live = _upgrade_plan(
        registry,
        env,
        selectors,
        all_=all_ or not selectors,
        with_deps=with_deps,
        ignore_deps=ignore_deps,
    )
    # what upgrade would refuse (exit 2), plan refuses too
    _require_urls(targets, [s.name for s in live["statuses"]])
    unreadable = {s.name: s for s in live["statuses"] if s.current is None}
    if state.json:
        emit_json(
            {
                "environment": registry.environment(env).name,
                "steps": _plan_json(the_plan),
                "pending": sum(len(s.revisions) for s in the_plan.steps),
                "unreadable": {n: s.error for n, s in unreadable.items()},
                **(
                    {
                        "error": "; ".join(f"{n}: {s.error}" for n, s in unreadable.items()),
                        "exit_code": EXIT_FAILED,
                    }
                    if unreadable
                    else {}
                ),
            }
        )
    else:
        rows = [
            r
            for r, s in zip(_plan_rows(the_plan), the_plan.steps, strict=True)
            if s.revisions or s.current is None
        ]
        if rows:
            out(table(["GROUP", "DATABASE", "DIRECTION", "FROM -> TO", "REVISIONS"], rows))
        else:
            out("nothing to do: every database is at its head")
        for name, s in unreadable.items():
            err(f"{name}: {s.state}: {s.error}")
    raise Exit(1 if unreadable else 0)


@cli.command("log")
@click.argument("databases", nargs=-1, metavar="[DB]...")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=0, max=1_000_000),  # bounded: 10**30 overflowed the SQL LIMIT
    default=50,
    show_default=True,
    help="At most N entries, newest first (0: all; at most 1000000).",
)
@global_options
def log_(databases: tuple[str, ...], limit: int) -> None:
    """The audit trail of the environment's databases, newest first (reads only).

    One entry per step: a revision applied or undone, a stamp.  Failed steps
    are kept with their error; 'running (interrupted)' is a step whose run
    was killed (the next run on that database records it as failed).
    """
    from orch.render import table
    from orch.store.audit import collect_log

    state = _state()
    registry = state.env_registry()
    for name in databases:
        registry.database(name)
    env = registry.environment(state.env_name()).name
    names = list(dict.fromkeys(databases)) or list(registry.databases)
    targets = {t.name: t for t in registry.targets(env)}
    _require_urls(targets, names)
    view = collect_log(registry, env, names, limit or None)
    code = EXIT_FAILED if view.unreadable else 0
    if state.json:
        doc: dict[str, Any] = {
            "environment": env,
            "entries": [r.as_json() for r in view.rows],
            "unreadable": view.unreadable,
        }
        if code:
            doc["error"] = "; ".join(f"{n}: {e}" for n, e in view.unreadable.items())
            doc["exit_code"] = code
        emit_json(doc)
        raise Exit(code)
    rows = [
        [
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.db,
            r.direction,
            r.revision or "-",
            f"{r.outcome} (interrupted)" if r.interrupted else r.outcome,
            "" if r.duration_ms is None else f"{r.duration_ms / 1000:.2f}s",
            f"{r.os_user}@{r.host}",
            r.run_id[:8],
            (r.error or "").replace("\n", " "),
        ]
        for r in view.rows
    ]
    if rows:
        out(
            table(
                [
                    "STARTED (UTC)",
                    "DATABASE",
                    "DIRECTION",
                    "REVISION",
                    "OUTCOME",
                    "TIME",
                    "BY",
                    "RUN",
                    "ERROR",
                ],
                rows,
            )
        )
    else:
        out(f"no entries in {env} yet")
    for name, error in view.unreadable.items():
        err(f"{name}: unreachable: {error}")
    raise Exit(code)


@cli.command()
@click.argument("database", metavar="DB")
@click.option("--message", "-m", required=True, help="What the revision does.")
@click.option(
    "--autogenerate",
    is_flag=True,
    help="Compare DB's metadata with DB's live database (this environment) and write the "
    "difference; writes no file when there is none.",
)
@click.option(
    "--allow-empty", is_flag=True, help="With --autogenerate: write a file even if nothing changed."
)
@click.option("--rev-id", default=None, help="Revision id to use instead of a generated one.")
@global_options
def revision(
    database: str, message: str, autogenerate: bool, allow_empty: bool, rev_id: str | None
) -> None:
    """Create a new revision in DB's directory, on DB's head (the first carries DB's label).

    Autogenerate reads DB's live schema and writes nothing to it: no version
    table, no SQLite file.  DB must be at its head first.
    """
    from orch.authoring.revision import new_revision

    state = _state()
    registry = state.registry()
    written = new_revision(
        registry,
        state.env_name(),
        database,
        message,
        autogenerate=autogenerate,
        allow_empty=allow_empty,
        rev_id=rev_id,
    )
    if state.json:
        emit_json(written.as_json())
        raise Exit(0)
    for note in written.notes:
        err(note)
    if written.path is None:
        err(f"{database}: no changes detected; no revision written (use --allow-empty to force)")
        raise Exit(0)
    for op in written.operations:
        err(f"  detected {op}")
    parent = ", ".join(written.parents) or "base"
    label = f", branch label {written.branch_label}" if written.branch_label else ""
    err(f"{database}: revision {written.revision} on {parent}{label}")
    out(str(written.path))
    raise Exit(0)


@cli.command()
@click.argument("database", metavar="DB")
@click.option("--message", "-m", default=None, help="Message of the merge revision.")
@click.option("--rev-id", default=None, help="Revision id to use instead of a generated one.")
@global_options
def merge(database: str, message: str | None, rev_id: str | None) -> None:
    """Merge the heads of DB (branches of one database) into one revision."""
    from orch.authoring.revision import merge_heads

    state = _state()
    written = merge_heads(state.registry(), database, message, rev_id=rev_id)
    if state.json:
        emit_json(written.as_json())
        raise Exit(0)
    for note in written.notes:
        err(note)
    if written.path is not None:
        err(f"{database}: merge revision {written.revision} of {', '.join(written.parents)}")
        out(str(written.path))
    raise Exit(0)


@cli.command()
@click.argument("databases", nargs=-1, metavar="[DB]...")
@global_options
def check(databases: tuple[str, ...]) -> None:
    """Drift between each database's models (registry 'metadata') and its live schema.

    Read-only.  Exit 1 on any difference (or an unreachable database, or a
    comparison that failed, or a revision id that two databases' directories
    declare), 2 when a database has no usable URL or a named one has no
    metadata, else 0.
    """
    from orch.config.alembic_ini import disagreements
    from orch.planning import live
    from orch.queries import drift
    from orch.render import short, table

    state = _state()
    registry = state.env_registry()
    for name in databases:
        registry.database(name)
    env = registry.environment(state.env_name()).name
    results = drift.check(registry, env, list(databases) or None)
    full = state.registry()  # plain alembic sees every directory, in every environment
    warnings = disagreements(full)
    shared = [
        s
        for s in live.shared_ids(full, live.graphs_for(full, warn=False))
        if not databases or set(databases) & {*s.databases[0], *s.databases[1]}
    ]
    code = drift.exit_code(results, databases)
    if shared:
        code = EXIT_FAILED  # a finding, like drift
    if state.json:
        doc: dict[str, Any] = {
            "environment": env,
            "databases": [r.as_json() for r in results],
            "problems": [s.as_json() for s in shared],
            "warnings": warnings,
            "exit_code": code,
        }
        if code:
            fine = ("clean", "not_checkable")
            found = [f"{r.name} {r.state}" for r in results if r.state not in fine]
            found += [f"revision id {s.revision} shared by two databases" for s in shared]
            doc["error"] = "; ".join(found) or "; ".join(f"{r.name} not_checkable" for r in results)
        emit_json(doc)
        raise Exit(code)
    rows = []
    for r in results:
        if r.state == "drift":
            detail = f"{len(r.differences)} difference(s)"
        elif r.state == "clean":
            detail = "models and schema agree"
        else:
            detail = r.error or ""
        if r.pending:
            detail += f" (at {short(r.current)}, head {short(r.heads, '-')}: upgrade first?)"
        rows.append([r.name, r.state, detail])
    out(f"environment: {env}")
    out(table(["DATABASE", "CHECK", "DETAIL"], rows))
    for r in results:
        for d in r.differences:
            out(f"  {r.name}: {d['text']}")
    for s in shared:
        out(f"problem: {s.message}")
    for w in warnings:
        err(f"warning: {w}")
    raise Exit(code)


@cli.command()
@click.argument("database", metavar="DB")
@global_options
def history(database: str) -> None:
    """Revisions of DB, newest first; '*' marks those applied in this environment."""
    from orch.queries.history import history as read_history
    from orch.render import short, table

    state = _state()
    h = read_history(state.registry(), state.env_name(), database)
    if state.json:
        emit_json(h.as_json())
        raise Exit(0)
    cur = short(h.current) if h.current is not None else "unknown"
    if h.state == "absent":
        cur = f"none (not part of {h.environment})"
    out(f"{h.database} ({h.environment}): current {cur}, head {short(h.heads, '-')}")
    rows = []
    for e in h.entries:
        mark = "?" if e.applied is None else ("*" if e.applied else "")
        created = (e.create_date or "")[:16]
        rows.append([mark, e.revision, ",".join(e.down) or "-", created, e.message, e.tags])
    if rows:
        out(table(["APPLIED", "REVISION", "DOWN", "CREATED", "MESSAGE", "TAGS"], rows))
    else:
        out(f"no revisions yet (orch revision {database} -m MESSAGE)")
    if h.current is None:
        err(f"{database}: {h.state}: {h.error}; applied revisions not marked")
    raise Exit(0)


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "mermaid", "dot"]),
    default="text",
    show_default=True,
    help="mermaid/dot draw edges from a dependency to its dependent (core --> analytics).",
)
@global_options
def graph(fmt: str) -> None:
    """The database dependency graph of the registry (depends_on)."""
    from orch.queries.history import graph_json, render_graph

    state = _state()
    registry = state.registry()
    if state.json:
        emit_json(graph_json(registry))
    else:
        out(render_graph(registry, fmt))
    raise Exit(0)


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False), metavar="[DIR]")
@click.option(
    "--database", "-d", default="main", show_default=True, help="Name of the first database."
)
@click.option(
    "--metadata",
    default=None,
    metavar="MODULE:ATTR",
    help="Its models (a MetaData or declarative Base), e.g. myapp.models:Base.",
)
@global_options
def init(directory: str, database: str, metadata: str | None) -> None:
    """Scaffold alembic.ini, databases.yaml, migrations/env.py, script.py.mako and a first
    database in DIR (default: here).  Never overwrites: existing files are skipped."""
    from pathlib import Path

    from orch.authoring.scaffold import init_project

    state = _state()
    result = init_project(Path(directory), database, metadata)
    if state.json:
        emit_json(result.as_json())
        raise Exit(0)
    for a in result.actions:
        out(f"{a.action:8} {a.path}" + (f" ({a.reason})" if a.reason else ""))
    for note in result.notes:
        err(f"note: {note}")
    out()
    out("next:")
    for line in result.next_steps:
        out(f"  {line}")
    raise Exit(0)


# ---------------------------------------------------------------- entry point


def main(args: Sequence[str] | None = None, prog_name: str = "orch") -> None:
    """Console entry point: exactly one place turns errors into messages and exit codes.

    Whether an error is reported as JSON or with a traceback comes from
    Click's parsing (the :class:`State` its option callbacks fill, or
    :func:`_output_options` when parsing itself failed), never from argv.
    """
    from orch import errors

    argv = list(sys.argv[1:] if args is None else args)
    state = State()
    code = 0
    errors.warning_sink = None  # State.registry() sets it for this command
    try:
        # standalone_mode=False: Click returns the code of an Exit (ours or --help's)
        rv = cli.main(argv, prog_name=prog_name, standalone_mode=False, obj=state)
        code = rv if isinstance(rv, int) else 0
    except click.ClickException as exc:
        code = exc.exit_code if exc.exit_code else EXIT_USAGE
        _report(state, exc.format_message(), code, exc)
    except click.exceptions.Abort:
        _report(state, "aborted", EXIT_USAGE, None)
        code = EXIT_USAGE
    except OrchError as exc:
        code = exc.exit_code
        _report(state, str(exc), code, exc)
    except KeyboardInterrupt:
        _report(state, "interrupted", EXIT_FAILED, None)
        code = 130
    except Exception as exc:  # a bug: still one line unless -v
        from orch.store.db import describe_error

        code = EXIT_FAILED
        _report(
            state,
            f"internal error: {type(exc).__name__}: {describe_error(exc)} "
            "(run with -v for the traceback)",
            code,
            exc,
        )
    sys.exit(code)


def run() -> None:
    """The ``orch`` console script and ``python -m orch``: :func:`main`, then a fast exit.

    A process that has imported SQLAlchemy, Alembic and a driver spends
    0.15-0.2 s of CPU at exit tearing its modules down, object by object: as
    much as a whole ``orch status`` of a few databases.  Nothing orch needs
    happens in that teardown.  So once :func:`main` is done, this flushes
    stdout and stderr, runs the ``atexit`` handlers (logging's flush, ...)
    and ends the process with ``os._exit``.  If another non-daemon thread is
    still alive (never the case for the CLI's own commands), it exits the
    ordinary way, which waits for that thread.  :func:`main` itself keeps
    ``sys.exit`` for callers that embed orch and catch ``SystemExit``.
    """
    import threading

    sys.meta_path.insert(0, _MakoWithoutPygments())
    try:
        main()
        code = 0
    except SystemExit as exc:  # main() always exits with an int
        code = exc.code if isinstance(exc.code, int) else 1
    if threading.active_count() > 1:
        sys.exit(code)
    import atexit

    for stream in (sys.stdout, sys.stderr):
        # a closed pipe (``orch status | head``) takes nothing more: not an error;
        # a descriptor closed from the start (``orch status >&-``) is no stream at all
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()

    atexit._run_exitfuncs()
    os._exit(code)


class _MakoWithoutPygments:
    """An import hook that lets Mako load without Pygments (the console script only).

    Alembic imports Mako to render revision templates; Mako's ``exceptions``
    module, imported with it, loads Pygments when it is installed (pytest,
    IPython and rich all bring it) to colour HTML error pages, which neither
    Alembic nor orch ever renders: 0.1-0.15 s of CPU per process, as much as
    the rest of Alembic's imports.  This finder makes that one optional
    import fail, so Mako installs its plain fallback, and then removes
    itself: anything imported later, including Pygments itself, imports as
    usual.
    """

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "mako.ext.pygmentplugin":
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self)
            raise ImportError("orch: HTML highlighting of Mako errors is not needed")
        return None


def _report(state: State, message: str, code: int, exc: BaseException | None) -> None:
    from orch.redact import redact
    from orch.render import printable

    if state.json:
        from orch.render import dumps

        click.echo(redact(dumps({"error": redact(message), "exit_code": code})))
    else:
        click.echo(printable(redact(f"orch: error: {message}")), err=True)
    if state.verbose and exc is not None:
        import traceback

        click.echo(printable(redact("".join(traceback.format_exception(exc)))), err=True)
