"""Every use orch makes of Alembic beyond its documented API, each in one small function.

Alembic's public API (``alembic.command``, Config, EnvironmentContext,
MigrationContext, ScriptDirectory's documented methods) does not offer what
orch is built on:

* plan and run must take their steps from the one resolver Alembic runs
  (:func:`upgrade_steps`, :func:`downgrade_steps`, :func:`stamp_steps`,
  :func:`heads_after`, :func:`step_revision`), so what orch announces is what
  Alembic does;
* a run must not import every revision module of a long history
  (:func:`use_revision_map`, :func:`lazy_script`, :class:`LazyRevision`);
* autogenerate must not write to the database it compares with
  (:func:`prepare_revision`, :func:`compare_in_env`, :func:`write_revisions`:
  ``alembic.command.revision`` with ``dont_mutate``);
* stamp must be able to replace rows no file declares (:func:`stamp_options`);
* a run must not read again, through the catalog, the version rows read under
  the lock a moment before (:func:`environment_context`), nor compile again
  what an earlier database of the same process compiled (env.py,
  :func:`run_env`; the version table's statements, :func:`_shared_version_table`).

Each function's docstring says what it relies on.  The rest of orch calls
these functions, never the private names.  ``tests/test_third_party_shapes.py``
checks every one of these shapes against the installed Alembic (and the
floors run against the oldest allowed), and each function checks the piece it
needs before using it, so an Alembic release that changes one stops orch with
:class:`AlembicChanged`, naming the version and the missing piece, instead of
planning from one graph and running another.
"""

from __future__ import annotations

import argparse
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orch.errors import EXIT_USAGE, OrchError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import Script, ScriptDirectory


class AlembicChanged(OrchError):
    """The installed Alembic lacks a piece orch relies on: nothing was run."""

    exit_code = EXIT_USAGE


def alembic_version() -> str:
    import alembic

    return str(getattr(alembic, "__version__", "?"))


def changed(piece: str, why: str) -> AlembicChanged:
    """The error for a missing *piece* of Alembic that orch needs for *why*."""
    return AlembicChanged(
        f"Alembic {alembic_version()} has no {piece}, which orch relies on ({why}); "
        "nothing was run. Install the Alembic release orch was tested with "
        "(see its requirements) or an orch release that supports this one"
    )


@functools.cache
def _check_callable(owner: type, name: str, params: tuple[str, ...], why: str) -> None:
    """*owner*.*name* exists and takes *params* first (checked once per process)."""
    where = f"{owner.__name__}.{name}"
    fn = getattr(owner, name, None)
    if not callable(fn):
        raise changed(where, why)
    try:
        got = tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # pragma: no cover - a builtin: nothing to compare
        return
    if got[: len(params)] != params:
        raise changed(f"{where}({', '.join(params)}) (it takes ({', '.join(got)}))", why)


# --- the resolver: Alembic's own steps --------------------------------------------------

_RESOLVER = "orch plans and runs the steps Alembic's own resolver computes"


def upgrade_steps(script: ScriptDirectory, destination: Any, heads: tuple[str, ...]) -> list[Any]:
    """Alembic's steps from *heads* up to *destination*: ``ScriptDirectory._upgrade_revs``.

    This is the call ``alembic upgrade`` makes inside its environment; no
    public method returns the steps without running them.  Planning, the
    ``--sql`` header, the protected prompt and the run all take their steps
    from it, so what orch announces is what Alembic runs (``+1`` past a merge,
    which side of a branch, ...), instead of a second resolver that would
    agree most of the time.  *destination* may be a tuple of revisions (a
    start with several heads); Alembic's annotations say str, its code takes
    both.
    """
    from alembic.script import ScriptDirectory

    _check_callable(
        ScriptDirectory, "_upgrade_revs", ("self", "destination", "current_rev"), _RESOLVER
    )
    return list(script._upgrade_revs(destination, heads))  # type: ignore[arg-type]


def downgrade_steps(script: ScriptDirectory, destination: str, heads: tuple[str, ...]) -> list[Any]:
    """Alembic's steps from *heads* down to *destination*: ``ScriptDirectory._downgrade_revs``.

    The call ``alembic downgrade`` makes (see :func:`upgrade_steps`).
    """
    from alembic.script import ScriptDirectory

    _check_callable(
        ScriptDirectory, "_downgrade_revs", ("self", "destination", "current_rev"), _RESOLVER
    )
    return list(script._downgrade_revs(destination, heads))  # type: ignore[arg-type]


