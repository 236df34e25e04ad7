"""Registry and command-line values that used to crash or hang: one line, exit 2, nothing lost.

Each case gets the one line (file and key path for the registry), exit 2, no
traceback, and leaves every database as it was.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Project, Result
from orch.config.registry import MAX_SECONDS, MAX_YAML_VALUES, parse_registry
from orch.errors import RegistryError

MINIMAL = """
version: 1
default_env: dev
databases:
  core: {}
environments:
  dev:
    urls:
      core: sqlite:///var/core.db
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "databases.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path) -> list[str]:
    """Every problem the registry at *path* has, as the one-line strings orch prints."""
    with pytest.raises(RegistryError) as info:
        parse_registry(path)
    return [str(p) for p in info.value.problems]


def one_line_exit_2(r: Result, *needles: str) -> None:
    assert (r.exit_code, r.stdout) == (2, ""), r
    assert r.stderr.startswith("orch: error: "), r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


# ---------------------------------------------------------------- timeouts


@pytest.mark.parametrize(
    "key", ["lock_timeout", "connect_timeout", "ddl_lock_timeout", "hook_timeout"]
)
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "-1", str(MAX_SECONDS + 1), "1e999"])
def test_timeouts_must_be_finite_and_bounded(tmp_path: Path, key: str, value: str) -> None:
    path = write(tmp_path, MINIMAL + f"settings: {{{key}: {value}}}\n")
    (problem,) = problems_of(path)
    assert problem.startswith(
        f"{path}: settings.{key}: must be a number of seconds from 0 to "
        f"{MAX_SECONDS} (one week), got "
    )


def test_timeouts_in_range_are_taken(tmp_path: Path) -> None:
    text = MINIMAL + f"settings: {{lock_timeout: {MAX_SECONDS}, connect_timeout: 0.5}}"
    reg = parse_registry(write(tmp_path, text))
    assert (reg.settings.lock_timeout, reg.settings.connect_timeout) == (MAX_SECONDS, 0.5)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "-1", str(MAX_SECONDS + 1)])
@pytest.mark.parametrize(
    "command", [["upgrade", "--all"], ["downgrade", "core@base"], ["stamp", "core@base"]]
)
def test_lock_timeout_option_must_be_finite(
    project: Project, command: list[str], value: str
) -> None:
    """``--lock-timeout nan`` used to spin a CPU forever waiting for a busy lock."""
    r = project.orch(*command, "--lock-timeout", value)
    one_line_exit_2(r, "--lock-timeout", f"from 0 to {MAX_SECONDS}")
    assert not (project.root / "var").exists()


def test_nan_lock_timeout_in_the_registry_stops_before_any_work(project: Project) -> None:
    text = project.registry_path.read_text().replace("lock_timeout: 60", "lock_timeout: .nan")
    project.registry_path.write_text(text)
    r = project.orch("upgrade", "--all")
    one_line_exit_2(r, "databases.yaml: settings.lock_timeout: must be a number of seconds")
    assert not (project.root / "var").exists()


# ---------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("value", "kind"), [("[dev]", "list"), ("{dev: 1}", "mapping"), ("3", "number")]
)
def test_default_env_of_the_wrong_type(tmp_path: Path, value: str, kind: str) -> None:
    path = write(tmp_path, MINIMAL.replace("default_env: dev", f"default_env: {value}"))
    assert problems_of(path) == [f"{path}: default_env: must be an environment name, got a {kind}"]


