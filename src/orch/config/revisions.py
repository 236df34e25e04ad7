"""The revision graph of one database, read without executing revision modules.

``status``, ``plan`` and ``history`` need only ids and parents.  Importing
every revision module (what Alembic's ScriptDirectory does) costs most of the
run time on long histories, so the headers are read with a regex and
``ast.literal_eval``; a file whose header is not literal falls back to a full
``ast`` parse and, failing that, to importing it.  Migrations that *run* still
go through Alembic as usual.

The graph logic (heads, ancestors, order) is pure and works on any mapping
of :class:`Rev`.  Which revisions an upgrade or downgrade runs is not
decided here: :func:`resolve_target` asks Alembic's ``RevisionMap`` of the
ScriptDirectory that runs the migration (see :meth:`Graph.bind_script`), so
plan, ``--sql``, the protected prompt and the run cannot disagree.
"""

from __future__ import annotations

import ast
import copy
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.errors import UsageError

_SOURCE = re.compile(r"^(?!\.#|__init__)(.*\.py)$")
# The values nearly every header has (None or a plain string literal), read without
# ast: literal_eval costs more than reading the file.  Anything else falls back to it.
_PLAIN_VALUE = re.compile(
    r"""(?:(None)|'([^'\\\n]*)'|"([^"\\\n]*)")[ \t]*(?:#[^\n]*)?(?:\r?\n|$)"""
)
_NAMES = ("revision", "down_revision", "branch_labels", "depends_on", "orch_requires")
_ASSIGN = re.compile(r"\s*(?::[^=\n]*)?=\s*")  # what follows a header name: annotation, =


#: Alembic's own symbols: a revision with one of these ids could never be named
RESERVED_REV_IDS = frozenset({"head", "heads", "base", "current"})
#: characters Alembic refuses in a revision id (alembic.script.revision)
ILLEGAL_REV_CHARS = "@-+:"


class GraphError(UsageError):
    """A version directory that cannot be read as one history."""


@dataclass(frozen=True)
class Rev:
    """One revision's header."""

    revision: str
    down: tuple[str, ...] = ()
    branch_labels: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    path: str = ""
    doc: str = ""
    #: ``orch_requires``: revisions of *other* databases this one needs applied first,
    #: as ``"db@revision"`` (Alembic's ``depends_on`` stays inside one database)
    requires: tuple[str, ...] = ()


