"""The shapes of Alembic orch relies on beyond its documented API, checked against the real thing.

Every private piece orch uses is behind one function of
:mod:`orch.alembic_bridge.internals`.  These tests state, one per name, the
Alembic behaviour each of them needs, and exercise it on SQLite: a new
Alembic release that changes one fails here by name (and the floors run
checks the oldest release allowed), instead of orch planning one thing and
running another.  The last tests show that orch itself stops with a clear
error when a piece is missing at run time.
"""

from __future__ import annotations

import ast
import inspect
import io
import sqlite3
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orch.alembic_bridge import internals
from orch.alembic_bridge.runner import detached_script
from orch.config.revisions import Rev, scan_directory

# a -> b -> (c1 | c2) -> m (merge of c1 and c2)
GRAPH = {"a": (), "b": ("a",), "c1": ("b",), "c2": ("b",), "m": ("c1", "c2")}


def write_revisions(versions: Path, graph: dict[str, tuple[str, ...]] = GRAPH) -> None:
    """Revision files that log their import to ``imported.log`` and create a table each."""
    versions.mkdir(parents=True, exist_ok=True)
    for rev, down in graph.items():
        parent = None if not down else down[0] if len(down) == 1 else down
        (versions / f"{rev}_step.py").write_text(
            textwrap.dedent(
                f'''\
                """step {rev}

                Longer text of {rev}.
                """
                import os

                import sqlalchemy as sa
                from alembic import op

                with open(os.path.join(os.path.dirname(__file__), "imported.log"), "a") as f:
                    f.write("{rev}\\n")

                revision = "{rev}"
                down_revision = {parent!r}
                branch_labels = None
                depends_on = None


                def upgrade() -> None:
                    op.create_table("t_{rev}", sa.Column("id", sa.Integer, primary_key=True))


                def downgrade() -> None:
                    op.drop_table("t_{rev}")
                '''
            )
        )


def imported(versions: Path) -> list[str]:
    log = versions / "imported.log"
    return log.read_text().split() if log.exists() else []


@pytest.fixture
def versions(tmp_path: Path) -> Path:
    path = tmp_path / "versions"
    write_revisions(path)
    return path


def lazy_directory(versions: Path) -> Any:
    """A ScriptDirectory over *versions* whose revision map orch built from the headers."""
    return detached_script(scan_directory(versions).values())


def run_alembic(
    url: str, script: Any, fn: Callable[[Any, Any], list[Any]], **env_opts: Any
) -> list[str]:
    """Run *fn* as Alembic's migration function on *url*; the version rows afterwards."""
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            with EnvironmentContext(Config(stdout=io.StringIO()), script, fn=fn, **env_opts) as env:
                env.configure(connection=conn, transaction_per_migration=True)
                with env.begin_transaction():
                    env.run_migrations()
            conn.commit()
    finally:
        engine.dispose()
    return rows(url)


def rows(url: str) -> list[str]:
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        found = con.execute("SELECT name FROM sqlite_master WHERE name='alembic_version'")
        if found.fetchone() is None:
            return []
        return sorted(r[0] for r in con.execute("SELECT version_num FROM alembic_version"))
    finally:
        con.close()


def set_rows(url: str, versions_: list[str]) -> None:
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        con.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32))")
        con.execute("DELETE FROM alembic_version")
        con.executemany("INSERT INTO alembic_version VALUES (?)", [(v,) for v in versions_])
        con.commit()
    finally:
        con.close()


@pytest.fixture
def restore_checks() -> Iterator[None]:
    internals._check_callable.cache_clear()
    yield
    internals._check_callable.cache_clear()


# --- private callables: present, with the parameters orch passes ----------------------


def _owners() -> dict[str, Any]:
    from alembic.autogenerate import RevisionContext
    from alembic.runtime.migration import HeadMaintainer
    from alembic.script import Script, ScriptDirectory
    from alembic.script.revision import RevisionMap

    return {
        "ScriptDirectory": ScriptDirectory,
        "Script": Script,
        "RevisionMap": RevisionMap,
        "HeadMaintainer": HeadMaintainer,
        "RevisionContext": RevisionContext,
    }


