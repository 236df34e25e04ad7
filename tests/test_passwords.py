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
from urllib.parse import quote, quote_plus, unquote

import pytest

from conftest import Project, Result, closed_port

SERVERS = ["postgresql", "mysql"]


def _secret() -> str:
    # distinctive, long enough for the free-text redactor, URL-safe
    return "Pw" + uuid.uuid4().hex[:18]


def _special_secret() -> tuple[str, tuple[str, str]]:
    """A password with every URL-special ASCII character between two distinctive halves."""
    a, b = _halves()
    return a + " @:/%#?\t'\"\\" + b, (a, b)


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
    (pw_core, core_halves), (pw_an, an_halves) = _special_secret(), _special_secret()
    urls = {"core": make_db(kind, password=pw_core), "analytics": make_db(kind, password=pw_an)}
    if style == "query":  # ?password=... instead of user:password@
        for name, url in urls.items():
            u = make_url(url)
            urls[name] = (
                u.set(password=None).render_as_string(hide_password=False)
                + f"?password={quote_plus(str(u.password))}"
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
        ["log"],
        ["log", "--json"],
        ["history", "core"],
        ["check", "-v"],
        ["upgrade", "--all", "--sql"],
    ]
    for args in commands:
        r = p.orch(*args)
        assert r.exit_code in (0, 1), (args, _all(r))
        _assert_hidden(r, *core_halves, *an_halves)
    # it really ran with those passwords, and the URLs were shown masked
    doc = p.orch("status", "--json").json()
    assert all("***" in d["url"] for d in doc["databases"])
    assert doc["databases"][0]["current"] == ["bd61b77cf8aa"]
    # nothing stored in the audit table carries a password either
    with p.connect("core") as conn:
        rows = conn.execute(text("SELECT * FROM orch_log")).all()
    assert rows
    assert core_halves[0] not in repr(rows) and core_halves[1] not in repr(rows)


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


# ---------------------------------------------------------------- any character in a password

# each is put between two distinctive halves: a half that shows is a leak,
# whatever the form (raw, percent-encoded, decoded, escaped) around it
SPECIALS = {
    "at": "@",
    "colon": ":",
    "slash": "/",
    "percent": "%41",  # a valid escape: the raw URL means "A" to SQLAlchemy
    "hash": "#",
    "question": "?",
    "space": " ",
    "tab": "\t",
    "squote": "'",
    "dquote": '"',
    "backslash": "\\",
    "nonascii": "ä€",
}


def _halves() -> tuple[str, str]:
    return "Pa" + uuid.uuid4().hex[:14], "Pb" + uuid.uuid4().hex[:14]


def _assert_no_halves(text: str, *halves: str) -> None:
    for h in halves:
        assert h not in text, f"password (part {h}) leaked:\n{text}"


def _admin_rows(kind: str, database: str) -> str:
    """Every orch_log row of *database*, read as the admin (repr: one string to search)."""
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.pool import NullPool

    from conftest import _admin_url, _with_database

    eng = create_engine(_with_database(_admin_url(kind), database), poolclass=NullPool)
    try:
        with eng.connect() as c:
            if not inspect(c).has_table("orch_log"):
                return ""
            return repr(c.execute(text("SELECT * FROM orch_log")).all())
    finally:
        eng.dispose()


