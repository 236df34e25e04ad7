"""Production guardrails: protected environments, hooks, rollback, graceful stop, DDL lock timeout.

Everything runs against the real servers; terminals are real pseudo-terminals.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Project

CORE_HEAD = "bd61b77cf8aa"
ANALYTICS_HEAD = "ce37b359c1da"
CORE_FIRST = "4d2e0c7783c8"


# ---------------------------------------------------------------- helpers


def tables(url: str) -> list[str]:
    """Tables of a database; [] for a SQLite file that does not exist (and creates none)."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.pool import NullPool

    from orch.config.registry import sqlite_path

    path = sqlite_path(url)
    if path is not None and not path.exists():
        return []
    eng = create_engine(url, poolclass=NullPool)
    with eng.connect() as c:
        return sorted(inspect(c).get_table_names())


def current(url: str) -> list[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    if "alembic_version" not in tables(url):
        return []
    eng = create_engine(url, poolclass=NullPool)
    with eng.connect() as c:
        return sorted(
            str(r) for r in c.execute(text("SELECT version_num FROM alembic_version")).scalars()
        )


def log_rows(url: str) -> list[dict[str, Any]]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    if "orch_log" not in tables(url):
        return []
    eng = create_engine(url, poolclass=NullPool)
    with eng.connect() as c:
        found = c.execute(text("SELECT * FROM orch_log ORDER BY id"))
        return [dict(r._mapping) for r in found if r.db]  # not the table's version row


def urls_for(backend: str, make_db: Callable[..., str], tmp_path: Path) -> dict[str, str]:
    if backend == "sqlite":
        d = tmp_path / "prod"
        return {
            "core": f"sqlite:///{d / 'core.db'}",
            "analytics": f"sqlite:///{d / 'analytics.db'}",
        }
    return {"core": make_db(backend), "analytics": make_db(backend)}


def dev_urls(p: Project) -> dict[str, str]:
    """The dev environment's URLs, resolved as orch resolves them (absolute SQLite paths)."""
    from orch.config.registry import load_registry

    return {t.name: t.url or "" for t in load_registry(p.registry_path).targets("dev")}


def run_in_terminal(
    project: Project, args: list[str], answer: str | None, prompt: bytes = b"to "
) -> tuple[int, str, str]:
    """Run ``python -m orch`` with stdin and stderr on a real pseudo-terminal.

    Waits for the confirmation prompt, types *answer* (None: closes the
    terminal's input with Ctrl-D), and returns (exit code, stdout, terminal text).
    """
    master, slave = os.openpty()
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orch", *args],
        cwd=project.root,
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    seen = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and prompt in seen and seen.rstrip().endswith(b":"):
                os.write(master, (answer + "\n").encode() if answer is not None else b"\x04")
                answered = True
            if proc.poll() is not None and not ready:
                break
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, seen.decode(errors="replace")


SECRET = "S3cr3t-pw-{}"


def with_password(make_db: Callable[..., str], kind: str) -> tuple[str, str]:
    """(URL of a new database as a login WITH a password, the password).

    PostgreSQL here trusts local connections, so it does not check the
    password; MariaDB does (a hook that did not get it in MYSQL_PWD fails).
    """
    import uuid

    pw = SECRET.format(uuid.uuid4().hex[:6])
    return make_db(kind, password=pw), pw


# ---------------------------------------------------------------- protected environments


@pytest.fixture
def prod(
    project: Project, backend: str, make_db: Callable[..., str], tmp_path: Path
) -> dict[str, str]:
    """The project's ``prod`` environment, protected, on *backend*; returns its URLs."""
    urls = urls_for(backend, make_db, tmp_path)
    project.set_urls("prod", urls, protected=True)
    return urls


def test_protected_refuses_without_terminal_and_changes_nothing(
    project: Project, prod: dict[str, str]
) -> None:
    r = project.orch("--env", "prod", "upgrade", "--all")
    assert r.exit_code == 2
    assert "protected" in r.stderr and "--yes" in r.stderr
    # the plan is shown, so the operator sees what --yes would do
    assert "core" in r.stderr and CORE_HEAD in r.stderr
    assert all(tables(u) == [] for u in prod.values()), "a refusal must write nothing"

    doc = project.orch("--env", "prod", "upgrade", "--all", "--json").json()
    assert doc["exit_code"] == 2 and "protected" in doc["error"]
    assert [d["outcome"] for d in doc["databases"]] == ["refused", "refused"]
    assert doc["plan"][0]["revisions"][-1] == CORE_HEAD
    assert all(tables(u) == [] for u in prod.values())

    r = project.orch("--env", "prod", "upgrade", "--all", "--yes")
    assert r.exit_code == 0, r.stderr
    assert current(prod["core"]) == [CORE_HEAD]

    for args in (["downgrade", "analytics@base"], ["stamp", "analytics@base"]):
        r = project.orch("--env", "prod", *args)
        assert r.exit_code == 2, r.stderr
        assert "protected" in r.stderr
        assert current(prod["analytics"]) == [ANALYTICS_HEAD]
    rows_before = len(log_rows(prod["analytics"]))
    assert (
        project.orch("--env", "prod", "downgrade", "analytics@base", "--json").json()["exit_code"]
        == 2
    )
    assert len(log_rows(prod["analytics"])) == rows_before, "a refusal must not even log"

    r = project.orch("--env", "prod", "downgrade", "analytics@base", "--yes")
    assert r.exit_code == 0, r.stderr
    assert current(prod["analytics"]) == []


@pytest.mark.parametrize("backend", ["sqlite"])
def test_protected_on_a_terminal_asks_for_the_environment_name(
    project: Project, prod: dict[str, str]
) -> None:
    # a wrong answer refuses and changes nothing
    code, out, term = run_in_terminal(project, ["--env", "prod", "upgrade", "--all"], "yes")
    assert code == 2, term
    assert "protected" in term and CORE_HEAD in term and "not confirmed" in term
    assert all(tables(u) == [] for u in prod.values())
    # end of input at the prompt refuses too
    code, out, term = run_in_terminal(project, ["--env", "prod", "upgrade", "--all"], None)
    assert code == 2, term
    assert all(tables(u) == [] for u in prod.values())
    # typing the name runs it
    code, out, term = run_in_terminal(project, ["--env", "prod", "upgrade", "--all"], "prod")
    assert code == 0, term
    assert "done" in out
    assert current(prod["core"]) == [CORE_HEAD] and current(prod["analytics"]) == [ANALYTICS_HEAD]
    # downgrade and stamp ask too
    code, out, term = run_in_terminal(
        project, ["--env", "prod", "downgrade", "analytics@-1"], "prod"
    )
    assert code == 0, term
    assert "analytics" in term and "downgrade" in term
    code, out, term = run_in_terminal(project, ["--env", "prod", "stamp", "analytics@head"], "nope")
    assert code == 2, term
    assert current(prod["analytics"]) != [ANALYTICS_HEAD]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_protected_prompt_shows_what_lint_says_of_the_revisions_to_approve(
    project: Project, prod: dict[str, str]
) -> None:
    """The operator approves revisions knowing orch lint's findings on exactly those.

    core's d5d862ab0321 indexes tables an earlier revision created: on
    PostgreSQL a plain CREATE INDEX blocks writes while it builds.
    """
    code, _out, term = run_in_terminal(project, ["--env", "prod", "upgrade", "--all"], "nope")
    assert code == 2, term
    assert "orch lint:" in term
    assert "core d5d862ab0321 warning index_without_concurrently" in term
    assert term.index("orch lint:") < term.index("Type the environment's name")
    assert all(tables(u) == [] for u in prod.values()), "shown, not run"
    # once core is at head, only analytics' revisions are approved, and linted
    assert project.orch("--env", "prod", "upgrade", "core", "--yes").exit_code == 0
    code, _out, term = run_in_terminal(project, ["--env", "prod", "upgrade", "analytics"], "nope")
    assert code == 2, term
    assert "d5d862ab0321" not in term


@pytest.mark.parametrize("backend", ["sqlite"])
def test_protected_plan_says_what_on_failure_rollback_will_do(
    project: Project, prod: dict[str, str]
) -> None:
    r = project.orch("--env", "prod", "upgrade", "--all", "--on-failure", "rollback")
    assert r.exit_code == 2
    assert "on failure: every database this run changed goes back to where it started" in r.stderr
    assert project.orch("--env", "prod", "upgrade", "--all", "--yes").exit_code == 0
    r = project.orch("--env", "prod", "downgrade", "analytics@base", "--on-failure", "rollback")
    assert r.exit_code == 2
    assert "goes back up to where it started" in r.stderr
    r = project.orch("--env", "prod", "downgrade", "analytics@base")
    assert r.exit_code == 2 and "on failure" not in r.stderr
    assert current(prod["analytics"]) == [ANALYTICS_HEAD]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_unprotected_environment_does_not_ask(project: Project, prod: dict[str, str]) -> None:
    data = project.registry()
    data["environments"]["prod"]["protected"] = False
    project.write_registry(data)
    r = project.orch("--env", "prod", "upgrade", "--all")
    assert r.exit_code == 0, r.stderr


# ---------------------------------------------------------------- DDL lock timeout


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_ddl_lock_timeout_fails_fast_behind_a_busy_table(
    project: Project, make_db: Callable[..., str], kind: str
) -> None:
    """A migration stuck behind a long transaction gives up after ddl_lock_timeout.

    Without it, the ALTER would wait for the reader, and every query on the
    table would queue behind the ALTER: an outage.  The lock is held for the
    whole orch run, so a missing timeout makes orch hang (the subprocess
    timeout then fails the test).
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    core_url, pw = with_password(make_db, kind)
    urls = {"core": core_url, "analytics": make_db(kind)}
    project.set_urls("dev", urls)
    data = project.registry()
    data["settings"]["ddl_lock_timeout"] = 1
    project.write_registry(data)
    assert project.orch("upgrade", "core@d5d862ab0321").exit_code == 0

    holder = create_engine(urls["core"], poolclass=NullPool).connect()
    try:
        holder.execute(text("SELECT * FROM users"))  # an open transaction that read users
        t0 = time.monotonic()
        r = project.orch_proc("upgrade", "core", "--json", timeout=60)
        elapsed = time.monotonic() - t0
        assert r.returncode == 1, r.stderr
        doc = __import__("json").loads(r.stdout)
        core = doc["databases"][0]
        assert core["outcome"] == "failed"
        assert core["revision"] == "23231312a907"
        assert "lock" in core["error"].lower() and "timeout" in core["error"].lower()
        assert current(urls["core"]) == ["d5d862ab0321"]
        assert pw not in r.stdout + r.stderr
        print(f"{kind}: failed after {elapsed:.2f}s with: {core['error']}")
    finally:
        holder.rollback()
        holder.close()
    # the ALTER never ran: even on MariaDB the database is not dirty, and the
    # upgrade goes through once the reader is gone
    state = project.orch("status", "--json").json()["databases"][0]
    assert state["state"] == "behind", state
    assert project.orch("upgrade", "--all").exit_code == 0


# ---------------------------------------------------------------- hooks


def add_revision(
    project: Project, db: str, rev: str, down: str, upgrade: str, downgrade: str
) -> None:
    """Write a revision file into *db*'s directory of the project copy."""
    body = f'''"""test revision {rev}

Revision ID: {rev}
Revises: {down}
"""
import os
import time
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''
    (project.root / "migrations" / db / f"{rev}_test.py").write_text(body)


def hook_urls(
    kind: str, make_db: Callable[..., str], tmp_path: Path
) -> tuple[dict[str, str], str | None]:
    """URLs of core and analytics; on servers as users with a password (core's is returned)."""
    if kind == "sqlite":
        return urls_for("sqlite", lambda k: "", tmp_path), None
    core, pw = with_password(make_db, kind)
    analytics, _ = with_password(make_db, kind)
    return {"core": core, "analytics": analytics}, pw


HOOK_ECHO = (
    "printf '%s|%s|%s|%s|%s|%s|%s|%s|%s\\n' {db} {env} {host} {port} {user} {database} "
    '{timestamp} "$PGPASSWORD$MYSQL_PWD" "$ORCH_HOOK" >> hooks.log; '
    "tr '\\0' ' ' < /proc/$$/cmdline >> cmdlines.log; echo >> cmdlines.log"
)


def test_before_upgrade_hook_runs_once_per_database_with_placeholders(
    project: Project, backend: str, make_db: Callable[..., str], tmp_path: Path
) -> None:
    from sqlalchemy.engine import make_url

    urls, pw = hook_urls(backend, make_db, tmp_path)
    project.set_urls("dev", urls, hooks={"before_upgrade": HOOK_ECHO})
    r = project.orch("upgrade", "--all")
    assert r.exit_code == 0, r.stderr
    lines = (project.root / "hooks.log").read_text().splitlines()
    assert len(lines) == 2, lines  # once per database
    seen = {ln.split("|")[0]: ln.split("|") for ln in lines}
    assert set(seen) == {"core", "analytics"}
    stamps = {v[6] for v in seen.values()}
    assert len(stamps) == 1 and len(stamps.pop()) == len("20240101T000000Z")  # one per run
    for name, (_db, env, host, port, user, database, _ts, password, hook) in seen.items():
        u = make_url(urls[name])
        assert (env, hook) == ("dev", "before_upgrade")
        if backend == "sqlite":
            assert (host, port, user) == ("", "", "") and database == u.database
            assert password == ""
        else:
            assert host == u.host and port == str(u.port or {"postgresql": 5432}.get(backend, 3306))
            assert user == u.username and database == u.database
            assert password == u.password  # in PGPASSWORD / MYSQL_PWD
    # the hook ran before the migration: only this run's rows exist, the hook row first
    rows = log_rows(urls["core"])
    assert rows[0]["direction"] == "hook" and rows[0]["outcome"] == "ok"
    assert "before_upgrade" in rows[0]["detail"]
    assert [r["direction"] for r in rows[1:]] == ["upgrade"] * 4
    # no password on any command line, in any output, or in the audit log
    if pw is not None:
        assert pw not in (project.root / "cmdlines.log").read_text()
        assert pw not in r.stdout + r.stderr
        assert all(pw not in str(row) for row in rows)
    # nothing to do: no hook (a backup of an unchanged database is waste)
    assert project.orch("upgrade", "--all").exit_code == 0
    assert len((project.root / "hooks.log").read_text().splitlines()) == 2


def test_failing_before_hook_stops_that_database_before_any_change(
    project: Project, backend: str, make_db: Callable[..., str], tmp_path: Path
) -> None:
    urls, pw = hook_urls(backend, make_db, tmp_path)
    fail_core = "test {db} != core || { echo 'no backup space' >&2; exit 7; }"
    hooks = {"before_upgrade": "echo checking {db}; " + fail_core}
    project.set_urls("dev", urls, hooks=hooks)
    r = project.orch("upgrade", "--all", "--json")
    assert r.exit_code == 1, r.stderr
    doc = r.json()
    core, analytics = doc["databases"]
    assert core["outcome"] == "failed" and "exit 7" in core["error"]
    assert "no backup space" in core["error"] and "nothing was changed" in core["error"]
    assert analytics["outcome"] == "skipped"
    assert current(urls["core"]) == [] and set(tables(urls["core"])) <= {"orch_log"}
    assert tables(urls["analytics"]) == []
    rows = log_rows(urls["core"])
    assert [(x["direction"], x["outcome"]) for x in rows] == [("hook", "failed")]
    assert "no backup space" in rows[0]["detail"]
    # a failed hook is not a half-applied migration: the database is not dirty
    project.set_urls("dev", urls, hooks={"before_upgrade": "true"})
    r = project.orch("upgrade", "--all")
    assert r.exit_code == 0, r.stderr
    assert current(urls["core"]) == [CORE_HEAD]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_hook_timeout_and_failing_after_hook(project: Project, prod: dict[str, str]) -> None:
    data = project.registry()
    data["settings"]["hook_timeout"] = 1
    data["environments"]["prod"] = {
        "urls": prod,
        "hooks": {"before_upgrade": "test {db} = core || sleep 30", "after_upgrade": "exit 3"},
    }
    project.write_registry(data)
    t0 = time.monotonic()
    r = project.orch("--env", "prod", "upgrade", "--all", "--json")
    assert time.monotonic() - t0 < 25, "the hook was not killed at its timeout"
    assert r.exit_code == 1
    core, analytics = r.json()["databases"]
    # core migrated, then its after_upgrade hook failed: the migration stays, the database fails
    assert core["outcome"] == "failed" and core["to"] == [CORE_HEAD]
    assert "after_upgrade hook failed (exit 3)" in core["error"]
    assert analytics["outcome"] == "skipped"
    data["environments"]["prod"]["hooks"] = {"before_upgrade": "sleep 30"}
    project.write_registry(data)
    r = project.orch("--env", "prod", "upgrade", "--all", "--json")
    analytics = r.json()["databases"][1]
    assert analytics["outcome"] == "failed" and "timed out after 1s" in analytics["error"]
    assert current(prod["analytics"]) == []


def test_unknown_hook_placeholder_is_a_registry_error(project: Project) -> None:
    data = project.registry()
    data["environments"]["dev"]["hooks"] = {"before_upgrade": "pg_dump {dbname} {password}"}
    project.write_registry(data)
    r = project.orch("status")
    assert r.exit_code == 2
    assert "environments.dev.hooks.before_upgrade" in r.stderr
    assert "{dbname}" in r.stderr and "{password}" in r.stderr


def test_reference_backup_hook_dumps_postgresql_for_real(
    project: Project, make_db: Callable[..., str], tmp_path: Path
) -> None:
    """The reference project's prod hook (pg_dump) against real PostgreSQL databases."""
    urls, pw = hook_urls("postgresql", make_db, tmp_path)
    hooks = project.registry()["environments"]["prod"]["hooks"]
    assert "pg_dump" in hooks["before_upgrade"]
    project.set_urls("prod", urls, protected=True, hooks=hooks)
    assert project.orch("--env", "prod", "upgrade", "core@d5d862ab0321", "--yes").exit_code == 0
    dumps = sorted((project.root / "backups").glob("core-prod-*.sql"))
    assert len(dumps) == 1
    first = dumps[0].read_text()
    assert "PostgreSQL database dump" in first and "public.users" not in first  # empty db
    time.sleep(1.1)  # {timestamp} has one-second resolution
    r = project.orch("--env", "prod", "upgrade", "--all", "--yes")
    assert r.exit_code == 0, r.stderr
    dumps = sorted((project.root / "backups").glob("core-prod-*.sql"))
    assert len(dumps) == 2
    before = dumps[-1].read_text()
    # taken before the upgrade: users exists, display_name (added by the upgrade) does not
    assert "CREATE TABLE public.users" in before and "display_name" not in before
    assert len(list((project.root / "backups").glob("analytics-prod-*.sql"))) == 1
    assert pw is not None and pw not in r.stdout + r.stderr


def test_mysqldump_hook_gets_the_password_from_mysql_pwd(
    project: Project, make_db: Callable[..., str], tmp_path: Path
) -> None:
    """MariaDB checks the password: the dump only works if MYSQL_PWD reached it."""
    urls, pw = hook_urls("mysql", make_db, tmp_path)
    hook = (
        "mkdir -p backups && mysqldump -h {host} -P {port} -u {user} {database} "
        "> backups/{db}-{env}-{timestamp}.sql"
    )
    project.set_urls("dev", urls, hooks={"before_upgrade": hook})
    assert project.orch("upgrade", "core@d5d862ab0321").exit_code == 0
    time.sleep(1.1)  # {timestamp} has one-second resolution
    r = project.orch("upgrade", "--all")
    assert r.exit_code == 0, r.stderr
    dumps = sorted((project.root / "backups").glob("core-dev-*.sql"))
    assert len(dumps) == 2
    assert "CREATE TABLE `users`" in dumps[-1].read_text()
    assert pw is not None and pw not in r.stdout + r.stderr


# ---------------------------------------------------------------- --on-failure rollback

# fails before any statement: nothing half-applied, on any backend
FAIL_UPGRADE = '    raise RuntimeError("boom: the backfill found bad rows")'
# fails after a DDL statement: on MySQL/MariaDB that part stays (the database is dirty)
FAIL_HALF_WAY = (
    '    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))\n'
    '    raise RuntimeError("boom: half-way")'
)


def test_on_failure_rollback_returns_every_changed_database_to_its_start(
    backend_project: Project, backend: str
) -> None:
    p = backend_project
    urls = dev_urls(p)
    assert p.orch("upgrade", "core@d5d862ab0321").exit_code == 0
    add_revision(p, "analytics", "badbadbad001", ANALYTICS_HEAD, FAIL_UPGRADE, "    pass")
    r = p.orch("upgrade", "--all", "--on-failure", "rollback", "--json")
    assert r.exit_code == 1, r.stderr
    doc = r.json()
    assert doc["on_failure"] == "rollback"
    core, analytics = doc["databases"]
    # what happened stays what happened ...
    assert core["outcome"] == "done" and core["applied"] == ["23231312a907", CORE_HEAD]
    assert analytics["outcome"] == "failed" and analytics["revision"] == "badbadbad001"
    assert len(analytics["applied"]) == 4
    # ... the rollback is reported beside it (from where the run left each database) ...
    assert analytics["rollback"]["outcome"] == "done" and analytics["rollback"]["to"] == []
    assert core["rollback"]["outcome"] == "done" and core["rollback"]["to"] == ["d5d862ab0321"]
    assert core["rollback"]["from"] == [CORE_HEAD]
    assert analytics["rollback"]["from"] == [ANALYTICS_HEAD]
    # ... and "to" is where each database is now
    assert core["to"] == ["d5d862ab0321"] and analytics["to"] == []
    assert current(urls["core"]) == ["d5d862ab0321"]
    assert current(urls["analytics"]) == []
    assert "display_name" not in str(tables(urls["core"]))
    assert {"events", "daily_rollups"}.isdisjoint(tables(urls["analytics"]))
    # one audit run: the upgrade and its rollback share the run id, rollback rows say so
    rows = [x for x in log_rows(urls["core"]) if x["direction"] != "hook"]
    assert len({x["run_id"] for x in rows[-4:]}) == 1
    assert [x["detail"] for x in rows if x["direction"] == "downgrade"] == ["rollback"] * 2


def test_without_rollback_databases_stay_at_their_last_good_revision(
    backend_project: Project,
) -> None:
    p = backend_project
    add_revision(p, "analytics", "badbadbad001", ANALYTICS_HEAD, FAIL_UPGRADE, "    pass")
    r = p.orch("upgrade", "--all", "--json")
    assert r.exit_code == 1
    core, analytics = r.json()["databases"]
    assert core["rollback"] is None and analytics["rollback"] is None
    assert core["to"] == [CORE_HEAD] and analytics["to"] == [ANALYTICS_HEAD]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_rollback_that_cannot_undo_is_reported(backend_project: Project) -> None:
    """An irreversible revision fails the rollback of its database; dependencies are skipped."""
    p = backend_project
    assert p.orch("upgrade", "--all").exit_code == 0
    add_revision(
        p,
        "analytics",
        "0e0e0e0e0001",
        ANALYTICS_HEAD,
        '    op.create_table("kept", sa.Column("id", sa.Integer, primary_key=True))',
        '    raise NotImplementedError("irreversible: data was merged")',
    )
    add_revision(p, "analytics", "badbadbad001", "0e0e0e0e0001", FAIL_UPGRADE, "    pass")
    add_revision(
        p,
        "core",
        "c0c0c0c0c001",
        CORE_HEAD,
        '    op.create_table("c_new", sa.Column("id", sa.Integer, primary_key=True))',
        '    op.drop_table("c_new")',
    )
    r = p.orch("upgrade", "--all", "--on-failure", "rollback")
    assert r.exit_code == 1
    assert "ROLLBACK" in r.stdout
    assert "analytics: rollback failed" in r.stderr and "irreversible" in r.stderr
    assert "core: rollback skipped" in r.stderr
    doc = p.orch("status", "--json").json()
    states = {d["name"]: d["current"] for d in doc["databases"]}
    assert states == {"core": ["c0c0c0c0c001"], "analytics": ["0e0e0e0e0001"]}


IRREVERSIBLE = '    raise NotImplementedError("irreversible: data was merged")'


def add_irreversible_pair(p: Project, first: str, second: str, down: str) -> None:
    """core gets *first* (its downgrade raises) and *second* on it (an ordinary one)."""
    add_revision(
        p,
        "core",
        first,
        down,
        f'    op.create_table("t_{first}", sa.Column("id", sa.Integer, primary_key=True))',
        IRREVERSIBLE,
    )
    add_revision(
        p,
        "core",
        second,
        first,
        f'    op.create_table("t_{second}", sa.Column("id", sa.Integer, primary_key=True))',
        f'    op.drop_table("t_{second}")',
    )


def test_a_rollback_that_fails_half_way_shows_where_the_database_is_and_why(
    backend_project: Project,
) -> None:
    """core's rollback undoes one revision, then hits an irreversible one.

    The row must claim neither that core is still at the head the upgrade
    reached nor that it is back at its start: TO (``to``, and the rollback
    entry's ``to``) is where the rollback stopped, and DETAIL names the
    revision that stopped it and the error.
    """
    p = backend_project
    urls = dev_urls(p)
    assert p.orch("upgrade", "core").exit_code == 0
    assert p.orch("upgrade", "analytics@a32a37093757").exit_code == 0
    add_irreversible_pair(p, "c0c0c0c0c001", "c0c0c0c0c002", CORE_HEAD)
    add_revision(p, "analytics", "badbadbad001", ANALYTICS_HEAD, FAIL_UPGRADE, "    pass")
    r = p.orch("upgrade", "--all", "--on-failure", "rollback", "--json")
    assert r.exit_code == 1, r.stderr
    doc = r.json()
    core, analytics = doc["databases"]
    assert core["outcome"] == "done" and core["applied"] == ["c0c0c0c0c001", "c0c0c0c0c002"]
    rb = core["rollback"]
    assert rb["outcome"] == "failed" and rb["revision"] == "c0c0c0c0c001"
    assert "irreversible" in rb["error"]
    assert rb["applied"] == ["c0c0c0c0c002"]
    assert rb["from"] == ["c0c0c0c0c002"]
    assert rb["to"] == core["to"] == ["c0c0c0c0c001"]
    assert current(urls["core"]) == ["c0c0c0c0c001"]
    assert analytics["outcome"] == "failed" and analytics["rollback"]["outcome"] == "done"
    assert analytics["to"] == analytics["rollback"]["to"] == ["a32a37093757"]
    assert current(urls["analytics"]) == ["a32a37093757"]
    assert "core rollback failed" in doc["error"]

    # the table: core now starts at c0c0c0c0c001 and its rollback stops at c0c0c0c0c003
    add_irreversible_pair(p, "c0c0c0c0c003", "c0c0c0c0c004", "c0c0c0c0c002")
    r = p.orch("upgrade", "--all", "--on-failure", "rollback")
    assert r.exit_code == 1, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:6] == ["DATABASE", "OUTCOME", "FROM", "TO", "ROLLBACK", "STEPS"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["core"].split()[:6] == [
        "core",
        "done",
        "c0c0c0c0c001",
        "c0c0c0c0c003",
        "failed",
        "3",
    ]
    assert "rollback failed at c0c0c0c0c003: " in rows["core"]
    assert "irreversible: data was merged" in rows["core"]
    assert rows["analytics"].split()[:5] == [
        "analytics",
        "failed",
        "a32a37093757",
        "a32a37093757",
        "done",
    ]
    assert current(urls["core"]) == ["c0c0c0c0c003"]
    assert "core: rollback failed at c0c0c0c0c003" in r.stderr


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_rollback_refused_before_it_runs_still_says_where_the_database_is(
    backend_project: Project,
) -> None:
    """core started at two heads (no single downgrade target): refused, at the run's end."""
    p = backend_project
    for rev in ("b1b1b1b1b001", "b2b2b2b2b002"):
        add_revision(p, "core", rev, CORE_HEAD, "    pass", "    pass")
    assert p.orch("upgrade", "core").exit_code == 0
    add_revision(p, "core", "b3b3b3b3b003", "b1b1b1b1b001", "    pass", "    pass")
    add_revision(p, "analytics", "badbadbad001", ANALYTICS_HEAD, FAIL_UPGRADE, "    pass")
    r = p.orch("upgrade", "--all", "--on-failure", "rollback", "--json")
    assert r.exit_code == 1, r.stderr
    core, analytics = r.json()["databases"]
    rb = core["rollback"]
    assert rb["outcome"] == "refused" and "several heads" in rb["error"]
    assert sorted(rb["from"]) == sorted(rb["to"]) == sorted(core["to"])
    assert sorted(core["to"]) == ["b2b2b2b2b002", "b3b3b3b3b003"]
    assert analytics["rollback"]["outcome"] == "done" and analytics["to"] == []
    add_revision(p, "core", "b4b4b4b4b004", "b2b2b2b2b002", "    pass", "    pass")
    r = p.orch("upgrade", "--all", "--on-failure", "rollback")
    assert r.exit_code == 1, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("core "))
    assert sorted(row.split()[3].split(",")) == ["b3b3b3b3b003", "b4b4b4b4b004"]
    assert row.split()[4] == "refused"
    assert "rollback refused: it started at several heads" in row
    assert "core: rollback refused: it started at several heads" in r.stderr


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_dependency_of_a_database_the_rollback_refuses_stays_where_the_run_left_it(
    backend_project: Project,
) -> None:
    """analytics cannot be rolled back (it started at two heads), so core is not either.

    The rollback goes dependents first; downgrading core under an analytics
    that stays at its new revisions would break ``depends_on``.  A third,
    independent database fails the run.  Before, core was rolled back
    underneath analytics while the docs said it was skipped.
    """
    p = backend_project
    for rev in ("a1a1a1a1a001", "a2a2a2a2a002"):
        add_revision(p, "analytics", rev, ANALYTICS_HEAD, "    pass", "    pass")
    assert p.orch("upgrade", "--all").exit_code == 0
    add_revision(p, "analytics", "a3a3a3a3a003", "a1a1a1a1a001", "    pass", "    pass")
    add_revision(p, "core", "c9c9c9c9c009", CORE_HEAD, "    pass", "    pass")
    data = p.registry()
    data["databases"]["billing"] = {}
    data["environments"]["dev"]["urls"]["billing"] = "sqlite:///var/dev/billing.db"
    p.write_registry(data)
    (p.root / "migrations" / "billing").mkdir()
    add_revision(p, "billing", "b0b0b0b0b001", "None", FAIL_UPGRADE, "    pass")
    path = p.root / "migrations" / "billing" / "b0b0b0b0b001_test.py"
    path.write_text(path.read_text().replace('down_revision = "None"', "down_revision = None"))
    r = p.orch("upgrade", "--all", "--on-failure", "rollback", "--json")
    assert r.exit_code == 1, r.stderr
    dbs = {d["name"]: d for d in r.json()["databases"]}
    assert dbs["billing"]["outcome"] == "failed"
    assert dbs["analytics"]["rollback"]["outcome"] == "refused"
    assert "several heads" in dbs["analytics"]["rollback"]["error"]
    core_rb = dbs["core"]["rollback"]
    assert core_rb["outcome"] == "skipped", core_rb
    assert "analytics cannot be rolled back" in core_rb["error"]
    assert dbs["core"]["to"] == core_rb["to"] == ["c9c9c9c9c009"]
    assert current(p.url("core")) == ["c9c9c9c9c009"]


def test_rollback_reports_a_dirty_database_and_leaves_its_dependencies(
    project: Project, make_db: Callable[..., str]
) -> None:
    """MariaDB cannot roll DDL back: the half-applied database refuses to be rolled back.

    core is then left alone (skipped), because downgrading a dependency
    under a dependent that did not move back breaks the dependency order.
    """
    urls = {"core": make_db("mysql"), "analytics": make_db("mysql")}
    project.set_urls("dev", urls)
    assert project.orch("upgrade", "core@d5d862ab0321").exit_code == 0
    add_revision(project, "analytics", "badbadbad001", ANALYTICS_HEAD, FAIL_HALF_WAY, "    pass")
    r = project.orch("upgrade", "--all", "--on-failure", "rollback", "--json")
    assert r.exit_code == 1
    core, analytics = r.json()["databases"]
    assert analytics["outcome"] == "failed"
    assert (
        analytics["rollback"]["outcome"] == "refused" and "dirty" in analytics["rollback"]["error"]
    )
    assert core["rollback"]["outcome"] == "skipped"
    assert current(urls["core"]) == [CORE_HEAD]
    # where each one is now, whatever its rollback did
    assert analytics["to"] == analytics["rollback"]["to"] == [ANALYTICS_HEAD]
    assert core["to"] == core["rollback"]["to"] == [CORE_HEAD]


# ---------------------------------------------------------------- downgrade --on-failure rollback


@pytest.mark.parametrize("on_failure", ["stop", "rollback"])
def test_a_downgrade_that_fails_half_way_is_rolled_back_up_to_where_it_started(
    backend_project: Project, on_failure: str
) -> None:
    """analytics goes to base; core undoes one revision, then hits an irreversible one.

    Revision by revision, each undone revision committed: without a
    rollback both stay where they stopped (analytics at base, core at the
    irreversible revision).  With ``--on-failure rollback`` both go back
    up to their start, dependencies first, in the same audit run.
    """
    p = backend_project
    urls = dev_urls(p)
    add_irreversible_pair(p, "c0c0c0c0c001", "c0c0c0c0c002", CORE_HEAD)
    assert p.orch("upgrade", "--all").exit_code == 0
    r = p.orch(
        "downgrade", "analytics@base", "core@d5d862ab0321", "--on-failure", on_failure, "--json"
    )
    assert r.exit_code == 1, r.stderr
    doc = r.json()
    assert doc["command"] == "downgrade" and doc["on_failure"] == on_failure
    analytics, core = doc["databases"]
    assert analytics["outcome"] == "done" and len(analytics["applied"]) == 4
    assert core["outcome"] == "failed" and core["revision"] == "c0c0c0c0c001"
    assert core["applied"] == ["c0c0c0c0c002"] and "irreversible" in core["error"]
    if on_failure == "stop":
        assert core["rollback"] is None and analytics["rollback"] is None
        assert core["to"] == ["c0c0c0c0c001"] and analytics["to"] == []
        assert current(urls["core"]) == ["c0c0c0c0c001"] and current(urls["analytics"]) == []
        assert "t_c0c0c0c0c002" not in tables(urls["core"])
        return
    assert core["rollback"]["outcome"] == "done"
    assert core["rollback"]["from"] == ["c0c0c0c0c001"]
    assert core["rollback"]["applied"] == ["c0c0c0c0c002"]
    assert core["to"] == core["rollback"]["to"] == ["c0c0c0c0c002"]
    assert analytics["rollback"]["outcome"] == "done"
    assert analytics["rollback"]["from"] == []
    assert analytics["to"] == analytics["rollback"]["to"] == [ANALYTICS_HEAD]
    assert current(urls["core"]) == ["c0c0c0c0c002"]
    assert current(urls["analytics"]) == [ANALYTICS_HEAD]
    assert "t_c0c0c0c0c002" in tables(urls["core"])
    assert {"events", "daily_rollups"} <= set(tables(urls["analytics"]))
    # one audit run: the downgrade and the upgrade that undid it, marked "rollback"
    rows = [x for x in log_rows(urls["core"]) if x["direction"] != "hook"]
    run = [x for x in rows if x["run_id"] == rows[-1]["run_id"]]
    assert [(x["direction"], x["revision"], x["outcome"]) for x in run] == [
        ("downgrade", "c0c0c0c0c002", "ok"),
        ("downgrade", "c0c0c0c0c001", "failed"),
        ("upgrade", "c0c0c0c0c002", "ok"),
    ]
    assert ["rollback" in (x["detail"] or "") for x in run] == [False, False, True]
    rows = log_rows(urls["analytics"])
    assert [
        (x["direction"], "rollback" in (x["detail"] or ""))
        for x in rows
        if x["run_id"] == run[0]["run_id"]
    ] == [("downgrade", False)] * 4 + [("upgrade", True)] * 4


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_downgrade_rollback_goes_dependencies_first_and_back_to_several_heads(
    backend_project: Project,
) -> None:
    """analytics started at two heads: the rollback returns it to both, after core.

    The first run: core's rollback works, and analytics goes back up to
    exactly its two heads.  The second: core's rollback fails, so
    analytics, which depends on it, is not upgraded over it (``skipped``),
    and each row says where the database is and why.
    """
    p = backend_project
    urls = dev_urls(p)
    add_irreversible_pair(p, "c0c0c0c0c001", "c0c0c0c0c002", CORE_HEAD)
    for rev in ("a1a1a1a1a001", "a2a2a2a2a002"):
        add_revision(
            p,
            "analytics",
            rev,
            ANALYTICS_HEAD,
            f'    op.create_table("t_{rev}", sa.Column("id", sa.Integer, primary_key=True))',
            f'    op.drop_table("t_{rev}")',
        )
    assert p.orch("upgrade", "--all").exit_code == 0
    heads = ["a1a1a1a1a001", "a2a2a2a2a002"]
    assert current(urls["analytics"]) == heads
    args = ("downgrade", "analytics@3ac111ed6cf1", "core@d5d862ab0321", "--force")
    r = p.orch(*args, "--on-failure", "rollback", "--json")
    assert r.exit_code == 1, r.stderr
    analytics, core = r.json()["databases"]
    assert analytics["outcome"] == "done" and len(analytics["applied"]) == 3
    assert core["outcome"] == "failed" and core["rollback"]["outcome"] == "done"
    assert analytics["rollback"]["outcome"] == "done"
    assert sorted(analytics["to"]) == sorted(analytics["rollback"]["to"]) == heads
    assert current(urls["analytics"]) == heads
    assert {"t_a1a1a1a1a001", "t_a2a2a2a2a002"} <= set(tables(urls["analytics"]))
    assert current(urls["core"]) == ["c0c0c0c0c002"]

    # now core's way back up fails: its top revision cannot be applied again
    add_revision(
        p,
        "core",
        "c0c0c0c0c002",
        "c0c0c0c0c001",
        '    raise RuntimeError("boom: cannot redo")',
        '    op.drop_table("t_c0c0c0c0c002")',
    )
    r = p.orch(*args, "--on-failure", "rollback")
    assert r.exit_code == 1, r.stderr
    assert "ROLLBACK" in r.stdout.splitlines()[0]
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
    assert rows["core"].split()[:5] == [
        "core",
        "failed",
        "c0c0c0c0c002",
        "c0c0c0c0c001",
        "failed",
    ]
    assert "rollback failed at c0c0c0c0c002: " in rows["core"] and "cannot redo" in rows["core"]
    assert rows["analytics"].split()[:5] == [
        "analytics",
        "done",
        "a1a1a1a1a001,a2a2a2a2a002",
        "3ac111ed6cf1",
        "skipped",
    ]
    assert "rollback skipped: core failed" in rows["analytics"]
    assert current(urls["core"]) == ["c0c0c0c0c001"]
    assert current(urls["analytics"]) == ["3ac111ed6cf1"]


# ---------------------------------------------------------------- graceful stop

SLOW = """    op.create_table("slow_done", sa.Column("id", sa.Integer, primary_key=True))
    mark = os.environ.get("ORCH_TEST_MARK")
    if mark:  # only in the run under test: say "in flight", then take a while
        Path(mark).touch()
        if op.get_bind().dialect.name == "postgresql":
            op.execute("SELECT pg_sleep(2)")
        else:
            time.sleep(2)"""
SLOW_REV, NEXT_REV = "5103c0ffee01", "5103c0ffee02"


def start_slow_run(p: Project, tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """``orch upgrade --all`` in a subprocess; returns once the slow revision is running."""
    add_revision(p, "core", SLOW_REV, CORE_HEAD, SLOW, '    op.drop_table("slow_done")')
    add_revision(
        p,
        "core",
        NEXT_REV,
        SLOW_REV,
        '    op.create_table("next_done", sa.Column("id", sa.Integer, primary_key=True))',
        '    op.drop_table("next_done")',
    )
    mark = tmp_path / "slow.mark"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orch", "upgrade", "--all", *args],
        cwd=p.root,
        env={**os.environ, "ORCH_TEST_MARK": str(mark), "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the slow revision never started"
        time.sleep(0.02)
    return proc, mark


@pytest.mark.parametrize(
    ("sig", "code", "jobs"), [(signal.SIGINT, 130, "1"), (signal.SIGTERM, 143, "2")]
)
def test_signal_finishes_the_revision_in_flight_and_starts_nothing_new(
    backend_project: Project, tmp_path: Path, sig: int, code: int, jobs: str
) -> None:
    p = backend_project
    urls = dev_urls(p)
    proc, _ = start_slow_run(p, tmp_path, "--jobs", jobs, "--json")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    doc = __import__("json").loads(out)
    assert doc["interrupted"] == signal.Signals(sig).name and doc["exit_code"] == code
    core, analytics = doc["databases"]
    # the revision in flight finished and committed; the next one never started
    assert current(urls["core"]) == [SLOW_REV]
    assert "slow_done" in tables(urls["core"]) and "next_done" not in tables(urls["core"])
    assert core["outcome"] == "failed"
    assert f"interrupted by {signal.Signals(sig).name}" in core["error"]
    assert core["applied"][-1] == SLOW_REV
    assert analytics["outcome"] == "skipped" and current(urls["analytics"]) == []
    # locks were released and nothing is dirty: the next run simply finishes
    status = {d["name"]: d["state"] for d in p.orch("status", "--json").json()["databases"]}
    assert status == {"core": "behind", "analytics": "behind"}
    r = p.orch("upgrade", "--all", "--lock-timeout", "2")
    assert r.exit_code == 0, r.stderr
    assert current(urls["core"]) == [NEXT_REV]


def test_stop_after_the_next_row_was_written_ahead_deletes_that_row(
    backend_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row of revision N+1 is committed with revision N; a stop landing just then removes it.

    The signal is delivered at the one instant this can happen: right after
    orch wrote core's second revision's ``running`` row inside the first
    revision's transaction, before that transaction commits (the stop
    request is what the SIGTERM handler makes).  The first revision stays
    applied, the second never starts, and the log holds no ``running`` row
    that a later run would report as an interrupted (or, on MySQL, dirty)
    revision.
    """
    from orch import stopping
    from orch.store import audit

    p = backend_project
    urls = dev_urls(p)
    real = audit.AuditLog.finish_and_start

    def finish_and_start(self: audit.AuditLog, *a: Any, **kw: Any) -> int:
        row = real(self, *a, **kw)  # the next revision's row, in this revision's transaction
        if self.db == "core":
            assert stopping.CURRENT is not None
            stopping.CURRENT.request(signal.SIGTERM)
        return row

    monkeypatch.setattr(audit.AuditLog, "finish_and_start", finish_and_start)
    r = p.orch("upgrade", "core", "--jobs", "1", "--json")
    assert r.exit_code == 143, r.stderr
    (core,) = r.json()["databases"]
    assert core["applied"] == [CORE_FIRST]
    assert "interrupted by SIGTERM: stopped at " + CORE_FIRST in core["error"]
    assert current(urls["core"]) == [CORE_FIRST]
    rows = [(x["revision"], x["outcome"]) for x in log_rows(urls["core"])]
    assert rows == [(CORE_FIRST, "ok")]
    # nothing interrupted, nothing dirty: the next run simply goes on
    monkeypatch.undo()
    r = p.orch("upgrade", "core")
    assert r.exit_code == 0, r.stderr
    assert "interrupted" not in r.stdout + r.stderr
    assert current(urls["core"]) == [CORE_HEAD]
    rows = [(x["revision"], x["outcome"]) for x in log_rows(urls["core"])]
    assert [o for _, o in rows] == ["ok"] * 4 and rows[0][0] == CORE_FIRST


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_second_signal_aborts_and_rolls_back_the_revision_in_flight(
    project: Project, make_db: Callable[..., str], tmp_path: Path, jobs: str
) -> None:
    urls = {"core": make_db("postgresql"), "analytics": make_db("postgresql")}
    project.set_urls("dev", urls)
    proc, _ = start_slow_run(project, tmp_path, "--jobs", jobs)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "aborted and rolled back" in out + err
    assert current(urls["core"]) == [CORE_HEAD]
    assert "slow_done" not in tables(urls["core"])
    assert project.orch("upgrade", "--all").exit_code == 0


def test_sigint_with_rollback_policy_returns_to_the_start(
    project: Project, make_db: Callable[..., str], tmp_path: Path
) -> None:
    """An interrupted run counts as not successful: --on-failure rollback undoes it."""
    urls = {"core": make_db("postgresql"), "analytics": make_db("postgresql")}
    project.set_urls("dev", urls)
    assert project.orch("upgrade", "core@d5d862ab0321").exit_code == 0
    proc, _ = start_slow_run(project, tmp_path, "--on-failure", "rollback", "--json")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    core = __import__("json").loads(out)["databases"][0]
    assert core["rollback"]["outcome"] == "done"
    assert current(urls["core"]) == ["d5d862ab0321"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_signal_during_a_hook_lets_the_hook_finish_and_migrates_nothing(
    project: Project, prod: dict[str, str]
) -> None:
    """The hook (a backup) is not cut off by the Ctrl-C; the migration after it never starts."""
    data = project.registry()
    data["environments"]["prod"] = {
        "urls": prod,
        # inline run: the hook's parent is orch itself
        "hooks": {"before_upgrade": "kill -INT $PPID; sleep 0.5; echo finished > hook.done"},
    }
    project.write_registry(data)
    r = project.orch_proc("--env", "prod", "upgrade", "--all", "--jobs", "1", "--json")
    assert r.returncode == 130, r.stderr
    assert (project.root / "hook.done").read_text().strip() == "finished"
    core, analytics = __import__("json").loads(r.stdout)["databases"]
    assert core["outcome"] == "skipped" and "interrupted by SIGINT" in core["error"]
    assert analytics["outcome"] == "skipped"
    assert current(prod["core"]) == []
    rows = log_rows(prod["core"])
    assert [(x["direction"], x["outcome"]) for x in rows] == [("hook", "ok")]


def wait_for_lock_file(pid: int, lock: Path, timeout: float = 60) -> None:
    """Until a process of *pid*'s tree has *lock* open: it is then waiting for (or holds) it.

    A fixed sleep raced with a slow start on a loaded machine (the signal came
    before the run reached the lock, exit -15 instead of 143).
    """
    target = str(lock.resolve())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tree = {pid}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) in tree:
                tree.add(int(stat.parent.name))
        for p in tree:
            try:
                fds = list(Path(f"/proc/{p}/fd").iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(fd) == target:
                        return
                except OSError:
                    continue
        time.sleep(0.05)
    raise AssertionError(f"no process of {pid} opened {lock} within {timeout} s")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_signal_while_waiting_for_a_lock_stops_waiting(
    project: Project, prod: dict[str, str], tmp_path: Path
) -> None:
    """A run stopping does not sit out the lock timeout first."""
    import fcntl

    from orch.config.registry import sqlite_path
    from orch.store.db import lock_path

    data = project.registry()
    data["environments"]["prod"] = {"urls": prod}
    project.write_registry(data)
    core_file = sqlite_path(prod["core"])
    assert core_file is not None
    lp = lock_path(core_file)
    lp.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another orch is migrating core
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orch", "--env", "prod", "upgrade", "--all", "--json"],
            cwd=project.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_lock_file(proc.pid, lp)  # started and waiting (lock_timeout is 60 s)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        os.close(fd)
    assert proc.returncode == 143, err
    core, analytics = __import__("json").loads(out)["databases"]
    assert core["outcome"] == "skipped" and "interrupted by SIGTERM" in core["error"]
    assert analytics["outcome"] == "skipped"