# ---------------------------------------------------------------- YAML itself


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    """A second ``core:`` URL used to win silently; a second ``prod:`` dropped ``protected``."""
    path = write(
        tmp_path,
        """\
        databases:
          core: {}
        environments:
          prod:
            protected: true
            urls:
              core: sqlite:///var/core.db
              core: sqlite:///var/other.db
          prod:
            urls: {core: sqlite:///var/core.db}
        """,
    )
    assert problems_of(path) == [
        f"{path}:9: environments.prod: duplicate key (first on line 4); "
        "YAML would silently keep only the last one",
        f"{path}:8: environments.prod.urls.core: duplicate key (first on line 7); "
        "YAML would silently keep only the last one",
    ]


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    reg = parse_registry(
        write(
            tmp_path,
            """\
            databases:
              core: &defaults {version_table: core_version, branch: core}
              analytics: {<<: *defaults, branch: analytics}
            environments:
              dev:
                urls: {core: sqlite:///var/core.db, analytics: sqlite:///var/a.db}
            """,
        )
    )
    assert reg.databases["analytics"].branch == "analytics"
    assert reg.databases["analytics"].version_table == "core_version"


def alias_bomb(levels: int) -> str:
    """Each anchor repeats the previous one nine times: 9**levels strings from a few lines."""
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines).replace(f"a{levels - 1}: ", "prepend_sys_path: ", 1) + "\n"


def test_an_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + alias_bomb(12))  # 9**12: 282 billion strings
    started = time.perf_counter()
    (problem,) = problems_of(path)
    elapsed = time.perf_counter() - started
    assert f"expands to more than {MAX_YAML_VALUES:,} values through aliases" in problem
    assert problem.startswith(f"{path}:")
    assert elapsed < 5, elapsed  # measured: ~0.01 s; generous for a loaded machine


def test_aliases_within_the_budget_are_fine(tmp_path: Path) -> None:
    """300 databases sharing one anchored list of 1,000 patterns: 300,000 values, well in."""
    patterns = ", ".join(f"tmp_{i}_*" for i in range(1000))
    dbs = "\n".join(f"  db{i}: {{exclude_tables: *ex}}" for i in range(1, 300))
    text = f"databases:\n  db0: {{exclude_tables: &ex [{patterns}]}}\n{dbs}\n"
    reg = parse_registry(write(tmp_path, text))
    assert len(reg.databases) == 300
    assert len(reg.databases["db299"].exclude_tables) == 1000


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "prepend_sys_path: &p [*p]\n")
    (problem,) = problems_of(path)
    assert problem == (
        f"{path}:10: prepend_sys_path: a YAML alias refers to a node that contains it "
        "(a recursive structure)"
    )


def test_utf16_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """What Windows PowerShell's ``>`` writes; YAML parsers must accept it."""
    path = tmp_path / "databases.yaml"
    for encoding in ("utf-16", "utf-16-be", "utf-8-sig"):
        data = textwrap.dedent(MINIMAL).replace("core: {}", "core: {branch: café}")
        bom = "\ufeff" if encoding == "utf-16-be" else ""
        path.write_bytes((bom + data).encode(encoding))
        assert parse_registry(path).databases["core"].branch == "café", encoding


def test_a_file_that_is_not_utf8_is_one_line_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "databases.yaml"
    path.write_bytes((textwrap.dedent(MINIMAL) + "# café\n").encode("latin-1"))
    assert problems_of(path) == [f"{path}:10: not UTF-8 text (byte 0xe9); save the file as UTF-8"]
    path.write_bytes(textwrap.dedent(MINIMAL).lstrip().encode("utf-16-le"))  # no BOM
    assert problems_of(path) == [
        f"{path}:1: contains NUL bytes (UTF-16 without a byte order mark?); save it as UTF-8"
    ]


def test_registry_encoding_errors_on_the_command_line(project: Project) -> None:
    project.registry_path.write_bytes(
        project.registry_path.read_bytes() + "# café\n".encode("latin-1")
    )
    r = project.orch("upgrade", "--all")
    one_line_exit_2(r, "databases.yaml:", "not UTF-8 text (byte 0xe9)")
    assert not (project.root / "var").exists()


# ---------------------------------------------------------------- URLs and paths


def test_a_huge_sqlite_path_is_refused_at_once(tmp_path: Path) -> None:
    """300 kB of path used to take minutes to resolve."""
    url = "sqlite:///" + "a/" * 150_000 + "core.db"
    path = write(tmp_path, MINIMAL.replace("sqlite:///var/core.db", url))
    started = time.perf_counter()
    assert problems_of(path) == [
        f"{path}: environments.dev.urls.core: is {len(url):,} characters long; "
        "orch takes at most 4096"
    ]
    assert time.perf_counter() - started < 5


