"""MariaDB/MySQL logins whose password is not ASCII, through every MySQL driver.

The server hashes the password as the client that set it sent it: UTF-8
bytes (the ``mysql`` client, and the tests' admin connection, which is
utf8mb4).  PyMySQL, aiomysql and asyncmy encode a ``str`` password as
Latin-1 on their own, so without orch's fix ``pä`` is refused ("Access
denied") and ``p€x``/``密码`` cannot even be encoded.  Real users on the real
server, created per test; the password is written raw and percent-encoded.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

from conftest import Project

CORE_HEAD = "bd61b77cf8aa"
ANALYTICS_HEAD = "ce37b359c1da"
PASSWORDS = {"latin1": "pä", "euro": "p€x", "cjk": "密码"}


def _url(make_db: Callable[..., str], password: str, driver: str, *, encoded: bool) -> str:
    """A new database owned by a new user with *password*, as a ``mysql+driver`` URL.

    *encoded*: the password percent-encoded (``p%E2%82%ACx``); otherwise the
    characters as they are (``p€x``), which SQLAlchemy's URL parser keeps.
    """
    u = make_url(make_db("mysql", password=password))
    pw = quote(password, safe="") if encoded else password
    url = f"mysql+{driver}://{u.username}:{pw}@{u.host}:{u.port or 3306}/{u.database}"
    assert make_url(url).password == password  # the URL really carries this password
    return url


@pytest.mark.parametrize("driver", ["pymysql", "aiomysql", "asyncmy"])
@pytest.mark.parametrize("password", PASSWORDS.values(), ids=PASSWORDS.keys())
def test_non_ascii_password_logs_in(
    project: Project, make_db: Callable[..., str], driver: str, password: str
) -> None:
    # a distinctive tail so "never in output" is meaningful for a 2-character password
    password = password + uuid.uuid4().hex[:10]
    p = project
    p.set_urls(
        "dev",
        {
            "core": _url(make_db, password, driver, encoded=False),
            "analytics": _url(make_db, password, driver, encoded=True),
        },
    )
    up = p.orch("upgrade", "--all")
    assert up.exit_code == 0, up.stdout + up.stderr
    st = p.orch("status", "--json")
    assert st.exit_code == 0, st.stdout + st.stderr
    dbs = {d["name"]: d for d in st.json()["databases"]}
    assert dbs["core"]["state"] == "up_to_date" and dbs["core"]["current"] == [CORE_HEAD]
    assert dbs["analytics"]["state"] == "up_to_date"
    assert dbs["analytics"]["current"] == [ANALYTICS_HEAD]
    for r in (up, st, p.orch("status")):
        text = r.stdout + r.stderr
        for shown in (password, quote(password, safe=""), password.encode("utf-8").hex()):
            assert shown not in text, text