@pytest.mark.parametrize(
    ("owner", "name", "params"),
    [
        ("ScriptDirectory", "_upgrade_revs", ("self", "destination", "current_rev")),
        ("ScriptDirectory", "_downgrade_revs", ("self", "destination", "current_rev")),
        ("ScriptDirectory", "_stamp_revs", ("self", "revision", "heads")),
        ("Script", "__init__", ("self", "module", "rev_id", "path")),
        ("RevisionMap", "__init__", ("self", "generator")),
        ("HeadMaintainer", "__init__", ("self", "context", "heads")),
        ("HeadMaintainer", "update_to_step", ("self", "step")),
        ("HeadMaintainer", "_insert_version", ("self", "version")),
        ("HeadMaintainer", "_delete_version", ("self", "version")),
        ("HeadMaintainer", "_update_version", ("self", "from_", "to_")),
        (
            "RevisionContext",
            "__init__",
            ("self", "config", "script_directory", "command_args", "process_revision_directives"),
        ),
        ("RevisionContext", "run_autogenerate", ("self", "rev", "migration_context")),
        ("RevisionContext", "generate_scripts", ("self",)),
    ],
)
def test_private_alembic_callables_orch_calls_exist_with_the_parameters_it_passes(
    owner: str, name: str, params: tuple[str, ...]
) -> None:
    fn = getattr(_owners()[owner], name, None)
    assert callable(fn), f"Alembic no longer has {owner}.{name}: see orch.alembic_bridge.internals"
    got = tuple(inspect.signature(fn).parameters)
    assert got[: len(params)] == params, (
        f"{owner}.{name} now takes {got}; orch.alembic_bridge.internals passes {params}"
    )


def test_load_python_file_takes_a_directory_and_a_file_name_and_returns_the_module(
    versions: Path,
) -> None:
    module = internals.load_revision_module(versions / "a_step.py")
    assert module.revision == "a" and callable(module.upgrade)
    assert imported(versions) == ["a"]


# --- the revision map: built from a generator callable, read through revision_map ----


def test_a_scriptdirectory_resolves_through_a_revision_map_built_from_a_generator_callable(
    versions: Path,
) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(versions))
    assert "revision_map" in vars(script), "ScriptDirectory.revision_map is no instance attribute"
    calls = []

    def generate() -> Iterator[Any]:
        calls.append(1)
        return internals.lazy_scripts(scan_directory(versions).values())

    internals.use_revision_map(script, generate)
    assert calls == []  # the map is built on first use, not when it is given
    assert script.get_heads() == ["m"]
    assert sorted(s.revision for s in script.walk_revisions()) == sorted(GRAPH)
    assert calls == [1]
    assert imported(versions) == []  # the map came from the headers alone


def test_making_a_script_reads_only_down_revision_branch_labels_and_depends_on_of_its_module(
    tmp_path: Path,
) -> None:
    """What :class:`LazyRevision` serves without importing: anything more would import."""
    from alembic.script import Script

    read: list[str] = []

    class Recorder:
        down_revision = None
        branch_labels = None
        depends_on = None

        def __getattribute__(self, name: str) -> Any:
            read.append(name)
            return object.__getattribute__(self, name)

    Script(Recorder(), "a", tmp_path / "a.py")  # type: ignore[arg-type]
    assert set(read) <= {"down_revision", "branch_labels", "depends_on"}, read