def stamp_steps(script: ScriptDirectory, destination: str, heads: tuple[str, ...]) -> list[Any]:
    """Alembic's stamp steps from *heads* to *destination*: ``ScriptDirectory._stamp_revs``.

    The call ``alembic stamp`` makes (see :func:`upgrade_steps`).
    """
    from alembic.script import ScriptDirectory

    _check_callable(ScriptDirectory, "_stamp_revs", ("self", "revision", "heads"), _RESOLVER)
    return list(script._stamp_revs(destination, heads))


def step_revision(step: Any) -> str:
    """The revision id a migration step applies or undoes (``base`` for a stamp to base).

    Relies on the two kinds of step Alembic yields: a RevisionStep's
    ``revision`` (a Script, whose ``revision`` is the id) and a StampStep's
    ``to_`` (a tuple of ids).  A step with neither is a shape orch does not
    know: it stops rather than label (and audit) the step as something else.
    """
    rev = getattr(step, "revision", None)
    if rev is not None and hasattr(rev, "revision"):
        return str(rev.revision)
    if not hasattr(step, "to_"):
        raise changed(
            f"'revision' or 'to_' on its migration step {type(step).__name__}",
            "orch names each step after the revision it runs",
        )
    return ",".join(step.to_ or ()) or "base"


def step_module(step: Any) -> Any:
    """The revision module (or :class:`LazyRevision`) a RevisionStep runs, None for a stamp."""
    return getattr(getattr(step, "revision", None), "module", None)


def heads_after(current: Sequence[str], steps: Sequence[Any]) -> tuple[str, ...]:
    """The version rows Alembic leaves after *steps*, by Alembic's own bookkeeping.

    Alembic's ``HeadMaintainer.update_to_step`` decides per step whether a
    row is inserted, deleted or updated (branches, merges, unmerges) and
    calls its private ``_insert_version``/``_delete_version``/
    ``_update_version`` to touch the version table.  Here they are
    overridden to act on a set, with no context, so the "to" of a plan is
    what Alembic would write rather than orch's own reading of merge rules.
    """
    from alembic.runtime.migration import HeadMaintainer

    why = "orch computes the heads after a plan with Alembic's own bookkeeping"
    _check_callable(HeadMaintainer, "__init__", ("self", "context", "heads"), why)
    _check_callable(HeadMaintainer, "update_to_step", ("self", "step"), why)
    _check_callable(HeadMaintainer, "_insert_version", ("self", "version"), why)
    _check_callable(HeadMaintainer, "_delete_version", ("self", "version"), why)
    _check_callable(HeadMaintainer, "_update_version", ("self", "from_", "to_"), why)

    class _Rows(HeadMaintainer):
        def _insert_version(self, version: str) -> None:
            self.heads.add(version)

        def _delete_version(self, version: str) -> None:
            self.heads.remove(version)

        def _update_version(self, from_: str, to_: str) -> None:
            self.heads.remove(from_)
            self.heads.add(to_)

    rows = _Rows(None, current)  # type: ignore[arg-type]  # no context: no version table
    for step in steps:
        rows.update_to_step(step)
    return tuple(sorted(rows.heads))


def resolution_errors() -> tuple[type[Exception], ...]:
    """What Alembic's resolver raises for a target it refuses (unknown, ambiguous, too far).

    ``CommandError`` is public; ``RevisionError`` lives in
    ``alembic.script.revision`` and is what the RevisionMap raises before a
    ScriptDirectory method can wrap it.
    """
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    return (CommandError, RevisionError)


def is_relative_shortfall(exc: BaseException) -> bool:
    """Alembic refused ``+N``/``-N`` because the walk has fewer than N steps.

    Alembic says so only in its message ("Relative revision +3 didn't
    produce 3 migrations"); orch turns it into a count of what is pending.
    """
    return "didn't produce" in str(exc)


def is_ambiguous(exc: BaseException) -> bool:
    """Alembic refused a walk as ambiguous (only its message says so)."""
    return "mbiguous" in str(exc)


# --- the revision map: headers without imports ------------------------------------------


def use_revision_map(script: ScriptDirectory, revisions: Callable[[], Iterable[Script]]) -> None:
    """Make *script* build its graph from *revisions* instead of importing every file.

    Relies on ScriptDirectory keeping its graph in the instance attribute
    ``revision_map`` (a ``RevisionMap``, built lazily from a zero-argument
    callable that yields Script objects) and reading it from there for every
    resolution.  Worth it: Alembic's own loader imports every revision module
    to learn four names, most of a run on a long history, and breaks every
    upgrade when an old, long-applied revision no longer imports.
    """
    from alembic.script.revision import RevisionMap

    why = "orch builds the revision map from the revision headers"
    if "revision_map" not in vars(script):
        raise changed("ScriptDirectory.revision_map (an instance attribute)", why)
    _check_callable(RevisionMap, "__init__", ("self", "generator"), why)
    script.revision_map = RevisionMap(revisions)


