"""The test infrastructure's own promises, checked by running pytest in a subprocess.

- every database (and login) a test creates is dropped after it;
- an unreachable server skips its tests with a how-to outside CI, and fails
  them under ``CI=true`` (CI must never pass by skipping).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, _admin_engine, closed_port, require_server

PROBE = """
import os
from pathlib import Path


def test_probe(make_db, backend):
    if backend == "sqlite":
        return
    url = make_db(backend, password="pw_probe_123")
    Path(os.environ["ORCH_T_OUT"], backend).write_text(url)
"""


def _pytest(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(textwrap.dedent(PROBE))
    full = {**os.environ, **env}
    full["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "tests"), str(REPO / "src"), full.get("PYTHONPATH", "")]
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "conftest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_probe.py"),
            *args,
        ],
        cwd=tmp_path,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _exists(kind: str, database: str, user: str) -> tuple[bool, bool]:
    from sqlalchemy import text

    with _admin_engine(kind).connect() as c:
        if kind == "postgresql":
            db = c.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": database})
            role = c.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": user})
        else:
            db = c.execute(
                text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :n"),
                {"n": database},
            )
            role = c.execute(text("SELECT 1 FROM mysql.user WHERE user = :n"), {"n": user})
        return db.first() is not None, role.first() is not None


def test_databases_and_logins_are_dropped_after_each_test(tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    for kind in ("postgresql", "mysql"):
        require_server(kind)
    out = tmp_path / "out"
    out.mkdir()
    r = _pytest(tmp_path, {"ORCH_T_OUT": str(out)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed" in r.stdout
    for kind in ("postgresql", "mysql"):
        url = make_url((out / kind).read_text())
        assert url.database and url.database.startswith("orch_t_")
        assert url.username and url.password == "pw_probe_123"
        assert _exists(kind, url.database, url.username) == (False, False)


@pytest.mark.parametrize("ci", ["", "true"])
def test_unreachable_server_skips_outside_ci_and_fails_under_ci(tmp_path: Path, ci: str) -> None:
    port = closed_port()
    env = {
        "ORCH_TEST_POSTGRES_URL": f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
        "ORCH_TEST_MYSQL_URL": f"mysql+pymysql://root@127.0.0.1:{port}/mysql",
        "ORCH_T_OUT": str(tmp_path),
        "CI": ci,
    }
    r = _pytest(tmp_path, env)
    if ci:
        assert r.returncode == 1
        assert "1 passed, 2 errors" in r.stdout  # sqlite still runs; a fixture failure
        assert "CI=true: postgresql server not reachable" in r.stdout
    else:
        assert r.returncode == 0, r.stdout
        assert "1 passed, 2 skipped" in r.stdout
        assert "set ORCH_TEST_POSTGRES_URL=" in r.stdout
        assert "set ORCH_TEST_MYSQL_URL=" in r.stdout