def test_a_huge_url_from_a_variable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orch.errors import UsageError

    monkeypatch.setenv("ORCH_T_HUGE", "sqlite:///" + "a/" * 150_000 + "core.db")
    text = MINIMAL.replace("sqlite:///var/core.db", "${ORCH_T_HUGE}")
    reg = parse_registry(write(tmp_path, text))
    with pytest.raises(UsageError, match=r"^environments\.dev\.urls\.core: the URL is 300,017 "):
        reg.targets("dev")


@pytest.mark.parametrize("key", ["prepend_sys_path", "databases.core.versions"])
def test_huge_paths_are_refused(tmp_path: Path, key: str) -> None:
    long = "a/" * 3000
    text = (
        MINIMAL + f"prepend_sys_path: [{long}]\n"
        if key == "prepend_sys_path"
        else MINIMAL.replace("core: {}", f"core: {{versions: {long}}}")
    )
    (problem,) = problems_of(write(tmp_path, text))
    assert f": {key}" in problem and "4096" in problem


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite+pysqlite:///:memory:",
        "sqlite:///:memory:?cache=shared",
        "sqlite:///file::memory:?cache=shared&uri=true",
        "sqlite:///file:core?mode=memory&cache=shared&uri=true",
    ],
)
def test_in_memory_sqlite_is_refused(tmp_path: Path, url: str) -> None:
    """Every connection gets a new empty database: a migration 'done' that keeps nothing."""
    path = write(tmp_path, MINIMAL.replace("sqlite:///var/core.db", f"'{url}'"))
    (problem,) = problems_of(path)
    assert problem.startswith(
        f"{path}: environments.dev.urls.core: an in-memory SQLite database: each connection "
    )