def reads_plain_files(script: ScriptDirectory) -> bool:
    """*script* reads ``.py`` files of one directory level (what orch's header reader reads).

    ``sourceless`` (``.pyc`` only) and ``recursive_version_locations``
    histories keep Alembic's own loader.
    """
    return not (script.sourceless or script.recursive_version_locations)


def lazy_script(rev: Any, path: Path) -> Script:
    """Alembic's Script for orch's header *rev*, over a :class:`LazyRevision` of *path*.

    Relies on ``Script(module, rev_id, path)`` reading only ``down_revision``,
    ``branch_labels`` and ``depends_on`` from the module when it is made;
    ``upgrade``/``downgrade`` when a step is made and ``__doc__`` for the
    message, which :class:`LazyRevision` serves by importing the module.
    """
    from alembic.script import Script

    _check_callable(
        Script, "__init__", ("self", "module", "rev_id", "path"), "orch loads revisions lazily"
    )
    return Script(LazyRevision(rev, path), rev.revision, path)  # type: ignore[arg-type]


def load_revision_module(path: Path) -> Any:
    """Import the revision module at *path* the way Alembic does.

    Relies on ``alembic.util.load_python_file(directory, filename)``: the
    same loader gives the module the same name, bytecode handling and
    ``sourceless`` behaviour a plain ``alembic upgrade`` gives it.
    """
    from alembic import util

    load = getattr(util, "load_python_file", None)
    if load is None:
        raise changed("alembic.util.load_python_file", "orch imports revision modules with it")
    return load(path.parent, path.name)


class LazyRevision:
    """Stands in for a revision module; imports it on first use of anything but its header.

    What Alembic reads from a Script's module is listed in
    :func:`lazy_script`.  The header values given to Alembic are checked
    against the module's own when it loads: a file whose header reads
    differently from what its code computes (an assignment made twice, a
    value built at import time that the reader could not see) stops before
    any of its statements run, instead of running in an order computed from
    the wrong parents.
    """

    def __init__(self, rev: Any, path: Path) -> None:
        self._rev = rev
        self._path = path
        self._module: Any = None
        self.revision = rev.revision
        down = rev.down
        self.down_revision = None if not down else down[0] if len(down) == 1 else down
        self.branch_labels = rev.branch_labels or None
        self.depends_on = rev.depends_on or None

    def _load(self) -> Any:
        """The module, imported now if it was not, its header checked against the reading."""
        if self._module is None:
            from orch.config.revisions import GraphError, _as_tuple

            module = load_revision_module(self._path)
            rev = self._rev
            seen = {
                "revision": (getattr(module, "revision", None),),
                "down_revision": _as_tuple(getattr(module, "down_revision", None)),
                "branch_labels": _as_tuple(getattr(module, "branch_labels", None)),
                "depends_on": _as_tuple(getattr(module, "depends_on", None)),
            }
            read = {
                "revision": (rev.revision,),
                "down_revision": rev.down,
                "branch_labels": rev.branch_labels,
                "depends_on": rev.depends_on,
            }
            for name, value in seen.items():
                if value != read[name]:
                    raise GraphError(
                        f"{self._path}: {name} is {value!r} when the module runs but reads "
                        f"{read[name]!r} in its source; orch plans from the source: assign "
                        "each of revision, down_revision, branch_labels and depends_on once, "
                        "as a plain literal"
                    )
            self._module = module
        return self._module

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self._load().__doc__  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):  # copy, pickle, ... probing
            raise AttributeError(name)
        if name in ("upgrade", "downgrade") and self._module is None:
            # Alembic's steps take these functions when they are made, which is
            # also when orch plans: import the module only when one is called
            # (orch's run loads every module of its steps before the first runs)
            return _deferred(self, name)
        return getattr(self._load(), name)


def _deferred(lazy: LazyRevision, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kw: Any) -> Any:
        return getattr(lazy._load(), name)(*args, **kw)

    # Alembic names a step after its function (MigrationStep.name: migration_fn.__name__)
    call.__name__ = call.__qualname__ = name
    return call


def load_modules(steps: Sequence[Any]) -> None:
    """Import the revision modules of *steps* now, before the first step runs.

    A module whose header reads differently from its code (see
    :class:`LazyRevision`) then stops the run before anything changed.
    """
    for step in steps:
        module = step_module(step)
        if isinstance(module, LazyRevision):
            module._load()