def _as_tuple(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(str(v) for v in value)
    raise ValueError(f"unexpected value {value!r}")


def _literal_after(text: str, start: int) -> object:
    """The literal value that starts at *start* (it may span lines)."""
    m = _PLAIN_VALUE.match(text, start)
    if m is not None:
        if m[1] is not None:
            return None
        return m[2] if m[2] is not None else m[3]
    end = text.find("\n", start)
    while True:
        chunk = text[start : end if end != -1 else len(text)]
        try:
            return ast.literal_eval(chunk.split("#")[0].strip() if "\n" not in chunk else chunk)
        except (ValueError, SyntaxError):
            if end == -1 or end - start > 2000:
                raise
            end = text.find("\n", end + 1)


def _docstring(text: str) -> str:
    """The first line of the module docstring (the revision's message)."""
    s = text.lstrip()
    while s.startswith("#"):  # a shebang or coding line may come first
        nl = s.find("\n")
        s = s[nl + 1 :].lstrip() if nl >= 0 else ""
    if s[:1] in ("r", "R", "u", "U"):
        s = s[1:]
    quote = s[:3]
    if quote not in ('"""', "'''"):
        return ""
    end = s.find(quote, 3)
    if end < 0:
        return ""
    first = s[3:end].strip().splitlines()
    return first[0].strip() if first else ""


def _assignment(text: str, name: str) -> int:
    """Where the value of the first line-start ``name = ...`` begins, or -1.

    ``str.find`` over the text is several times faster than a MULTILINE regex,
    which tries every position of the file.
    """
    start = 0
    while (i := text.find(name, start)) >= 0:
        if i == 0 or text[i - 1] == "\n":
            m = _ASSIGN.match(text, i + len(name))
            if m is not None:
                return m.end()
        start = i + 1
    return -1


def parse_header(path: str | os.PathLike[str], text: str | None = None) -> Rev | None:
    """Read the header of one revision file; None if it declares no revision."""
    if text is None:
        text = read_source(path)
    values: dict[str, object] = {}
    try:
        for name in _NAMES:
            at = _assignment(text, name)
            if at >= 0:
                values[name] = _literal_after(text, at)
    except (ValueError, SyntaxError):
        values = _parse_ast(path, text)
    if "revision" not in values:
        values = _parse_ast(path, text)
    if "revision" not in values:
        return None
    rev = values["revision"]
    if not isinstance(rev, str) or not rev:
        raise GraphError(f"{path}: 'revision' must be a non-empty string")
    bad = [c for c in ILLEGAL_REV_CHARS if c in rev]
    if bad:  # Alembic would stop with a message that names no file
        raise GraphError(
            f"{path}: revision id {rev!r} contains {' '.join(repr(c) for c in bad)}; "
            f"Alembic refuses {', '.join(repr(c) for c in ILLEGAL_REV_CHARS)} in revision ids"
        )
    if rev in RESERVED_REV_IDS:
        raise GraphError(
            f"{path}: revision id {rev!r} is one of Alembic's symbols "
            f"({', '.join(sorted(RESERVED_REV_IDS))}); it could never be named: rename it"
        )
    try:
        return Rev(
            revision=rev,
            down=_as_tuple(values.get("down_revision")),
            branch_labels=_as_tuple(values.get("branch_labels")),
            depends_on=_as_tuple(values.get("depends_on")),
            path=str(path),
            doc=_docstring(text),
            requires=_requirements(path, values.get("orch_requires")),
        )
    except ValueError as exc:
        raise GraphError(f"{path}: cannot read revision header: {exc}") from exc


def _requirements(path: str | os.PathLike[str], value: object) -> tuple[str, ...]:
    """``orch_requires`` as a tuple of ``db@revision`` strings, or a GraphError naming the file.

    Only the form is checked here; whether the database and revision exist is
    a question about the whole registry (:func:`check_requirements`).
    """
    try:
        items = _as_tuple(value)
    except ValueError:
        items = ("",)
    for item in items:
        db, sep, rev = item.partition("@")
        if not sep or not db.strip() or not rev.strip():
            raise GraphError(
                f"{path}: orch_requires {item!r}: expected 'database@revision', "
                'e.g. orch_requires = ("core@4d2e0c7783c8",)'
            )
    return tuple(f"{d.strip()}@{r.strip()}" for d, _, r in (i.partition("@") for i in items))


def _parse_ast(path: str | os.PathLike[str], text: str) -> dict[str, object]:
    """Module-level literal assignments; imports the module as a last resort."""
    out: dict[str, object] = {}
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise GraphError(f"{path}:{exc.lineno}: syntax error in revision file: {exc.msg}") from exc
    names = set(_NAMES)
    computed = False
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for t in targets:
            if isinstance(t, ast.Name) and t.id in names and value is not None:
                try:
                    out[t.id] = ast.literal_eval(value)
                except ValueError:
                    computed = True
    if computed:
        import importlib.util

        spec = importlib.util.spec_from_file_location(f"_orch_rev_{abs(hash(path))}", path)
        if spec is None or spec.loader is None:  # pragma: no cover
            raise GraphError(f"{path}: cannot load revision file")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for n in names:
            if hasattr(module, n):
                out[n] = getattr(module, n)
    return out


def read_source(path: str | os.PathLike[str]) -> str:
    """The text of a revision file, as Python would decode it.

    Raw ``os.read`` costs half of ``open(...).read()`` (no buffer or text-wrapper
    objects), which matters when a status reads thousands of files.  UTF-8 (with
    or without BOM) covers practically every revision file; anything else goes
    through :func:`tokenize.open`, which honours a PEP 263 coding line.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        parts = []
        while chunk := os.read(fd, 1 << 16):
            parts.append(chunk)
    finally:
        os.close(fd)
    data = b"".join(parts)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        import tokenize

        try:
            with tokenize.open(path) as f:
                return f.read()
        except (SyntaxError, UnicodeDecodeError) as exc:
            raise GraphError(f"{path}: cannot read revision file: {exc}") from exc


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 (hex) of a revision file's bytes: what orch records when it applies it.

    Bytes, not decoded text: one changed character, a changed line ending or
    encoding is an edit too (orch cannot tell which edits matter).
    """
    import hashlib

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 16):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def scan_directory(directory: Path) -> dict[str, Rev]:
    """Every revision in *directory* (not recursive, like Alembic's default)."""
    revs: dict[str, Rev] = {}
    try:
        with os.scandir(directory) as it:  # DirEntry.is_file() needs no stat call
            names = sorted(e.name for e in it if _SOURCE.match(e.name) and e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return revs
    base = os.fspath(directory)
    for name in names:
        entry = os.path.join(base, name)  # a str: Path objects cost more than the parse
        rev = parse_header(entry, read_source(entry))
        if rev is None:
            raise GraphError(
                f"{entry}: no 'revision' variable; every .py file in a version directory "
                "must be a revision"
            )
        if rev.revision in revs:
            raise GraphError(
                f"{entry}: revision {rev.revision} is also declared in {revs[rev.revision].path}"
            )
        revs[rev.revision] = rev
    return revs


class Graph:
    """Pure revision graph of one database.  Cross-revision ``depends_on`` is honoured
    for ordering the way Alembic does (a dependency is applied before its dependent)."""

    def __init__(self, revs: Mapping[str, Rev] | Iterable[Rev], name: str = "") -> None:
        self.name = name
        self.revs: dict[str, Rev] = (
            dict(revs) if isinstance(revs, Mapping) else {r.revision: r for r in revs}
        )
        self.children: dict[str, list[str]] = {r: [] for r in self.revs}
        for r in self.revs.values():
            for parent in (*r.down, *r.depends_on):
                if parent not in self.revs:
                    what = "down_revision" if parent in r.down else "depends_on"
                    raise GraphError(
                        f"{r.path or r.revision}: {what} {parent!r} is not a revision of "
                        f"{self.name or 'this database'}"
                    )
                if parent in r.down:
                    self.children[parent].append(r.revision)
        self.heads: tuple[str, ...] = tuple(
            sorted(r for r, kids in self.children.items() if not kids)
        )
        self.bases: tuple[str, ...] = tuple(
            sorted(r.revision for r in self.revs.values() if not r.down)
        )
        self._order = self._topo()
        self._labels: dict[str, str] = {}
        for r in self.revs.values():
            for label in r.branch_labels:
                self._labels[label] = r.revision
        self._script_factory: Callable[[], Any] | None = None
        self._sha256: dict[str, str] = {}

    def sha256(self, rev: str) -> str | None:
        """The sha256 of *rev*'s file now (None: no such revision, or no readable file).

        Cached for the graph's life (one command): databases sharing the
        directory (a fleet) hash each file once.  A missing file is None, not
        an error: ``status`` must still show the database.
        """
        found = self._sha256.get(rev)
        if found is not None:
            return found
        r = self.revs.get(rev)
        if r is None or not r.path:
            return None
        try:
            digest = file_sha256(r.path)
        except OSError:
            return None
        self._sha256[rev] = digest
        return digest

    def bind_script(self, factory: Callable[[], Any]) -> None:
        """Resolve targets with the ScriptDirectory *factory* returns: the one that runs.

        The factory (:func:`orch.alembic_bridge.runner.script_directory`) is cached per
        process and per state of the files, so planning and running share one
        ``RevisionMap``; it is built from the same headers without importing
        a revision module.
        """
        self._script_factory = factory

    def script(self) -> Any:
        """The Alembic ScriptDirectory bound with :meth:`bind_script` (None if unbound).

        The planner binds one for graphs made from literal :class:`Rev` values
        too (see :func:`orch.planning.resolve.script_of`).
        """
        return self._script_factory() if self._script_factory is not None else None

    @property
    def bound(self) -> bool:
        return self._script_factory is not None

    def _topo(self) -> list[str]:
        import graphlib

        sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
        for r in sorted(self.revs):
            sorter.add(r, *self.revs[r].down, *self.revs[r].depends_on)
        try:
            return list(sorter.static_order())
        except graphlib.CycleError as exc:
            raise GraphError(
                f"revision cycle in {self.name or 'database'}: {' -> '.join(exc.args[1])}"
            ) from exc

    def renamed(self, name: str) -> Graph:
        """The same graph under another database's name (databases sharing a directory)."""
        clone = copy.copy(self)
        clone.name = name
        return clone

    def __len__(self) -> int:
        return len(self.revs)

    def __contains__(self, rev: object) -> bool:
        return rev in self.revs

    def ancestors(self, revs: Iterable[str]) -> set[str]:
        """*revs* and everything they need (down revisions and depends_on), inclusive."""
        seen: set[str] = set()
        stack = list(revs)
        while stack:
            cur = stack.pop()
            if cur in seen:
                continue
            seen.add(cur)
            r = self.revs[cur]
            stack.extend(r.down)
            stack.extend(r.depends_on)
        return seen

    def ordered(self, revs: set[str]) -> list[str]:
        """*revs* in apply order (parents first)."""
        return [r for r in self._order if r in revs]

    def resolve(self, spec: str) -> str:
        """A full revision id from a full id, unique prefix or branch label."""
        if spec in self.revs:
            return spec
        if spec in self._labels:
            return self._labels[spec]
        matches = [r for r in self.revs if r.startswith(spec)]
        if len(matches) == 1:
            return matches[0]
        where = f" of {self.name}" if self.name else ""
        if not matches:
            raise UsageError(f"unknown revision {spec!r}{where}")
        raise UsageError(
            f"revision prefix {spec!r}{where} is ambiguous: {', '.join(sorted(matches)[:5])}"
        )

    def unknown(self, current: Iterable[str]) -> list[str]:
        return [c for c in current if c not in self.revs]

    def pending(self, current: Iterable[str]) -> list[str]:
        """Revisions between *current* and the heads, in apply order."""
        have = self.ancestors(current)
        return self.ordered(set(self.revs) - have)

    def heads_of(self, revs: Iterable[str]) -> tuple[str, ...]:
        """The heads of the set *revs* (revisions no other member descends from)."""
        revs = set(revs)
        below: set[str] = set()
        for r in revs:
            below |= self.ancestors(self.revs[r].down) | self.ancestors(self.revs[r].depends_on)
        return tuple(sorted(revs - below))


def load_graph(directory: Path, name: str = "") -> Graph:
    """The graph of one version directory (empty when the directory does not exist).

    Targets resolve through a ScriptDirectory over these headers until
    :meth:`Graph.bind_script` binds the one that runs (the planner and the
    executor do).
    """
    return Graph(scan_directory(directory), name=name)


@dataclass(frozen=True)
class Requirement:
    """``orch_requires``: revision *revision* of *db* needs *on_revision* of *on_db* applied."""

    db: str
    revision: str
    on_db: str
    on_revision: str
    path: str = ""

    def __str__(self) -> str:
        return f"{self.db}@{self.revision} requires {self.on_db}@{self.on_revision}"


def requirements(
    graphs: Mapping[str, Graph], known: Iterable[str] | None = None
) -> list[Requirement]:
    """Every ``orch_requires`` of *graphs*, resolved to full ids and checked.

    A requirement naming a database the registry does not have, or a
    revision its history does not declare, is a :class:`GraphError` naming the
    file; so is a cycle at revision level across databases (each database's
    own history is already acyclic, so a cycle goes through a requirement),
    named revision by revision.  *known*: every database of the registry;
    a requirement on one of them that *graphs* leaves out (an environment
    without it) is dropped: there is nothing to order it against.
    """
    unique = {id(g.revs): g for g in graphs.values()}.values()  # shards share one history
    if not any(rev.requires for g in unique for rev in g.revs.values()):
        return []
    known_dbs = set(known) if known is not None else set(graphs)
    out: list[Requirement] = []
    for name, graph in graphs.items():
        for rev in graph.revs.values():
            for req in rev.requires:
                on_db, _, spec = req.partition("@")
                where = rev.path or f"{name}@{rev.revision}"
                if on_db not in graphs:
                    if on_db in known_dbs:
                        continue
                    raise GraphError(
                        f"{where}: orch_requires {req!r}: no database {on_db!r} in the registry"
                    )
                if on_db == name or graphs[on_db].revs is graph.revs:
                    raise GraphError(
                        f"{where}: orch_requires {req!r} names its own history; "
                        "use Alembic's depends_on inside one database"
                    )
                try:
                    on_rev = graphs[on_db].resolve(spec)
                except UsageError:
                    raise GraphError(
                        f"{where}: orch_requires {req!r}: {spec!r} is not a revision of {on_db}"
                    ) from None
                out.append(Requirement(name, rev.revision, on_db, on_rev, rev.path))
    if out:
        _check_cycles(graphs, out)
    return out


def _check_cycles(graphs: Mapping[str, Graph], reqs: Sequence[Requirement]) -> None:
    """A GraphError naming the revisions of a cycle through requirements, if there is one."""
    import graphlib

    involved = {r.db for r in reqs} | {r.on_db for r in reqs}
    sorter: graphlib.TopologicalSorter[tuple[str, str]] = graphlib.TopologicalSorter()
    for name in sorted(involved):
        for rev in graphs[name].revs.values():
            sorter.add((name, rev.revision), *((name, p) for p in (*rev.down, *rev.depends_on)))
    for r in reqs:
        sorter.add((r.db, r.revision), (r.on_db, r.on_revision))
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = list(reversed(exc.args[1]))  # graphlib lists it against the edges
        named = []
        for db, rev in cycle:
            path = graphs[db].revs[rev].path if rev in graphs[db].revs else ""
            named.append(f"{db}@{rev}" + (f" ({path})" if path else ""))
        raise GraphError("requirement cycle across databases: " + " -> ".join(named)) from None
