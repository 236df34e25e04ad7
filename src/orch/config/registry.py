"""databases.yaml -> a typed, validated :class:`Registry`.

Validation reports every problem at once (file, key path, reason) before any
side effect.  Environment variables are only substituted for the environment
being used, so a missing ``PROD_CORE_URL`` never stops work on ``dev``.  The
module imports no SQLAlchemy; what a URL means (driver, identity, limits) is
its backend's to say (:func:`orch.backends.for_url`).
"""

from __future__ import annotations

import configparser
import fnmatch
import graphlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orch.backends import driver_problem, for_url
from orch.backends.sqlite import absolutize
from orch.backends.sqlite import sqlite_path as sqlite_path  # where callers find it
from orch.config.fleets import (
    PLACEHOLDER,
    SAMPLE_TENANT,
    RolloutGroup,
    TenantSource,
    full_name,
    parse_rollout,
    parse_schema,
    parse_tenants,
    read_in_config,
    split_names,
)
from orch.config.hookspec import PLACEHOLDERS, quoting_problems, unknown_placeholders
from orch.errors import ConfigNotFound, MissingVariable, Problem, RegistryError, UsageError
from orch.redact import REDACTOR, redact_url, userinfo_problem

CONFIG_NAME = "databases.yaml"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
#: Table and schema names orch creates: plain identifiers, the same on every backend
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
IDENT_RULE = "letters, digits and '_', not starting with a digit"
#: The longest URL or path orch takes (PATH_MAX): a longer one is a mistake, and
#: resolving a path of 100,000 components takes minutes
MAX_URL = 4096
VAR_RE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
FLEET_URL_RULE = (
    "a database with tenants needs {tenant} in its URL (a database or file per tenant) "
    "or a schema with {tenant} (a schema per tenant)"
)
HOOK_NAMES = ("before_upgrade", "after_upgrade", "before_downgrade", "after_downgrade")

TOP_KEYS = {"version", "default_env", "prepend_sys_path", "settings", "databases", "environments"}
SETTINGS_KEYS = {
    "lock_timeout",
    "connect_timeout",
    "log_table",
    "ddl_lock_timeout",
    "hook_timeout",
    "jobs",
}
DB_KEYS = {
    "metadata",
    "exclude_tables",
    "depends_on",
    "branch",
    "versions",
    "version_table",
    "version_table_schema",
    "tenants",
    "schema",
    "rollout",
}
ENV_KEYS = {"urls", "protected", "hooks"}


@dataclass(frozen=True)
class Settings:
    """Tunables from ``settings:``; every one has a safe default."""

    lock_timeout: float = 60.0
    connect_timeout: float = 5.0
    log_table: str = "orch_log"
    ddl_lock_timeout: float | None = None
    hook_timeout: float | None = 3600.0  # None: no limit (``hook_timeout: 0``)
    jobs: int | None = None


@dataclass(frozen=True)
class DatabaseSpec:
    """One database: its own Alembic lineage and where orch finds its models."""

    name: str
    versions: Path
    branch: str
    depends_on: tuple[str, ...] = ()
    metadata: str | None = None
    exclude_tables: tuple[str, ...] = ()
    version_table: str = "alembic_version"
    version_table_schema: str | None = None
    versions_explicit: bool = False
    # a fleet (see orch.config.fleets): where its tenants come from, the schema of each
    # ("tenant_{tenant}"), its staged rollout; a tenant of an expanded registry
    # (Registry.with_tenants) has its fleet's name and its own tenant name and schema
    tenants: TenantSource | None = None
    schema: str | None = None
    rollout: tuple[RolloutGroup, ...] = ()
    fleet: str | None = None
    tenant: str | None = None

    @property
    def is_fleet(self) -> bool:
        """True for a fleet as declared (not yet one database per tenant)."""
        return self.tenants is not None and self.fleet is None

    @property
    def declared(self) -> str:
        """The registry's name for it: the fleet's for a tenant, else its own."""
        return self.fleet or self.name

    def excluded(self, table: str) -> bool:
        """True if *table* matches one of ``exclude_tables`` (glob patterns)."""
        return any(fnmatch.fnmatchcase(table, pat) for pat in self.exclude_tables)


@dataclass(frozen=True)
class EnvironmentSpec:
    """One environment as written: URLs may still contain ``${VAR}``.

    ``absent`` holds the databases whose URL is written ``null``: not part of
    this environment (an analytics database only prod has, a history per
    backend).  They are not in ``urls``.
    """

    name: str
    urls: Mapping[str, str]
    protected: bool = False
    hooks: Mapping[str, str] = field(default_factory=dict)
    absent: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Target:
    """A database of an environment with its resolved URL (or why there is none)."""

    db: DatabaseSpec
    env: str
    url: str | None
    missing: str | None = None  # reason the URL is unusable (names the variable)
    written: str | None = None  # the URL as the registry wrote it (relative SQLite path)

    @property
    def name(self) -> str:
        return self.db.name

    @property
    def display_url(self) -> str | None:
        """What users see: their own spelling of the URL, never its password."""
        if self.url is None:
            return None
        return redact_url(self.written or self.url)


