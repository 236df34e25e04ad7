"""Tenant fleets as the registry declares them: ``tenants``, ``schema`` and ``rollout``.

A *fleet* is one registry database whose history runs on many tenants (a
schema or a database each).  This module validates the three keys and reads
the sources that need nothing but files (``list``, ``file``); a ``query``
(needs a connection) or a ``command`` (a subprocess) is read a layer higher
(:mod:`orch.planning.fleets`) and its names handed down.  Tenant names are
checked here, once, whatever their source: only ``[a-z0-9][a-z0-9_-]*``
reaches a URL, a schema name, SQL or a shell.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.errors import UsageError

TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
TENANT_RULE = "[a-z0-9][a-z0-9_-]*"
#: A tenant's full name ``fleet:tenant`` goes into orch_log's ``db`` column (64 characters)
MAX_FULL_NAME = 64
PLACEHOLDER = "{tenant}"
SOURCE_KINDS = ("list", "file", "query", "command")
ROLLOUT_KEYS = {"match", "parallel", "max_failures"}
#: A plain name the ``{tenant}`` placeholder may be checked with (schema, URL)
SAMPLE_TENANT = "t0"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # the registry's plain names


@dataclass(frozen=True)
class TenantSource:
    """Where a fleet's tenant names come from (exactly one kind)."""

    kind: str  # list | file | query | command
    names: tuple[str, ...] = ()  # list
    path: Path | None = None  # file (absolute)
    database: str | None = None  # query: the database of the environment it runs on
    sql: str | None = None  # query
    command: str | None = None  # command ({env} replaced by the environment's name)

    def key(self, fleet: str) -> str:
        """The registry key that names this source in messages."""
        return f"databases.{fleet}.tenants.{self.kind}"

    @property
    def in_config(self) -> bool:
        """True when orch.config reads it itself (no connection, no subprocess)."""
        return self.kind in ("list", "file")


@dataclass(frozen=True)
class RolloutGroup:
    """One stage of a staged rollout: the tenants it takes, its parallelism, its budget."""

    match: str | None = None  # a glob on the tenant's name; None: every tenant left
    parallel: int | None = None  # None: the run's jobs
    max_failures: int = 0  # a count ...
    max_failures_pct: float | None = None  # ... or a percentage of the group's tenants

    def allowed(self, size: int) -> int:
        """How many of a group of *size* tenants may fail before the run stops."""
        if self.max_failures_pct is not None:
            return int(size * self.max_failures_pct / 100)
        return self.max_failures


def full_name(fleet: str, tenant: str) -> str:
    return f"{fleet}:{tenant}"


def tenant_problem(fleet: str, name: str) -> str | None:
    """Why *name* cannot be a tenant of *fleet* (None when it can)."""
    if not TENANT_RE.match(name):
        return f"tenant name {name[:80]!r} does not match {TENANT_RULE}"
    if len(full_name(fleet, name)) > MAX_FULL_NAME:
        return f"tenant name {name[:80]!r} is too long ({fleet}:NAME is at most {MAX_FULL_NAME})"
    return None