# --- options Alembic's commands pass that its API does not document ----------------------


def stamp_options(purge: bool) -> dict[str, Any]:
    """EnvironmentContext options for a stamp; *purge*: delete every version row first.

    ``purge`` is what ``alembic stamp --purge`` passes to EnvironmentContext;
    MigrationContext reads it from its options (``opts["purge"]``).  It is
    the one way to stamp a database at a revision no file declares.
    """
    return {"purge": True} if purge else {}


def read_only_options() -> dict[str, Any]:
    """EnvironmentContext options under which Alembic never creates the version table.

    ``dont_mutate`` is what ``alembic current`` passes; MigrationContext
    reads it from its options before ``run_migrations`` would create a
    missing version table (on MySQL that DDL commits at once).
    """
    return {"dont_mutate": True}


def environment_context(
    cfg: Config, script: ScriptDirectory, heads: Sequence[str] | None, **kwargs: Any
) -> Any:
    """Alembic's EnvironmentContext; with *heads*, its MigrationContext starts from them.

    ``MigrationContext.run_migrations`` reads the version table before its
    first step: a catalog query (``has_table``) and a SELECT.  The executor
    has just read the same rows on the same connection, under the migration
    lock that keeps every other writer out, so Alembic's read can only find
    the same thing.  On PostgreSQL the catalog query costs more than
    the revision's own DDL (13 ms per tenant with 1,000 schemas in one
    database), so a fleet paid it most of all.  The heads are handed to the
    MigrationContext that env.py's ``context.configure`` creates (its
    ``get_current_heads``); Alembic still resolves the steps from them
    itself.  Empty *heads* (a database at base) leave Alembic its own read:
    it then creates the version table if it is missing.

    Every MigrationContext also gets the process's one Table object of its
    version table's shape (see :func:`_shared_version_table`).
    """
    from alembic.runtime.environment import EnvironmentContext

    env = EnvironmentContext(cfg, script, **kwargs)
    known = tuple(heads) if heads else None
    configure = env.configure

    def configure_from_heads(*args: Any, **kw: Any) -> None:
        configure(*args, **kw)
        ctx = getattr(env, "_migration_context", None)
        if ctx is None or not callable(getattr(ctx, "get_current_heads", None)):
            raise changed(
                "EnvironmentContext._migration_context",
                "orch hands Alembic the version rows it read under the lock",
            )
        if ctx.as_sql:
            return
        if known is not None:
            ctx.get_current_heads = lambda: known
        table = getattr(ctx, "_version", None)
        if table is not None:  # an optimisation only: without it, Alembic's own serves
            ctx._version = _shared_version_table(table)

    # on the instance: entering the context installs its attributes as alembic.context's
    # functions (a subclass would have no module proxies of its own)
    env.configure = configure_from_heads  # type: ignore[method-assign]
    return env


_VERSION_TABLES: dict[tuple[Any, ...], Any] = {}


def _shared_version_table(table: Any) -> Any:
    """One Table object per shape of version table in this process.

    Each MigrationContext builds its own ``alembic_version`` Table
    (``MigrationContext._version``), and SQLAlchemy's statement cache keys
    on the Table object: every database run in a process compiled its
    version-row UPDATE anew (a quarter of a millisecond of CPU per tenant
    of a fleet, and the cache churned).  Tables of the same name, schema,
    columns and constraints are interchangeable for the INSERT, UPDATE,
    DELETE and SELECT Alembic makes, so the first one of a shape serves
    every later context.
    """
    try:
        shape = (
            table.name,
            table.schema,
            tuple((c.name, repr(c.type), c.nullable, c.primary_key, c.key) for c in table.columns),
            tuple(
                sorted(
                    (type(k).__name__, str(k.name), tuple(k.columns.keys()))
                    for k in table.constraints
                )
            ),
        )
    except Exception:  # a dialect's own shape this does not know: use it as it is
        return table
    shared = _VERSION_TABLES.get(shape)
    if shared is None:
        if len(_VERSION_TABLES) >= 64:
            _VERSION_TABLES.clear()
        shared = _VERSION_TABLES[shape] = table
    return shared


_ENV_CODE: dict[str, tuple[tuple[int, int], Any]] = {}


