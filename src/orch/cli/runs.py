"""``upgrade``, ``downgrade``, ``stamp`` and ``plan``: options in, :mod:`orch.service`'s plan
and run, a summary out.

The protected-environment confirmation lives here because it talks to a
person: the plan the service made is shown, the operator types the
environment's name, and that very plan, approved, is what runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click
from click.exceptions import Exit  # commands leave with Click's own Exit(code)

from orch.cli.app import (
    F,
    Options,
    cli,
    emit_json,
    err,
    global_options,
    options,
    out,
    shard_option,
)
from orch.errors import EXIT_USAGE, OrchError, RefusedError, UsageError
from orch.outcomes import Direction, OnFailure, Outcome

if TYPE_CHECKING:
    from orch.run.execute import DbResult
    from orch.service import Plan, Project, RunResult

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
    st: Options,
    direction: str,
    selectors: Sequence[str],
    from_: Sequence[str],
    out_dir: str | None,
    **plan_options: Any,
) -> NoReturn:
    """The ``--sql`` branch of upgrade/downgrade: render, print or write files, exit."""
    result = st.project().sql(direction, selectors, froms=from_, out_dir=out_dir, **plan_options)
    preview = result.preview
    if st.json:
        emit_json(result.as_json())
        raise Exit(result.exit_code)
    names = ", ".join(s.name for s in preview.sections)
    if out_dir:
        for f in result.files:
            out(str(f))
        if not result.files:
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
    raise Exit(result.exit_code)


def _release_only(selectors: Sequence[str], **flags: bool) -> None:
    """--to TAG names the whole environment's target: nothing else may name one."""
    if selectors:
        raise UsageError("--to TAG brings every database to the release: name no database")
    used = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v]
    if used:
        raise UsageError(f"--to TAG cannot be combined with {', '.join(used)}")


# ---------------------------------------------------------------- confirmation


def _confirm(
    st: Options, project: Project, plan: Plan, yes: bool, *, notes: Sequence[str] = ()
) -> Plan:
    """In a protected environment, show the plan and make the operator type the env's name.

    Returns the plan approved (:meth:`orch.service.Plan.approve`): the run
    must then be that plan.  Unchanged when nothing needs confirming.

    Typing the name (not just "y") is the point: it is the moment an operator
    notices they are about to touch prod.  Without a terminal on stdin and
    stderr there is nobody to ask, so the command refuses (exit 2) unless
    ``--yes`` was given; a refusal writes nothing anywhere.
    """
    environment = project.environment
    if not environment.protected or yes:
        return plan
    name = environment.name
    direction = plan.direction
    rows = _confirm_rows(plan)
    if direction in (Direction.UPGRADE, Direction.DOWNGRADE):
        notes = [*notes, *_edited_notes(plan)]
    hooks = [f"{h}: {cmd}" for h, cmd in environment.hooks.items() if h.endswith(f"_{direction}")]
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    if not interactive:
        reason = (
            f"environment {name!r} is protected: {direction} needs --yes when there is no "
            "terminal to confirm on; nothing was changed"
        )
        if st.json:
            why = "protected environment: not confirmed (no terminal, no --yes)"
            emit_json(
                {
                    "environment": name,
                    "command": direction,
                    "protected": True,
                    "databases": [r.as_json() for r in plan.refused(why)],
                    "plan": plan.steps_json(),
                    "error": reason,
                    "exit_code": EXIT_USAGE,
                }
            )
            raise Exit(EXIT_USAGE)
        _show_confirm_plan(name, rows, hooks, notes)
        raise RefusedError(reason, databases=plan.names)
    _show_confirm_plan(name, rows, hooks, notes)
    _show_lint(project, plan)
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
        raise RefusedError(f"not confirmed; nothing was changed in {name!r}", databases=plan.names)
    return plan.approve()


def _edited_notes(plan: Plan) -> list[str]:
    """Databases of the plan with edited revisions: the run will refuse them (protected)."""
    return [
        f"edited: {s.name}: revision {', '.join(s.edited)} no longer matches its file; this run "
        f"will refuse {s.name} unless 'orch accept {s.name}@{s.edited[0]} -m WHY' comes first"
        for s in plan.statuses
        if s.edited and s.name in plan.names
    ]


def _confirm_rows(plan: Plan) -> list[list[str]]:
    """The rows shown before a protected run; a stamp's FROM is the live revision read for it
    (its steps do not carry one)."""
    from orch.render import short

    if plan.direction == Direction.ACCEPT:
        return [
            [str(s.level), s.db, s.direction, s.target, "its file as it is now"] for s in plan.steps
        ]
    if plan.direction != Direction.STAMP:
        return _plan_rows(plan)
    currents = plan.currents
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


