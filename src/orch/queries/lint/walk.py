"""The revision walker of ``orch lint``: which revisions, each rendered alone, the allows.

Without ``--range`` the revisions are the pending ones: each database's
current revisions are read the way ``orch plan`` reads them (read-only) and
Alembic's upgrade path to the heads is taken.  With ``--range FROM:TO`` no
database is read: the revisions after FROM up to TO (both in the database's
own history; ``base`` and ``head`` work for every database).

Each revision is rendered alone, offline, for the environment's dialect: from
the heads of everything it needs to itself, so its SQL is exactly its own and
a revision that cannot be rendered (it reads the database through
``op.get_bind()``, a SQLite batch needs reflection) is one finding,
``not_renderable``, while the revisions after it are still checked.  The
line of a finding is the statement's first line in that revision's rendered
SQL (``BEGIN;`` is line 1 on PostgreSQL); findings about the revision file
itself (an allow comment, ``op.get_bind()``) carry no SQL and a line of the
file.  The revisions before the first one linted are rendered once, from
base, only to learn the column types they declare (see :func:`learn_schema`).

A revision file allows a rule for itself with a comment::

    # orch-lint: allow drop_column -- the column was unused since release 41

A reason after `` -- `` is required.  An allow without one, naming an
unknown rule, or allowing nothing that was found, is itself a finding.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orch.alembic_bridge import runner as alembic_run
from orch.alembic_bridge.runner import check_project
from orch.backends import for_url
from orch.config.registry import Registry, Target
from orch.config.revisions import Graph
from orch.errors import EXIT_FAILED, MissingVariable, UsageError
from orch.planning.live import graphs_for
from orch.planning.resolve import resolve_target
from orch.queries import status as st
from orch.queries.lint.rules import DIALECTS, ERROR, RULES, WARNING, Finding, Schema, lint_sql
from orch.queries.offline import get_bind_line, not_renderable_reason, tidy

#: the rules an allow comment may not name (they report the allows themselves)
NOT_ALLOWABLE = frozenset({"bad_allow", "unused_allow"})
_MARK = re.compile(r"#\s*orch-lint\s*:(.*)$")
_ALLOW = re.compile(r"allow\s+(\S+)(?:\s+--(.*)|\s*)$")


@dataclass
class LintFinding:
    """One finding of ``orch lint`` (an entry of ``findings`` in its JSON)."""

    database: str
    revision: str
    rule: str
    level: str
    line: int | None
    sql: str | None
    message: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Allow:
    """An ``# orch-lint: allow RULE -- reason`` comment and how many findings it silenced."""

    database: str
    revision: str
    rule: str
    reason: str
    line: int
    silenced: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DbLint:
    """One database of the lint: the revisions checked, or why it could not be read."""

    name: str
    backend: str
    start: tuple[str, ...] | None  # where the revisions start (None: unread)
    revisions: list[str] = field(default_factory=list)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "from": None if self.start is None else list(self.start),
            "revisions": self.revisions,
            "error": self.error,
        }


@dataclass
class LintReport:
    """The whole answer of ``orch lint``."""

    environment: str
    source: str  # "pending" or "range"
    databases: list[DbLint]
    findings: list[LintFinding]
    allowed: list[Allow]

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.level == ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.level == WARNING)

    @property
    def unread(self) -> list[DbLint]:
        return [d for d in self.databases if d.error is not None]

    @property
    def exit_code(self) -> int:
        """1 on any error finding or any database whose revisions could not be known."""
        return EXIT_FAILED if self.errors or self.unread else 0

    def problem(self) -> str:
        """One line saying why the exit code is 1 ('' when it is 0)."""
        parts = []
        if self.errors:
            parts.append(f"{self.errors} error(s) found")
        parts += [f"{d.name}: {d.error}" for d in self.unread]
        return "; ".join(parts)

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "environment": self.environment,
            "source": self.source,
            "databases": [d.as_json() for d in self.databases],
            "findings": [f.as_json() for f in self.findings],
            "allowed": [a.as_json() for a in self.allowed],
            "errors": self.errors,
            "warnings": self.warnings,
            "exit_code": self.exit_code,
        }
        if self.exit_code:
            doc["error"] = self.problem()
        return doc


