"""``upgrade --sql`` / ``downgrade --sql``: the exact SQL of the pending work, for review.

For each database of the plan, in execution order, orch reads the live
revision (read-only: nothing is written, no SQLite file is created), or
takes it from ``--from``, and renders Alembic's offline SQL of exactly the
range ``<live>:<target>`` (never ``+N`` counted from base, the Alembic
trap).  Each database gets its own headed section, or its own file with
``--out``.  Rendering a revision that needs a live connection (a data step
reading through ``op.get_bind()``, a SQLite batch operation without
``copy_from``) fails for that database; the section names the revision and
the reason, and the command exits 1.

orch's own audit rows and lock are not part of the SQL: they belong to
orch's runs, not to the migrations.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch.alembic_bridge import runner as alembic_run
from orch.alembic_bridge.internals import step_revision
from orch.alembic_bridge.runner import StepsDiffer, check_project
from orch.backends import for_url
from orch.config.registry import Registry, Target
from orch.config.revisions import Graph
from orch.errors import DatabaseError, MissingVariable, UsageError
from orch.outcomes import Direction
from orch.planning.live import graphs_for
from orch.planning.plan import (
    Plan,
    PlanStep,
    parse_selectors,
    plan_downgrade,
    plan_release,
    plan_upgrade,
    related,
)
from orch.queries import status as st
from orch.store.db import describe_error

RULE = "-- " + "=" * 72


@dataclass
class Section:
    """One database's part of the preview."""

    name: str
    direction: str
    backend: str
    start: tuple[str, ...]
    end: tuple[str, ...]
    revisions: tuple[str, ...]
    messages: dict[str, str]
    source: str  # "live" or "--from"
    sql: str = ""
    error: str | None = None
    failed_revision: str | None = None
    rendered: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def has_work(self) -> bool:
        return bool(self.revisions)

    def header(self) -> str:
        frm = ",".join(self.start) or "base"
        to = ",".join(self.end) or "base"
        lines = [RULE]
        origin = " (start given by --from)" if self.source == "--from" else ""
        if not self.revisions:
            lines.append(f"-- {self.name} ({self.backend}): nothing to run; at {frm}{origin}")
        else:
            lines.append(
                f"-- {self.name} ({self.backend}): {self.direction} {frm} -> {to}, "
                f"{len(self.revisions)} revision(s){origin}"
            )
            for rev in self.revisions:
                msg = self.messages.get(rev, "")
                lines.append(f"--   {rev}  {msg}".rstrip())
        lines += [f"-- note: {n}" for n in self.notes]
        if self.error:
            lines.append(f"-- FAILED at {self.failed_revision}: {self.error}")
        lines.append(RULE)
        return "\n".join(lines)

    def text(self) -> str:
        body = self.sql.strip("\n")
        if self.error:
            body = (body + "\n\n" if body else "") + (
                f"-- orch: rendering stopped at revision {self.failed_revision}; the SQL above "
                f"is incomplete"
            )
        return self.header() + ("\n\n" + body if body else "") + "\n"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "direction": self.direction,
            "backend": self.backend,
            "from": list(self.start),
            "to": list(self.end),
            "start_from": self.source,
            "revisions": list(self.revisions),
            "sql": self.sql,
            "error": self.error,
            "revision": self.failed_revision,
            "notes": self.notes,
        }


def parse_from(
    registry: Registry, values: Sequence[str], selected: Sequence[str], graphs: Mapping[str, Graph]
) -> dict[str, tuple[str, ...]]:
    """``--from DB@REV`` (repeatable) or a bare ``--from REV`` when one database is named.

    REV is a revision id or unique prefix, several joined by commas (several
    heads applied), or ``base``.
    """
    out: dict[str, tuple[str, ...]] = {}
    for value in values:
        db, sep, rev = value.rpartition("@")
        if not sep:
            if len(selected) != 1:
                raise UsageError(
                    f"--from {value}: name the database (--from DB@REV) when several databases "
                    "are involved"
                )
            db, rev = selected[0], value
        registry.database(db)
        if db in out:
            raise UsageError(f"--from names {db!r} twice")
        if not rev:
            raise UsageError(f"--from {value}: nothing after '@'")
        graph = graphs.get(db)
        if graph is None:
            raise UsageError(f"--from {value}: {db} is not part of this run")
        if rev == "base":
            out[db] = ()
        else:
            out[db] = tuple(sorted(graph.resolve(r.strip()) for r in rev.split(",")))
    return out