def run_env(script: ScriptDirectory) -> None:
    """Run env.py the way ``ScriptDirectory.run_env`` does, compiled once per process.

    Alembic loads env.py as a fresh module on every call
    (``alembic.util.load_python_file``): it reads the file and, without
    bytecode caching (``PYTHONDONTWRITEBYTECODE``, common in containers),
    compiles it, about 0.25 ms of CPU per database; a fleet's worker runs it
    once per tenant.  Here the code object is kept while the file's mtime
    and size stay the same, and every call executes it in a fresh module
    made by the same ``importlib`` calls Alembic makes (name ``env_py``,
    same ``__file__`` and spec), so env.py runs as it would under Alembic,
    top to bottom, for each database.  A sourceless ``env.pyc`` goes to
    Alembic's own loader.
    """
    import importlib.util
    import os

    path = os.path.join(script.dir, "env.py")
    try:
        st = os.stat(path)
    except OSError:
        script.run_env()
        return
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _ENV_CODE.get(path)
    if cached is None or cached[0] != stamp:
        with open(path, "rb") as f:
            source = f.read()
        cached = _ENV_CODE[path] = (stamp, compile(source, path, "exec", dont_inherit=True))
    spec = importlib.util.spec_from_file_location("env_py", path)
    if spec is None:  # pragma: no cover - a .py path always has a spec
        script.run_env()
        return
    module = importlib.util.module_from_spec(spec)
    exec(cached[1], module.__dict__)


def quiet_cmd_opts() -> argparse.Namespace:
    """``Config(cmd_opts=...)`` that silences Alembic's "Generating ... done" lines.

    Alembic reads ``cmd_opts.quiet`` (its ``--quiet`` flag) for its
    messaging options; those lines would otherwise land on orch's stdout.
    """
    return argparse.Namespace(quiet=True)


# --- autogenerate: alembic.command.revision with dont_mutate ----------------------------

_AUTOGEN = "orch autogenerates the way alembic.command.revision does, without writing"


def revision_command_args(**given: Any) -> dict[str, Any]:
    """``alembic.command.revision``'s ``command_args``: its parameters, defaulted, and *given*.

    Taken from its signature, so a parameter a later Alembic adds arrives
    with its default; one of *given* it no longer takes stops here.
    """
    from alembic import command

    params = inspect.signature(command.revision).parameters
    args = {
        name: p.default
        for name, p in params.items()
        if name not in ("config", "process_revision_directives")
    }
    unknown = sorted(set(given) - set(args))
    if unknown:
        raise changed(f"argument {', '.join(unknown)} of command.revision", _AUTOGEN)
    args.update(given)
    return args


def prepare_revision(cfg: Config, command_args: dict[str, Any], directives: Any) -> Any:
    """The RevisionContext ``command.revision`` builds, over a fresh ScriptDirectory.

    ``alembic.command.revision`` cannot be told ``dont_mutate``, so orch
    copies its short flow: this (``RevisionContext(config, script_directory,
    command_args, process_revision_directives=...)``), then
    :func:`compare_in_env` and :func:`write_revisions`.  The test suite
    compares that flow with ``command.revision``'s source.
    """
    from alembic.autogenerate import RevisionContext
    from alembic.script import ScriptDirectory

    for name, params in (
        ("__init__", ("self", "config", "script_directory", "command_args")),
        ("run_autogenerate", ("self", "rev", "migration_context")),
        ("generate_scripts", ("self",)),
    ):
        _check_callable(RevisionContext, name, params, _AUTOGEN)
    script = ScriptDirectory.from_config(cfg)
    return RevisionContext(cfg, script, command_args, process_revision_directives=directives)


def compare_in_env(cfg: Config, revision_context: Any) -> None:
    """Run env.py to compare, as ``command.revision --autogenerate`` does, with ``dont_mutate``.

    The environment gets ``command.revision``'s arguments (``fn``,
    ``as_sql``, ``template_args``, ``revision_context``) plus
    :func:`read_only_options`: a database without a version table is
    compared, not given one.
    """
    from alembic.runtime.environment import EnvironmentContext

    script = revision_context.script_directory

    def retrieve(rev: Any, context: Any) -> list[Any]:
        revision_context.run_autogenerate(rev, context)
        return []

    with EnvironmentContext(
        cfg,
        script,
        fn=retrieve,
        as_sql=False,
        template_args=revision_context.template_args,
        revision_context=revision_context,
        **read_only_options(),
    ):
        script.run_env()


def write_revisions(revision_context: Any) -> list[Script]:
    """Write the revision file(s) the comparison produced (none: nothing was written)."""
    return [s for s in revision_context.generate_scripts() if s is not None]


def lazy_scripts(revs: Iterable[Any]) -> Iterator[Script]:
    """Alembic Script objects for orch's revision headers (modules imported on first use)."""
    for rev in revs:
        path = Path(rev.path).resolve() if rev.path else Path(rev.revision + ".py")
        yield lazy_script(rev, path)