def test_in_memory_sqlite_from_a_variable_is_refused_on_use(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGING_CORE_URL", "sqlite:///:memory:")
    monkeypatch.setenv("STAGING_ANALYTICS_URL", "sqlite:///var/a.db")
    r = project.orch("upgrade", "--all", "--env", "staging")
    one_line_exit_2(r, "environments.staging.urls.core: an in-memory SQLite database")
    assert not (project.root / "var").exists()


def test_sqlite_file_uris_are_still_taken(tmp_path: Path) -> None:
    url = f"sqlite:///file:{tmp_path}/core.db?mode=rwc&uri=true"
    reg = parse_registry(write(tmp_path, MINIMAL.replace("sqlite:///var/core.db", f"'{url}'")))
    assert reg.targets("dev")[0].url == url


# ---------------------------------------------------------------- table names


@pytest.mark.parametrize("key", ["version_table", "version_table_schema"])
@pytest.mark.parametrize("name", ["my-versions", "1st", "a b", "x;drop", ""])
def test_table_names_must_be_plain_identifiers(tmp_path: Path, key: str, name: str) -> None:
    path = write(tmp_path, MINIMAL.replace("core: {}", f"core: {{{key}: '{name}'}}"))
    assert problems_of(path) == [
        f"{path}: databases.core.{key}: must be a plain "
        f"{'table' if key == 'version_table' else 'schema'} name "
        "(letters, digits and '_', not starting with a digit)"
    ]


def test_long_names_are_fine_on_sqlite(tmp_path: Path) -> None:
    name = "v" * 200
    text = MINIMAL.replace("core: {}", f"core: {{version_table: {name}}}")
    reg = parse_registry(write(tmp_path, text + f"settings: {{log_table: {name}}}\n"))
    assert reg.databases["core"].version_table == name


def _registry_with_names(
    project: Project, url: str, *, version_table: str, log_table: str = "orch_log"
) -> None:
    data = project.registry()
    data["databases"]["core"]["version_table"] = version_table
    data["settings"]["log_table"] = log_table
    data["environments"]["dev"]["urls"]["core"] = url
    project.write_registry(data)


LIMITS = {"postgresql": (63, "PostgreSQL"), "mysql": (64, "MySQL/MariaDB")}


@pytest.mark.parametrize("which", ["version_table", "log_table"])
@pytest.mark.parametrize("backend", ["postgresql", "mysql"])  # SQLite: no limit (see above)
def test_names_longer_than_the_server_takes_are_a_registry_error(
    project: Project, backend: str, make_db: Callable[..., str], which: str
) -> None:
    limit, server = LIMITS[backend]
    url = make_db(backend)
    # the version table's primary key is named <table>_pkc: 4 characters fewer for the table
    most = limit - 4 if which == "version_table" else limit
    long = "t" * (most + 1)
    if which == "version_table":
        _registry_with_names(project, url, version_table=long)
    else:
        _registry_with_names(project, url, version_table="alembic_version", log_table=long)
    r = project.orch("upgrade", "core")
    key = "databases.core.version_table" if which == "version_table" else "settings.log_table"
    one_line_exit_2(
        r,
        "databases.yaml: environments.dev.urls.core: ",
        f"{key} '{long}' is {most + 1} characters long (at most {most})",
        f"{server} takes identifiers of at most {limit}",
    )
    r = project.orch("status", "--json")
    assert r.exit_code == 2 and "at most" in json.loads(r.stdout)["error"]
    assert project.tables("core") == set()


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_names_at_the_server_limit_work(
    project: Project, backend: str, make_db: Callable[..., str]
) -> None:
    """The limits are the server's own: names of exactly that length migrate and read back."""
    limit, _server = LIMITS[backend]
    url = make_db(backend)
    version_table, log_table = "v" * (limit - 4), "l" * limit
    _registry_with_names(project, url, version_table=version_table, log_table=log_table)
    r = project.orch("upgrade", "core")
    assert r.exit_code == 0, r.stderr
    assert project.versions("core", table=version_table) != []
    assert log_table in project.tables("core")
    log = project.orch("log", "core", "--json")
    assert log.exit_code == 0 and len(log.json()["entries"]) == 4


# ---------------------------------------------------------------- alembic.ini and migrations/


def remove_migrations(p: Project) -> None:
    import shutil

    shutil.rmtree(p.root / "migrations")


def ini_without_section(p: Project) -> None:
    (p.root / "alembic.ini").write_text("garbage\n[alembic]\nscript_location = migrations\n")


def ini_bad_interpolation(p: Project) -> None:
    ini = p.root / "alembic.ini"
    ini.write_text(ini.read_text().replace("prepend_sys_path = .", "prepend_sys_path = %(nope)s"))


def ini_option_twice(p: Project) -> None:
    ini = p.root / "alembic.ini"
    ini.write_text(
        ini.read_text().replace(
            "path_separator = os", "path_separator = os\npath_separator = space"
        )
    )


def ini_not_utf8(p: Project) -> None:
    ini = p.root / "alembic.ini"
    ini.write_bytes(ini.read_bytes().replace(b"[alembic]", "[alembic]\n# café".encode("latin-1")))


BROKEN_PROJECT = [
    (
        remove_migrations,
        "migrations: the migrations directory (script_location of alembic.ini) "
        "does not exist; run 'orch init' to create it, or fix script_location",
    ),
    (
        ini_without_section,
        "alembic.ini:1: cannot read alembic.ini: 'garbage' comes before any [section] header",
    ),
    (
        ini_bad_interpolation,
        "alembic.ini: cannot read alembic.ini: Bad value substitution: option "
        "'prepend_sys_path' in section 'alembic' contains an interpolation key 'nope'",
    ),
    (
        ini_option_twice,
        "cannot read alembic.ini: option 'path_separator' is given twice in [alembic]",
    ),
    (ini_not_utf8, "alembic.ini: cannot read alembic.ini: not UTF-8 text"),
]


@pytest.mark.parametrize(
    ("breaker", "message"), BROKEN_PROJECT, ids=[b.__name__ for b, _m in BROKEN_PROJECT]
)
@pytest.mark.parametrize(
    "command",
    [
        ["upgrade", "--all"],
        ["upgrade", "--all", "--sql"],
        ["downgrade", "core@base"],
        ["stamp", "core@base"],
        ["revision", "core", "-m", "x"],
    ],
    ids=["upgrade", "sql", "downgrade", "stamp", "revision"],
)
def test_a_broken_project_is_one_line_and_exit_2(
    project: Project, breaker: Callable[[Project], None], message: str, command: list[str]
) -> None:
    """These were internal errors (Alembic's CommandError, configparser's traceback)."""
    before = sorted(str(p.relative_to(project.root)) for p in project.root.rglob("*"))
    breaker(project)
    r = project.orch(*command)
    one_line_exit_2(r, message)
    assert not (project.root / "var").exists()
    if breaker is not remove_migrations:  # nothing created, not even migrations/core
        after = sorted(str(p.relative_to(project.root)) for p in project.root.rglob("*"))
        assert after == before
    else:
        assert not (project.root / "migrations").exists()


def test_a_broken_project_stops_stamp_before_the_database(
    backend_project: Project,
) -> None:
    """Inline runs (stamp uses one job) used to fail per database with exit 1 after connecting."""
    assert backend_project.orch("upgrade", "--all").exit_code == 0
    ini_without_section(backend_project)
    r = backend_project.orch("stamp", "core@base", "--json")
    assert (r.exit_code, r.stderr) == (2, "")
    assert "alembic.ini:1: cannot read alembic.ini" in r.json()["error"]
    assert backend_project.versions("core") == ["bd61b77cf8aa"]


# ---------------------------------------------------------------- revision ids


@pytest.mark.parametrize("rev_id", ["head", "heads", "base", "current", "HEAD", "Base"])
@pytest.mark.parametrize("command", ["revision", "merge"])
def test_reserved_rev_ids_are_refused(project: Project, rev_id: str, command: str) -> None:
    """``--rev-id head`` was accepted; every later upgrade to head then meant the symbol."""
    args = [command, "core", "-m", "x", "--rev-id", rev_id]
    r = project.orch(*args)
    one_line_exit_2(
        r,
        f"--rev-id {rev_id!r}: base, current, head, heads are Alembic's symbols for "
        "revisions, not ids; choose another id",
    )
    assert not list((project.root / "migrations" / "core").glob(f"{rev_id}*"))


@pytest.mark.parametrize("rev_id", ["a-b", "a@b", "+1", "-1", "a:b", "a b", "../x", "x" * 33, ""])
def test_rev_ids_alembic_refuses_are_refused(project: Project, rev_id: str) -> None:
    r = project.orch("revision", "core", "-m", "x", "--rev-id", rev_id)
    one_line_exit_2(r, f"--rev-id {rev_id!r}: use letters, digits and '_' (at most 32 characters)")


def test_a_branch_label_as_rev_id_is_refused(project: Project) -> None:
    r = project.orch("revision", "core", "-m", "x", "--rev-id", "analytics")
    one_line_exit_2(r, "--rev-id 'analytics' is a branch label; choose another id")


def test_a_plain_rev_id_is_still_taken(project: Project) -> None:
    r = project.orch("revision", "core", "-m", "x", "--rev-id", "head_0001")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip().endswith("head_0001_x.py")


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("bd61-b77cf8aa", "contains '-'; Alembic refuses '@', '-', '+', ':' in revision ids"),
        ("bd61@b77cf8aa", "contains '@'; Alembic refuses"),
        (
            "head",
            "is one of Alembic's symbols (base, current, head, heads); it could never be "
            "named: rename it",
        ),
    ],
)
@pytest.mark.parametrize(
    "command",
    [
        ["upgrade", "--all"],
        ["status"],
        ["plan"],
        ["history", "core"],
        ["upgrade", "--all", "--sql"],
        ["revision", "core", "-m", "x"],
    ],
    ids=["upgrade", "status", "plan", "history", "sql", "revision"],
)
def test_a_revision_file_with_an_id_alembic_refuses_is_named(
    project: Project, bad: str, why: str, command: list[str]
) -> None:
    """Alembic's RevisionError named no file: an internal error."""
    path = project.root / "migrations" / "core" / "bd61b77cf8aa_backfill_users_display_name.py"
    path.write_text(path.read_text().replace("'bd61b77cf8aa'", f"'{bad}'"))
    r = project.orch(*command)
    one_line_exit_2(r, f"{path}: revision id '{bad}' {why}")
    assert not (project.root / "var").exists()