def _show_lint(project: Project, plan: Plan) -> None:
    """What ``orch lint`` says of the revisions about to be approved (upgrades only).

    Shown, not enforced: the operator decides at the prompt.  A lint that
    cannot run says so in one line and never blocks the prompt.
    """
    from orch.render import colour

    try:
        findings = project.lint_plan(plan)
    except OrchError as exc:
        err(f"lint: not checked: {exc}")
        return
    if not findings:
        return
    errors = sum(1 for f in findings if f.level == "error")
    err(f"orch lint: {errors} error(s), {len(findings) - errors} warning(s) in these revisions:")
    for f in findings:
        where = f" line {f.line}" if f.line is not None else ""
        level = colour(f.level, sys.stderr)
        err(f"  {f.database} {f.revision} {level} {f.rule}{where}: {f.message}")


def _plan_rows(plan: Plan) -> list[list[str]]:
    from orch.render import short

    rows = []
    for s in plan.steps:
        to = short(s.resolved.target) if s.resolved else s.target
        frm = short(s.current)
        revs = ", ".join(s.revisions) if s.resolved else "(live revision unknown)"
        rows.append([str(s.level), s.db, s.direction, f"{frm} -> {to}", revs or "-"])
    return rows


# ---------------------------------------------------------------- the run and its summary


def _run(st: Options, project: Project, plan: Plan, *, yes: bool, **run_options: Any) -> NoReturn:
    """Run *plan* (:meth:`orch.service.Project.run`), print the summary, exit with its code.

    Progress goes to stderr as each database finishes (not with ``--json``);
    for a fleet on a terminal, one live line instead (see :mod:`orch.cli.fleet`).
    """
    from orch.cli import process
    from orch.cli.fleet import Progress

    process.startup_over()  # the plan is made: the run collects its garbage
    progress = Progress(len(plan.names))

    def on_step(r: DbResult) -> None:
        # as each step ends: an interleaved database's lines in run order; a fleet on a
        # terminal shows only what needs attention (on_result)
        if not st.json and not progress.on:
            for line in r.lines:
                err(line)

    def on_result(r: DbResult) -> None:
        progress.clear()
        for w in r.warnings:  # even with --json: an operator must hear these
            err(w)
        if not st.json and not r.outcome.ok and r.error:
            err(f"{r.name}: {r.outcome}: {r.error}")
        progress.update(r.outcome.ok)

    def on_rollback(why: str, names: Sequence[str]) -> None:
        if not st.json:
            err(
                f"orch: {why}; --on-failure rollback: returning "
                f"{', '.join(names)} to where this run found them"
            )

    result = project.run(
        plan,
        yes=yes,
        on_result=on_result,
        on_step=on_step,
        on_note=lambda note: err(f"orch: {note}"),
        on_rollback=on_rollback,
        **run_options,
    )
    progress.clear()
    _report_run(st, result)
    raise Exit(result.exit_code)


def _report_run(st: Options, result: RunResult) -> None:
    from orch.render import short, table
    from orch.run import rollback

    if st.json:
        emit_json(result.as_json())
        return
    headers = ["DATABASE", "OUTCOME", "FROM", "TO", "STEPS", "TIME", "DETAIL"]
    if result.rolled_back:
        headers.insert(4, "ROLLBACK")
    from orch.cli.fleet import counts, is_fleet

    fleet = is_fleet(len(result.databases))
    if fleet:  # counts, then only the rows that need attention (--json has every row)
        out(counts(r.outcome for r in result))
    rows = []
    for r in result:
        if fleet and r.outcome.ok and r.rollback is None:
            continue
        detail = ""
        if not r.outcome.ok:
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
        if result.rolled_back:
            row.insert(4, _rollback_cell(r))
            if undo:
                err(f"{r.name}: {undo}")
        rows.append(row)
    if rows or not fleet:
        out(table(headers, rows))
    if result.interrupted:
        err(
            f"orch: {result.stop_reason}: stopped after the revisions in flight "
            f"(exit {result.exit_code})"
        )


def _rollback_cell(r: DbResult) -> str:
    """The ROLLBACK column: '-' (nothing to undo), 'done -> REV', or the outcome."""
    from orch.render import short

    rb = r.rollback
    if rb is None:
        return "-"
    if Outcome(rb["outcome"]).ok:
        return f"{rb['outcome']} -> {short(rb.get('to'))}"
    return str(rb["outcome"])


# ---------------------------------------------------------------- commands