def read_starts(
    registry: Registry,
    env: str | None,
    names: Sequence[str],
    given: Mapping[str, tuple[str, ...]],
    graphs: Mapping[str, Graph],
) -> dict[str, tuple[str, ...]]:
    """The start of each database: ``--from`` if given, else its live revision (read-only)."""

    starts: dict[str, tuple[str, ...]] = dict(given)
    to_read = [n for n in names if n not in given]
    problems: list[str] = []
    missing: list[str] = []
    if to_read:
        for s in st.collect(registry, env, to_read, graphs=dict(graphs)):
            if s.state == "unconfigured":
                missing.append(f"{s.name}: {s.error}")
            elif s.current is None:
                problems.append(
                    f"{s.name}: {s.state}: {s.error}; to render its SQL anyway, give its "
                    f"revision: --from {s.name}@<revision> (or @base)"
                )
            else:
                starts[s.name] = tuple(s.current)
    if missing:
        raise MissingVariable("; ".join(missing))
    if problems:
        raise DatabaseError("cannot read the live revision: " + "; ".join(problems))
    return starts


def get_bind_line(path: str | None) -> int | None:
    """Line of the first ``get_bind()`` call in a revision file (code, not comments), or None."""
    import ast

    if not path:
        return None
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name == "get_bind":
                return node.lineno
    return None


def not_renderable_reason(exc: BaseException, rev_path: str | None, what: str = "--sql") -> str:
    """Why a revision could not be rendered offline, naming the cause when it is known.

    *what* is the command rendering without a connection (``--sql``, ``orch lint``).
    """

    text = f"{type(exc).__name__}: {describe_error(exc)}"
    # Alembic explains itself (batch, --sql limits); so does a steps mismatch
    if type(exc).__name__ == "CommandError" or isinstance(exc, StepsDiffer):
        return describe_error(exc)
    line = get_bind_line(rev_path)
    if line is not None:
        return (
            f"it reads the database through op.get_bind() (line {line}), and {what} has no "
            f"connection: in offline mode op.get_bind() only echoes SQL and returns no rows "
            f"({text}). Write the data step as SQL with op.execute(...), or review it in the "
            f"revision's source"
        )
    return f"{text} (it may need a live database connection, which {what} does not have)"