def test_alembic_steps_read_only_upgrade_or_downgrade_of_a_script_module_when_made(
    versions: Path,
) -> None:
    """Planning makes steps: it must not import the modules (LazyRevision defers the two)."""
    script = lazy_directory(versions)
    up = internals.upgrade_steps(script, "heads", ())
    down = internals.downgrade_steps(script, "base", ("m",))
    assert [internals.step_revision(s) for s in up][0] == "a" and len(up) == 5
    assert [internals.step_revision(s) for s in down][-1] == "a" and len(down) == 5
    assert imported(versions) == []
    assert {s.name for s in up} == {"upgrade"} and {s.name for s in down} == {"downgrade"}
    # the "-- Running upgrade a -> b" comment of --sql output
    assert up[1].short_log == "upgrade a -> b" and imported(versions) == []
    assert str(up[0]) == "upgrade  -> a, step a"  # the docstring: it imports the module
    assert imported(versions) == ["a"]


def test_a_real_upgrade_and_downgrade_through_lazy_revisions_import_only_what_runs(
    versions: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    script = lazy_directory(versions)

    def up_to_b(rev: Any, context: Any) -> list[Any]:
        steps = internals.upgrade_steps(script, "b", tuple(rev))
        internals.load_modules(steps)
        return steps

    assert run_alembic(url, script, up_to_b) == ["b"]
    assert imported(versions) == ["a", "b"]

    def down_to_a(rev: Any, context: Any) -> list[Any]:
        return internals.downgrade_steps(script, "a", tuple(rev))

    assert run_alembic(url, script, down_to_a) == ["a"]
    con = sqlite3.connect(tmp_path / "db.sqlite")
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert "t_a" in tables and "t_b" not in tables
    assert imported(versions) == ["a", "b"]  # nothing of c1, c2, m


# --- the resolver: the steps, their names, the rows they leave --------------------------


@pytest.mark.parametrize(
    ("direction", "current", "destination"),
    [
        ("upgrade", (), "heads"),
        ("upgrade", ("c1",), "heads"),
        ("upgrade", ("c1",), ("c1", "c2")),  # a start with several heads: a tuple destination
        ("upgrade", ("c1",), "+1"),  # the merge needs c2 first: two steps
        ("downgrade", ("m",), "c2"),
        ("downgrade", ("m",), "b"),
        ("downgrade", ("c1", "c2"), "base"),
        ("stamp", ("m",), "c1"),
        ("stamp", ("c1", "c2"), "base"),
    ],
)
def test_head_maintainer_without_a_context_leaves_the_rows_a_real_alembic_run_leaves(
    versions: Path, tmp_path: Path, direction: str, current: tuple[str, ...], destination: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    script = lazy_directory(versions)
    if current:  # the tables of current and below, so a downgrade has something to drop
        run_alembic(url, script, lambda rev, ctx: internals.upgrade_steps(script, current, ()))
    assert rows(url) == sorted(current)
    steps = {
        "upgrade": internals.upgrade_steps,
        "downgrade": internals.downgrade_steps,
        "stamp": internals.stamp_steps,
    }[direction]
    predicted = internals.heads_after(current, steps(script, destination, current))
    env: dict[str, Any] = {"destination_rev": destination}
    ran = run_alembic(url, script, lambda rev, ctx: steps(script, destination, tuple(rev)), **env)
    assert list(predicted) == ran


def test_stamp_steps_name_their_target_revisions_in_to_(versions: Path) -> None:
    script = lazy_directory(versions)
    [to_c1] = internals.stamp_steps(script, "c1", ("m",))
    assert internals.step_revision(to_c1) == "c1"
    [to_base] = internals.stamp_steps(script, "base", ("c1", "c2"))[-1:]
    assert internals.step_revision(to_base) == "base"


def test_alembic_says_didnt_produce_when_a_relative_target_goes_past_the_end() -> None:
    script = detached_script([Rev("x"), Rev("y", ("x",)), Rev("z", ("y",))])
    with pytest.raises(internals.resolution_errors()) as up:
        internals.upgrade_steps(script, "+9", ("x",))
    assert internals.is_relative_shortfall(up.value), str(up.value)
    with pytest.raises(internals.resolution_errors()) as down:
        internals.downgrade_steps(script, "-9", ("z",))
    assert internals.is_relative_shortfall(down.value), str(down.value)


def test_alembic_says_ambiguous_when_a_relative_walk_crosses_a_branch_point(
    versions: Path,
) -> None:
    script = lazy_directory(versions)
    with pytest.raises(internals.resolution_errors()) as exc:
        internals.upgrade_steps(script, "+3", ("a",))
    assert internals.is_ambiguous(exc.value), str(exc.value)


# --- options Alembic's own commands pass: purge, dont_mutate, quiet ---------------------


def test_dont_mutate_keeps_a_run_from_creating_the_version_table(
    versions: Path, tmp_path: Path
) -> None:
    script = lazy_directory(versions)
    url = f"sqlite:///{tmp_path / 'ro.sqlite'}"
    run_alembic(url, script, lambda rev, ctx: [], **internals.read_only_options())
    con = sqlite3.connect(tmp_path / "ro.sqlite")
    assert con.execute("SELECT name FROM sqlite_master").fetchall() == []
    con.close()
    # without it Alembic creates the table: the option is what makes the difference
    run_alembic(url, script, lambda rev, ctx: [])
    con = sqlite3.connect(tmp_path / "ro.sqlite")
    tables = con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    assert tables == [("alembic_version",)]
    con.close()


def test_known_heads_reach_the_migration_function_through_alembic_context_unread(
    versions: Path, tmp_path: Path
) -> None:
    """env.py calls ``alembic.context.configure``: the heads orch read under the lock reach
    Alembic's steps function without Alembic reading the version table again."""
    from alembic import context
    from alembic.config import Config
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    script = lazy_directory(versions)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    set_rows(url, ["a"])
    statements: list[str] = []
    seen: list[tuple[str, ...]] = []

    def fn(rev: Any, ctx: Any) -> list[Any]:
        seen.append(tuple(rev))
        return []

    engine = create_engine(url, poolclass=NullPool)
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    try:
        for heads in (("b",), ()):
            statements.clear()
            cfg = Config(stdout=io.StringIO())
            with engine.connect() as conn:
                with internals.environment_context(cfg, script, heads, fn=fn):
                    context.configure(connection=conn, transaction_per_migration=True)
                    with context.begin_transaction():
                        context.run_migrations()
                conn.commit()
            if heads:  # the rows say "a": Alembic was handed "b" and read nothing
                assert seen[-1] == ("b",)
                assert not [s for s in statements if "alembic_version" in s], statements
            else:  # none handed over: Alembic reads the table itself
                assert seen[-1] == ("a",)
                assert [s for s in statements if "alembic_version" in s]
    finally:
        engine.dispose()


def test_migration_contexts_of_one_version_table_shape_share_one_table_and_its_statements(
    versions: Path, tmp_path: Path
) -> None:
    """``MigrationContext._version`` is the Table Alembic writes the version rows through.

    orch gives every context of a process the first Table of its shape, so
    SQLAlchemy compiles the version UPDATE once for a fleet's tenants
    instead of once per tenant; the rows Alembic writes are the same.
    """
    from alembic import context
    from alembic.config import Config
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    script = lazy_directory(versions)
    tables: list[Any] = []
    for name, start, table in (
        ("one", "a", "alembic_version"),
        ("two", "a", "alembic_version"),
        ("three", "a", "other_version"),
    ):
        url = f"sqlite:///{tmp_path / name}.sqlite"
        set_rows(url, [start])
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                with internals.environment_context(
                    Config(stdout=io.StringIO()),
                    script,
                    (start,),
                    fn=lambda rev, ctx: internals.upgrade_steps(script, "b", tuple(rev)),
                ):
                    if table != "alembic_version":
                        conn.exec_driver_sql(f"ALTER TABLE alembic_version RENAME TO {table}")
                        conn.commit()
                    context.configure(
                        connection=conn, transaction_per_migration=True, version_table=table
                    )
                    ctx = context.get_context()
                    tables.append(ctx._version)
                    with context.begin_transaction():
                        context.run_migrations()
                conn.commit()
        finally:
            engine.dispose()
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            assert [r[0] for r in con.execute(f"SELECT version_num FROM {table}")] == ["b"]
        finally:
            con.close()
    assert tables[0].name == "alembic_version" and "version_num" in tables[0].c
    assert tables[0] is tables[1]  # one shape: one Table
    assert tables[2] is not tables[0] and tables[2].name == "other_version"


def test_env_py_runs_top_to_bottom_in_a_fresh_module_for_every_database_and_edits_count(
    tmp_path: Path,
) -> None:
    """``internals.run_env`` keeps env.py compiled, but each call is Alembic's ``run_env``:
    a fresh module named ``env_py`` with env.py's ``__file__``, every line executed again,
    and a change to the file is what the next call runs."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    where = tmp_path / "migrations"
    (where / "versions").mkdir(parents=True)
    env = where / "env.py"
    body = (
        "from alembic import context\n"
        "seen = context.config.attributes.setdefault('seen', [])\n"
        "seen.append((__name__, __file__, 'mark' in globals(), {tag!r}))\n"
        "mark = True\n"
    )
    env.write_text(body.format(tag="first"))
    cfg = Config()
    cfg.set_main_option("script_location", str(where))
    script = ScriptDirectory.from_config(cfg)
    from alembic.runtime.environment import EnvironmentContext

    with EnvironmentContext(cfg, script):
        for _ in range(2):
            internals.run_env(script)
        env.write_text(body.format(tag="second, longer"))
        internals.run_env(script)
    assert cfg.attributes["seen"] == [
        ("env_py", str(env), False, "first"),
        ("env_py", str(env), False, "first"),
        ("env_py", str(env), False, "second, longer"),
    ]


def test_purge_makes_a_stamp_start_from_no_rows_and_replace_unknown_ones(
    versions: Path, tmp_path: Path
) -> None:
    script = lazy_directory(versions)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    set_rows(url, ["ghost"])
    seen: list[tuple[str, ...]] = []

    def stamp_b(rev: Any, context: Any) -> list[Any]:
        seen.append(tuple(rev))
        return internals.stamp_steps(script, "b", tuple(rev))

    opts = {"destination_rev": "b", **internals.stamp_options(True)}
    assert run_alembic(url, script, stamp_b, **opts) == ["b"]
    assert seen == [()]  # Alembic purged the rows before asking for steps
    assert internals.stamp_options(False) == {}


def test_cmd_opts_quiet_silences_config_print_stdout() -> None:
    from alembic.config import Config

    out = io.StringIO()
    Config(cmd_opts=internals.quiet_cmd_opts(), stdout=out).print_stdout("Generating x ... done")
    assert out.getvalue() == ""
    Config(stdout=out).print_stdout("shown")
    assert "shown" in out.getvalue()


# --- autogenerate: orch's copy of command.revision --------------------------------------


def _revision_source() -> ast.FunctionDef:
    from alembic import command

    tree = ast.parse(textwrap.dedent(inspect.getsource(command.revision)))
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef)
    return fn


def _calls(fn: ast.AST, name: str) -> list[ast.Call]:
    def called(node: ast.Call) -> str:
        f = node.func
        return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")

    return [n for n in ast.walk(fn) if isinstance(n, ast.Call) and called(n) == name]


def test_command_revision_passes_every_parameter_but_two_into_command_args() -> None:
    """orch builds ``command_args`` from command.revision's signature: they must agree."""
    from alembic import command

    [made] = _calls(_revision_source(), "dict")
    keys = {k.arg for k in made.keywords}
    params = set(inspect.signature(command.revision).parameters)
    assert keys == params - {"config", "process_revision_directives"}
    assert set(internals.revision_command_args()) == keys


def test_command_revision_builds_its_revision_context_and_environment_as_orch_copies_them() -> None:
    """The flow of prepare_revision/compare_in_env/write_revisions, read in Alembic's source."""
    fn = _revision_source()
    [context] = _calls(fn, "RevisionContext")
    assert [ast.unparse(a) for a in context.args] == [
        "config",
        "script_directory",
        "command_args",
    ]
    assert [k.arg for k in context.keywords] == ["process_revision_directives"]
    [env] = _calls(fn, "EnvironmentContext")
    assert [ast.unparse(a) for a in env.args] == ["config", "script_directory"]
    # orch passes the same, with as_sql=False, plus dont_mutate
    assert {k.arg for k in env.keywords} == {"fn", "as_sql", "template_args", "revision_context"}
    used = {
        n.attr
        for n in ast.walk(fn)
        if isinstance(n, ast.Attribute)
        and isinstance(n.value, ast.Name)
        and n.value.id == "revision_context"
    }
    assert used == {"template_args", "run_autogenerate", "run_no_autogenerate", "generate_scripts"}
    assert len(_calls(fn, "run_env")) == 1
    assert len(_calls(fn, "from_config")) == 1  # a fresh ScriptDirectory, as orch's copy


def test_orch_autogenerate_writes_the_file_command_revision_writes_without_the_version_table(
    tmp_path: Path,
) -> None:
    """The copy, run against a database, gives command.revision's file and leaves it as it was."""
    from alembic import command
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from conftest import copy_project
    from orch.alembic_bridge import job as job_mod
    from orch.alembic_bridge import runner
    from orch.alembic_bridge.autogen import autogenerate_revision
    from orch.config.registry import load_registry

    p = copy_project(tmp_path / "proj")
    data = p.registry()
    data["databases"]["ledger"] = {"metadata": "shapes_ledger_models:metadata"}
    data["environments"]["dev"]["urls"]["ledger"] = "sqlite:///var/dev/ledger.db"
    p.write_registry(data)
    (p.root / "src" / "shapes_ledger_models.py").write_text(
        "from sqlalchemy import Column, Integer, MetaData, String, Table\n"
        "metadata = MetaData()\n"
        "entries = Table('entries', metadata, Column('id', Integer, primary_key=True),\n"
        "                Column('memo', String(20), nullable=False))\n"
    )
    registry = load_registry(p.registry_path)
    db = registry.database("ledger")  # models, no revision yet, no database file yet
    db.versions.mkdir(parents=True)
    job_mod.add_sys_path(registry)
    args: dict[str, Any] = {"message": "same", "head": "base", "version_path": str(db.versions)}
    args["branch_label"] = db.branch

    cfg = runner.make_config(registry, db)
    path, found = autogenerate_revision(registry, None, db, cfg, {**args, "rev_id": "byorch"})
    assert path is not None and found
    assert not Path(p.url("ledger").removeprefix("sqlite:///")).exists()  # nothing created
    by_orch = path.read_text()
    path.unlink()

    cfg = runner.make_config(registry, db)
    engine = create_engine("sqlite://", poolclass=NullPool)
    with engine.connect() as conn:
        cfg.attributes["orch"] = job_mod.Job(registry, db, "sqlite://", connection=conn)
        script = command.revision(cfg, autogenerate=True, rev_id="byorch", **args)
    engine.dispose()
    assert script is not None and not isinstance(script, list)
    by_alembic = Path(script.path).read_text()

    def same(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if "Create Date" not in line)

    assert same(by_orch) == same(by_alembic)


# --- orch stops, naming the version and the piece, when a shape is gone -----------------


def test_a_missing_private_resolver_method_stops_orch_naming_alembic_and_the_method(
    versions: Path, monkeypatch: pytest.MonkeyPatch, restore_checks: None
) -> None:
    import alembic
    from alembic.script import ScriptDirectory

    script = lazy_directory(versions)
    monkeypatch.delattr(ScriptDirectory, "_upgrade_revs")
    with pytest.raises(internals.AlembicChanged) as exc:
        internals.upgrade_steps(script, "heads", ())
    assert f"Alembic {alembic.__version__}" in str(exc.value)
    assert "ScriptDirectory._upgrade_revs" in str(exc.value)
    assert exc.value.exit_code == 2


def test_a_changed_signature_stops_orch_naming_what_it_expected(
    versions: Path, monkeypatch: pytest.MonkeyPatch, restore_checks: None
) -> None:
    from alembic.script import ScriptDirectory

    script = lazy_directory(versions)

    def moved(self: Any, heads: Any, destination: Any) -> list[Any]:
        raise AssertionError("must not be called")

    monkeypatch.setattr(ScriptDirectory, "_downgrade_revs", moved)
    with pytest.raises(internals.AlembicChanged, match=r"_downgrade_revs\(self, destination"):
        internals.downgrade_steps(script, "base", ("m",))


def test_a_revision_map_alembic_no_longer_reads_stops_orch(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(tmp_path))
    del script.revision_map  # as if Alembic kept its graph elsewhere
    with pytest.raises(internals.AlembicChanged, match=r"ScriptDirectory.revision_map"):
        internals.use_revision_map(script, lambda: iter(()))


def test_a_step_orch_cannot_name_stops_orch_instead_of_being_called_base() -> None:
    with pytest.raises(internals.AlembicChanged, match=r"'revision' or 'to_'"):
        internals.step_revision(object())
    assert internals.step_revision(type("Stamp", (), {"to_": ()})()) == "base"


def test_detached_headers_resolve_like_files(tmp_path: Path) -> None:
    """Literal headers (tests, tools) get the same resolution, with no file behind them."""
    headers = [Rev(rev, down) for rev, down in GRAPH.items()]
    script = detached_script(headers)
    steps = internals.upgrade_steps(script, "heads", ("c1",))
    assert [internals.step_revision(s) for s in steps] == ["c2", "m"]


# --- what orch.config.revisions knows about Alembic's ids without importing it ----------


def test_alembic_refuses_no_character_in_a_revision_id_that_orch_accepts() -> None:
    """orch checks revision ids without importing Alembic (ILLEGAL_REV_CHARS).

    It must refuse every character Alembic refuses; it also refuses ':',
    which Alembic 1.16.0 still accepted and later releases refuse.
    """
    import string

    from alembic.script.revision import Revision, RevisionError

    from orch.config.revisions import ILLEGAL_REV_CHARS

    refused = set()
    for char in string.punctuation:
        try:
            Revision(f"a{char}b", None)
        except RevisionError:
            refused.add(char)
    assert refused <= set(ILLEGAL_REV_CHARS), refused - set(ILLEGAL_REV_CHARS)
    assert set(ILLEGAL_REV_CHARS) - refused <= {":"}


@pytest.mark.parametrize("symbol", ["head", "heads", "base"])
def test_alembic_reads_head_heads_and_base_as_symbols_before_revision_ids(symbol: str) -> None:
    """Why orch refuses these ids (RESERVED_REV_IDS): Alembic could never name them."""
    from orch.config.revisions import RESERVED_REV_IDS

    assert symbol in RESERVED_REV_IDS
    script = detached_script([Rev("x"), Rev(symbol, ("x",)), Rev("y", (symbol,))])
    found = script.revision_map.get_revisions(symbol)
    resolved = {getattr(r, "revision", r) for r in found}
    assert symbol not in resolved


def test_orch_upgrade_on_an_alembic_without_the_resolver_says_so_and_runs_nothing(
    monkeypatch: pytest.MonkeyPatch, restore_checks: None, tmp_path: Path
) -> None:
    import alembic
    from alembic.script import ScriptDirectory

    from conftest import copy_project

    p = copy_project(tmp_path / "proj")
    monkeypatch.delattr(ScriptDirectory, "_upgrade_revs")
    r = p.orch("upgrade", "core")
    out = r.stdout + r.stderr
    assert r.exit_code == 2, out
    assert f"Alembic {alembic.__version__} has no ScriptDirectory._upgrade_revs" in out
    assert "Traceback" not in out
    assert p.versions("core") == [] and p.tables("core") <= {"orch_log"}