# ------------------------------------------------------------------ which revisions


def parse_range(text: str) -> tuple[str, str]:
    """``FROM:TO`` -> (FROM, TO); both required (``base``, ``head`` or a revision)."""
    frm, sep, to = text.partition(":")
    frm, to = frm.strip(), to.strip()
    if not sep or not frm or not to or ":" in to:
        raise UsageError(
            f"--range {text}: expected FROM:TO (a revision, 'base' or 'head' on each side, "
            "e.g. base:head)"
        )
    return frm, to


def _general(spec: str) -> bool:
    return spec in ("base", "head", "heads")


def range_path(graph: Graph, frm: str, to: str) -> tuple[tuple[str, ...], list[str]]:
    """(start heads, revisions after FROM up to TO in apply order) in *graph*."""
    where = f"--range {frm}:{to} ({graph.name})"
    if frm in ("head", "heads"):
        raise UsageError(f"{where}: FROM cannot be head; use base or a revision")
    if to == "base":
        raise UsageError(f"{where}: TO cannot be base; use head or a revision")
    try:
        start = () if frm == "base" else (graph.resolve(frm),)
        end = graph.heads if to in ("head", "heads") else (graph.resolve(to),)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    path = graph.ordered(graph.ancestors(end) - graph.ancestors(start))
    if not path and start and set(end) != set(start):
        raise UsageError(f"{where}: {', '.join(end)} is below {start[0]}: nothing to lint")
    return start, path


# ------------------------------------------------------------------ allow comments


@dataclass
class _Allows:
    allows: dict[str, Allow]
    problems: list[LintFinding]


def read_allows(path: str, database: str, revision: str) -> _Allows:
    """The ``# orch-lint:`` comments of a revision file (comments only, never strings)."""
    import tokenize

    out = _Allows({}, [])
    try:
        text = Path(path).read_text(encoding="utf-8")
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (OSError, SyntaxError, tokenize.TokenError, UnicodeDecodeError):
        return out  # it cannot be rendered either: not_renderable says why

    def bad(line: int, message: str) -> None:
        out.problems.append(
            LintFinding(
                database, revision, "bad_allow", RULES["bad_allow"].level, line, None, message
            )
        )

    for tok in tokens:
        if tok.type != tokenize.COMMENT:
            continue
        mark = _MARK.match(tok.string)
        if mark is None:
            continue
        line = tok.start[0]
        body = mark.group(1).strip()
        m = _ALLOW.match(body)
        if m is None:
            bad(line, f"'{tok.string.strip()}': expected '# orch-lint: allow RULE -- reason'")
            continue
        rule, reason = m.group(1), (m.group(2) or "").strip()
        if rule not in RULES or rule in NOT_ALLOWABLE:
            known = ", ".join(r for r in RULES if r not in NOT_ALLOWABLE)
            bad(line, f"allow {rule}: no such rule (known: {known})")
        elif not reason:
            bad(line, f"allow {rule} needs a reason: '# orch-lint: allow {rule} -- why it is safe'")
        elif rule not in out.allows:
            out.allows[rule] = Allow(database, revision, rule, reason, line)
    return out


# ------------------------------------------------------------------ rendering and linting


def render_alone(registry: Registry, target: Target, graph: Graph, rev: str) -> str:
    """The offline SQL of *rev* alone: from the heads of what it needs, to itself."""

    assert target.url is not None
    # the heads of everything *rev* needs are its parents that no other parent needs
    parents = (*graph.revs[rev].down, *graph.revs[rev].depends_on)
    heads = graph.heads_of(parents) if parents else ()
    start: Any = "base" if not heads else (heads[0] if len(heads) == 1 else list(heads))
    buf = io.StringIO()
    alembic_run.run(
        registry,
        target.db,
        target.url,
        None,
        "upgrade",
        rev,
        as_sql=True,
        starting_rev=start,
        output_buffer=buf,
        stdout=io.StringIO(),
        expect=[rev],
    )
    return tidy(buf.getvalue())