@cli.command()
@click.argument("selectors", nargs=-1, metavar="[DB[@TARGET]]...")
@click.option("--all", "all_", is_flag=True, help="Every database, to head.")
@click.option(
    "--with-deps", is_flag=True, help="Bring dependencies of the named databases to head first."
)
@click.option("--ignore-deps", is_flag=True, help="Do not check that dependencies are at head.")
@click.option(
    "--to",
    "to",
    default=None,
    metavar="TAG",
    help="Every database of the environment up to release TAG (releases.yaml).",
)
@click.option("--fail-fast", is_flag=True, help="Start nothing new after the first failure.")
@click.option(
    "--retry",
    "retry",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[RUN_ID]",
    help="Only what failed, was skipped, locked, refused or interrupted in that run "
    "(default: the environment's last run).",
)
@_on_failure_opt(
    "downgrade every database this run changed back to where it started, dependents first"
)
@shard_option
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
    to: str | None,
    fail_fast: bool,
    retry: str | None,
    on_failure: str,
    shard: tuple[int, int] | None,
    jobs: int | None,
    lock_timeout: float | None,
    yes: bool,
    sql: bool,
    from_: tuple[str, ...],
    out_dir: str | None,
) -> None:
    """Migrate databases up, dependencies before dependents (--sql: only show the SQL)."""
    st = options()
    _sql_only(sql, from_, out_dir)
    if to is not None:
        _release_only(selectors, all_=all_, with_deps=with_deps, ignore_deps=ignore_deps)
        if sql:
            _sql_preview(st, "upgrade", (), from_, out_dir, to=to)
    retrying = None
    if retry is not None:
        if selectors or all_ or sql or to is not None:
            raise click.UsageError(
                "--retry chooses the databases: no selectors, --all, --to or --sql"
            )
        retrying = st.project().plan_retry(retry or None)
        run_id, again = retrying.run_id, retrying.databases
        if retrying.plan is None:
            err(f"run {run_id[:8]}: nothing to retry")
            if st.json:
                from orch.service import RunResult

                env = st.project().environment_name
                emit_json(RunResult(env, Direction.UPGRADE, OnFailure(on_failure), [], 0).as_json())
            raise Exit(0)
        err(f"run {run_id[:8]}: retrying {len(again)} database(s)")
        selectors, with_deps = tuple(again), True
    if sql:
        _sql_preview(
            st,
            "upgrade",
            selectors,
            from_,
            out_dir,
            all=all_,
            with_deps=with_deps,
            ignore_deps=ignore_deps,
        )
    _no_shard_with_release(shard, to)
    project = st.project()
    if retrying is not None and retrying.plan is not None and shard is None:
        plan = retrying.plan  # keeps the retried run's selection for its audit rows
    elif to is not None:
        plan = project.plan_to(to, "upgrade")
    else:
        plan = project.plan(
            selectors,
            all=all_,
            with_deps=with_deps,
            ignore_deps=ignore_deps,
            read_live=project.protected and not yes,  # the plan is shown
            shard=shard,
            scope=retrying.plan.scope if retrying is not None and retrying.plan else None,
        )
    rollback_note = "on failure: every database this run changed goes back to where it started"
    _confirm_and_run(
        st,
        project,
        plan,
        to=to,
        rollback_note=rollback_note,
        yes=yes,
        jobs=jobs,
        lock_timeout=lock_timeout,
        fail_fast=fail_fast,
        on_failure=on_failure,
    )


def _no_shard_with_release(shard: object, to: str | None) -> None:
    if to is not None and shard is not None:
        raise click.UsageError("--shard splits selected databases; a release takes them all")


def _confirm_and_run(
    st: Options,
    project: Project,
    plan: Plan,
    *,
    to: str | None,
    rollback_note: str,
    yes: bool,
    on_failure: str,
    **run_options: Any,
) -> NoReturn:
    """The common end of upgrade and downgrade: what the prompt says, approval, the run."""
    notes = [f"release: every database to {to}"] if to is not None else []
    if on_failure == "rollback":
        notes.append(rollback_note)
    plan = _confirm(st, project, plan, yes, notes=notes)
    _run(st, project, plan, yes=yes, on_failure=on_failure, **run_options)