def render(
    registry: Registry,
    step: PlanStep,
    target: Target,
    graph: Graph,
    source: str,
) -> Section:
    """The offline SQL of one plan step (``step.resolved`` from its start)."""

    assert step.resolved is not None and step.current is not None
    url = target.url
    if url is None:
        raise MissingVariable(f"{target.name}: {target.missing}")
    resolved = step.resolved
    messages = {r: graph.revs[r].doc for r in resolved.path if r in graph.revs}
    section = Section(
        name=step.db,
        direction=step.direction,
        backend=for_url(url).name,
        start=step.current,
        end=resolved.target,
        revisions=resolved.path,
        messages=messages,
        source=source,
    )
    if not resolved.path:
        return section
    buf = io.StringIO()
    state: dict[str, str | None] = {"rev": None}

    def before_step(s: Any) -> None:
        state["rev"] = step_revision(s)  # an upgrade or downgrade step: never a stamp

    def on_apply(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        if state["rev"]:
            section.rendered.append(state["rev"])

    start: Any = list(step.current) if step.current else "base"
    if isinstance(start, list) and len(start) == 1:
        start = start[0]
    try:
        alembic_run.run(
            registry,
            target.db,
            url,
            None,
            step.direction,
            resolved.destination,
            before_step=before_step,
            on_apply=on_apply,
            as_sql=True,
            starting_rev=start,
            output_buffer=buf,
            stdout=io.StringIO(),
            expect=resolved.path,  # the header's revisions are the ones rendered, or none
        )
    except Exception as exc:
        rev = state["rev"]
        rev_path = graph.revs[rev].path if rev in graph.revs else None
        section.error = not_renderable_reason(exc, rev_path)
        section.failed_revision = state["rev"] or "?"
    section.sql = tidy(buf.getvalue())
    for rev in section.rendered:
        line = get_bind_line(graph.revs[rev].path if rev in graph.revs else None)
        if line is not None:
            section.notes.append(
                f"{rev} calls op.get_bind() (line {line}); offline that only echoes statements "
                "and returns no rows, so check its source too"
            )
    return section


def tidy(sql: str) -> str:
    """Alembic separates statements with blank lines; keep that, drop trailing space."""
    lines = [ln.rstrip() for ln in sql.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def preview(
    registry: Registry,
    plan: Plan,
    targets: Mapping[str, Target],
    graphs: Mapping[str, Graph],
    sources: Mapping[str, str],
) -> list[Section]:
    """Render every step of *plan* in execution order (sequentially: Alembic's globals)."""
    return [
        render(registry, s, targets[s.db], graphs[s.db], sources.get(s.db, "live"))
        for s in plan.steps
    ]


def check_out_dir(out_dir: Path) -> None:
    """Refuse (exit 2) an ``--out`` directory that cannot be written, creating nothing.

    Checked before any database is read, so an unwritable place costs no
    rendering; the nearest existing ancestor must be a writable directory.
    """
    probe = out_dir.absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--out {out_dir}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out_dir}: {probe} is not writable by this user")


def write_files(sections: Sequence[Section], out_dir: Path, registry: Registry) -> list[Path]:
    """One file per database with work; an OSError (disk full, permissions) is exit 2."""
    try:
        return _write_files(sections, out_dir, registry)
    except OSError as exc:
        where = exc.filename or out_dir
        raise UsageError(f"--out {out_dir}: cannot write {where}: {exc.strerror}") from exc


def _write_files(sections: Sequence[Section], out_dir: Path, registry: Registry) -> list[Path]:
    """One file per database with work, ``NN_<db>.sql`` numbered in execution order.

    Files of the same pattern left by an earlier preview are removed first, so
    the directory never mixes two previews.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if not out_dir.is_dir():  # pragma: no cover
        raise UsageError(f"--out {out_dir}: not a directory")
    names = "|".join(re.escape(n) for n in registry.databases)
    stale = re.compile(rf"^\d{{2,}}_({names})\.sql$")
    for old in out_dir.iterdir():
        if old.is_file() and stale.match(old.name):
            old.unlink()
    written: list[Path] = []
    n = 0
    for s in sections:
        if not s.has_work:
            continue
        n += 1
        path = out_dir / f"{n:02d}_{s.name}.sql"
        path.write_text(s.text(), encoding="utf-8")
        written.append(path)
    return written


@dataclass
class Preview:
    """The whole ``--sql`` answer: the plan's sections in execution order."""

    environment: str
    direction: str
    sections: list[Section]

    @property
    def failed(self) -> list[Section]:
        return [s for s in self.sections if s.error]


def build(
    registry: Registry,
    env: str | None,
    direction: str,
    selector_texts: Sequence[str],
    *,
    all_: bool = False,
    with_deps: bool = False,
    ignore_deps: bool = False,
    force: bool = False,
    cascade: bool = False,
    froms: Sequence[str] = (),
    release: tuple[str, Mapping[str, tuple[str, ...]]] | None = None,
    keep_new: bool = False,
) -> Preview:
    """Plan like ``upgrade``/``downgrade`` would, from the live (or ``--from``) revisions,
    and render the SQL of every step.  Reads, never writes.

    *release*: ``(tag, heads)`` for ``--to TAG``: every database to that release
    (see :func:`orch.planning.plan.plan_release`).
    """

    environment = registry.environment(env).name
    check_project(registry)
    if release is not None:
        graphs = graphs_for(registry)
        given = parse_from(registry, froms, [], graphs)
        starts = read_starts(registry, environment, list(registry.databases), given, graphs)
        plan = plan_release(
            registry,
            release[0],
            release[1],
            Direction(direction),
            graphs=graphs,
            currents=dict(starts),
            keep_new=keep_new,
        )
        targets = {t.name: t for t in registry.targets(environment)}
        sources = {n: "--from" for n in given}
        return Preview(environment, direction, preview(registry, plan, targets, graphs, sources))
    if direction == "upgrade":
        sels = parse_selectors(registry, selector_texts, command="upgrade")
        if all_ and sels:
            raise UsageError("--all cannot be combined with database selectors")
        if not all_ and not sels:
            raise UsageError(
                "name the databases to upgrade (e.g. 'orch upgrade core') or use --all"
            )
        if all_:
            involved = list(registry.databases)
        else:
            involved = list(
                dict.fromkeys(n for s in sels for n in (s.db, *registry.dependencies(s.db)))
            )
    else:
        sels = parse_selectors(registry, selector_texts, require_target=True, command="downgrade")
        if not sels:
            raise UsageError("name the databases to downgrade with a target, e.g. 'analytics@-1'")
        involved = list(dict.fromkeys(n for s in sels for n in (s.db, *registry.dependents(s.db))))
    every = graphs_for(registry)
    # and the databases requirements across databases (orch_requires) relate them to
    involved = related(registry, every, involved, up=direction == "upgrade")
    graphs = {n: every[n] for n in involved}
    given = parse_from(registry, froms, [s.db for s in sels], graphs)
    starts = read_starts(registry, environment, involved, given, graphs)
    currents: dict[str, tuple[str, ...] | None] = dict(starts)
    if direction == "upgrade":
        plan = plan_upgrade(
            registry,
            sels,
            all_=all_,
            graphs=graphs,
            currents=currents,
            with_deps=with_deps,
            ignore_deps=ignore_deps,
        )
    else:
        plan = plan_downgrade(
            registry, sels, graphs=graphs, currents=currents, force=force, cascade=cascade
        )
    targets = {t.name: t for t in registry.targets(environment)}
    missing = [f"{n}: {targets[n].missing}" for n in plan.names if targets[n].url is None]
    if missing:
        raise MissingVariable("; ".join(missing))
    sources = {n: "--from" for n in given}
    return Preview(environment, direction, preview(registry, plan, targets, graphs, sources))
