"""The only module that drives Alembic: one database per call, one process at a time.

orch gives each database a Config whose ``version_locations`` is only that
database's directory, so ``head`` is that database's head and histories
without branch labels work.  ``migrations/env.py`` receives everything it
needs for the database being migrated through ``config.attributes["orch"]``
(a :class:`Job`).  The ScriptDirectory of each database is built once per
process, from the revision headers: a revision module is imported only when
it runs (every ``alembic.command`` call would import every revision file).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orch.alembic_bridge import internals
from orch.alembic_bridge.job import Job, add_sys_path
from orch.config.registry import DatabaseSpec, Registry
from orch.config.revisions import scan_directory
from orch.errors import UsageError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection


_INI_CHECKED: set[tuple[str, int, int]] = set()


def check_project(registry: Registry) -> None:
    """Refuse (exit 2, one line) what Alembic would stop on with an internal error.

    A missing migrations directory (``script_location``) and an alembic.ini
    that configparser cannot read surfaced as Alembic's CommandError or a
    configparser traceback naming neither the file nor the fix.  The ini is
    read the way Alembic reads it (``%(here)s`` defined, interpolation on),
    and every option of ``[alembic]`` is interpolated once, since Alembic
    only does so when it first needs each one.
    """
    import configparser

    ini = registry.root / "alembic.ini"
    if ini.is_file():
        # a fleet's run checks once per tenant: an ini found good is not parsed again
        # while its (mtime, size) stays the same
        st = ini.stat()
        seen = (str(ini), st.st_mtime_ns, st.st_size)
        if seen not in _INI_CHECKED:
            parser = configparser.ConfigParser(defaults={"here": str(ini.parent)})
            try:
                parser.read(ini, encoding="utf-8")
                if parser.has_section("alembic"):
                    for key in parser.options("alembic"):
                        parser.get("alembic", key)
            except (configparser.Error, UnicodeDecodeError) as exc:
                raise UsageError(_ini_problem(ini, exc)) from exc
            _INI_CHECKED.add(seen)
    location = registry.script_location
    if not location.is_dir():
        raise UsageError(
            f"{location}: the migrations directory (script_location of alembic.ini) does not "
            "exist; run 'orch init' to create it, or fix script_location"
        )


def _ini_problem(ini: Path, exc: Exception) -> str:
    """One line for what configparser found wrong in alembic.ini, with its line number."""
    import configparser

    line = getattr(exc, "lineno", None)
    if isinstance(exc, configparser.MissingSectionHeaderError):
        what = f"{exc.line.strip()!r} comes before any [section] header"
    elif isinstance(exc, configparser.DuplicateOptionError):
        what = f"option {exc.option!r} is given twice in [{exc.section}]"
    elif isinstance(exc, configparser.DuplicateSectionError):
        what = f"section [{exc.section}] is given twice"
    elif isinstance(exc, configparser.ParsingError) and exc.errors:
        line, text = exc.errors[0]
        what = f"cannot parse {text}"  # configparser gives the line as a repr
    elif isinstance(exc, UnicodeDecodeError):
        what = "not UTF-8 text"
    else:
        what = " ".join(str(exc).split())
    where = f"{ini}:{line}" if line else str(ini)
    return f"{where}: cannot read alembic.ini: {what}"


def make_config(registry: Registry, db: DatabaseSpec, stdout: Any = None) -> Config:
    """A Config for *db* alone: alembic.ini's settings, only *db*'s version directory."""
    from alembic.config import Config

    check_project(registry)
    ini = registry.root / "alembic.ini"
    kwargs: dict[str, Any] = {"cmd_opts": internals.quiet_cmd_opts()}
    if stdout is not None:
        kwargs["stdout"] = stdout
    cfg = Config(str(ini), **kwargs) if ini.is_file() else Config(**kwargs)
    cfg.set_main_option("script_location", str(registry.script_location))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(db.versions))
    cfg.set_main_option("sqlalchemy.url", "")
    return cfg


_CONFIGS: dict[tuple[Path, Path, Path], tuple[tuple[int, int] | None, Config]] = {}


def _run_config(registry: Registry, db: DatabaseSpec) -> Config:
    """The Config of a run of *db*, made once per process while alembic.ini stays the same.

    A fleet's runs share one versions directory: parsing alembic.ini again
    for each of 1,000 tenants cost about 2 ms of CPU each.  Runs in one
    process are sequential, so one Config serves them all; its
    ``attributes`` (where each run's Job goes, and anything env.py keeps
    there) start empty for every run.
    """
    check_project(registry)
    ini = registry.root / "alembic.ini"
    try:
        st = ini.stat()
        seen: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
    except OSError:
        seen = None
    key = (ini, registry.script_location, db.versions)
    cached = _CONFIGS.get(key)
    if cached is None or cached[0] != seen:
        cached = (seen, make_config(registry, db))
        _CONFIGS[key] = cached
    cfg = cached[1]
    cfg.attributes.clear()
    return cfg


_SCRIPTS: dict[tuple[Path, Path], tuple[tuple[Any, ...], ScriptDirectory]] = {}


def _fingerprint(directory: Path) -> tuple[Any, ...]:
    """(name, mtime_ns, size) of every revision file: changes when one is edited."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return ()
    out = []
    for e in entries:
        if e.name.endswith(".py") and e.is_file():
            st = e.stat()
            out.append((e.name, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _drop_stale_bytecode(directory: Path) -> None:
    """Remove ``.pyc`` files older than their source.

    Python trusts a timestamp ``.pyc`` when the source's mtime *in whole
    seconds* and its size match.  An operator who fixes a failed revision
    within the second its ``.pyc`` was written (scripts, tests) and keeps its
    length would otherwise run the old code.  A ``.pyc`` written before its
    source's last change is always stale, so removing it is safe and cheap.
    """
    import importlib.util

    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for e in entries:
        if not (e.name.endswith(".py") and e.is_file()):
            continue
        pyc = importlib.util.cache_from_source(e.path)
        try:
            if os.stat(pyc).st_mtime_ns < e.stat().st_mtime_ns:
                os.unlink(pyc)
        except OSError:
            continue


def script_directory(registry: Registry, db: DatabaseSpec) -> ScriptDirectory:
    """The ScriptDirectory of *db*, built once per process and per state of its files.

    Its revision map is built from the revision headers orch reads anyway
    (see :func:`_lazy_revisions`): a revision module is imported only when
    Alembic runs it.  The cache key includes each file's mtime and size, so a
    revision edited between two runs in one process (tests, an operator's fix
    after a failure) is read again.
    """
    from alembic.script import ScriptDirectory

    key = (registry.script_location, db.versions)
    fingerprint = _fingerprint(db.versions)
    cached = _SCRIPTS.get(key)
    if cached is None or cached[0] != fingerprint:
        add_sys_path(registry)
        _drop_stale_bytecode(db.versions)
        script = ScriptDirectory.from_config(make_config(registry, db))
        if internals.reads_plain_files(script):
            directory = db.versions
            internals.use_revision_map(script, lambda: _lazy_revisions(directory))
        _SCRIPTS[key] = (fingerprint, script)
    return _SCRIPTS[key][1]


def _lazy_revisions(directory: Path) -> Iterator[Any]:
    """Alembic's Script objects for *directory*, made from the headers without importing.

    Alembic's own loader imports every revision module to learn four names
    (revision, down_revision, branch_labels, depends_on): on a history of
    2,000 revisions that is most of a run, and without bytecode caching
    (``PYTHONDONTWRITEBYTECODE``, common in containers) every module is also
    compiled.  The headers come from :mod:`orch.config.revisions`, which status and
    plan already trust; each module is imported on first use of anything
    else (``upgrade``, ``downgrade``, its docstring), which for a migration
    means: when it runs (see :class:`~orch.alembic_bridge.internals.LazyRevision`).
    Alembic builds the same graph from the same four values, so the order of
    the steps is the one it would compute.
    """

    return internals.lazy_scripts(scan_directory(directory).values())


def detached_script(revs: Iterable[Any]) -> ScriptDirectory:
    """A ScriptDirectory over revision headers that are not (or need not be) files.

    For graphs made from literal headers (tests, tools): the same Alembic
    resolution as :func:`script_directory`, with no Config and no file read.
    """
    from alembic.script import ScriptDirectory

    headers = list(revs)
    script = ScriptDirectory(os.path.dirname(__file__))  # must exist; nothing of it is read
    internals.use_revision_map(script, lambda: internals.lazy_scripts(headers))
    return script


def preload(registry: Registry, dbs: Iterable[DatabaseSpec]) -> None:
    """Import what a migration run needs and build each database's ScriptDirectory, here.

    :func:`orch.run.execute.execute` calls this before it forks its workers, so
    they inherit Alembic, Mako, every dialect's DDL implementation and
    env.py's imports instead of each importing them on its first database
    (about 0.1 s of CPU per worker: on a small machine more than the
    migrations themselves).  The revision maps come from the headers; each
    worker imports the revision modules it runs (see
    :func:`_lazy_revisions`).  A directory shared by many databases
    (tenants, shards) is read once for all of them.
    """
    import alembic.ddl  # noqa: F401  every dialect's DDL implementation
    import alembic.op  # noqa: F401
    import alembic.operations.ops  # noqa: F401
    import alembic.runtime.environment  # noqa: F401
    import alembic.runtime.migration  # noqa: F401

    import orch.alembic_bridge.env  # noqa: F401  what migrations/env.py imports
    import orch.store.audit  # noqa: F401
    import orch.store.locks  # noqa: F401

    seen: set[Path] = set()
    for db in dbs:
        if db.versions not in seen:
            seen.add(db.versions)
            script_directory(registry, db).get_heads()  # builds the (lazy) revision map too


def forget_scripts() -> None:
    """Drop cached ScriptDirectories and Configs (after orch writes a new revision file)."""
    _SCRIPTS.clear()
    _CONFIGS.clear()


StepHook = Callable[[Any], None]


class StepsDiffer(Exception):
    """Alembic's steps at run time are not the ones announced: nothing was run."""

    def __init__(self, announced: Sequence[str], alembic: Sequence[str]) -> None:
        self.announced = list(announced)
        self.alembic = list(alembic)
        super().__init__(
            f"announced {', '.join(announced) or 'nothing'}, but Alembic would run "
            f"{', '.join(alembic) or 'nothing'}; nothing was run"
        )


def alembic_steps(
    script: ScriptDirectory, direction: str, destination: str, current: Sequence[str]
) -> list[Any]:
    """Alembic's own migration steps from *current* to *destination*.

    These are the calls ``alembic upgrade``/``downgrade`` make (and
    :func:`run` makes, with the heads Alembic reads itself): planning, the
    ``--sql`` header, the protected prompt and the run all take their steps
    from here, so what orch announces is what Alembic runs.
    """
    heads = tuple(current)
    # the same question gets the same answer from the same ScriptDirectory (a new one is
    # built when a file changes): a tenant's run asked it three times, and a fleet's
    # tenants share their heads and destination
    memo: dict[tuple[str, str, tuple[str, ...]], tuple[Any, ...]] = script.__dict__.setdefault(
        "_orch_steps", {}
    )
    key = (direction, destination, heads)
    found = memo.get(key)
    if found is not None:
        return list(found)
    if direction == "upgrade":
        # "A,B": up to each of these revisions (a start with several heads); Alembic
        # takes the tuple as one destination
        several: Any = tuple(destination.split(",")) if "," in destination else destination
        steps = internals.upgrade_steps(script, several, heads)
    elif direction == "downgrade":
        steps = internals.downgrade_steps(script, destination, heads)
    else:
        steps = internals.stamp_steps(script, destination, heads)
    if len(memo) >= 256:
        memo.clear()
    memo[key] = tuple(steps)
    return steps


def run(
    registry: Registry,
    db: DatabaseSpec,
    url: str,
    conn: Connection | None,
    direction: str,
    destination: str,
    *,
    before_step: StepHook | None = None,
    on_apply: Callable[..., None] | None = None,
    on_plan: Callable[[Sequence[Any]], None] | None = None,
    as_sql: bool = False,
    starting_rev: str | None = None,
    output_buffer: Any = None,
    stdout: Any = None,
    expect: Sequence[str] | None = None,
    purge: bool = False,
    heads: Sequence[str] | None = None,
) -> None:
    """Run Alembic for *db* in *direction* ('upgrade', 'downgrade', 'stamp') to *destination*.

    ``purge`` (stamp only): delete the version rows first, for a database at a
    revision no file declares.

    *conn* must not be inside a transaction (Alembic would then treat it as
    the caller's and commit nothing per revision).  *before_step* runs before
    each revision's transaction begins; *on_apply* is Alembic's
    ``on_version_apply`` (inside the revision's transaction); *on_plan* gets
    Alembic's list of steps once, before the first one runs.  With *expect*
    (the revisions announced, in order), Alembic's steps are compared with
    it before the first one runs; if they differ, :class:`StepsDiffer` is
    raised and nothing runs.  *heads*: the version rows the caller read on
    *conn* under the migration lock, with nothing run since; Alembic starts
    from them instead of reading them again (see
    :func:`~orch.alembic_bridge.internals.environment_context`).
    """
    if conn is not None and conn.in_transaction():
        raise RuntimeError("the migration connection must not be in a transaction")
    script = script_directory(registry, db)
    cfg = (
        make_config(registry, db, stdout=stdout)
        if stdout is not None
        else _run_config(registry, db)
    )

    def steps(rev: Any, context: Any) -> Iterator[Any]:
        planned = alembic_steps(script, direction, destination, _as_heads(rev))
        if expect is not None:
            got = [internals.step_revision(step) for step in planned]
            if got != list(expect):
                raise StepsDiffer(expect, got)
        internals.load_modules(planned)
        if on_plan is not None:
            on_plan(planned)
        for step in planned:
            if before_step is not None:
                before_step(step)
            yield step

    extra: dict[str, Any] = {}
    if on_apply is not None:
        extra["on_version_apply"] = [on_apply]
    if output_buffer is not None:
        extra["output_buffer"] = output_buffer
    job = Job(registry, db, url, connection=conn, as_sql=as_sql, extra=extra)
    cfg.attributes["orch"] = job
    env_kwargs: dict[str, Any] = {
        "fn": steps,
        "as_sql": as_sql,
        "destination_rev": destination,
    }
    if starting_rev is not None:
        env_kwargs["starting_rev"] = starting_rev
    if direction == "stamp":
        env_kwargs.update(internals.stamp_options(purge))
    with internals.environment_context(cfg, script, None if as_sql else heads, **env_kwargs):
        internals.run_env(script)


def _as_heads(rev: Any) -> tuple[str, ...]:
    """Alembic hands the steps function its current heads as a tuple, a string or None."""
    if rev is None:
        return ()
    if isinstance(rev, str):
        return (rev,)
    return tuple(rev)
