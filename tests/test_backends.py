"""Per-backend correctness: the reference project's revisions, data steps, schemas.

The revisions must build exactly the models on SQLite, PostgreSQL and
MariaDB (types, indexes, column changes), their data steps must do the same
thing on each, and what differs between backends (transactional DDL, strict
VARCHAR lengths) must show up the way the docs promise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from conftest import Project
from test_commands import ANALYTICS, CORE


def _drift(p: Project, db: str, metadata: Any) -> list[Any]:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    def include(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
        return not (type_ == "table" and name in ("alembic_version", "orch_log"))

    with p.connect(db) as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": include}
        )
        return list(compare_metadata(ctx, metadata))


def test_revisions_build_exactly_the_models(backend_project: Project) -> None:
    """Autogenerate against a fully upgraded database finds nothing, on every backend."""
    import sys

    p = backend_project
    assert p.orch("upgrade", "--all").exit_code == 0
    sys.path.insert(0, str(p.root / "src"))
    try:
        from shop.models import analytics_metadata, core_metadata
    finally:
        sys.path.remove(str(p.root / "src"))
    assert _drift(p, "core", core_metadata) == []
    assert _drift(p, "analytics", analytics_metadata) == []


def test_round_trip_to_base_and_back(backend_project: Project) -> None:
    p = backend_project
    assert p.orch("upgrade", "--all").exit_code == 0
    r = p.orch("downgrade", "analytics@base", "core@base")
    assert r.exit_code == 0, r.stderr
    assert p.tables("core") <= {"alembic_version", "orch_log"}
    assert p.tables("analytics") <= {"alembic_version", "orch_log"}
    assert p.orch("upgrade", "--all").exit_code == 0
    assert p.versions("core") == [CORE[-1]] and p.versions("analytics") == [ANALYTICS[-1]]


def test_core_data_step_backfills_and_tightens(backend_project: Project) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError, OperationalError

    p = backend_project
    assert p.orch("upgrade", f"core@{CORE[1]}").exit_code == 0
    long_email = "x" * 150 + "@example.org"
    now = dt.datetime(2024, 6, 1, 12, 0, 0)
    with p.connect("core") as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, email, created_at, is_active) VALUES "
                "(1, 'ann@example.org', :t, :a), (2, :long, :t, :a)"
            ),
            {"t": now, "a": True, "long": long_email},
        )
        conn.commit()
    r = p.orch("upgrade", "core")
    assert r.exit_code == 0, r.stderr
    with p.connect("core") as conn:
        rows = dict(conn.execute(text("SELECT id, display_name FROM users ORDER BY id")).all())
        assert rows == {1: "ann@example.org", 2: long_email[:100]}
        with pytest.raises((IntegrityError, OperationalError)):
            conn.execute(
                text(
                    "INSERT INTO users (id, email, created_at, is_active, display_name) "
                    "VALUES (3, 'bob@example.org', :t, :a, NULL)"
                ),
                {"t": now, "a": True},
            )
        conn.rollback()


def test_analytics_data_step_normalizes_and_rolls_up(backend_project: Project) -> None:
    from sqlalchemy import text

    p = backend_project
    assert p.orch("upgrade", f"analytics@{ANALYTICS[1]}", "--ignore-deps").exit_code == 0
    events = [
        (1, 10, "Login", dt.datetime(2024, 6, 1, 8, 0)),
        (2, 11, "login", dt.datetime(2024, 6, 1, 9, 30)),
        (3, 10, "LOGOUT", dt.datetime(2024, 6, 1, 23, 59)),
        (4, 12, "Login", dt.datetime(2024, 6, 2, 0, 1)),
    ]
    with p.connect("analytics") as conn:
        for id_, user, kind, at in events:
            conn.execute(
                text("INSERT INTO events (id, user_id, kind, occurred_at) VALUES (:i, :u, :k, :t)"),
                {"i": id_, "u": user, "k": kind, "t": at},
            )
        conn.commit()
    r = p.orch("upgrade", "analytics", "--ignore-deps")
    assert r.exit_code == 0, r.stderr
    with p.connect("analytics") as conn:
        kinds = conn.execute(text("SELECT kind FROM events ORDER BY id")).scalars().all()
        assert kinds == ["login", "login", "logout", "login"]
        rollups = {
            (str(day)[:10], kind): count
            for day, kind, count in conn.execute(
                text("SELECT day, kind, count FROM daily_rollups")
            ).all()
        }
    assert rollups == {
        ("2024-06-01", "login"): 2,
        ("2024-06-01", "logout"): 1,
        ("2024-06-02", "login"): 1,
    }


def test_failed_narrowing_per_backend(backend_project: Project, backend: str) -> None:
    """Downgrading events.kind back to VARCHAR(32) with a 40-character kind.

    PostgreSQL and strict MariaDB refuse the data; PostgreSQL rolls the whole
    revision back (the index it dropped is back), MariaDB cannot roll DDL back
    and the database is ``dirty`` naming the revision; SQLite does not enforce
    VARCHAR lengths and simply succeeds.
    """
    from sqlalchemy import inspect, text

    p = backend_project
    assert p.orch("upgrade", "analytics", "--ignore-deps").exit_code == 0
    with p.connect("analytics") as conn:
        conn.execute(
            text("INSERT INTO events (id, user_id, kind, occurred_at) VALUES (1, 1, :k, :t)"),
            {"k": "k" * 40, "t": dt.datetime(2024, 6, 1)},
        )
        conn.commit()
    r = p.orch("downgrade", f"analytics@{ANALYTICS[1]}", "--json")
    res = r.json()["databases"][0]
    st = {d["name"]: d for d in p.orch("status", "--json").json()["databases"]}["analytics"]
    with p.connect("analytics") as conn:
        indexes = {ix["name"] for ix in inspect(conn).get_indexes("events")}
    if backend == "sqlite":
        assert r.exit_code == 0 and res["outcome"] == "done"
        assert p.versions("analytics") == [ANALYTICS[1]]
        return
    assert r.exit_code == 1
    assert res["outcome"] == "failed" and res["revision"] == ANALYTICS[2]
    assert res["applied"] == [ANALYTICS[3]]  # the data step's no-op downgrade went through
    assert p.versions("analytics") == [ANALYTICS[2]]
    if backend == "postgresql":
        assert "ix_events_kind_occurred_at" in indexes  # rolled back with its revision
        assert st["state"] == "behind" and st["pending"] == 1  # not dirty
    else:
        assert "ix_events_kind_occurred_at" not in indexes  # DDL committed implicitly
        assert st["state"] == "dirty"
        assert ANALYTICS[2] in st["error"]


# ---------------------------------------------------------------- version_table_schema


def _use_schema(p: Project, db: str, schema: str) -> None:
    data = p.registry()
    data["databases"][db]["version_table_schema"] = schema
    p.write_registry(data)


def test_version_table_schema_on_postgresql(project: Project, make_db: Callable[..., str]) -> None:
    from sqlalchemy import text

    p = project
    p.set_urls("dev", {"core": make_db("postgresql"), "analytics": make_db("postgresql")})
    with p.connect("core") as conn:
        conn.execute(text('CREATE SCHEMA "orch_meta"'))
        conn.commit()
    _use_schema(p, "core", "orch_meta")
    r = p.orch("upgrade", "--all")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert p.versions("core", schema="orch_meta") == [CORE[-1]]
    assert p.versions("core") == []  # nothing in public
    assert {"alembic_version", "orch_log"} <= p.tables("core", schema="orch_meta")
    assert {"users", "accounts"} <= p.tables("core")
    st = {d["name"]: d for d in p.orch("status", "--json").json()["databases"]}
    assert st["core"]["state"] == "up_to_date" and st["core"]["current"] == [CORE[-1]]
    assert p.orch("downgrade", "core@-1", "--force").exit_code == 0
    assert p.versions("core", schema="orch_meta") == [CORE[2]]
    assert p.orch("stamp", "core@head").exit_code == 0
    assert p.versions("core", schema="orch_meta") == [CORE[-1]]


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_missing_version_table_schema_is_named(
    project: Project, make_db: Callable[..., str], kind: str
) -> None:
    p = project
    p.set_urls("dev", {"core": make_db(kind), "analytics": make_db(kind)})
    _use_schema(p, "core", "orch_nowhere")
    st = {d["name"]: d for d in p.orch("status", "--json").json()["databases"]}
    assert st["core"]["state"] == "behind" and st["core"]["pending"] == len(CORE)
    assert "version_table_schema 'orch_nowhere' does not exist" in st["core"]["error"]
    r = p.orch("upgrade", "--all")
    assert r.exit_code == 1
    assert "Traceback" not in r.stderr
    assert "version_table_schema 'orch_nowhere' does not exist" in r.stderr
    assert "databases.core.version_table_schema" in r.stderr
    assert "CREATE SCHEMA" in r.stderr if kind == "postgresql" else "CREATE DATABASE" in r.stderr
    assert p.tables("core") == set()  # refused before anything was created
    assert p.versions("analytics") == []  # its dependency failed: skipped


def test_version_table_schema_on_mariadb_is_another_database(
    project: Project, make_db: Callable[..., str]
) -> None:
    from sqlalchemy.engine import make_url

    p = project
    core = make_db("mysql")
    meta = make_url(make_db("mysql")).database
    assert meta is not None
    p.set_urls("dev", {"core": core, "analytics": make_db("mysql")})
    _use_schema(p, "core", meta)
    r = p.orch("upgrade", "--all")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert p.versions("core", schema=meta) == [CORE[-1]]
    assert "alembic_version" not in p.tables("core")
    assert "users" in p.tables("core")
    st = {d["name"]: d for d in p.orch("status", "--json").json()["databases"]}
    assert st["core"]["state"] == "up_to_date"
