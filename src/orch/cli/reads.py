"""``status``, ``log``, ``check``, ``lint``, ``history`` and ``graph``: read, render, exit.

Nothing here writes to a database; the reading is :mod:`orch.service`'s.
"""

from __future__ import annotations

from typing import Any

import click
from click.exceptions import Exit

from orch.cli.app import cli, emit_json, err, global_options, options, out, shard_option


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
@shard_option
@global_options
def status(
    databases: tuple[str, ...], check: bool, all_envs: bool, shard: tuple[int, int] | None
) -> None:
    """Current revision, head, pending count and state of each database.

    Exit 0 when every database was read; 1 when any could not be read
    (unreachable, or unconfigured: a missing variable), its cell saying why,
    or with --check when any is not up_to_date; 2 when it could not start.
    """
    from orch.outcomes import State
    from orch.render import short, table

    st = options()
    project = st.project()
    if all_envs:
        matrix = project.status_all(databases)
        code, problem = matrix.exit_code(check), matrix.problem(check)
        if st.json:
            doc: dict[str, Any] = {
                "environments": [r.as_json() for r in matrix],
                "differing": [d.as_json() for d in matrix.differing],
            }
            if code:
                doc["error"], doc["exit_code"] = problem, code
            emit_json(doc)
        else:
            envs = [r.environment for r in matrix]
            rows = []
            for name in matrix.databases:
                row = [name]
                for report in matrix:
                    if name in matrix.fleets:  # one row of counts for the whole fleet
                        found = matrix.fleet_counts(name, report)
                        whole = next((s for s in report if s.name == name), None)
                        if name in report.absent:
                            row.append("absent")
                        elif whole is not None:  # its tenants could not be listed
                            row.append(whole.state)
                        else:
                            total = sum(found.values())
                            parts = ", ".join(f"{n} {w}" for w, n in found.items())
                            row.append(f"{total} tenants: {parts}" if found else "0 tenants")
                        continue
                    cell = next((s for s in report if s.name == name), None)
                    if cell is None:  # not part of that environment (its URL is null)
                        row.append("absent")
                        continue
                    behind = cell.state == State.BEHIND and cell.pending
                    row.append(cell.state + (f" ({cell.pending})" if behind else ""))
                rows.append(row)
            if any(r.tagged for r in matrix):  # the release each environment is at
                rows.append(["(release)", *[r.release or "between releases" for r in matrix]])
            out(table(["DATABASE", *envs], rows))
            notes = [
                [f"{r.environment}/{s.name}", f"{s.state}: {s.error}"]
                for r in matrix
                for s in r
                if s.error
            ]
            if notes:
                out()
                out(table(["WHERE", "WHY"], notes))
            if matrix.differing:
                out()
                differ = [[d.database, d.revision, d.environments] for d in matrix.differing]
                out(table(["DATABASE", "REVISION", "RAN WITH DIFFERENT CONTENTS IN"], differ))
            if code:
                err(f"orch: {problem}")
        raise Exit(code)
    report = project.status(databases, shard=shard)
    code, problem = report.exit_code(check), report.problem(check)
    if st.json:
        doc = report.as_json()
        if code:
            doc["error"], doc["exit_code"] = problem, code
        emit_json(doc)
    else:
        from orch.cli.fleet import counts, is_fleet

        fleet = is_fleet(len(report))  # counts, then only the rows that need attention
        rows = [
            [
                s.name,
                s.state,
                short(s.current),
                short(s.heads, "-"),
                "" if s.pending is None else str(s.pending),
                s.error or s.url or "",
            ]
            for s in report
            if not fleet or s.state != State.UP_TO_DATE
        ]
        out(f"environment: {report.environment}")
        headers = ["DATABASE", "STATE", "CURRENT", "HEAD", "PENDING", "URL / ERROR"]
        shown = [s for s in report if not fleet or s.state != State.UP_TO_DATE]
        if report.tagged:  # releases.yaml has releases: which one each database is at
            headers.insert(5, "RELEASE")
            for row, s in zip(rows, shown, strict=True):
                row.insert(5, s.release or "-")
        if fleet:
            out(counts(s.state for s in report))
        if rows or not fleet:
            out(table(headers, rows))
        if report.absent and not databases:
            out(f"not part of {report.environment} (URL null): {', '.join(report.absent)}")
        if report.tagged:
            out(f"release: {report.release or 'between releases'}")
        if code:
            err(f"orch: {problem}")
    raise Exit(code)


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

    st = options()
    view = st.project().log(databases, limit or None)
    if st.json:
        emit_json(view.as_json())
        raise Exit(view.exit_code)
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
            (r.error or (r.detail if r.direction == "accept" else "") or "").replace("\n", " "),
        ]
        for r in view
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
                    "ERROR / WHY",
                ],
                rows,
            )
        )
    else:
        out(f"no entries in {view.environment} yet")
    for name, error in view.unreadable.items():
        err(f"{name}: unreachable: {error}")
    raise Exit(view.exit_code)


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
    from orch.outcomes import CheckState
    from orch.render import short, table

    st = options()
    report = st.project().check(databases)
    if st.json:
        emit_json(report.as_json())
        raise Exit(report.exit_code)
    rows = []
    for r in report:
        if r.state == CheckState.DRIFT:
            detail = f"{len(r.differences)} difference(s)"
        elif r.state == CheckState.CLEAN:
            detail = "models and schema agree"
        else:
            detail = r.error or ""
        if r.pending:
            detail += f" (at {short(r.current)}, head {short(r.heads, '-')}: upgrade first?)"
        rows.append([r.name, r.state, detail])
    out(f"environment: {report.environment}")
    out(table(["DATABASE", "CHECK", "DETAIL"], rows))
    for r in report:
        for d in r.differences:
            out(f"  {r.name}: {d['text']}")
    for s in report.problems:
        out(f"problem: {s.message}")
    for w in report.warnings:
        err(f"warning: {w}")
    raise Exit(report.exit_code)