def learn_schema(
    registry: Registry, target: Target, start: tuple[str, ...], dialect: str, schema: Schema
) -> None:
    """Fill *schema* with the column types the revisions up to *start* declare.

    Without them a type change in a linted revision could not be called
    narrowing: the column's earlier type was set by a revision already
    applied (or before ``--range``'s FROM).  One offline run renders them all,
    from base; a revision that cannot be rendered ends it there (what was
    rendered before it still counts), and nothing found in them is reported.
    """

    assert target.url is not None
    buf = io.StringIO()
    with contextlib.suppress(Exception):  # a partial history still teaches something
        alembic_run.run(
            registry,
            target.db,
            target.url,
            None,
            "upgrade",
            ",".join(start),
            as_sql=True,
            starting_rev="base",
            output_buffer=buf,
            stdout=io.StringIO(),
        )
    lint_sql(tidy(buf.getvalue()), dialect, schema)


def lint_revision(
    registry: Registry,
    target: Target,
    graph: Graph,
    rev: str,
    dialect: str,
    schema: Schema,
) -> tuple[list[LintFinding], list[Allow]]:
    """The findings of one revision (its allows applied) and its allows."""

    db = target.name
    path = graph.revs[rev].path
    allows = read_allows(path, db, rev)

    def made(f: Finding) -> LintFinding:
        return LintFinding(db, rev, f.rule, f.level, f.line, f.sql, f.message)

    found: list[LintFinding] = []
    bind_line = get_bind_line(path)
    try:
        sql = render_alone(registry, target, graph, rev)
    except Exception as exc:  # any failure to render is the finding, never a skip
        reason = not_renderable_reason(exc, path, "orch lint")
        level = RULES["not_renderable"].level
        found.append(LintFinding(db, rev, "not_renderable", level, bind_line, None, reason))
    else:
        found += [made(f) for f in lint_sql(sql, dialect, schema)]
        if bind_line is not None:
            found.append(
                LintFinding(
                    db,
                    rev,
                    "uses_get_bind",
                    RULES["uses_get_bind"].level,
                    bind_line,
                    None,
                    f"calls op.get_bind() (line {bind_line} of its file): offline that returns "
                    "no rows, so the SQL checked may not be all it runs; review its source",
                )
            )
    kept: list[LintFinding] = []
    for f in found:
        allow = allows.allows.get(f.rule)
        if allow is not None:
            allow.silenced += 1
        else:
            kept.append(f)
    for allow in allows.allows.values():
        if not allow.silenced:
            kept.append(
                LintFinding(
                    db,
                    rev,
                    "unused_allow",
                    RULES["unused_allow"].level,
                    allow.line,
                    None,
                    f"'allow {allow.rule}' (line {allow.line} of its file) silences nothing in "
                    "this revision: remove it",
                )
            )
    return allows.problems + kept, list(allows.allows.values())