# ---------------------------------------------------------------- command-line values


def test_log_limit_is_bounded(project: Project) -> None:
    """``log --limit 10**30`` overflowed the SQL LIMIT (an internal error)."""
    r = project.orch("log", "--limit", str(10**30))
    one_line_exit_2(r, "Invalid value for '--limit'", "is not in the range 0<=x<=1000000")
    r = project.orch("log", "--limit", "1000000")
    assert r.exit_code == 0, r.stderr


def test_sql_out_into_a_file_is_refused_before_rendering(project: Project) -> None:
    blocker = project.root / "blocker"
    blocker.write_text("not a directory\n")
    r = project.orch("upgrade", "--all", "--sql", "--out", str(blocker / "sql"))
    one_line_exit_2(r, f"--out {blocker / 'sql'}: {blocker} is not a directory")
    assert not (project.root / "var").exists()


def run_unprivileged(project: Project, *args: str) -> Result:
    """Run orch in a subprocess that file permissions apply to, even when the tests run as root.

    Root ignores permission bits; ``setpriv`` drops the capabilities that let it
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so a mode-0555 directory is read-only
    to it as to anyone else.  Other users need nothing.
    """
    import os
    import shutil
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "orch", *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            why = "running as root without setpriv (util-linux): cannot make a directory read-only"
            if os.environ.get("CI") == "true":
                pytest.fail(why)  # CI must never pass by skipping
            pytest.skip(why + "; install util-linux's setpriv or run as another user")
        cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]
    proc = subprocess.run(cmd, cwd=project.root, capture_output=True, text=True)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    made: list[Path] = []

    def make(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o555)
        made.append(path)
        return path

    yield make
    for path in made:
        path.chmod(0o755)