def split_names(fleet: str, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(valid names in order without duplicates, the rejected ones with why)."""
    ok: list[str] = []
    bad: list[str] = []
    seen: set[str] = set()
    for raw in names:
        name = raw.strip()
        if not name or name in seen:
            continue
        seen.add(name)
        why = tenant_problem(fleet, name)
        if why:
            bad.append(why)
        else:
            ok.append(name)
    return ok, bad


def parse_tenants(
    raw: Any, key: str, root: Path, add: Callable[[str, str], None]
) -> TenantSource | None:
    """``databases.<name>.tenants``: a mapping with exactly one source."""
    if not isinstance(raw, dict):
        add(key, "must be a mapping with one of: " + ", ".join(SOURCE_KINDS))
        return None
    for k in raw:
        if k not in SOURCE_KINDS:
            add(f"{key}.{k}", "unknown key; a tenant source is one of: " + ", ".join(SOURCE_KINDS))
    kinds = [k for k in SOURCE_KINDS if k in raw]
    if len(kinds) != 1:
        if kinds or not [k for k in raw if k not in SOURCE_KINDS]:
            add(key, "give exactly one of: " + ", ".join(SOURCE_KINDS))
        return None
    kind = kinds[0]
    value = raw[kind]
    where = f"{key}.{kind}"
    if kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            add(where, "must be a list of tenant names")
            return None
        return TenantSource("list", names=tuple(value))
    if kind == "file":
        if not isinstance(value, str) or not value.strip():
            add(where, "must be a file path (relative to the registry)")
            return None
        return TenantSource("file", path=(root / value).resolve())
    if kind == "query":
        if not isinstance(value, dict) or set(value) != {"database", "sql"}:
            add(where, "must be a mapping {database: NAME, sql: SELECT ...}")
            return None
        db, sql = value["database"], value["sql"]
        if not isinstance(db, str) or not isinstance(sql, str) or not sql.strip():
            add(where, "database must be a database name and sql a SELECT statement")
            return None
        return TenantSource("query", database=db, sql=sql.strip())
    if not isinstance(value, str) or not value.strip():
        add(where, "must be a command line")
        return None
    for word in re.findall(r"\{([^{}]*)\}", value):
        if word != "env":
            add(where, f"unknown placeholder {{{word}}}; a tenant command knows only {{env}}")
    return TenantSource("command", command=value.strip())


def parse_schema(raw: Any, key: str, add: Callable[[str, str], None]) -> str | None:
    """``databases.<name>.schema``: a plain name with ``{tenant}`` in it."""
    if not isinstance(raw, str) or PLACEHOLDER not in raw:
        add(key, "must be a schema name with {tenant} in it, e.g. tenant_{tenant}")
        return None
    if not _IDENT.match(raw.replace(PLACEHOLDER, SAMPLE_TENANT)):
        add(key, "must be a plain schema name around {tenant} (letters, digits and '_')")
        return None
    return raw


def parse_rollout(raw: Any, key: str, add: Callable[[str, str], None]) -> tuple[RolloutGroup, ...]:
    """``databases.<name>.rollout``: a list of groups, taken in order."""
    if not isinstance(raw, list) or not raw:
        add(key, "must be a list of groups ({match, parallel, max_failures})")
        return ()
    out: list[RolloutGroup] = []
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            add(where, "must be a mapping {match, parallel, max_failures}")
            continue
        for k in item:
            if k not in ROLLOUT_KEYS:
                add(f"{where}.{k}", "unknown key; a group has " + ", ".join(sorted(ROLLOUT_KEYS)))
        match = item.get("match")
        if match is not None and (not isinstance(match, str) or not match):
            add(f"{where}.match", "must be a glob on tenant names, e.g. canary-*")
            match = None
        parallel = item.get("parallel")
        if parallel is not None and (
            isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1
        ):
            add(f"{where}.parallel", "must be a whole number >= 1")
            parallel = None
        count, pct = 0, None
        mf = item.get("max_failures", 0)
        if isinstance(mf, str) and re.fullmatch(r"\d+(\.\d+)?%", mf.strip()):
            pct = float(mf.strip()[:-1])
            if pct > 100:
                add(f"{where}.max_failures", "a percentage is at most 100%")
                pct = None
        elif isinstance(mf, int) and not isinstance(mf, bool) and mf >= 0:
            count = mf
        else:
            add(f"{where}.max_failures", "must be a count >= 0 or a percentage such as 2%")
        out.append(RolloutGroup(match, parallel, count, pct))
    return tuple(out)


def read_file(path: Path, key: str) -> list[str]:
    """Tenant names from a file: one a line (``#`` comments), or a YAML/JSON list."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"{key}: cannot read tenants from {path}: {why}") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except ValueError:
            import yaml

            try:
                data = yaml.safe_load(stripped)
            except yaml.YAMLError:
                raise UsageError(f"{key}: {path} is not a YAML/JSON list of names") from None
        if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
            raise UsageError(f"{key}: {path} must be a list of names")
        return list(data)
    if stripped.startswith("- "):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UsageError(f"{key}: {path} is not a YAML list of names") from None
        if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
            raise UsageError(f"{key}: {path} must be a list of names")
        return list(data)
    return [
        line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()
    ]


def read_in_config(fleet: str, source: TenantSource) -> list[str]:
    """The names of a ``list`` or ``file`` source (UsageError naming the source)."""
    if source.kind == "list":
        return list(source.names)
    if source.kind == "file":
        assert source.path is not None
        return read_file(source.path, source.key(fleet))
    raise UsageError(  # pragma: no cover - callers read query/command sources themselves
        f"{source.key(fleet)}: needs a connection or a subprocess; read it with "
        "orch.planning.fleets"
    )
