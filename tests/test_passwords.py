"""No password in any output, error, JSON document or stored row.

Real logins with real passwords (a PostgreSQL role, a MariaDB user, created
per test and dropped after): a correct password must never show, and neither
must a wrong one in the server's refusal.  Every command that can print a URL
is run, human and ``--json``, with ``-v``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest

from conftest import Project, Result, closed_port

SERVERS = ["postgresql", "mysql"]


def _secret() -> str:
    # distinctive, long enough for the free-text redactor, URL-safe
    return "Pw" + uuid.uuid4().hex[:18]


def _all(r: Result) -> str:
    return r.stdout + r.stderr


def _assert_hidden(r: Result, *secrets: str) -> None:
    text = _all(r)
    for s in secrets:
        assert s not in text, f"password leaked:\n{text}"




@pytest.mark.parametrize("kind", SERVERS)
@pytest.mark.parametrize("style", ["userinfo", "query"])
def test_correct_password_never_shows(
    project: Project, make_db: Callable[..., str], kind: str, style: str
) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    p = project
    pw_core, pw_an = _secret(), _secret()
    urls = {"core": make_db(kind, password=pw_core), "analytics": make_db(kind, password=pw_an)}
    if style == "query":  # ?password=... instead of user:password@
        for name, url in urls.items():
            u = make_url(url)
            urls[name] = (
                u.set(password=None).render_as_string(hide_password=False)
                + f"?password={u.password}"
            )
    p.set_urls("dev", urls)
    commands = [
        ["status"],
        ["status", "--json"],
        ["status", "--all-envs"],
        ["status", "--all-envs", "--json"],
        ["plan"],
        ["plan", "--json"],
        ["-v", "upgrade", "core@+1"],
        ["upgrade", "--all", "--json"],
        ["-v", "upgrade", "--all"],
        ["downgrade", "analytics@-1", "-v"],
        ["downgrade", "analytics@base", "--json"],
        ["stamp", "analytics@head", "-v"],
        ["stamp", "analytics@base", "--json"],
        ["status", "-v"],
    ]
    for args in commands:
        r = p.orch(*args)
        assert r.exit_code in (0, 1), (args, _all(r))
        _assert_hidden(r, pw_core, pw_an)
    # it really ran with those passwords, and the URLs were shown masked
    doc = p.orch("status", "--json").json()
    assert all("***" in d["url"] for d in doc["databases"])
    assert doc["databases"][0]["current"] == ["bd61b77cf8aa"]
    # nothing stored in the audit table carries a password either
    with p.connect("core") as conn:
        rows = conn.execute(text("SELECT * FROM orch_log")).all()
    assert rows
    assert pw_core not in repr(rows)


def test_wrong_password_on_mariadb(project: Project, make_db: Callable[..., str]) -> None:
    """MariaDB refuses a wrong password; the refusal and orch's report do not echo it."""
    from sqlalchemy.engine import make_url

    p = project
    right = _secret()
    wrong = _secret()
    url = make_url(make_db("mysql", password=right))
    bad = url.set(password=wrong).render_as_string(hide_password=False)
    p.set_urls("dev", {"core": bad, "analytics": bad.replace(url.database or "", "other_db")})
    st = p.orch("status", "--json")
    _assert_hidden(st, right, wrong)
    core = st.json()["databases"][0]
    assert core["state"] == "unreachable"
    assert "Access denied" in core["error"]
    for args in (["-v", "upgrade", "--all"], ["upgrade", "--all", "--json"], ["-v", "plan"]):
        r = p.orch(*args)
        assert r.exit_code == 1, (args, _all(r))
        _assert_hidden(r, right, wrong)
        assert "Access denied" in _all(r)


def test_refused_login_on_postgresql(project: Project, make_db: Callable[..., str]) -> None:
    """The local PostgreSQL trusts 127.0.0.1, so a wrong password is not checked there.

    A login the server refuses (no such role) with a password in the URL is
    the refusal we can provoke: the password must not be in it.
    """
    from sqlalchemy.engine import make_url

    p = project
    pw = _secret()
    url = make_url(make_db("postgresql"))
    bad = url.set(username="orch_nobody_" + uuid.uuid4().hex[:8], password=pw)
    bad_url = bad.render_as_string(hide_password=False)
    p.set_urls("dev", {"core": bad_url, "analytics": bad_url})
    data = p.registry()
    data["databases"]["analytics"]["version_table"] = "analytics_version"
    p.write_registry(data)
    for args in (["status", "--json"], ["-v", "upgrade", "--all"], ["stamp", "core@head", "-v"]):
        r = p.orch(*args)
        _assert_hidden(r, pw)
        assert "does not exist" in _all(r), _all(r)


def test_upgrade_against_unreachable_host_with_password(project: Project) -> None:
    """The console script: non-zero exit, one line per database, no traceback, no password."""
    p = project
    pw = _secret()
    port = closed_port()
    p.set_urls(
        "dev",
        {
            "core": f"postgresql+psycopg://app:{pw}@127.0.0.1:{port}/core",
            "analytics": f"mysql+pymysql://app:{pw}@127.0.0.1:{port}/analytics",
        },
    )
    for args in (["upgrade", "--all"], ["upgrade", "--all", "--json"], ["upgrade", "core"]):
        r = p.orch_proc(*args, timeout=60)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert pw not in r.stdout + r.stderr
        assert "Traceback" not in r.stdout + r.stderr
        assert "refused" in (r.stdout + r.stderr).lower()
    doc = json.loads(p.orch_proc("upgrade", "--all", "--json", timeout=60).stdout)
    outcomes = {d["name"]: d["outcome"] for d in doc["databases"]}
    assert outcomes == {"core": "failed", "analytics": "skipped"}


def test_registry_errors_with_traceback_hide_the_password(project: Project) -> None:
    """-v prints the traceback of a registry error; the URL in it is masked."""
    p = project
    pw = _secret()
    p.set_urls(
        "dev",
        {
            "core": f"postgresql+psycopg://app:{pw}@127.0.0.1:notaport/core",
            "analytics": f"mysql://app:{pw}@127.0.0.1/analytics",
        },
    )
    for args in (["-v", "status"], ["-v", "upgrade", "--all"], ["--json", "-v", "plan"]):
        r = p.orch(*args)
        assert r.exit_code == 2, _all(r)
        _assert_hidden(r, pw)
        assert "Traceback" in r.stderr
        assert "notaport" in _all(r) and "mysql+pymysql://" in _all(r)


def test_json_hides_passwords_that_json_would_escape() -> None:
    """A password with a quote, a backslash and non-ASCII letters, echoed in a message."""
    import click.testing

    from orch.cli import emit_json
    from orch.redact import REDACTOR

    pw = 'Zä"q\\ü' + uuid.uuid4().hex[:6]
    REDACTOR.add(pw)
    runner = click.testing.CliRunner()
    with runner.isolation() as (out, _err, *_):
        emit_json({"error": f"server said: bad password {pw}", "nested": [{"x": pw}]})
        text = out.getvalue().decode()
    doc = json.loads(text)
    assert pw not in json.dumps(doc, ensure_ascii=False)
    assert doc["error"] == "server said: bad password ***"
    assert doc["nested"] == [{"x": "***"}]