def test_sql_out_into_a_read_only_directory_is_one_line(
    project: Project, read_only_dir: Callable[[Path], Path]
) -> None:
    locked = read_only_dir(project.root / "locked")
    r = run_unprivileged(project, "upgrade", "--all", "--sql", "--out", "locked/sql")
    assert (r.exit_code, r.stdout) == (2, ""), r
    assert r.stderr == f"orch: error: --out locked/sql: {locked} is not writable by this user\n"
    assert list(locked.iterdir()) == []


def test_a_read_only_sqlite_directory_says_so(
    project: Project, read_only_dir: Callable[[Path], Path]
) -> None:
    """It was reported as 'Permission denied (MySQL error 13)'."""
    assert project.orch("upgrade", "--all").exit_code == 0
    dev = project.root / "var" / "dev"
    for lock in dev.glob("*.orch-lock"):
        lock.unlink()
    read_only_dir(dev)
    r = run_unprivileged(project, "downgrade", "core@-1", "--force")
    assert r.exit_code == 1, r
    assert "MySQL" not in r.stderr + r.stdout
    assert (
        f"core: failed: cannot create the migration lock file {dev / 'core.db.orch-lock'}: "
        "Permission denied; its directory must be writable by this user"
    ) in r.stderr
    assert project.versions("core") == ["bd61b77cf8aa"]