@dataclass(frozen=True)
class Registry:
    """The whole registry, validated."""

    path: Path
    databases: Mapping[str, DatabaseSpec]
    environments: Mapping[str, EnvironmentSpec]
    default_env: str | None
    settings: Settings
    prepend_sys_path: tuple[Path, ...]
    script_location: Path
    # set on the view of one environment (:meth:`in_environment`): its name, and the
    # databases that view leaves out because that environment's URL for them is null
    scope: str | None = None
    left_out: frozenset[str] = frozenset()
    # set by with_tenants: each fleet's tenants (full names, in order), and the names a
    # source gave that are not tenant names (reported, never run)
    fleets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    rejected: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.path.parent

    def in_environment(self, env_name: str | None) -> Registry:
        """The registry as one environment sees it: its ``null`` databases left out.

        Every command that works on one environment plans, orders and reads
        through this view, so a database that is not part of it is skipped
        by ``--all``, ``status``, ``plan``, ``log``, ``check`` and ``--sql``
        without each of them knowing about it.  A dependency on a left-out
        database counts as satisfied: it is dropped from ``depends_on``, and
        what it depended on takes its place, so order across it holds.
        Naming a left-out database (:meth:`database`) is a usage error that
        says so.
        """
        env = self.environment(env_name)
        if not env.absent:
            return self

        def present(deps: tuple[str, ...], seen: frozenset[str]) -> list[str]:
            out: list[str] = []
            for d in deps:
                if d in env.absent:
                    if d not in seen:
                        out += present(self.databases[d].depends_on, seen | {d})
                else:
                    out.append(d)
            return out

        databases = {
            name: replace(db, depends_on=tuple(dict.fromkeys(present(db.depends_on, frozenset()))))
            for name, db in self.databases.items()
            if name not in env.absent
        }
        return replace(self, databases=databases, scope=env.name, left_out=env.absent)

    def with_tenants(self, found: Mapping[str, Sequence[str]] | None = None) -> Registry:
        """This registry with each fleet replaced by one database per tenant (``fleet:tenant``).

        *found* holds the names of the sources read a layer higher (``query``,
        ``command``: :mod:`orch.planning.fleets`); ``list`` and ``file`` are
        read here, now, so a tenant added to the file is seen by the next
        command.  Every tenant shares its fleet's history, settings and
        dependencies; a database that depends on the fleet depends on each
        tenant.  Names that are not tenant names are kept in ``rejected``.
        """
        fleets = [db for db in self.databases.values() if db.is_fleet]
        if not fleets:
            return self
        tenants: dict[str, list[str]] = {}
        rejected: dict[str, tuple[str, ...]] = {}
        for db in fleets:
            assert db.tenants is not None
            if found is not None and db.name in found:
                names = list(found[db.name])
            else:
                names = read_in_config(db.name, db.tenants)
            ok, bad = split_names(db.name, names)
            tenants[db.name] = ok
            if bad:
                rejected[db.name] = tuple(bad)
        members = {f: tuple(full_name(f, t) for t in ts) for f, ts in tenants.items()}

        def expand(deps: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(m for d in deps for m in members.get(d, (d,)))

        databases: dict[str, DatabaseSpec] = {}
        for name, db in self.databases.items():
            if name not in members:
                databases[name] = replace(db, depends_on=expand(db.depends_on))
                continue
            for tenant in tenants[name]:
                schema = db.schema.replace(PLACEHOLDER, tenant) if db.schema else None
                databases[full_name(name, tenant)] = replace(
                    db,
                    name=full_name(name, tenant),
                    depends_on=expand(db.depends_on),
                    version_table_schema=schema or db.version_table_schema,
                    schema=schema,
                    tenants=None,
                    fleet=name,
                    tenant=tenant,
                )
        return replace(self, databases=databases, fleets=members, rejected=rejected)

    def select(self, text: str) -> list[str]:
        """The databases a selector's name part means: a database, a fleet (every
        tenant), ``fleet:tenant`` or ``fleet:glob`` (``tenant:eu-*``)."""
        import fnmatch as fm

        if text in self.fleets:
            return list(self.fleets[text])
        fleet, sep, pattern = text.partition(":")
        if sep and fleet in self.fleets:
            if any(ch in pattern for ch in "*?["):
                hits = [
                    n for n in self.fleets[fleet] if fm.fnmatchcase(n.partition(":")[2], pattern)
                ]
                if not hits:
                    raise UsageError(
                        f"no tenant of {fleet!r} matches {pattern!r}", databases=(text,)
                    )
                return hits
            if text not in self.databases:
                raise UsageError(
                    f"unknown tenant {pattern!r} of {fleet!r} "
                    f"({len(self.fleets[fleet])} tenant(s) in this environment)",
                    databases=(text,),
                )
            return [text]
        self.database(text)
        return [text]

    def not_part(self, name: str, env: str) -> UsageError:
        """The error for naming a database that environment *env* leaves out."""
        return UsageError(
            f"database {name!r} is not part of environment {env!r} "
            f"(environments.{env}.urls.{name} is null)",
            databases=(name,),
        )

    def environment(self, name: str | None) -> EnvironmentSpec:
        """The environment *name* (or the default); UsageError naming the known ones."""
        env = name or self.default_env
        if env is None:
            if len(self.environments) == 1:
                return next(iter(self.environments.values()))
            raise UsageError(
                f"{self.path}: no environment given and no default_env; "
                f"use --env with one of: {', '.join(self.environments)}"
            )
        if env not in self.environments:
            known = ", ".join(self.environments) or "(none)"
            raise UsageError(f"{self.path}: unknown environment {env!r}; known: {known}")
        return self.environments[env]

    def database(self, name: str) -> DatabaseSpec:
        if name in self.left_out and self.scope is not None:
            raise self.not_part(name, self.scope)
        if name not in self.databases:
            shown = [n for n in self.databases if ":" not in n] + list(self.fleets)
            known = ", ".join(shown) or "(none)"
            raise UsageError(f"unknown database {name!r}; known: {known}", databases=(name,))
        return self.databases[name]

    def targets(self, env_name: str | None, *, strict: bool = True) -> list[Target]:
        """Every database of the environment with its URL resolved from the process env.

        A URL that resolves to something unusable (unsupported driver, two
        entries on one version table) raises RegistryError; with
        ``strict=False`` that target comes back without a URL and the problem
        as its ``missing`` reason instead, so ``status --all-envs`` can show
        one bad cell and still report every other database.  Databases the
        environment leaves out (URL ``null``) are not among them.
        """
        env = self.environment(env_name)
        out: list[Target] = []
        resolved: dict[str, tuple[str, str]] = {}  # a fleet's URL, resolved once
        for db in self.databases.values():
            declared = db.declared
            if declared in env.absent:
                continue
            raw = env.urls.get(declared)
            if raw is None:
                reason = (
                    f"environment {env.name!r} has no URL for it (if it is not part of "
                    f"{env.name}, say so: environments.{env.name}.urls.{declared}: null)"
                )
                out.append(Target(db, env.name, None, reason))
                continue
            key = f"environments.{env.name}.urls.{declared}"
            try:
                if declared not in resolved:
                    resolved[declared] = (
                        resolve_url(raw, self.root, key),
                        substitute(raw, key),
                    )
                url, written = resolved[declared]
            except MissingVariable as exc:
                out.append(Target(db, env.name, None, str(exc)))
                continue
            if db.tenant is not None:
                if PLACEHOLDER not in url and not db.schema:
                    reason = f"{key}: {FLEET_URL_RULE} (once its variables are substituted)"
                    out.append(Target(db, env.name, None, reason))
                    continue
                url = url.replace(PLACEHOLDER, db.tenant)
                written = written.replace(PLACEHOLDER, db.tenant)
                if db.schema and not driver_problem(url):
                    b = for_url(url)
                    if b.tenant_schema == "database":
                        url = written = b.tenant_url(db.schema)
            out.append(Target(db, env.name, url, written=written if written != url else None))
        problems = _check_resolved(self, env.name, out)
        if problems and strict:
            raise RegistryError(problems)
        for problem in problems:
            name = problem.key.rsplit(".", 1)[-1]
            out = [
                Target(t.db, t.env, None, f"{problem.key}: {problem.reason}", t.written)
                if t.name == name
                else t
                for t in out
            ]
        return out

    def target(self, env_name: str | None, db_name: str) -> Target:
        """One database's target; raises when it is not usable or not part of the environment."""
        self.database(db_name)
        env = self.environment(env_name)
        if db_name in env.absent:
            raise self.not_part(db_name, env.name)
        for t in self.targets(env_name):
            if t.name == db_name:
                return t
        raise AssertionError("unreachable")  # pragma: no cover

    def dependents(self, name: str) -> list[str]:
        """Databases that depend on *name*, directly or transitively."""
        out: list[str] = []
        frontier = [name]
        while frontier:
            cur = frontier.pop()
            for db in self.databases.values():
                if cur in db.depends_on and db.name not in out:
                    out.append(db.name)
                    frontier.append(db.name)
        return out

    def dependencies(self, name: str) -> list[str]:
        """Databases *name* depends on, directly or transitively."""
        out: list[str] = []
        frontier = [name]
        while frontier:
            cur = frontier.pop()
            for dep in self.databases[cur].depends_on:
                if dep not in out:
                    out.append(dep)
                    frontier.append(dep)
        return out


# ---------------------------------------------------------------- discovery


def find_config(explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None) -> Path:
    """``--config`` else ``$ORCH_CONFIG`` else the nearest ``databases.yaml`` upwards."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigNotFound(f"{path}: registry file not found (from --config)")
        return path.resolve()
    env = os.environ.get("ORCH_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigNotFound(f"{path}: registry file not found (from $ORCH_CONFIG)")
        return path.resolve()
    here = (cwd or Path.cwd()).resolve()
    for d in (here, *here.parents):
        cand = d / CONFIG_NAME
        if cand.is_file():
            return cand
    raise ConfigNotFound(
        f"no {CONFIG_NAME} in {here} or any parent directory; "
        "pass --config PATH, set ORCH_CONFIG, or run 'orch init'"
    )


def load_registry(
    explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None
) -> Registry:
    """Find, parse and validate the registry."""
    return parse_registry(find_config(explicit, cwd))


# ---------------------------------------------------------------- parsing


def _yaml_load(path: Path) -> Any:
    import yaml

    text = _read_text(path)
    # libyaml's parser when PyYAML has it: ~10x faster on a fleet's registry
    # (hundreds of databases), same documents, same error marks
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problems = _node_problems(node, str(path))
        if problems:
            raise RegistryError(problems)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        # not chained: PyYAML's own text quotes the broken line, cut to fit, and
        # a cut password is no password the redactor knows (-v would print it)
        raise RegistryError([Problem(where, "", f"malformed YAML: {problem}")]) from None
    except RecursionError as exc:
        raise RegistryError([Problem(str(path), "", "YAML nested too deeply")]) from exc
    finally:
        loader.dispose()


def _read_text(path: Path) -> str:
    """The registry's text: UTF-8 (a BOM allowed), or UTF-16 when it starts with its BOM.

    YAML parsers must accept UTF-16 with a byte order mark (YAML 1.1 and 1.2,
    section 5.2), and Windows PowerShell 5's ``>`` and ``Out-File`` write
    exactly that: the encoding is unambiguous, so orch reads it rather than
    refuse a valid YAML file.  Anything else must be UTF-8; a file that is not
    gets one line naming the line and the first bad byte.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigNotFound(f"{path}: cannot read registry: {exc.strerror}") from exc
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise RegistryError(
                [Problem(str(path), "", "starts with a UTF-16 byte order mark but is not UTF-16")]
            ) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RegistryError(
            [
                Problem(
                    f"{path}:{line}",
                    "",
                    f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8",
                )
            ]
        ) from exc
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise RegistryError(
            [
                Problem(
                    f"{path}:{line}",
                    "",
                    "contains NUL bytes (UTF-16 without a byte order mark?); save it as UTF-8",
                )
            ]
        )
    return text


#: How many values the registry may hold once every alias is expanded.  A fleet
#: of thousands of databases stays far below it; an "alias bomb" (each anchor
#: repeating the previous one nine times: a few lines, 10**9 values) stops here
#: before anything expands it.
MAX_YAML_VALUES = 1_000_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _node_problems(root: Any, file: str) -> list[Problem]:
    """:func:`_node_walk`'s problems, after one cheap pass that finds there are none.

    The pass walks the document as it will be built, aliases expanded,
    counting values and stopping at :data:`MAX_YAML_VALUES`: linear in the
    built size, which is what every later step costs anyway.  Each mapping's
    keys are compared once.  Only a file with a problem gets the full walk,
    which tells a bomb from a recursive alias and names the key path.
    """
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    checked: set[int] = set()
    stack = [root]
    budget = MAX_YAML_VALUES
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            return _node_walk(root, file)
        kind = type(node)
        if kind is MappingNode:
            pairs = node.value
            for k, v in pairs:
                stack.append(k)
                stack.append(v)
            if id(node) not in checked:
                checked.add(id(node))
                keys = [k.value for k, _ in pairs if type(k) is ScalarNode and k.tag != _MERGE_TAG]
                if len(set(keys)) != len(keys):
                    return _node_walk(root, file)
        elif kind is SequenceNode:
            stack.extend(node.value)
    return []


def _node_walk(root: Any, file: str) -> list[Problem]:
    """Duplicate keys, self-referencing aliases and alias bombs, found on the YAML nodes.

    YAML keeps the last of two equal keys without a word: a second ``core:``
    would silently replace the first, and a duplicated environment could drop
    its ``protected: true``.  Aliases make shared nodes, so the size of the
    expanded document is computed once per node (linear in the file's size)
    and checked before anything is built from it.  Keys merged with ``<<`` may
    be overridden: that is what merge keys are for.  Key paths are worked out
    only for the nodes reported (:func:`_path_to`).
    """
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    problems: list[Problem] = []
    sizes: dict[int, int] = {}  # expanded size of each node done (aliases share nodes)
    visiting: set[int] = set()

    # iterative depth-first walk: (node, its children once they are pushed)
    stack: list[tuple[Any, list[Any] | None]] = [(root, None)]
    while stack:
        node, kids = stack.pop()
        key = id(node)
        if kids is not None:  # every child done: the node's expanded size
            visiting.discard(key)
            size = 1 + sum(sizes[id(c)] for c in kids)
            sizes[key] = size
            if size > MAX_YAML_VALUES:
                return [
                    Problem(
                        f"{file}:{node.start_mark.line + 1}",
                        _path_to(root, node),
                        f"expands to more than {MAX_YAML_VALUES:,} values through aliases; "
                        "refused (an alias bomb?)",
                    )
                ]
            continue
        if key in sizes:
            continue
        if key in visiting:
            return [
                Problem(
                    f"{file}:{node.start_mark.line + 1}",
                    _path_to(root, node),
                    "a YAML alias refers to a node that contains it (a recursive structure)",
                )
            ]
        visiting.add(key)
        if type(node) is MappingNode:
            kids = []
            first: dict[Any, int] = {}
            for k, v in node.value:
                kids += (k, v)
                if type(k) is ScalarNode and k.tag != _MERGE_TAG:
                    line = k.start_mark.line + 1
                    if k.value in first:
                        parent = _path_to(root, node)
                        problems.append(
                            Problem(
                                f"{file}:{line}",
                                f"{parent}.{k.value}" if parent else str(k.value),
                                f"duplicate key (first on line {first[k.value]}); YAML would "
                                "silently keep only the last one",
                            )
                        )
                    else:
                        first[k.value] = line
        elif type(node) is SequenceNode:
            kids = list(node.value)
        else:
            kids = []
        stack.append((node, kids))
        stack.extend((c, None) for c in reversed(kids) if id(c) not in sizes)
    return problems


def _path_to(root: Any, target: Any) -> str:
    """The key path of *target* below *root* (``environments.prod.urls``, ``x[0]``)."""
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if id(node) in seen:
            continue
        seen.add(id(node))
        if type(node) is MappingNode:
            for k, v in reversed(node.value):
                label = str(k.value) if type(k) is ScalarNode else "?"
                stack.append((v, f"{path}.{label}" if path else label))
        elif type(node) is SequenceNode:
            stack.extend((n, f"{path}[{i}]") for i, n in reversed(list(enumerate(node.value))))
    return ""


class _Collector:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, key: str, reason: str) -> None:
        self.problems.append(Problem(self.file, key, reason))

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.add(key, f"must be a mapping, got {type(value).__name__}")
            return {}
        return value

    def unknown_keys(self, value: Mapping[str, Any], allowed: set[str], key: str) -> None:
        for k in value:
            if k not in allowed:
                prefix = f"{key}." if key else ""
                hint = _close(str(k), allowed)
                self.add(
                    f"{prefix}{k}", "unknown key" + (f" (did you mean {hint!r}?)" if hint else "")
                )

    def str_list(self, value: Any, key: str) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.add(key, "must be a list of strings")
            return []
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.add(f"{key}[{i}]", "must be a string")
            else:
                out.append(item)
        return out

    def number(self, value: Any, key: str, default: float) -> float:
        if value is None:
            return default
        problem = seconds_problem(value)
        if problem:
            self.add(key, problem)
            return default
        return float(value)