def lint(
    registry: Registry,
    env: str | None,
    names: Sequence[str] = (),
    *,
    range_text: str | None = None,
) -> LintReport:
    """Lint the pending revisions of *names* (every database when empty), or a range.

    Reads the databases' current revisions only without *range_text*; never
    writes anything.  Exit-2 problems (unknown database, bad range, missing
    URL variable, a dialect without rules) raise before any revision is
    rendered.
    """

    environment = registry.environment(env).name
    check_project(registry)
    for name in names:
        registry.database(name)
    selected = list(dict.fromkeys(names)) or list(registry.databases)
    rng = parse_range(range_text) if range_text is not None else None
    if rng is not None and len(selected) > 1 and not all(_general(s) for s in rng):
        raise UsageError(
            f"--range {range_text}: a revision belongs to one database; name it "
            "(orch lint DB --range FROM:TO), or use base:head"
        )
    targets = {t.name: t for t in registry.targets(environment) if t.name in selected}
    missing = [f"{n}: {targets[n].missing}" for n in selected if targets[n].url is None]
    if missing:
        raise MissingVariable("; ".join(missing))
    dialects: dict[str, str] = {}
    for name in selected:
        url = targets[name].url
        assert url is not None
        dialects[name] = for_url(url).name
        if dialects[name] not in DIALECTS:
            raise UsageError(
                f"{name}: orch lint has no rules for {dialects[name]} (it knows "
                f"{', '.join(DIALECTS)})"
            )
    graphs = graphs_for(registry, selected)
    dbs: list[DbLint] = []
    if rng is not None:
        for name in selected:
            start, path = range_path(graphs[name], *rng)
            dbs.append(DbLint(name, dialects[name], start, path))
    else:
        dbs = _pending(registry, environment, selected, graphs, dialects)
    findings, allowed = _lint_dbs(registry, targets, graphs, dbs)
    return LintReport(environment, "range" if rng else "pending", dbs, findings, allowed)


def _lint_dbs(
    registry: Registry,
    targets: Mapping[str, Target],
    graphs: Mapping[str, Graph],
    dbs: Sequence[DbLint],
) -> tuple[list[LintFinding], list[Allow]]:
    """The findings of each database's revisions, in order, and the allows that silenced one."""
    findings: list[LintFinding] = []
    allowed: list[Allow] = []
    for d in dbs:
        schema = Schema()
        if d.revisions and d.start:
            learn_schema(registry, targets[d.name], d.start, d.backend, schema)
        for rev in d.revisions:
            found, allows = lint_revision(
                registry, targets[d.name], graphs[d.name], rev, d.backend, schema
            )
            findings += found
            allowed += [a for a in allows if a.silenced]
    return findings, allowed


def lint_planned(
    registry: Registry,
    env: str | None,
    steps: Mapping[str, tuple[Sequence[str], Sequence[str]]],
) -> list[LintFinding]:
    """The findings of exactly the revisions a plan will apply: ``{db: (start, revisions)}``.

    What the protected-environment prompt shows before an upgrade: the same
    rules as ``orch lint``, on the revisions the operator is approving, not
    on what is pending at some other moment.  Databases of a backend without
    rules are left out.
    """

    environment = registry.environment(env).name
    names = [n for n, (_start, revs) in steps.items() if revs]
    targets = {t.name: t for t in registry.targets(environment) if t.name in names}
    dbs: list[DbLint] = []
    for name in names:
        url = targets[name].url
        if url is None or for_url(url).name not in DIALECTS:
            continue
        start, revs = steps[name]
        dbs.append(DbLint(name, for_url(url).name, tuple(start), list(revs)))
    if not dbs:
        return []
    graphs = graphs_for(registry, [d.name for d in dbs], warn=False)
    return _lint_dbs(registry, targets, graphs, dbs)[0]


def _pending(
    registry: Registry,
    environment: str,
    selected: Sequence[str],
    graphs: dict[str, Graph],
    dialects: dict[str, str],
) -> list[DbLint]:
    """Each database's pending revisions from its live revision, read as ``orch plan`` does."""

    out: list[DbLint] = []
    statuses = {s.name: s for s in st.collect(registry, environment, list(selected), graphs=graphs)}
    missing = [f"{n}: {s.error}" for n, s in statuses.items() if s.state == "unconfigured"]
    if missing:
        raise MissingVariable("; ".join(missing))
    for name in selected:
        s = statuses[name]
        d = DbLint(name, dialects[name], None)
        out.append(d)
        if s.current is None:
            d.error = (
                f"{s.state}: {s.error}; its pending revisions are unknown (lint a range "
                "without a connection: --range FROM:TO)"
            )
            continue
        d.start = tuple(s.current)
        try:
            d.revisions = list(resolve_target(graphs[name], d.start, "heads", "upgrade").path)
        except UsageError as exc:
            d.error = str(exc)
    return out
