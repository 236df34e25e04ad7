"""No hook template runs a value as shell code; hook output never drives the terminal.

Placeholder values are substituted as single ``shlex.quote`` words, which
are literals only where the shell reads the placeholder as a plain word.
Templates that put one inside quotes, backticks, ``$(...)``, a
here-document, a comment or after a backslash are registry errors.  The
hostile values come from where users and attackers can put them: a SQLite
file name, a database user name on a real server.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Project

# a value that runs "touch" in every shell context a template could put it in
HOSTILE = "x'\"; touch PWNED1; $(touch PWNED2) `touch PWNED3` \n touch PWNED4 #"
HOOK = "environments.dev.hooks.before_upgrade"


def _pwned(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("PWNED*"))


@pytest.mark.parametrize(
    ("template", "where"),
    [
        ("echo '{database}' > out.txt", "inside single quotes"),
        ('echo "{database}" > out.txt', "inside double quotes"),
        ('pg_dump -f "backups/{database}.sql" {db}', "inside double quotes"),
        ("echo `basename {database}` > out.txt", "inside backticks"),
        ("echo $(basename {database}) > out.txt", "inside $(...)"),
        ('echo "$(basename {database})" > out.txt', "inside $(...)"),
        ("sh -c 'echo {database}' > out.txt", "inside single quotes"),
        ("echo $'{database}' > out.txt", "inside $'...' quotes"),
        ("echo ${NAME:-{database}} > out.txt", "inside ${...}"),
        ("echo \\{database} > out.txt", "right after a backslash"),
        ("echo start # {database}\ntrue", "in a comment"),
        ("cat > out.txt <<EOF\n{database}\nEOF", "in a here-document"),
        ("cat > out.txt <<-'EOF'\n\t{database}\n\tEOF", "in a here-document"),
    ],
)
def test_a_placeholder_the_shell_would_not_read_as_a_word_is_a_registry_error(
    project: Project, tmp_path: Path, template: str, where: str
) -> None:
    """Refused before anything runs (exit 2), naming the hook, the placeholder and why.

    The database file name would run four commands in these templates if
    they were run; none is.
    """
    db_dir = tmp_path / "dbs"
    db_dir.mkdir()
    core = f"sqlite:///{db_dir / (HOSTILE + '.db')}"
    project.set_urls(
        "dev",
        {"core": core, "analytics": f"sqlite:///{db_dir / 'a.db'}"},
        hooks={"before_upgrade": template},
    )
    for args in (["upgrade", "--all"], ["status"], ["plan", "--json"]):
        r = project.orch(*args)
        assert r.exit_code == 2, (args, r.stdout, r.stderr)
    r = project.orch("upgrade", "--all")
    assert HOOK in r.stderr and "{database}" in r.stderr and where in r.stderr, r.stderr
    assert "bare word" in r.stderr
    doc = project.orch("--json", "upgrade", "--all").json()
    assert doc["exit_code"] == 2 and HOOK in doc["error"]
    assert _pwned(project.root) == [] and _pwned(tmp_path) == []
    assert not (project.root / "out.txt").exists()


def test_plain_placeholders_and_other_quoting_still_work(project: Project, tmp_path: Path) -> None:
    """Quotes elsewhere in a template are fine; the hostile file name arrives as one literal."""
    db_dir = tmp_path / "dbs"
    db_dir.mkdir()
    path = db_dir / (HOSTILE + ".db")
    template = (
        "printf '%s|%s|%s\\n' {db} {database} \"$ORCH_HOOK\" >> out.txt; "
        "awk '{print $1}' out.txt > /dev/null; test -n \"$(echo ok)\" && echo {env}>>out.txt"
    )
    project.set_urls(
        "dev",
        {"core": f"sqlite:///{path}", "analytics": f"sqlite:///{db_dir / 'a.db'}"},
        hooks={"before_upgrade": template},
    )
    r = project.orch("upgrade", "--all")
    assert r.exit_code == 0, r.stderr
    text = (project.root / "out.txt").read_text()
    assert f"core|{path}|before_upgrade\ndev\n" in text  # once per database, appended
    assert _pwned(project.root) == [] and _pwned(tmp_path) == []


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_hostile_user_name_on_a_real_server_stays_a_literal(
    project: Project, make_db: Callable[..., str], kind: str
) -> None:
    """A login named with quotes, ``$(...)``, backticks and ``;``: the hook gets it verbatim."""
    user = "o'q\"; $(touch PWNED1) `touch PWNED2`;" + uuid.uuid4().hex[:6]
    url = make_db(kind, password="Pw" + uuid.uuid4().hex[:10], user=user)
    hook = (
        "test {db} = core || exit 0; "
        "printf '%s\\n' {user} > who.txt; echo {user} {database} >> who.txt"
    )
    sqlite = make_db("sqlite")
    project.set_urls("dev", {"core": url, "analytics": sqlite}, hooks={"before_upgrade": hook})
    r = project.orch("upgrade", "--all")
    assert r.exit_code == 0, r.stderr
    first, second = (project.root / "who.txt").read_text().splitlines()
    assert first == user and second.startswith(user + " orch_t_")
    assert _pwned(project.root) == []


def test_terminal_controls_in_hook_output_are_shown_escaped(
    backend_project: Project, backend: str
) -> None:
    """Clear-screen, window-title and carriage-return sequences: escaped in summary, log, row."""
    p = backend_project
    data = p.registry()
    data["environments"]["dev"]["hooks"] = {
        "before_upgrade": "printf 'start\\033[2J\\033]0;owned\\007\\rback\\n'; "
        "printf 'last \\033[31mred\\033[0m\\n' >&2; exit 4"
    }
    p.write_registry(data)
    r = p.orch("upgrade", "--all")
    assert r.exit_code == 1
    assert "\x1b" not in r.stderr + r.stdout and "\r" not in r.stderr + r.stdout
    assert "start\\x1b[2J\\x1b]0;owned\\x07\\x0dback" in r.stderr
    assert "before_upgrade hook failed (exit 4): last \\x1b[31mred\\x1b[0m" in r.stderr
    log = p.orch("log")
    assert "\x1b" not in log.stdout + log.stderr
    assert "last \\x1b[31mred\\x1b[0m" in log.stdout
    entries = p.orch("log", "--json").json()["entries"]
    hook_row = next(e for e in entries if e["direction"] == "hook")
    assert "\x1b" not in str(hook_row) and "start\\x1b[2J" in hook_row["detail"]