def test_a_read_only_sqlite_file_says_so(
    project: Project, read_only_dir: Callable[[Path], Path]
) -> None:
    assert project.orch("upgrade", "--all").exit_code == 0
    dev = project.root / "var" / "dev"
    (dev / "core.db").chmod(0o444)
    try:
        r = run_unprivileged(project, "downgrade", "core@-1", "--force")
    finally:
        (dev / "core.db").chmod(0o644)
    assert r.exit_code == 1, r
    assert (
        "core: failed: attempt to write a readonly database (the SQLite file, or the directory "
        "it is in, is not writable by this user)"
    ) in r.stderr
    assert project.versions("core") == ["bd61b77cf8aa"]


def test_a_missing_sqlite_directory_that_cannot_be_created_says_so(
    project: Project, read_only_dir: Callable[[Path], Path]
) -> None:
    read_only_dir(project.root / "var")
    r = run_unprivileged(project, "upgrade", "core")
    assert r.exit_code == 1, r
    dev = project.root / "var" / "dev"
    assert (
        f"core: failed: unreachable: cannot create the directory of the SQLite file "
        f"{dev / 'core.db'}: Permission denied: {dev}\n"
    ) in r.stderr


def test_os_errors_are_not_called_mysql_errors() -> None:
    import errno

    from orch.store.db import describe_error

    exc = PermissionError(errno.EACCES, "Permission denied", "/srv/app/var/core.db.orch-lock")
    assert describe_error(exc) == "Permission denied: /srv/app/var/core.db.orch-lock"
    assert describe_error(FileNotFoundError(errno.ENOENT, "No such file or directory")) == (
        "No such file or directory"
    )


# ---------------------------------------------------------------- --jobs


def test_jobs_are_capped_at_the_databases_and_at_the_maximum(project: Project) -> None:
    from orch.config.registry import load_registry
    from orch.run.execute import MAX_JOBS, effective_jobs

    reg = load_registry(project.registry_path)
    assert effective_jobs(reg, 8, 3) == (3, None)
    assert effective_jobs(reg, 1, 150) == (1, None)
    jobs, note = effective_jobs(reg, 10_000, 150)
    assert jobs == MAX_JOBS == 32
    assert note == (
        "--jobs 10000 capped at 32: each database running holds its own server connections"
    )
    assert effective_jobs(reg, 10_000, 3)[0] == 3


def test_jobs_over_the_maximum_say_so_and_run(
    project: Project, make_db: Callable[..., str]
) -> None:
    """On PostgreSQL, a few databases: the cap and its note (150 databases are not needed)."""
    urls = {name: make_db("postgresql") for name in ("core", "analytics")}
    project.set_urls("dev", urls)
    r = project.orch("upgrade", "--all", "--jobs", "10000")
    assert r.exit_code == 0, r.stderr
    assert (
        "orch: note: --jobs 10000 capped at 32: each database running holds its own server "
        "connections\n"
    ) in r.stderr
    assert project.versions("core") == ["bd61b77cf8aa"]
    assert project.versions("analytics") == ["ce37b359c1da"]
    data = project.registry()
    data["settings"]["jobs"] = 500
    project.write_registry(data)
    r = project.orch("downgrade", "analytics@base", "core@base", "--json")
    assert r.exit_code == 0, r.stderr
    assert "orch: note: settings.jobs 500 capped at 32" in r.stderr
    assert [d["outcome"] for d in r.json()["databases"]] == ["done", "done"]


def test_registry_value_errors_never_show_the_password(project: Project) -> None:
    secret = "Secret-pw-9"
    url = f"postgresql+psycopg://orch:{secret}@127.0.0.1:1/core"
    _registry_with_names(project, url, version_table="v" * 64)
    for args in (["upgrade", "--all"], ["status", "--json"], ["plan", "-v"]):
        r = project.orch(*args)
        assert r.exit_code == 2, r
        assert "at most 59" in r.stdout + r.stderr
        assert secret not in r.stdout + r.stderr
    long_url = f"postgresql+psycopg://orch:{secret}@127.0.0.1/" + "d" * 5000
    _registry_with_names(project, long_url, version_table="alembic_version")
    r = project.orch("status", "-v")
    assert r.exit_code == 2 and "5,0" in r.stderr and "at most 4096" in r.stderr
    assert secret not in r.stdout + r.stderr