def _raw_url(url: str, password: str, port: int | None = None) -> str:
    """*url* with *password* written into it as is (not percent-encoded)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return f"{u.drivername}://{u.username}:{password}@{u.host}:{port or u.port}/{u.database}"


@pytest.mark.parametrize("kind", SERVERS)
@pytest.mark.parametrize("special", list(SPECIALS), ids=list(SPECIALS))
def test_any_character_in_a_password_never_shows(
    project: Project, make_db: Callable[..., str], kind: str, special: str
) -> None:
    """A real login whose password holds *special*, written raw and percent-encoded.

    Percent-encoded, it logs in (MariaDB checks: exit 0 proves the password
    reached the server intact, a non-ASCII one too: orch sends it as UTF-8).
    Raw, it works where SQLAlchemy reads it the same way; a raw ``@`` is a
    registry error (SQLAlchemy would take the rest for the host and the driver
    would print it).  A wrong password, a closed port, the driver's
    refusals, ``-v`` tracebacks, hook output and the audit rows: no part of
    it anywhere.
    """
    from sqlalchemy.engine import make_url

    a, b = _halves()
    pw = a + SPECIALS[special] + b
    encoded = make_db(kind, password=pw)
    database = encoded.rsplit("/", 1)[1]
    sqlite = make_db("sqlite")
    hooks = {"after_downgrade": 'echo "pw=$PGPASSWORD$MYSQL_PWD" >&2; exit 3'}
    p = project

    def run(*args: str) -> Result:
        r = p.orch(*args)
        _assert_no_halves(_all(r), a, b)
        return r

    p.set_urls("dev", {"core": encoded, "analytics": sqlite}, hooks=hooks)
    r = run("-v", "upgrade", "--all")
    assert r.exit_code == 0, _all(r)
    run("status", "--json")
    run("log")
    run("log", "--json")
    # the hook prints the password it got (MYSQL_PWD / PGPASSWORD) and fails
    r = run("-v", "downgrade", "core@-1", "--force")
    assert r.exit_code == 1 and "pw=***" in r.stderr, _all(r)
    assert "after_downgrade hook failed (exit 3): pw=***" in _all(run("log"))
    _assert_no_halves(_admin_rows(kind, database), a, b)

    p.set_urls("dev", {"core": _raw_url(encoded, pw), "analytics": sqlite})
    r = run("-v", "upgrade", "--all")
    if special == "at":
        assert r.exit_code == 2, _all(r)
        assert "percent-encode" in r.stderr and "***@127.0.0.1" in r.stderr
        assert "Traceback" in r.stderr
    else:
        assert r.exit_code in (0, 1), _all(r)
    run("status", "--json")
    run("-v", "status")

    wrong = a + SPECIALS[special] + "x" + b
    wrong_url = make_url(encoded).set(password=wrong).render_as_string(hide_password=False)
    p.set_urls("dev", {"core": wrong_url, "analytics": sqlite})
    r = run("status", "--json")
    if kind == "mysql":
        assert r.json()["databases"][0]["state"] == "unreachable", _all(r)
    p.set_urls("dev", {"core": _raw_url(encoded, wrong, closed_port()), "analytics": sqlite})
    r = run("-v", "upgrade", "--all", "--json")
    assert r.exit_code == (2 if special == "at" else 1), _all(r)
    _assert_no_halves(_admin_rows(kind, database), a, b)


@pytest.mark.parametrize(
    ("typo", "shown"),
    [
        ("postgresql+psycopg//app:{pw}@127.0.0.1/core", "***@127.0.0.1"),  # no colon
        ("postgresql+psycopg:/app:{pw}@127.0.0.1/core", "***@127.0.0.1"),  # one slash
        ("app:{pw}@127.0.0.1/core", "***@127.0.0.1"),  # no scheme
        ("postgresql+psycopg://app:{pw}@{pw}@127.0.0.1/core", "***@127.0.0.1"),  # a raw '@'
        ("postgresql+psycopg://app/x:{pw}@127.0.0.1/core", "***@127.0.0.1"),  # '/' in the user
        ("postgresql+psycopg://app:{pw} @127.0.0.1:notaport/core", "***@127.0.0.1"),
        ("postgresql+psycopg://app:{pw}/core", "postgresql+psycopg://app:***"),  # no @host
    ],
)
def test_malformed_urls_are_reported_without_their_userinfo(
    project: Project, typo: str, shown: str
) -> None:
    """A URL that does not parse cleanly: a registry error (exit 2) that shows no password."""
    a, b = _halves()
    pw = a + "?# " + b
    url = typo.format(pw=pw)
    project.set_urls("dev", {"core": url, "analytics": "sqlite:///x.db"})
    for args in (["status"], ["-v", "status"], ["--json", "-v", "upgrade", "--all"]):
        r = project.orch(*args)
        assert r.exit_code == 2, _all(r)
        _assert_no_halves(_all(r), a, b)
        assert "environments.dev.urls.core" in _all(r)
        assert shown in _all(r)


def test_a_registry_that_is_not_yaml_hides_its_passwords_with_v(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyYAML's own parser (no libyaml) quotes the broken line, cut, in its error.

    The error comes before any URL is read, and a cut password is not one the
    redactor could know: -v shows orch's error (file, line, column, problem),
    not PyYAML's text.
    """
    import yaml

    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    a, b = _halves()
    project.registry_path.write_text(
        "version: 1\nenvironments:\n  dev:\n    urls:\n"
        f"      core: postgresql+psycopg://app:{a} {b}@127.0.0.1/core: [\n"
    )
    r = project.orch("-v", "status")
    assert r.exit_code == 2 and "malformed YAML" in r.stderr, _all(r)
    assert "databases.yaml:5:" in r.stderr and "Traceback" in r.stderr
    _assert_no_halves(_all(r), a, b)