@cli.command()
@click.argument("selectors", nargs=-1, metavar="DB@TARGET...")
@click.option("--force", is_flag=True, help="Downgrade even if dependents are not at base.")
@click.option(
    "--cascade",
    is_flag=True,
    help="First downgrade, just far enough, databases whose applied revisions require "
    "(orch_requires) what this removes.",
)
@click.option(
    "--to",
    "to",
    default=None,
    metavar="TAG",
    help="Every database of the environment down to release TAG (releases.yaml).",
)
@click.option(
    "--keep-new",
    is_flag=True,
    help="With --to: leave databases added after the tag alone (default: to base).",
)
@click.option("--fail-fast", is_flag=True, help="Start nothing new after the first failure.")
@_on_failure_opt(
    "upgrade every database this run changed back to exactly the revisions it started at, "
    "dependencies first"
)
@shard_option
@_jobs_opt
@_lock_opt
@_yes_opt
@_sql_options
@global_options
def downgrade(
    selectors: tuple[str, ...],
    force: bool,
    cascade: bool,
    to: str | None,
    keep_new: bool,
    fail_fast: bool,
    on_failure: str,
    shard: tuple[int, int] | None,
    jobs: int | None,
    lock_timeout: float | None,
    yes: bool,
    sql: bool,
    from_: tuple[str, ...],
    out_dir: str | None,
) -> None:
    """Migrate databases down to an explicit target (DB@-1, DB@REV, DB@base); dependents first."""
    st = options()
    _sql_only(sql, from_, out_dir)
    if to is not None:
        _release_only(selectors, force=force, cascade=cascade)
        if sql:
            _sql_preview(st, "downgrade", (), from_, out_dir, to=to, keep_new=keep_new)
    elif keep_new:
        raise UsageError("--keep-new goes with --to TAG")
    if sql:
        _sql_preview(st, "downgrade", selectors, from_, out_dir, force=force, cascade=cascade)
    _no_shard_with_release(shard, to)
    project = st.project()
    if to is not None:
        plan = project.plan_to(to, "downgrade", keep_new=keep_new)
    else:
        plan = project.plan_downgrade(selectors, force=force, cascade=cascade, shard=shard)
    _confirm_and_run(
        st,
        project,
        plan,
        to=to,
        rollback_note=(
            "on failure: every database this run changed goes back up to where it started"
        ),
        yes=yes,
        jobs=jobs,
        lock_timeout=lock_timeout,
        fail_fast=fail_fast,
        on_failure=on_failure,
    )


@cli.command()
@click.argument("selectors", nargs=-1, metavar="DB@REVISION...")
@_lock_opt
@_yes_opt
@global_options
def stamp(selectors: tuple[str, ...], lock_timeout: float | None, yes: bool) -> None:
    """Set the version of databases without running migrations (baseline, repair)."""
    st = options()
    project = st.project()
    # read-only, and only when the plan is shown: the FROM column
    plan = project.plan_stamp(selectors, read_live=project.protected and not yes)
    plan = _confirm(st, project, plan, yes)
    _run(st, project, plan, yes=yes, jobs=1, lock_timeout=lock_timeout)


@cli.command()
@click.argument("selector", metavar="DB@REVISION")
@click.option(
    "--message",
    "-m",
    required=True,
    help="Why the edit is accepted (recorded in the audit trail with who and where).",
)
@_lock_opt
@_yes_opt
@global_options
def accept(selector: str, message: str, lock_timeout: float | None, yes: bool) -> None:
    """Accept an applied revision's edited file as it is now (clears 'edited'; audited)."""
    from orch.cli import process

    st = options()
    project = st.project()
    plan = _confirm(st, project, project.plan_accept(selector), yes)
    process.startup_over()  # the plan is made: the run collects its garbage
    result = project.accept(plan, message, yes=yes, lock_timeout=lock_timeout)
    for r in result:
        if st.json:
            break
        for line in r.lines:
            err(line)
        if not r.outcome.ok and r.error:
            err(f"{r.name}: {r.outcome}: {r.error}")
    _report_run(st, result)
    raise Exit(result.exit_code)


@cli.command()
@click.argument("selectors", nargs=-1, metavar="[DB[@TARGET]]...")
@click.option("--all", "all_", is_flag=True, help="Every database (the default without selectors).")
@click.option("--with-deps", is_flag=True, help="Include dependencies that are behind.")
@click.option("--ignore-deps", is_flag=True, help="Do not check dependencies.")
@global_options
def plan(selectors: tuple[str, ...], all_: bool, with_deps: bool, ignore_deps: bool) -> None:
    """Show what 'upgrade' would run (reads live revisions; writes nothing)."""
    from orch.errors import EXIT_FAILED
    from orch.render import table

    st = options()
    the_plan = st.project().plan(
        selectors, all=all_ or not selectors, with_deps=with_deps, ignore_deps=ignore_deps
    )
    the_plan.check_configured()  # what upgrade would refuse (exit 2), plan refuses too
    unreadable = the_plan.unreadable
    code = EXIT_FAILED if unreadable else 0
    if st.json:
        emit_json(
            {
                "environment": the_plan.environment,
                "steps": the_plan.steps_json(),
                "pending": the_plan.pending,
                "unreadable": {n: s.error for n, s in unreadable.items()},
                **(
                    {
                        "error": "; ".join(f"{n}: {s.error}" for n, s in unreadable.items()),
                        "exit_code": code,
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
    raise Exit(code)
