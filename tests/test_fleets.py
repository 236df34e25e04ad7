"""Tenant fleets (issue 14): one registry database whose history runs on many tenants.

Each tenant is a database of its own to orch (``tenant:acme``): planned,
locked, run and audited like any other.  The tests run on real backends: SQLite
files per tenant, PostgreSQL schemas per tenant and databases per tenant.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import Project
from minproj import Rev, log_rows, make_project, rev_id, version_of

TENANT_REVS = [
    Rev(up=["CREATE TABLE items (id INTEGER PRIMARY KEY)"], down=["DROP TABLE items"]),
    Rev(up=["CREATE TABLE notes (id INTEGER PRIMARY KEY)"], down=["DROP TABLE notes"]),
]


def fleet_project(
    root: Path,
    tenant_url: str,
    tenants: dict[str, Any],
    *,
    core_url: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Project:
    """A project with ``core`` and the fleet ``tenant`` (depends on core) in ``dev``."""
    core_url = core_url or f"sqlite:///{root}/core.db"
    project = make_project(
        root,
        {"core": [Rev(up=["CREATE TABLE orgs (id INTEGER PRIMARY KEY)"])], "tenant": TENANT_REVS},
        {"core": core_url, "tenant": tenant_url},
        depends={"tenant": ["core"]},
    )
    data = project.registry()
    data["databases"]["tenant"].update({"tenants": tenants, **(extra or {})})
    project.write_registry(data)
    return project


@pytest.fixture
def sqlite_fleet(tmp_path: Path) -> Project:
    root = tmp_path / "proj"
    return fleet_project(
        root, f"sqlite:///{root}/tenants/{{tenant}}.db", {"list": ["acme", "globex", "eu-one"]}
    )


def tenant_url(project: Project, name: str) -> str:
    return f"sqlite:///{project.root}/tenants/{name}.db"


# ------------------------------------------------------------ registry


def test_upgrade_all_migrates_each_tenant_once(sqlite_fleet: Project) -> None:
    (sqlite_fleet.root / "tenants").mkdir()
    r = sqlite_fleet.orch("upgrade", "--all", "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    names = [d["name"] for d in doc["databases"]]
    assert names == ["core", "tenant:acme", "tenant:globex", "tenant:eu-one"]
    assert all(d["outcome"] == "done" for d in doc["databases"])
    for t in ("acme", "globex", "eu-one"):
        url = tenant_url(sqlite_fleet, t)
        assert version_of(url) == [rev_id("tenant", 2)]
        rows = [x for x in log_rows(url) if x["outcome"] == "ok" and x["revision"]]
        assert [x["revision"] for x in rows] == [rev_id("tenant", 1), rev_id("tenant", 2)]
        assert {x["db"] for x in rows} == {f"tenant:{t}"}
    again = sqlite_fleet.orch("upgrade", "--all", "--json")
    assert {d["outcome"] for d in again.json()["databases"]} == {"unchanged"}


def test_status_shows_each_tenant(sqlite_fleet: Project) -> None:
    (sqlite_fleet.root / "tenants").mkdir()
    assert sqlite_fleet.orch("upgrade", "tenant:acme", "--with-deps").exit_code == 0
    r = sqlite_fleet.orch("status", "--json")
    states = {d["name"]: d["state"] for d in r.json()["databases"]}
    assert states == {
        "core": "up_to_date",
        "tenant:acme": "up_to_date",
        "tenant:globex": "behind",
        "tenant:eu-one": "behind",
    }
    one = sqlite_fleet.orch("status", "tenant:globex", "--json")
    assert [d["name"] for d in one.json()["databases"]] == ["tenant:globex"]
    every = sqlite_fleet.orch("status", "tenant", "--json")
    assert len(every.json()["databases"]) == 3


def test_selectors_one_tenant_a_glob_and_a_target(sqlite_fleet: Project) -> None:
    (sqlite_fleet.root / "tenants").mkdir()
    assert sqlite_fleet.orch("upgrade", "core").exit_code == 0
    r = sqlite_fleet.orch("upgrade", "tenant:acme", "--json")
    assert r.exit_code == 0, r.stderr
    assert [d["name"] for d in r.json()["databases"]] == ["tenant:acme"]
    assert version_of(tenant_url(sqlite_fleet, "globex")) == []
    r = sqlite_fleet.orch("upgrade", f"tenant:eu-*@{rev_id('tenant', 1)}", "--json")
    assert [(d["name"], d["to"]) for d in r.json()["databases"]] == [
        ("tenant:eu-one", [rev_id("tenant", 1)])
    ]
    r = sqlite_fleet.orch("upgrade", "tenant@head", "--json")
    assert [(d["name"], d["outcome"]) for d in r.json()["databases"]] == [
        ("tenant:acme", "unchanged"),
        ("tenant:globex", "done"),
        ("tenant:eu-one", "done"),
    ]
    down = sqlite_fleet.orch("downgrade", "tenant:acme@base", "--json")
    assert down.exit_code == 0, down.stderr
    assert version_of(tenant_url(sqlite_fleet, "acme")) == []


def test_unknown_tenant_and_empty_glob_are_usage_errors(sqlite_fleet: Project) -> None:
    r = sqlite_fleet.orch("upgrade", "tenant:initech")
    assert r.exit_code == 2 and "unknown tenant 'initech' of 'tenant'" in r.stderr
    r = sqlite_fleet.orch("upgrade", "tenant:zz-*")
    assert r.exit_code == 2 and "no tenant of 'tenant' matches 'zz-*'" in r.stderr
    r = sqlite_fleet.orch("upgrade", "tenant", "tenant:acme")
    assert r.exit_code == 2 and "'tenant:acme' is named twice" in r.stderr


def test_bad_tenant_names_are_reported_not_run(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    names = ["acme", "Bad", "x; rm -rf /", "../etc", "-dash", "ok_2"]
    project = fleet_project(root, f"sqlite:///{root}/{{tenant}}.db", {"list": names})
    r = project.orch("upgrade", "--all", "--json")
    assert r.exit_code == 0, r.stderr
    assert [d["name"] for d in r.json()["databases"]] == ["core", "tenant:acme", "tenant:ok_2"]
    for bad in ("Bad", "x; rm -rf /", "../etc", "-dash"):
        assert f"tenant name {bad!r} does not match [a-z0-9][a-z0-9_-]*" in r.stderr
    assert sorted(p.name for p in root.glob("*.db")) == ["acme.db", "core.db", "ok_2.db"]


def test_tenants_from_a_file_read_when_used(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    project = fleet_project(root, f"sqlite:///{root}/{{tenant}}.db", {"file": "tenants.txt"})
    (root / "tenants.txt").write_text("# the fleet\nacme\nglobex  # second\n")
    r = project.orch("status", "--json")
    assert [d["name"] for d in r.json()["databases"]] == ["core", "tenant:acme", "tenant:globex"]
    (root / "tenants.txt").write_text(yaml.safe_dump(["acme", "initech"]))
    r = project.orch("status", "--json")
    assert [d["name"] for d in r.json()["databases"]] == ["core", "tenant:acme", "tenant:initech"]
    (root / "tenants.txt").write_text('["json-one"]')
    r = project.orch("status", "--json")
    assert [d["name"] for d in r.json()["databases"]] == ["core", "tenant:json-one"]
    (root / "tenants.txt").unlink()
    r = project.orch("status")
    assert r.exit_code == 2
    assert "databases.tenant.tenants.file: cannot read tenants from" in r.stderr


def test_tenants_from_a_command(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    project = fleet_project(
        root, f"sqlite:///{root}/{{tenant}}.db", {"command": "printf 'a-{env}\\nb-{env}\\n'"}
    )
    r = project.orch("status", "--json")
    assert r.exit_code == 0, r.stderr
    assert [d["name"] for d in r.json()["databases"]] == ["core", "tenant:a-dev", "tenant:b-dev"]
    data = project.registry()
    data["databases"]["tenant"]["tenants"] = {"command": "echo nope >&2; exit 3"}
    project.write_registry(data)
    r = project.orch("status")
    assert r.exit_code == 2
    assert "databases.tenant.tenants.command: exited with 3: nope" in r.stderr


@pytest.mark.parametrize(
    ("entry", "url", "message"),
    [
        ({"tenants": {"list": ["a"], "file": "x"}}, "sqlite:///{tenant}.db", "exactly one of"),
        ({"tenants": {"lst": ["a"]}}, "sqlite:///{tenant}.db", "tenants.lst: unknown key"),
        ({"tenants": {"list": "a"}}, "sqlite:///{tenant}.db", "must be a list of tenant names"),
        ({"tenants": {"list": ["a"]}}, "sqlite:///t.db", "needs {tenant} in its URL"),
        ({"schema": "s_{tenant}"}, "sqlite:///t.db", "only a database with tenants has one"),
        ({"tenants": {"list": ["a"]}, "schema": "s"}, "sqlite:///t.db", "with {tenant} in it"),
        (
            {"tenants": {"list": ["a"]}, "schema": "s-{tenant}"},
            "sqlite:///t.db",
            "plain schema name",
        ),
        (
            {"tenants": {"query": {"database": "tenant", "sql": "SELECT 1"}}},
            "sqlite:///{tenant}.db",
            "must name a database without tenants",
        ),
        (
            {"tenants": {"command": "ls {db}"}},
            "sqlite:///{tenant}.db",
            "unknown placeholder {db}",
        ),
        (
            {"tenants": {"list": ["a"]}, "rollout": [{"parallel": 0}]},
            "sqlite:///{tenant}.db",
            "rollout[0].parallel: must be a whole number >= 1",
        ),
        (
            {"tenants": {"list": ["a"]}, "rollout": [{"max_failures": "x"}]},
            "sqlite:///{tenant}.db",
            "rollout[0].max_failures: must be a count >= 0 or a percentage",
        ),
        (
            {"tenants": {"list": ["a"]}, "rollout": [{"mach": "a*"}]},
            "sqlite:///{tenant}.db",
            "rollout[0].mach: unknown key",
        ),
    ],
)
def test_registry_validates_fleet_keys(
    tmp_path: Path, entry: dict[str, Any], url: str, message: str
) -> None:
    project = make_project(tmp_path / "p", {"tenant": TENANT_REVS}, {"tenant": url})
    data = project.registry()
    data["databases"]["tenant"].update(entry)
    project.write_registry(data)
    r = project.orch("status")
    assert r.exit_code == 2
    assert message in r.stderr


def test_tenant_placeholder_only_in_a_fleet_url(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"core": TENANT_REVS}, {"core": "sqlite:///{tenant}.db"})
    r = project.orch("status")
    assert r.exit_code == 2
    assert "{tenant} belongs in the URL of a database with tenants" in r.stderr


def test_the_python_api_sees_tenants(sqlite_fleet: Project) -> None:
    from orch import Project as Api

    (sqlite_fleet.root / "tenants").mkdir()
    api = Api.load(sqlite_fleet.registry_path)
    result = api.upgrade(["tenant:e*"], with_deps=True)
    assert result.ok
    assert [r.name for r in result] == ["core", "tenant:eu-one"]
    assert api.status(["tenant:eu-one"])["tenant:eu-one"].state == "up_to_date"


# ------------------------------------------------------------ PostgreSQL schemas


def _sql(url: str, *statements: str) -> list[Any]:
    """Run *statements* on *url* (the test's own connection); the last one's rows."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    eng = create_engine(url, poolclass=NullPool)
    rows: list[Any] = []
    try:
        with eng.begin() as conn:
            for s in statements:
                result = conn.execute(text(s))
                rows = list(result) if result.returns_rows else []
    finally:
        eng.dispose()
    return rows


PG_TENANT_REVS = [
    Rev(
        up=[
            "CREATE TABLE items (id INTEGER PRIMARY KEY, pid INTEGER)",
            "INSERT INTO items (id, pid) SELECT 1, pg_backend_pid()",
        ],
        down=["DROP TABLE items"],
    ),
    Rev(
        up=["INSERT INTO items (id, pid) SELECT 2, pg_backend_pid()"],
        down=["DELETE FROM items WHERE id = 2"],
    ),
]


def pg_schema_fleet(root: Path, make_db: Callable[..., str], names: list[str]) -> Project:
    """core (with a ``tenants`` table) and a fleet of schemas in another PostgreSQL database."""
    core, app = make_db("postgresql"), make_db("postgresql")
    _sql(
        core,
        "CREATE TABLE tenants (slug TEXT, active BOOLEAN)",
        *[f"INSERT INTO tenants VALUES ('{n}', true)" for n in names],
        "INSERT INTO tenants VALUES ('retired', false)",
    )
    _sql(app, *[f'CREATE SCHEMA "tenant_{n}"' for n in names if n == n.lower()])
    project = make_project(
        root,
        {
            "core": [Rev(up=["CREATE TABLE orgs (id INTEGER PRIMARY KEY)"])],
            "tenant": PG_TENANT_REVS,
        },
        {"core": core, "tenant": app},
        depends={"tenant": ["core"]},
    )
    data = project.registry()
    data["databases"]["tenant"].update(
        {
            "tenants": {
                "query": {
                    "database": "core",
                    "sql": "SELECT slug FROM tenants WHERE active ORDER BY slug",
                }
            },
            "schema": "tenant_{tenant}",
        }
    )
    project.write_registry(data)
    return project


def test_schema_per_tenant_on_postgresql_from_a_query(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    from conftest import require_server

    require_server("postgresql")
    names = ["acme", "eu-west", "globex", "initech", "umbrella", "Bad Name"]
    project = pg_schema_fleet(tmp_path / "proj", make_db, names)
    app = project.url("tenant")
    r = project.orch("upgrade", "--all", "--jobs", "2", "--json")
    assert r.exit_code == 0, r.stderr
    good = sorted(n for n in names if n == n.lower())
    assert [d["name"] for d in r.json()["databases"]] == ["core"] + [f"tenant:{n}" for n in good]
    assert "tenant name 'Bad Name' does not match" in r.stderr
    pids: set[int] = set()
    for n in good:
        schema = f'"tenant_{n}"'
        assert _sql(app, f"SELECT version_num FROM {schema}.alembic_version") == [
            (rev_id("tenant", 2),)
        ]
        # search_path was the tenant's schema: its table is there, not in public
        rows = _sql(app, f"SELECT id, pid FROM {schema}.items ORDER BY id")
        assert [x[0] for x in rows] == [1, 2]
        pids |= {x[1] for x in rows}
        audit = _sql(  # the steps' rows (not the table's version row, db '')
            app, f"SELECT db, revision FROM {schema}.orch_log WHERE outcome = 'ok' AND db != ''"
        )
        assert sorted(audit) == [(f"tenant:{n}", rev_id("tenant", i)) for i in (1, 2)]
    assert _sql(app, "SELECT count(*) FROM pg_tables WHERE tablename = 'items'") == [(len(good),)]
    # two workers, five schemas of one database: one migration connection per worker
    assert 1 <= len(pids) <= 2, pids
    status = project.orch("status", "tenant", "--json")
    assert {d["state"] for d in status.json()["databases"]} == {"up_to_date"}
    # one tenant back, by its name; the others untouched
    r = project.orch("downgrade", "tenant:eu-west@-1", "--json")
    assert r.exit_code == 0, r.stderr
    assert _sql(app, 'SELECT id FROM "tenant_eu-west".items') == [(1,)]
    assert _sql(app, "SELECT count(*) FROM tenant_acme.items") == [(2,)]


def test_schema_tenants_read_together_keep_each_state(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    """status reads a database's schemas in a few queries; every tenant's own state stays."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from conftest import require_server
    from orch.backends.postgresql import advisory_key

    require_server("postgresql")
    names = ["acme", "eu-west", "globex", "initech", "umbrella"]
    project = pg_schema_fleet(tmp_path / "proj", make_db, names)
    app = project.url("tenant")
    assert project.orch("upgrade", "--all", "--jobs", "1").exit_code == 0
    head = rev_id("tenant", 2)
    _sql(
        app,
        f"UPDATE tenant_globex.orch_log SET sha256 = '{'0' * 64}' WHERE revision = '{head}'",
        "DROP TABLE tenant_umbrella.alembic_version",
        'DROP SCHEMA "tenant_eu-west" CASCADE',
    )
    eng = create_engine(app, poolclass=NullPool)
    try:
        with eng.connect() as held:  # another session holds initech's migration lock
            key = advisory_key("tenant_initech", "alembic_version")
            held.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            r = project.orch("status", "tenant", "--json")
    finally:
        eng.dispose()
    got = {d["name"]: d for d in r.json()["databases"]}
    assert {n: d["state"] for n, d in got.items()} == {
        "tenant:acme": "up_to_date",
        "tenant:eu-west": "behind",
        "tenant:globex": "edited",
        "tenant:initech": "running",
        "tenant:umbrella": "behind",
    }
    assert "'tenant_eu-west' does not exist" in got["tenant:eu-west"]["error"]
    assert got["tenant:umbrella"]["current"] == []
    assert got["tenant:initech"]["current"] == [head]
    assert head in got["tenant:globex"]["error"]


def test_a_rollout_of_schemas_at_head_is_settled_from_the_read_and_still_skips(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    """Tenants of a staged rollout read at head are ``unchanged`` when their group starts,
    without a migration connection (as many sessions as the same fleet without a rollout);
    a group that never starts is still ``skipped``, at head or not."""
    import time

    from conftest import require_server

    require_server("postgresql")
    names = ["canary-a", "b", "c"]
    project = pg_schema_fleet(tmp_path / "proj", make_db, names)
    app = project.url("tenant")
    r = project.orch("upgrade", "--all", "--jobs", "2", "--json")
    assert r.exit_code == 0, r.stderr
    database = app.rpartition("/")[2]
    server = app.rpartition("/")[0]

    def sessions() -> int:
        rows = _sql(
            f"{server}/postgres",
            "SELECT pg_stat_clear_snapshot()",
            f"SELECT sessions FROM pg_stat_database WHERE datname = '{database}'",
        )
        return int(rows[0][0])

    def noop_sessions() -> int:
        before = sessions()
        r = project.orch("upgrade", "--all", "--jobs", "2", "--json")
        assert r.exit_code == 0, r.stderr
        assert set(outcomes(r).values()) == {"unchanged"}
        # a backend counts its session when it exits, which may trail orch's own exit
        now = sessions()
        for _ in range(50):
            time.sleep(0.2)
            later = sessions()
            if later == now:
                break
            now = later
        return now - before

    plain = noop_sessions()
    data = project.registry()
    data["databases"]["tenant"]["rollout"] = [
        {"match": "canary-*", "parallel": 1, "max_failures": 0},
        {"parallel": 2},
    ]
    project.write_registry(data)
    assert noop_sessions() == plain

    # the canary behind and failing: b and c, at head, are skipped (their group never starts)
    second = sorted((project.root / "migrations" / "tenant").glob("*.py"))
    rev2 = [f for f in second if "down_revision = None" not in f.read_text()][0]
    rev2.write_text(
        rev2.read_text().replace(
            "def upgrade() -> None:\n",
            "def upgrade() -> None:\n"
            "    import os\n"
            '    if os.environ.get("FAIL_CANARY"):\n'
            '        raise RuntimeError("canary boom")\n',
        )
    )
    assert project.orch("downgrade", "tenant:canary-a@-1").exit_code == 0
    r = project.orch("upgrade", "--all", "--jobs", "2", "--json", env={"FAIL_CANARY": "1"})
    assert r.exit_code == 1
    assert outcomes(r) == {"": "unchanged", "canary-a": "failed", "b": "skipped", "c": "skipped"}


def test_tenant_databases_whose_hstore_types_differ_each_bind_their_own(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    """Tenant databases share one Engine per worker; an extension type's OID differs from
    one database to the next, so a dict bound as ``hstore`` must not carry the first
    tenant's OID into the second."""
    from conftest import require_server

    require_server("postgresql")
    urls = [make_db("postgresql") for _ in range(2)]
    _sql(urls[1], "CREATE TYPE spacer AS (a int)")  # the second database's OIDs move on
    for u in urls:
        _sql(u, "CREATE EXTENSION hstore")
    oids = [_sql(u, "SELECT oid FROM pg_type WHERE typname = 'hstore'")[0][0] for u in urls]
    assert oids[0] != oids[1]
    base = urls[0].rpartition("/")[0]
    prefix = "orch_t_"
    names = [u.rpartition("/")[2].removeprefix(prefix) for u in urls]
    code = (
        "import sqlalchemy as sa\n"
        "from sqlalchemy.dialects.postgresql import HSTORE\n"
        "op.execute('CREATE TABLE kv (h hstore)')\n"
        "h = sa.bindparam('h', type_=HSTORE)\n"
        "insert = sa.text('INSERT INTO kv VALUES (:h)').bindparams(h)\n"
        "op.get_bind().execute(insert, {'h': {'a': '1'}})"
    )
    root = tmp_path / "proj"
    project = make_project(
        root, {"tenant": [Rev(code=code)]}, {"tenant": f"{base}/{prefix}{{tenant}}"}
    )
    data = project.registry()
    data["databases"]["tenant"]["tenants"] = {"list": names}
    project.write_registry(data)
    r = project.orch("upgrade", "--all", "--jobs", "1", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert set(outcomes(r).values()) == {"done"}
    for u in urls:
        assert _sql(u, "SELECT h -> 'a' FROM kv") == [("1",)]


def test_tenant_databases_on_postgresql_take_one_connection_each(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    """Tenants as PostgreSQL databases: the plan does not read them first; each worker
    settles a tenant at head on the one connection it opens (no lock, no audit row)."""
    from conftest import require_server

    require_server("postgresql")
    urls = [make_db("postgresql") for _ in range(3)]
    base = urls[0].rpartition("/")[0]
    prefix = "orch_t_"
    names = [u.rpartition("/")[2].removeprefix(prefix) for u in urls]
    project = fleet_project(
        tmp_path / "proj",
        f"{base}/{prefix}{{tenant}}",
        {"list": names},
        core_url=make_db("postgresql"),
    )
    r = project.orch("upgrade", f"tenant:{names[0]}", "--with-deps")
    assert r.exit_code == 0, r.stderr
    audit_before = _sql(urls[0], "SELECT count(*) FROM orch_log")

    def sessions() -> dict[str, int]:
        rows = _sql(
            f"{base}/postgres",
            "SELECT pg_stat_clear_snapshot()",
            "SELECT datname, sessions FROM pg_stat_database WHERE datname LIKE 'orch_t_%'",
        )
        return {str(name): int(n) for name, n in rows}

    before = sessions()
    r = project.orch("upgrade", "--all", "--jobs", "2", "--json")
    assert r.exit_code == 0, r.stderr
    assert outcomes(r) == {
        "": "unchanged",
        names[0]: "unchanged",
        names[1]: "done",
        names[2]: "done",
    }
    import time

    def opened() -> list[int]:
        after = sessions()
        return [after.get(prefix + n, 0) - before.get(prefix + n, 0) for n in names]

    # a backend counts its session when it exits, which may trail orch's own exit
    deadline = time.monotonic() + 10
    while min(opened()) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    # one session per tenant database in the whole run (the plan read none of them)
    assert opened() == [1, 1, 1]
    # the tenant at head: read, not locked, nothing written to its audit table
    assert _sql(urls[0], "SELECT count(*) FROM orch_log") == audit_before
    for url in urls[1:]:
        assert _sql(url, "SELECT version_num FROM alembic_version") == [(rev_id("tenant", 2),)]
    # a tenant that is not up to date (an edited file, here) takes the locked path and says so
    edited = next((project.root / "migrations" / "tenant").glob(f"{rev_id('tenant', 1)}*.py"))
    edited.write_text(edited.read_text() + "\n# edited\n")
    r = project.orch("upgrade", "--all", "--json")
    assert r.exit_code == 0, r.stderr
    assert "no longer matches its file" in r.stderr
    assert set(outcomes(r).values()) == {"unchanged"}


def test_a_failing_query_source_is_exit_2_naming_it(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    from conftest import require_server

    require_server("postgresql")
    project = pg_schema_fleet(tmp_path / "proj", make_db, ["acme"])
    data = project.registry()
    data["databases"]["tenant"]["tenants"]["query"]["sql"] = "SELECT slug FROM no_such_table"
    project.write_registry(data)
    r = project.orch("status")
    assert r.exit_code == 2
    assert "databases.tenant.tenants.query: the query failed" in r.stderr
    assert "no_such_table" in r.stderr


def test_a_tenant_query_runs_read_only(tmp_path: Path, make_db: Callable[..., str]) -> None:
    from conftest import require_server

    require_server("postgresql")
    project = pg_schema_fleet(tmp_path / "proj", make_db, ["acme"])
    data = project.registry()
    data["databases"]["tenant"]["tenants"]["query"]["sql"] = (
        "INSERT INTO tenants VALUES ('sneaky', true) RETURNING slug"
    )
    project.write_registry(data)
    r = project.orch("status")
    assert r.exit_code == 2
    assert "read-only" in r.stderr
    assert _sql(project.url("core"), "SELECT count(*) FROM tenants") == [(2,)]


def test_schema_on_sqlite_is_a_registry_error(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    project = fleet_project(
        root, f"sqlite:///{root}/app.db", {"list": ["a"]}, extra={"schema": "t_{tenant}"}
    )
    r = project.orch("status")
    assert r.exit_code == 2
    assert "SQLite has no schemas: put {tenant} in the URL" in r.stderr


def test_schema_per_tenant_on_mariadb_is_a_database(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    from conftest import require_server

    require_server("mysql")
    urls = [make_db("mysql") for _ in range(2)]
    tenants = [u.rsplit("/", 1)[1].removeprefix("orch_t_") for u in urls]
    root = tmp_path / "proj"
    project = fleet_project(root, urls[0], {"list": tenants}, extra={"schema": "orch_t_{tenant}"})
    r = project.orch("upgrade", "--all", "--json")
    assert r.exit_code == 0, r.stderr
    for t, url in zip(tenants, urls, strict=True):
        assert version_of(url) == [rev_id("tenant", 2)]
        assert {x["db"] for x in log_rows(url)} == {f"tenant:{t}"}


# ------------------------------------------------------------ staged rollout

#: a tenant whose name has "bad" in it fails its first revision
FAILING_REVS = [
    Rev(
        code='if "bad" in str(op.get_bind().engine.url):\n    raise RuntimeError("boom")',
        up=["CREATE TABLE items (id INTEGER PRIMARY KEY)"],
        down=["DROP TABLE items"],
    ),
]


def rollout_fleet(root: Path, names: list[str], rollout: list[dict[str, Any]] | None) -> Project:
    project = make_project(
        root, {"tenant": FAILING_REVS}, {"tenant": f"sqlite:///{root}/{{tenant}}.db"}
    )
    data = project.registry()
    data["databases"]["tenant"]["tenants"] = {"list": names}
    if rollout is not None:
        data["databases"]["tenant"]["rollout"] = rollout
    project.write_registry(data)
    return project


def outcomes(r: Any) -> dict[str, str]:
    return {d["name"].partition(":")[2]: d["outcome"] for d in r.json()["databases"]}


def test_a_canary_failure_stops_the_later_groups(tmp_path: Path) -> None:
    project = rollout_fleet(
        tmp_path / "p",
        ["a", "canary-bad", "b", "canary-ok"],
        [{"match": "canary-*", "parallel": 1, "max_failures": 0}, {"parallel": 4}],
    )
    r = project.orch("upgrade", "--all", "--jobs", "4", "--json")
    assert r.exit_code == 1
    assert outcomes(r) == {
        "a": "skipped",
        "canary-bad": "failed",
        "b": "skipped",
        "canary-ok": "skipped",
    }
    errors = {d["name"]: d["error"] for d in r.json()["databases"]}
    assert "rollout: group 1 of tenant has 1 failure(s) of 2" in errors["tenant:a"]
    assert not (tmp_path / "p" / "a.db").exists()


def test_the_canaries_run_first_one_at_a_time(tmp_path: Path) -> None:
    project = rollout_fleet(
        tmp_path / "p",
        ["a", "canary-1", "b", "canary-2", "c"],
        [{"match": "canary-*", "parallel": 1, "max_failures": 0}, {"parallel": 2}],
    )
    r = project.orch("upgrade", "--all", "--jobs", "4", "--json")
    assert r.exit_code == 0, r.stderr
    assert set(outcomes(r).values()) == {"done"}
    # audit rows: each canary finished before the next started, and before any other
    spans = {}
    for t in ("a", "canary-1", "b", "canary-2", "c"):
        (row,) = [x for x in log_rows(f"sqlite:///{tmp_path}/p/{t}.db") if x["revision"]]
        spans[t] = (row["started_at"], row["finished_at"])
    assert spans["canary-1"][1] <= spans["canary-2"][0]
    assert max(spans["canary-1"][1], spans["canary-2"][1]) <= min(
        spans[t][0] for t in ("a", "b", "c")
    )


def test_max_failures_as_a_count_and_a_percentage(tmp_path: Path) -> None:
    names = ["a-bad", "b", "c-bad", "d"]
    project = rollout_fleet(tmp_path / "p", names, [{"max_failures": 1}])
    r = project.orch("upgrade", "--all", "--jobs", "1", "--json")
    assert outcomes(r) == {"a-bad": "failed", "b": "done", "c-bad": "failed", "d": "skipped"}
    project = rollout_fleet(tmp_path / "q", names, [{"max_failures": "50%"}])
    r = project.orch("upgrade", "--all", "--jobs", "1", "--json")
    assert outcomes(r) == {"a-bad": "failed", "b": "done", "c-bad": "failed", "d": "done"}


def test_one_failure_does_not_stop_the_others_unless_fail_fast(tmp_path: Path) -> None:
    project = rollout_fleet(tmp_path / "p", ["a-bad", "b", "c"], None)
    r = project.orch("upgrade", "--all", "--jobs", "1", "--json")
    assert r.exit_code == 1
    assert outcomes(r) == {"a-bad": "failed", "b": "done", "c": "done"}
    project = rollout_fleet(tmp_path / "q", ["a-bad", "b", "c"], [{"max_failures": 5}])
    r = project.orch("upgrade", "--all", "--jobs", "1", "--fail-fast", "--json")
    assert outcomes(r) == {"a-bad": "failed", "b": "skipped", "c": "skipped"}


def test_plain_alembic_migrates_one_tenant_named_as_orch_names_it(sqlite_fleet: Project) -> None:
    """The one env.py serves a tenant under plain ``alembic -x db=tenant:acme`` (an operator's
    escape hatch); a name its list does not hold is refused, naming the list."""
    import os
    import subprocess
    import sys

    (sqlite_fleet.root / "tenants").mkdir()
    (sqlite_fleet.root / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\npath_separator = os\n"
        "version_locations = %(here)s/migrations/core:%(here)s/migrations/tenant\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}

    def alembic(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "alembic", "-c", "alembic.ini", *args],
            cwd=sqlite_fleet.root,
            env=clean,
            capture_output=True,
            text=True,
            timeout=120,
        )

    r = alembic("-x", "db=tenant:acme", "upgrade", "tenant@head")
    assert r.returncode == 0, r.stderr
    assert version_of(tenant_url(sqlite_fleet, "acme")) == [rev_id("tenant", 2)]
    assert not (sqlite_fleet.root / "tenants" / "globex.db").exists()
    status = {
        d["name"]: d["state"] for d in sqlite_fleet.orch("status", "--json").json()["databases"]
    }
    assert status["tenant:acme"] == "up_to_date" and status["tenant:globex"] == "behind"
    r = alembic("-x", "db=tenant:nobody", "upgrade", "tenant@head")
    assert r.returncode != 0
    assert "tenant:nobody: not one of its tenants (databases.tenant.tenants.list)" in r.stdout
    assert not (sqlite_fleet.root / "tenants" / "nobody.db").exists()


# ------------------------------------------------------------ --retry


def test_retry_runs_only_what_the_last_run_left_behind(tmp_path: Path) -> None:
    project = rollout_fleet(
        tmp_path / "p",
        ["canary-bad", "canary-ok", "a", "zed"],
        [{"match": "canary-*", "parallel": 1, "max_failures": 0}, {"parallel": 2}],
    )
    data = project.registry()  # "bad" tenants fail only while FAIL_BAD is set
    for f in (tmp_path / "p" / "migrations" / "tenant").glob("*.py"):
        f.write_text(f.read_text().replace('if "bad"', 'if os.environ.get("FAIL_BAD") and "bad"'))
    project.write_registry(data)
    assert project.orch("upgrade", "tenant:zed").exit_code == 0
    first = project.orch("upgrade", "--all", "--jobs", "1", "--json", env={"FAIL_BAD": "1"})
    assert outcomes(first) == {
        "canary-bad": "failed",
        "canary-ok": "skipped",
        "a": "skipped",
        "zed": "skipped",  # at head, but its group never started: not touched
    }
    r = project.orch("upgrade", "--retry", "--json")
    assert r.exit_code == 0, r.stderr
    # zed is at head: skipped, but nothing to retry there
    assert outcomes(r) == {"canary-bad": "done", "canary-ok": "done", "a": "done"}
    assert "retrying 3 database(s)" in r.stderr
    again = project.orch("upgrade", "--retry", "--json")
    assert again.exit_code == 0 and again.json()["databases"] == []
    assert "nothing to retry" in again.stderr
    log = project.orch("log", "tenant:canary-bad", "--json").json()["entries"]
    first_run = [e for e in log if e["outcome"] == "failed"][0]["run_id"]
    r = project.orch("upgrade", "--retry", first_run[:8], "--json")
    assert outcomes(r) == {"canary-bad": "unchanged"}
    r = project.orch("upgrade", "--retry", "ffffffff")
    assert r.exit_code == 2 and "no run 'ffffffff'" in r.stderr
    r = project.orch("upgrade", "--retry", "--all")
    assert r.exit_code == 2


def test_retry_stays_inside_the_run_it_retries(tmp_path: Path) -> None:
    """A database the run did not select is not retried, even behind (SPEC: "only what ...
    in that run"); nor is a tenant of another runner's shard.  The run's selection is
    recorded in its audit rows."""
    root = tmp_path / "p"
    project = make_project(
        root,
        {"tenant": FAILING_REVS, "core": [Rev(up=["CREATE TABLE c (id int)"])]},
        {"tenant": f"sqlite:///{root}/{{tenant}}.db", "core": f"sqlite:///{root}/core.db"},
    )
    data = project.registry()
    data["databases"]["tenant"]["tenants"] = {"list": ["canary-bad", "a", "b", "c", "d"]}
    data["databases"]["tenant"]["rollout"] = [
        {"match": "canary-*", "parallel": 1, "max_failures": 0},
        {"parallel": 2},
    ]
    project.write_registry(data)
    for f in (root / "migrations" / "tenant").glob("*.py"):
        f.write_text(f.read_text().replace('if "bad"', 'if os.environ.get("FAIL_BAD") and "bad"'))
    first = project.orch("upgrade", "tenant", "--jobs", "1", "--json", env={"FAIL_BAD": "1"})
    assert first.exit_code == 1
    assert set(outcomes(first).values()) == {"failed", "skipped"}
    r = project.orch("upgrade", "--retry", "--json")
    assert r.exit_code == 0, r.stderr
    assert outcomes(r) == dict.fromkeys(["canary-bad", "a", "b", "c", "d"], "done")
    assert "core" not in {d["name"] for d in r.json()["databases"]}
    status = {d["name"]: d["state"] for d in project.orch("status", "--json").json()["databases"]}
    assert status["core"] == "behind"  # outside the run: left alone

    # a sharded run: its retry stays in its shard (the other shard is another runner's)
    from orch.planning.shards import shard_of

    bad = next(f"bad{i}" for i in range(100) if shard_of(f"tenant:bad{i}", 2) == 1)
    names = [bad, "e", "f", "g", "h", "i", "j"]
    mine = {n for n in names if shard_of(f"tenant:{n}", 2) == 1}
    assert mine != set(names)
    del data["databases"]["tenant"]["rollout"]
    data["databases"]["tenant"]["tenants"] = {"list": names}
    project.write_registry(data)
    first = project.orch(
        "upgrade", "tenant", "--shard", "1/2", "--jobs", "1", "--json", env={"FAIL_BAD": "1"}
    )
    assert set(outcomes(first)) == mine and outcomes(first)[bad] == "failed"
    r = project.orch("upgrade", "--retry", "--json")
    assert r.exit_code == 0, r.stderr
    assert outcomes(r) == {bad: "done"}  # not the other shard's tenants, behind as they are


# ------------------------------------------------------------ --shard


def test_shards_split_the_fleet_without_overlap(sqlite_fleet: Project) -> None:
    every = {d["name"] for d in sqlite_fleet.orch("status", "--json").json()["databases"]}
    seen: list[str] = []
    for i in (1, 2, 3):
        r = sqlite_fleet.orch("status", "--shard", f"{i}/3", "--json")
        assert r.exit_code == 0, r.stderr
        seen += [d["name"] for d in r.json()["databases"]]
    assert sorted(seen) == sorted(every)
    for bad in ("0/3", "4/3", "1", "a/b", "1/0"):
        r = sqlite_fleet.orch("status", "--shard", bad)
        assert r.exit_code == 2, bad
        assert "expected I/N with 1 <= I <= N" in r.stderr


def test_four_shards_and_one_unsharded_runner_at_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = tmp_path / "p"
    names = [f"t{i:02d}" for i in range(24)]
    project = make_project(
        root, {"tenant": TENANT_REVS}, {"tenant": f"sqlite:///{root}/{{tenant}}.db"}
    )
    data = project.registry()
    data["databases"]["tenant"]["tenants"] = {"list": names}
    data["settings"]["lock_timeout"] = 120
    project.write_registry(data)
    commands = [["upgrade", "--all", "--shard", f"{i}/4", "--jobs", "2"] for i in (1, 2, 3, 4)]
    commands.append(["upgrade", "--all", "--jobs", "2"])
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "orch", *c],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in commands
    ]
    for p in procs:
        out, errs = p.communicate(timeout=600)
        assert p.returncode == 0, errs
    for t in names:
        url = f"sqlite:///{root}/{t}.db"
        assert version_of(url) == [rev_id("tenant", 2)]
        applied = [x["revision"] for x in log_rows(url) if x["outcome"] == "ok" and x["revision"]]
        assert sorted(applied) == [rev_id("tenant", 1), rev_id("tenant", 2)], t


# ------------------------------------------------------------ fleet output


def big_fleet(root: Path, n: int = 60) -> tuple[Project, list[str]]:
    names = [f"t{i:02d}" for i in range(n)]
    names[7] = "t07-bad"
    project = rollout_fleet(root, names, None)
    for f in (root / "migrations" / "tenant").glob("*.py"):
        f.write_text(f.read_text().replace('if "bad"', 'if os.environ.get("FAIL_BAD") and "bad"'))
    return project, names


def test_more_than_50_databases_print_counts_then_what_needs_attention(tmp_path: Path) -> None:
    project, names = big_fleet(tmp_path / "p")
    r = project.orch("upgrade", "--all", env={"FAIL_BAD": "1"})
    assert r.exit_code == 1
    lines = r.stdout.splitlines()
    assert lines[0] == "60 databases: 59 done, 1 failed"  # in order of first appearance
    assert lines[1].split() == ["DATABASE", "OUTCOME", "FROM", "TO", "STEPS", "TIME", "DETAIL"]
    assert len(lines) == 3 and lines[2].startswith("tenant:t07-bad  failed")
    assert "/60 done" not in r.stderr  # no progress line when stderr is not a terminal
    status = project.orch("status")
    assert status.stdout.splitlines()[:2] == [
        "environment: dev",
        "60 databases: 59 up_to_date, 1 behind",
    ]
    rows = status.stdout.splitlines()[3:]
    assert len(rows) == 1 and rows[0].startswith("tenant:t07-bad  behind")
    full = project.orch("status", "--json").json()["databases"]
    assert len(full) == 60
    again = project.orch("upgrade", "--all", "--json")
    assert len(again.json()["databases"]) == 60
    quiet = project.orch("upgrade", "--all")
    assert quiet.stdout.splitlines() == ["60 databases: 60 unchanged"]


def test_the_progress_line_is_on_a_terminal_s_stderr_only(tmp_path: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    project, _names = big_fleet(tmp_path / "p")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orch", "upgrade", "--all", "--jobs", "2"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    stdout, _ = proc.communicate(timeout=600)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.returncode == 0
    text = seen.decode()
    assert "/60 done, 0 failed" in text and "s elapsed" in text
    assert "60/60 done" in text
    assert stdout.splitlines() == ["60 databases: 60 done"]
    assert "done, 0 failed" not in stdout


# ------------------------------------------------------------ status --all-envs


def test_status_all_envs_shows_each_fleet_as_one_row_of_counts(tmp_path: Path) -> None:
    root = tmp_path / "p"
    command = "if [ {env} = dev ]; then printf 'a\\nb\\n'; else printf 'a\\nb\\nc\\n'; fi"
    project = fleet_project(root, f"sqlite:///{root}/dev/{{tenant}}.db", {"command": command})
    (root / "dev").mkdir()
    (root / "staging").mkdir()
    data = project.registry()
    data["environments"]["staging"] = {
        "urls": {
            "core": f"sqlite:///{root}/staging/core.db",
            "tenant": f"sqlite:///{root}/staging/{{tenant}}.db",
        }
    }
    data["environments"]["broken"] = {
        "urls": {"core": f"sqlite:///{root}/core.db", "tenant": "${NO_SUCH_URL}"}
    }
    data["databases"]["tenant"]["tenants"] = {"command": command}
    project.write_registry(data)
    assert project.orch("upgrade", "tenant:a", "--with-deps").exit_code == 0
    r = project.orch("status", "--all-envs")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["DATABASE", "dev", "staging", "broken"]
    assert lines[2].split("  ")[0] == "tenant"
    row = [c.strip() for c in lines[2].split("  ") if c.strip()]
    assert row == [
        "tenant",
        "2 tenants: 1 up_to_date, 1 behind",
        "3 tenants: 3 behind",
        "3 tenants: 3 unconfigured",
    ]
    doc = project.orch("status", "--all-envs", "--json").json()
    dev = doc["environments"][0]["databases"]
    assert [d["name"] for d in dev] == ["core", "tenant:a", "tenant:b"]
    assert len(doc["environments"][1]["databases"]) == 4


def test_history_of_a_tenant_and_of_a_fleet(sqlite_fleet: Project) -> None:
    (sqlite_fleet.root / "tenants").mkdir()
    assert sqlite_fleet.orch("upgrade", "tenant:acme", "--with-deps").exit_code == 0
    one = sqlite_fleet.orch("history", "tenant:acme", "--json").json()
    assert one["current"] == [rev_id("tenant", 2)]
    fleet = sqlite_fleet.orch("history", "tenant", "--json").json()
    assert fleet["current"] is None
    assert "name one (tenant:TENANT)" in fleet["error"]


def test_tenants_at_head_are_settled_without_a_migration_run(sqlite_fleet: Project) -> None:
    import sqlite3

    (sqlite_fleet.root / "tenants").mkdir()
    with sqlite3.connect(sqlite_fleet.root / "tenants" / "acme.db") as con:  # plain Alembic's
        con.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        con.execute("INSERT INTO alembic_version VALUES (?)", (rev_id("tenant", 2),))
    r = sqlite_fleet.orch("upgrade", "--all", "--json")
    assert r.exit_code == 0, r.stderr
    assert outcomes(r) == {"": "done", "acme": "unchanged", "globex": "done", "eu-one": "done"}
    # read, not run: no lock taken there, no audit table created
    assert log_rows(tenant_url(sqlite_fleet, "acme")) == []
    assert log_rows(tenant_url(sqlite_fleet, "globex")) != []


def test_the_api_plans_a_retry_that_keeps_the_retried_runs_selection(tmp_path: Path) -> None:
    import orch

    project = rollout_fleet(tmp_path / "p", ["a-bad", "b"], None)
    api = orch.Project.load(project.registry_path)
    first = api.upgrade(["tenant"], jobs=1)
    assert {r.name: r.outcome for r in first} == {
        "tenant:a-bad": orch.Outcome.FAILED,
        "tenant:b": orch.Outcome.DONE,
    }
    retry = api.plan_retry()
    assert isinstance(retry, orch.Retry) and retry.databases == ["tenant:a-bad"]
    assert retry.plan is not None and retry.plan.names == ["tenant:a-bad"]
    assert retry.plan.scope == '{"selectors":["tenant"]}'
    assert api.retry_selection() == (retry.run_id, ["tenant:a-bad"])