#: The longest timeout orch accepts, in seconds (one week).  Every server and driver
#: takes it (PostgreSQL's lock_timeout counts milliseconds in 32 bits: 24 days);
#: NaN and infinity are refused: a NaN deadline is never reached (a lock wait
#: spins forever) and drivers crash on both.
MAX_SECONDS = 7 * 24 * 3600


def seconds_problem(value: Any) -> str | None:
    """Why *value* is not a usable number of seconds (None when it is)."""
    import math

    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        try:
            ok = math.isfinite(float(value)) and 0 <= value <= MAX_SECONDS
        except OverflowError:  # an int too large for a float
            ok = False
    if ok:
        return None
    return f"must be a number of seconds from 0 to {MAX_SECONDS} (one week), got {value!r:.40}"


def _yaml_type(value: Any) -> str:
    """The YAML name of a value's type, for messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {"list": "list", "dict": "mapping"}.get(type(value).__name__, type(value).__name__)


def _close(word: str, options: set[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.7)
    return match[0] if match else None


def parse_registry(path: Path) -> Registry:
    """Parse and validate *path*; raise RegistryError with every problem found."""
    path = path.resolve()
    root = path.parent
    data = _yaml_load(path)
    c = _Collector(str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RegistryError([Problem(str(path), "", "the registry must be a YAML mapping")])
    c.unknown_keys(data, TOP_KEYS, "")

    version = data.get("version", 1)
    if version != 1:
        c.add("version", f"unsupported registry version {version!r} (this orch reads version 1)")

    # settings
    raw_settings = c.mapping(data.get("settings"), "settings")
    c.unknown_keys(raw_settings, SETTINGS_KEYS, "settings")
    log_table = raw_settings.get("log_table", "orch_log")
    if not isinstance(log_table, str) or not IDENT_RE.match(log_table):
        c.add("settings.log_table", f"must be a plain table name ({IDENT_RULE})")
        log_table = "orch_log"
    ddl = raw_settings.get("ddl_lock_timeout")
    jobs = raw_settings.get("jobs")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        c.add("settings.jobs", "must be a whole number >= 1")
        jobs = None
    settings = Settings(
        lock_timeout=c.number(raw_settings.get("lock_timeout"), "settings.lock_timeout", 60.0),
        connect_timeout=c.number(
            raw_settings.get("connect_timeout"), "settings.connect_timeout", 5.0
        ),
        log_table=log_table,
        ddl_lock_timeout=(None if ddl is None else c.number(ddl, "settings.ddl_lock_timeout", 0.0)),
        hook_timeout=(
            c.number(raw_settings.get("hook_timeout"), "settings.hook_timeout", 3600.0) or None
        ),
        jobs=jobs,
    )

    prepend_raw = c.str_list(data.get("prepend_sys_path", ["."]), "prepend_sys_path")
    for i, p in enumerate(prepend_raw):
        if len(p) > MAX_URL:
            c.add(f"prepend_sys_path[{i}]", f"is {len(p):,} characters long; at most {MAX_URL}")
    prepend = tuple((root / p).resolve() for p in prepend_raw if len(p) <= MAX_URL)

    script_location = _script_location(root)

    # databases
    raw_dbs = c.mapping(data.get("databases"), "databases")
    databases: dict[str, DatabaseSpec] = {}
    for name, raw in raw_dbs.items():
        key = f"databases.{name}"
        if not isinstance(name, str) or not NAME_RE.match(name):
            c.add(key, "database names must match [a-z][a-z0-9_]*")
            continue
        raw = c.mapping(raw, key)
        c.unknown_keys(raw, DB_KEYS, key)
        versions_raw = raw.get("versions")
        explicit = versions_raw is not None
        if explicit and (not isinstance(versions_raw, str) or len(versions_raw) > MAX_URL):
            c.add(f"{key}.versions", f"must be a directory path (at most {MAX_URL} characters)")
            versions_raw = None
            explicit = False
        if explicit:
            versions = (root / str(versions_raw)).resolve()
        else:
            versions = (script_location / name).resolve()
        if explicit and not versions.is_dir():
            c.add(f"{key}.versions", f"directory {versions_raw!r} does not exist")
        branch = raw.get("branch", name)
        if not isinstance(branch, str) or not branch:
            c.add(f"{key}.branch", "must be a non-empty string")
            branch = name
        metadata = raw.get("metadata")
        if metadata is not None and (not isinstance(metadata, str) or ":" not in metadata):
            c.add(f"{key}.metadata", "must be 'module:attribute'")
            metadata = None
        vt = raw.get("version_table", "alembic_version")
        if not isinstance(vt, str) or not IDENT_RE.match(vt):
            c.add(f"{key}.version_table", f"must be a plain table name ({IDENT_RULE})")
            vt = "alembic_version"
        vts = raw.get("version_table_schema")
        if vts is not None and (not isinstance(vts, str) or not IDENT_RE.match(vts)):
            c.add(f"{key}.version_table_schema", f"must be a plain schema name ({IDENT_RULE})")
            vts = None
        tenants = rollout = schema = None
        if raw.get("tenants") is not None:
            tenants = parse_tenants(raw["tenants"], f"{key}.tenants", root, c.add)
        for part in ("schema", "rollout"):
            if raw.get(part) is not None and raw.get("tenants") is None:
                c.add(f"{key}.{part}", "only a database with tenants has one")
        if raw.get("schema") is not None and raw.get("tenants") is not None:
            schema = parse_schema(raw["schema"], f"{key}.schema", c.add)
            if schema and vts:
                c.add(
                    f"{key}.schema",
                    "the version table lives in the tenant's schema: drop version_table_schema",
                )
        if raw.get("rollout") is not None and raw.get("tenants") is not None:
            rollout = parse_rollout(raw["rollout"], f"{key}.rollout", c.add)
        databases[name] = DatabaseSpec(
            name=name,
            versions=versions,
            branch=branch,
            depends_on=tuple(c.str_list(raw.get("depends_on"), f"{key}.depends_on")),
            metadata=metadata,
            exclude_tables=tuple(c.str_list(raw.get("exclude_tables"), f"{key}.exclude_tables")),
            version_table=vt,
            version_table_schema=vts,
            versions_explicit=explicit,
            tenants=tenants,
            schema=schema,
            rollout=rollout or (),
        )

    # dependencies: unknown names, self-dependency, cycles
    for db in databases.values():
        for i, dep in enumerate(db.depends_on):
            if dep not in databases:
                hint = _close(dep, set(databases))
                c.add(
                    f"databases.{db.name}.depends_on[{i}]",
                    f"unknown database {dep!r}" + (f" (did you mean {hint!r}?)" if hint else ""),
                )
            elif dep == db.name:
                c.add(f"databases.{db.name}.depends_on[{i}]", "a database cannot depend on itself")
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for db in databases.values():
        sorter.add(db.name, *[d for d in db.depends_on if d in databases and d != db.name])
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])
        c.add("databases", "dependency cycle: " + " -> ".join(reversed(cycle)))

    # a tenant query runs on another database of the environment, never on a fleet
    for db in databases.values():
        q = db.tenants
        if q is not None and q.kind == "query" and q.database is not None:
            other = databases.get(q.database)
            if other is None or other.tenants is not None:
                c.add(
                    f"databases.{db.name}.tenants.query.database",
                    f"must name a database without tenants, not {q.database!r}",
                )

    # one branch label must not name two different directories
    by_branch: dict[str, DatabaseSpec] = {}
    for db in databases.values():
        other = by_branch.setdefault(db.branch, db)
        if other.versions != db.versions:
            c.add(
                f"databases.{db.name}.branch",
                f"branch label {db.branch!r} is already used by database {other.name!r} "
                f"for another directory",
            )

    # environments
    raw_envs = c.mapping(data.get("environments"), "environments")
    environments: dict[str, EnvironmentSpec] = {}
    empty: set[tuple[str, str]] | None = None  # read once, when a URL is null
    for ename, raw in raw_envs.items():
        key = f"environments.{ename}"
        if not isinstance(ename, str) or not NAME_RE.match(ename.replace("-", "_")):
            c.add(key, "environment names must be lowercase words ([a-z][a-z0-9_-]*)")
            continue
        raw = c.mapping(raw, key)
        c.unknown_keys(raw, ENV_KEYS, key)
        urls_raw = c.mapping(raw.get("urls"), f"{key}.urls")
        urls: dict[str, str] = {}
        absent: set[str] = set()
        for dbname, url in urls_raw.items():
            ukey = f"{key}.urls.{dbname}"
            if dbname not in databases:
                hint = _close(str(dbname), set(databases))
                c.add(ukey, "unknown database" + (f" (did you mean {hint!r}?)" if hint else ""))
                continue
            if url is None:
                if empty is None:
                    empty = _empty_urls(path)
                if (ename, dbname) in empty:
                    c.add(
                        ukey,
                        f"no URL after the key: give {dbname}'s URL, or write null to say "
                        f"{dbname} is not part of environment {ename}",
                    )
                else:
                    absent.add(dbname)
                continue
            if not isinstance(url, str):
                c.add(ukey, "must be a URL string")
                continue
            if len(url) > MAX_URL:
                c.add(ukey, f"is {len(url):,} characters long; orch takes at most {MAX_URL}")
                continue
            if not url.strip():
                c.add(
                    ukey,
                    f"must be a URL string, not empty (write null if {dbname} is not part of "
                    f"environment {ename})",
                )
                continue
            fleet = databases[dbname].tenants is not None
            spelled = not VAR_RE.search(url)  # a variable's value is checked when used
            if fleet and spelled and PLACEHOLDER not in url and not databases[dbname].schema:
                c.add(ukey, FLEET_URL_RULE)
                continue
            if not fleet and PLACEHOLDER in url:
                c.add(ukey, "{tenant} belongs in the URL of a database with tenants")
                continue
            urls[dbname] = url.strip()
            REDACTOR.add_url(url)
        protected = raw.get("protected", False)
        if not isinstance(protected, bool):
            c.add(f"{key}.protected", "must be true or false")
            protected = False
        hooks_raw = c.mapping(raw.get("hooks"), f"{key}.hooks")
        c.unknown_keys(hooks_raw, set(HOOK_NAMES), f"{key}.hooks")
        hooks: dict[str, str] = {}
        for hname, cmd in hooks_raw.items():
            if hname not in HOOK_NAMES:
                continue
            if not isinstance(cmd, str) or not cmd.strip():
                c.add(f"{key}.hooks.{hname}", "must be a shell command string")
                continue
            if VAR_RE.search(cmd):
                c.add(
                    f"{key}.hooks.{hname}",
                    "hooks use brace placeholders such as {db} and {host}, not ${...}",
                )
            for word in dict.fromkeys(unknown_placeholders(cmd)):
                c.add(
                    f"{key}.hooks.{hname}",
                    f"unknown placeholder {{{word}}}; known: "
                    + " ".join(f"{{{p}}}" for p in PLACEHOLDERS),
                )
            for word, where in dict.fromkeys(quoting_problems(cmd)):
                c.add(
                    f"{key}.hooks.{hname}",
                    f"placeholder {{{word}}} is {where}: orch quotes each value for the "
                    "shell itself, so a value with a quote or $(...) would run as code "
                    f"there; write it as a bare word (... {{{word}}} ...)",
                )
            hooks[hname] = cmd
        environments[ename] = EnvironmentSpec(ename, urls, protected, hooks, frozenset(absent))

    default_env = data.get("default_env")
    if default_env is not None and not isinstance(default_env, str):
        c.add("default_env", f"must be an environment name, got a {_yaml_type(default_env)}")
        default_env = None
    elif default_env is not None and default_env not in environments:
        c.add("default_env", f"unknown environment {default_env!r}")
        default_env = None

    if c.problems:
        raise RegistryError(c.problems)
    registry = Registry(
        path=path,
        databases=databases,
        environments=environments,
        default_env=default_env,
        settings=settings,
        prepend_sys_path=prepend,
        script_location=script_location,
    )
    problems: list[Problem] = []
    for env in environments.values():
        static = [
            Target(_sample(databases[d]), env.name, resolve_url(_sample_url(u), root, ""))
            for d, u in env.urls.items()
            if not VAR_RE.search(u)
        ]
        problems += _check_resolved(registry, env.name, static)
    if problems:
        raise RegistryError(problems)
    return registry


def _sample(db: DatabaseSpec) -> DatabaseSpec:
    """A fleet as one of its tenants would be, for the checks made when the file is read."""
    if db.tenants is None or not db.schema:
        return db
    schema = db.schema.replace(PLACEHOLDER, SAMPLE_TENANT)
    return replace(db, version_table_schema=schema, schema=schema)


def _sample_url(url: str) -> str:
    return url.replace(PLACEHOLDER, SAMPLE_TENANT)


def _empty_urls(path: Path) -> set[tuple[str, str]]:
    """(environment, database) pairs whose URL is empty in the file, not a spelled null.

    YAML reads ``core:`` with nothing after it as null, exactly like ``core:
    null``.  Only the spelled ``null`` (or ``~``) leaves a database out of an
    environment: an empty value is much more likely a URL someone forgot, and
    reading it as "not part of prod" would skip prod's database silently.
    The file is composed again only when some URL is null, once.
    """
    import yaml

    def pairs(node: Any) -> list[tuple[str, Any]]:
        if not isinstance(node, yaml.MappingNode):
            return []
        return [(k.value, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        root = yaml.compose(_read_text(path), Loader=loader)
    except (ConfigNotFound, RegistryError, yaml.YAMLError):  # pragma: no cover - just loaded
        return set()
    out: set[tuple[str, str]] = set()
    for key, envs in pairs(root):
        if key != "environments":
            continue
        for env, spec in pairs(envs):
            for part, urls in pairs(spec):
                if part != "urls":
                    continue
                for db, value in pairs(urls):
                    if isinstance(value, yaml.ScalarNode) and value.value == "":
                        out.add((env, db))
    return out


def _script_location(root: Path) -> Path:
    """``script_location`` from alembic.ini beside the registry, else ``migrations``."""
    ini = root / "alembic.ini"
    if ini.is_file():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(ini, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):  # reported when Alembic needs it
            return (root / "migrations").resolve()
        loc = parser.get("alembic", "script_location", fallback=None)
        if loc and ":" not in loc.replace("%(here)s", ""):
            loc = loc.replace("%(here)s", str(root))
            return (root / loc).resolve()
    return (root / "migrations").resolve()


# ---------------------------------------------------------------- URLs


def substitute(raw: str, key: str) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; MissingVariable names the variable."""

    def repl(m: re.Match[str]) -> str:
        val = os.environ.get(m["name"])
        if val is None or val == "":
            # like the shell's ${VAR:-default}: an empty value counts as unset
            if m["default"] is not None:
                return m["default"]
            state = "is not set" if val is None else "is set but empty"
            raise MissingVariable(f"environment variable {m['name']} {state} (needed by {key})")
        return val

    return VAR_RE.sub(repl, raw)