def test_every_reading_of_a_url_is_redacted() -> None:
    """The secrets come from the URL text: every reading, in the forms drivers echo."""
    from orch.redact import Redactor, redact_url

    a, b = _halves()
    cases = {  # URL -> (how it is shown, the password as a driver would get it)
        f"postgresql+psycopg://u:{a}@{b}@db.example/x": (
            "postgresql+psycopg://***@db.example/x",
            f"{a}@{b}",
        ),
        f"mysql+pymysql://u:{a} {b}@h/x": ("mysql+pymysql://u:***@h/x", f"{a} {b}"),
        f"mysql+pymysql://u@h/x?password={a}%20{b}&ssl=1": (
            "mysql+pymysql://u@h/x?password=***&ssl=1",
            f"{a} {b}",
        ),
        f"postgresql+psycopg//u:{a}#{b}@h/x": ("postgresql+psycopg//***@h/x", f"{a}#{b}"),
        f"u:{a}:{b}@h/x": ("u:***@h/x", f"{a}:{b}"),
        f"mysql+pymysql://me@tenant:{a}/{b}@h/x": (  # '@' in a user name: read right
            "mysql+pymysql://me@tenant:***@h/x",
            f"{a}/{b}",
        ),
        f"mysql+pymysql://u:{a}%25%22{b}@h/x": ("mysql+pymysql://u:***@h/x", f'{a}%"{b}'),
    }
    for url, (shown, password) in cases.items():
        assert redact_url(url) == shown
        r = Redactor()
        r.add_url(url)
        for echo in (
            password,
            quote(password, safe=""),
            unquote(password),
            json.dumps(password)[1:-1],
            repr(password)[1:-1],
        ):
            assert r(f"server said: {echo}!") == "server said: ***!", (url, echo)


def test_redaction_is_linear_on_large_hook_output() -> None:
    """150 kB of output with no white space (the old patterns took seconds to minutes)."""
    import time

    from orch.redact import REDACTOR
    from orch.run.hooks import shown_output

    a, b = _halves()
    REDACTOR.add_url(f"postgresql+psycopg://u:{a}{b}@h/x")
    text = "x" * 75_000 + f" {a}{b} " + "ab://c:" * 11_000
    t0 = time.perf_counter()
    scrubbed = REDACTOR(text)
    took = time.perf_counter() - t0
    print(f"redact of {len(text)} characters: {took:.3f}s")
    assert a not in scrubbed and len(scrubbed) < len(text)
    out = shown_output(text.encode() * 3)  # only the tail is scrubbed and kept
    assert out.startswith("...") and len(out) == 4003