@cli.command()
@click.argument("database", metavar="DB")
@global_options
def history(database: str) -> None:
    """Revisions of DB, newest first; '*' marks those applied in this environment."""
    from orch.outcomes import State
    from orch.render import short, table

    st = options()
    h = st.project().history(database)
    if st.json:
        emit_json(h.as_json())
        raise Exit(0)
    cur = short(h.current) if h.current is not None else "unknown"
    if h.state == State.ABSENT:
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
@click.option(
    "--revisions",
    is_flag=True,
    help="The revision-level graph across databases: every revision, its parents and its "
    "orch_requires as edges.",
)
@global_options
def graph(fmt: str, revisions: bool) -> None:
    """The database dependency graph of the registry (depends_on)."""
    from orch.queries import history

    st = options()
    registry = st.project().registry
    if revisions:
        if st.json:
            emit_json(history.revision_graph_json(registry))
        else:
            out(history.render_revision_graph(registry, fmt))
        raise Exit(0)
    if st.json:
        emit_json(history.graph_json(registry))
    else:
        out(history.render_graph(registry, fmt))
    raise Exit(0)


@cli.command()
@click.argument("databases", nargs=-1, metavar="[DB]...")
@click.option(
    "--range",
    "range_",
    metavar="FROM:TO",
    default=None,
    help="Lint the revisions after FROM up to TO (a revision, base or head) instead of the "
    "pending ones; connects to nothing.",
)
@global_options
def lint(databases: tuple[str, ...], range_: str | None) -> None:
    """Dangerous DDL in the pending revisions (drops, renames, long locks, rewrites).

    Each revision is rendered alone, offline, for the database's dialect and
    its SQL parsed.  '# orch-lint: allow RULE -- reason' in a revision file
    allows one rule there.  Exit 1 on any error finding (or a database whose
    revision could not be read), 0 otherwise, 2 when it could not start.
    """
    from orch.render import table

    st = options()
    report = st.project().lint(databases, range=range_)
    if st.json:
        emit_json(report.as_json())
        raise Exit(report.exit_code)
    rows = [
        [f.level, f.database, f.revision, "" if f.line is None else str(f.line), f.rule, f.message]
        for f in report.findings
    ]
    checked = sum(len(d.revisions) for d in report.databases)
    what = "pending revision(s)" if report.source == "pending" else "revision(s) in the range"
    if rows:
        out(table(["LEVEL", "DATABASE", "REVISION", "LINE", "RULE", "MESSAGE"], rows))
    for a in report.allowed:
        out(f"allowed: {a.database} {a.revision} {a.rule} ({a.silenced}): {a.reason}")
    out(f"{report.errors} error(s), {report.warnings} warning(s) in {checked} {what}")
    for d in report.unread:
        err(f"{d.name}: {d.error}")
    raise Exit(report.exit_code)