def resolve_url(raw: str, root: Path, key: str) -> str:
    """Substitute variables, make relative SQLite paths relative to *root*, note the password."""
    url = substitute(raw, key)
    REDACTOR.add_url(url)
    if len(url) > MAX_URL:
        raise UsageError(
            f"{key}: the URL is {len(url):,} characters long once its variables are "
            f"substituted; orch takes at most {MAX_URL}"
        )
    return absolutize_sqlite(url, root)


def absolutize_sqlite(url: str, root: Path) -> str:
    """A relative SQLite path made relative to the registry's directory *root*."""
    return absolutize(url, root)


def _name_problem(registry: Registry, t: Target) -> str | None:
    """A version/log table or schema name longer than this URL's server accepts."""
    assert t.url is not None
    return for_url(t.url).identifier_problem(
        [
            # Alembic names the version table's primary key "<table>_pkc": 4 characters more
            (f"databases.{t.name}.version_table", t.db.version_table, 4),
            (f"databases.{t.name}.version_table_schema", t.db.version_table_schema or "", 0),
            ("settings.log_table", registry.settings.log_table, 0),
        ]
    )


def _schema_problem(t: Target) -> str | None:
    """A per-tenant ``schema`` on a server that has none."""
    assert t.url is not None
    b = for_url(t.url)
    if t.db.schema and b.tenant_schema is None:
        return (
            f"{b.label} has no schemas: put {{tenant}} in the URL (a database or file per "
            f"tenant) instead of databases.{t.db.declared}.schema"
        )
    return None


def _check_resolved(registry: Registry, env: str, targets: list[Target]) -> list[Problem]:
    """Driver check and 'two entries point at the same database and version table'."""
    problems: list[Problem] = []
    seen: dict[tuple[str, ...], str] = {}
    for t in targets:
        if t.url is None:
            continue
        reason = (
            userinfo_problem(t.url)
            or driver_problem(t.url)
            or for_url(t.url).url_problem()
            or _name_problem(registry, t)
            or _schema_problem(t)
        )
        if reason:
            problems.append(
                Problem(str(registry.path), f"environments.{env}.urls.{t.name}", reason)
            )
            continue
        key = for_url(t.url).identity(t.db.version_table_schema, t.db.version_table)
        other = seen.setdefault(key, t.name)
        if other != t.name:
            problems.append(
                Problem(
                    str(registry.path),
                    f"environments.{env}.urls.{t.name}",
                    f"points at the same database and version table as {other!r} "
                    f"({redact_url(t.url)}); two orch databases would share one "
                    "history: point it at its own database or give it its own version_table",
                )
            )
    return problems
