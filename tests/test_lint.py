"""orch lint: the rules on SQL strings, and the walker on real rendered revisions.

The rules are checked both ways: each fires on the statement it is about, and
stays silent on its look-alikes that are safe (CONCURRENTLY, NOT VALID, a
table created in the same revision, a stable default).  The walker tests
render real revision files offline for PostgreSQL, MariaDB/MySQL and SQLite
(a PostgreSQL or MySQL URL on a closed port: rendering needs no server), and
read the pending revisions of live databases on the real servers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Project, closed_port
from minproj import Rev, make_project, rev_id
from orch.queries.lint.rules import RULES, Schema, lint_sql
from orch.queries.lint.walk import LintReport, lint

# ------------------------------------------------------------------ rules on SQL

PG = "postgresql"
MY = "mysql"
LITE = "sqlite"

# (dialect, SQL, the rule ids expected, in order): true positives and the look-alikes
# that must not fire
CASES: list[tuple[str, str, list[str]]] = [
    # destructive
    (PG, "DROP TABLE users", ["drop_table"]),
    (PG, "CREATE TABLE t (id int); DROP TABLE t", []),  # made and dropped here
    (PG, "ALTER TABLE users DROP COLUMN email", ["drop_column"]),
    (PG, "ALTER TABLE users DROP CONSTRAINT uq_email", []),
    (PG, "ALTER TABLE users ADD COLUMN tmp int; ALTER TABLE users DROP COLUMN tmp", []),
    (PG, "ALTER TABLE users ADD COLUMN k int; ALTER TABLE users RENAME k TO kk", []),
    (MY, "ALTER TABLE users ADD COLUMN k INT; ALTER TABLE users CHANGE k kk INT", []),
    (LITE, "ALTER TABLE users ADD COLUMN k INT; ALTER TABLE users RENAME COLUMN k TO kk", []),
    (MY, "ALTER TABLE a COMMENT 'what a is for'", []),
    (MY, "DROP TABLE users", ["drop_table"]),
    (MY, "ALTER TABLE users DROP COLUMN email", ["drop_column"]),
    (LITE, "DROP TABLE users", ["drop_table"]),
    (LITE, "ALTER TABLE users DROP COLUMN email", ["drop_column"]),
    (PG, "DROP INDEX ix_users_email", []),
    # backward-incompatible
    (PG, "ALTER TABLE users RENAME TO people", ["rename_table"]),
    (PG, "ALTER TABLE users RENAME email TO mail", ["rename_column"]),
    (PG, "ALTER TABLE users RENAME CONSTRAINT a TO b", []),
    (PG, "ALTER INDEX ix_a RENAME TO ix_b", []),
    (PG, "CREATE TABLE t_new (id int); ALTER TABLE t_new RENAME TO t", []),
    (MY, "ALTER TABLE users RENAME TO people", ["rename_table"]),
    (MY, "RENAME TABLE users TO people", ["rename_table"]),
    (MY, "ALTER TABLE users RENAME COLUMN email TO mail", ["rename_column"]),
    (
        MY,
        "ALTER TABLE users CHANGE email mail VARCHAR(255) NOT NULL",
        ["rename_column", "alter_column_type"],  # its earlier type unseen: said so
    ),
    (LITE, "ALTER TABLE users RENAME TO people", ["rename_table"]),
    (LITE, "ALTER TABLE users RENAME COLUMN email TO mail", ["rename_column"]),
    # PostgreSQL locks and rewrites
    (PG, "CREATE INDEX ix ON users (email)", ["index_without_concurrently"]),
    (PG, "CREATE UNIQUE INDEX ix ON public.users (email)", ["index_without_concurrently"]),
    (PG, "CREATE INDEX CONCURRENTLY ix ON users (email)", []),
    (PG, "CREATE TABLE t (id int, email text); CREATE INDEX ix ON t (email)", []),
    (
        PG,
        "BEGIN; CREATE INDEX CONCURRENTLY ix ON users (email); COMMIT",
        ["concurrently_in_transaction"],
    ),
    (PG, "BEGIN; COMMIT; CREATE INDEX CONCURRENTLY ix ON users (email); BEGIN; COMMIT", []),
    (PG, "BEGIN; DROP INDEX CONCURRENTLY ix; COMMIT", ["concurrently_in_transaction"]),
    (PG, "ALTER TABLE users ADD CONSTRAINT uq UNIQUE (email)", ["index_without_concurrently"]),
    (PG, "ALTER TABLE users ADD CONSTRAINT uq UNIQUE USING INDEX ix", []),
    (
        PG,
        "ALTER TABLE a ADD CONSTRAINT fk FOREIGN KEY (u) REFERENCES users (id)",
        ["foreign_key_without_not_valid"],
    ),
    (PG, "ALTER TABLE a ADD CONSTRAINT fk FOREIGN KEY (u) REFERENCES users (id) NOT VALID", []),
    (PG, "ALTER TABLE a VALIDATE CONSTRAINT fk", []),
    (
        PG,
        "CREATE TABLE a (u int); ALTER TABLE a ADD CONSTRAINT fk FOREIGN KEY (u) REFERENCES users",
        [],
    ),
    (PG, "ALTER TABLE a ADD CONSTRAINT ck CHECK (n > 0)", ["check_without_not_valid"]),
    (PG, "ALTER TABLE a ADD CONSTRAINT ck CHECK (n > 0) NOT VALID", []),
    (PG, "ALTER TABLE users ALTER COLUMN email SET NOT NULL", ["set_not_null"]),
    (PG, "ALTER TABLE users ALTER COLUMN email DROP NOT NULL", []),
    (PG, "ALTER TABLE users ALTER COLUMN email TYPE VARCHAR(100)", ["alter_column_type"]),
    (PG, "ALTER TABLE users ALTER COLUMN email SET DEFAULT 'x'", []),
    (PG, "ALTER TABLE users ADD COLUMN t uuid DEFAULT gen_random_uuid()", ["volatile_default"]),
    (PG, "ALTER TABLE users ADD COLUMN r float8 DEFAULT random() * 2", ["volatile_default"]),
    (PG, "ALTER TABLE users ADD COLUMN n bigserial", ["volatile_default"]),
    (PG, "ALTER TABLE users ADD COLUMN n int GENERATED ALWAYS AS IDENTITY", ["volatile_default"]),
    (PG, "ALTER TABLE users ADD COLUMN at timestamptz DEFAULT now()", []),  # stable: no rewrite
    (PG, "ALTER TABLE users ADD COLUMN n int DEFAULT 0 NOT NULL", []),
    (PG, "ALTER TABLE users ADD COLUMN n int", []),
    (
        PG,
        "ALTER TABLE a ADD COLUMN u int REFERENCES users (id)",
        ["foreign_key_without_not_valid"],
    ),
    # NOT NULL without a default
    (PG, "ALTER TABLE users ADD COLUMN age int NOT NULL", ["not_null_without_default"]),
    (PG, "CREATE TABLE t (id int); ALTER TABLE t ADD COLUMN age int NOT NULL", []),
    (PG, "ALTER TABLE users ADD COLUMN k int PRIMARY KEY", ["not_null_without_default"]),
    (MY, "ALTER TABLE users ADD COLUMN k INT PRIMARY KEY", ["not_null_without_default"]),
    (MY, "ALTER TABLE users ADD COLUMN age INTEGER NOT NULL", ["not_null_without_default"]),
    (MY, "ALTER TABLE users ADD COLUMN age INTEGER NOT NULL DEFAULT 0", []),
    (MY, "ALTER TABLE users ADD COLUMN id2 INTEGER NOT NULL AUTO_INCREMENT", []),
    (LITE, "ALTER TABLE users ADD COLUMN age INTEGER NOT NULL", ["not_null_without_default"]),
    (LITE, "ALTER TABLE users ADD COLUMN age INTEGER NOT NULL DEFAULT '0'", []),
    # MySQL/MariaDB algorithms
    (MY, "ALTER TABLE users MODIFY email VARCHAR(100) NOT NULL", ["alter_column_type"]),
    (MY, "ALTER TABLE users ADD COLUMN n INTEGER AFTER email", ["add_column_position"]),
    (MY, "ALTER TABLE users ADD COLUMN n INTEGER FIRST", ["add_column_position"]),
    (MY, "ALTER TABLE users ADD COLUMN n INTEGER", []),
    (MY, "CREATE TABLE t (a INT); ALTER TABLE t ADD COLUMN n INTEGER FIRST", []),
    (
        MY,
        "ALTER TABLE a ADD CONSTRAINT fk FOREIGN KEY(u) REFERENCES users (id)",
        ["foreign_key_copy"],
    ),
    (MY, "CREATE INDEX ix ON users (email)", []),  # online (INPLACE, LOCK=NONE)
    (MY, "ALTER TABLE users ALTER COLUMN email SET DEFAULT 'x'", []),
    (LITE, "CREATE INDEX ix ON users (email)", []),
    # SQLite batch (copy and move) is a rebuild, not a drop and a rename
    (
        LITE,
        "CREATE TABLE _alembic_tmp_users (id INTEGER NOT NULL, email VARCHAR(10)); "
        "INSERT INTO _alembic_tmp_users (id, email) SELECT users.id, users.email FROM users; "
        "DROP TABLE users; ALTER TABLE _alembic_tmp_users RENAME TO users; "
        "CREATE INDEX ix ON users (email)",
        [],
    ),
    # data and bookkeeping are not DDL
    (PG, "UPDATE alembic_version SET version_num='b' WHERE alembic_version.version_num = 'a'", []),
    (MY, "INSERT INTO alembic_version (version_num) VALUES ('a')", []),
    (PG, "DO $$ BEGIN PERFORM 1; END $$", []),
    # what the parser cannot read is reported, never skipped
    (PG, "ALTER TABLE users FROBNICATE", ["unparsable"]),
    (MY, "ALTER TABLE users FROBNICATE", ["unparsable"]),
]


@pytest.mark.parametrize(("dialect", "sql", "expected"), CASES)
def test_rules_on_sql(dialect: str, sql: str, expected: list[str]) -> None:
    found = lint_sql(sql, dialect)
    assert [f.rule for f in found] == expected, [f.message for f in found]
    for f in found:
        assert f.level == RULES[f.rule].level
        assert f.sql and f.message


def test_every_rule_has_a_level_and_a_dialect() -> None:
    assert {r.level for r in RULES.values()} == {"error", "warning"}
    for rule in RULES.values():
        assert rule.dialects and rule.summary
    fired = {rule for _d, _s, rules in CASES for rule in rules}
    walker = {"not_renderable", "uses_get_bind", "bad_allow", "unused_allow", "type_narrowing"}
    assert set(RULES) - fired <= walker  # each SQL rule has a case above


def test_a_finding_carries_its_statement_and_its_line() -> None:
    sql = (
        "BEGIN;\n\n-- Running upgrade a -> b\n\n"
        'CREATE TABLE "café" (id int);\n\n'
        "/* a comment; with a semicolon */\n"
        "ALTER TABLE users\n    DROP COLUMN email;\n\nCOMMIT;"
    )
    (f,) = lint_sql(sql, PG)
    assert (f.rule, f.line) == ("drop_column", 8)
    assert f.sql == "ALTER TABLE users\n    DROP COLUMN email"
    (f,) = lint_sql(sql.replace('"café"', "`café`").replace("BEGIN;", ""), MY)
    assert (f.rule, f.line) == ("drop_column", 8)
    # a statement the parser refuses does not hide the ones after it
    found = lint_sql("SELEC 1;\nDROP TABLE users;", PG)
    assert [(f.rule, f.line) for f in found] == [("unparsable", 1), ("drop_table", 2)]


def test_type_narrowing_when_the_earlier_type_was_seen() -> None:
    schema = Schema()
    assert (
        lint_sql("CREATE TABLE users (email VARCHAR(255), n NUMERIC(10, 2), k BIGINT)", PG, schema)
        == []
    )
    later = (
        "ALTER TABLE users ALTER COLUMN email TYPE VARCHAR(100);"
        "ALTER TABLE users ALTER COLUMN n TYPE NUMERIC(12, 2);"  # wider: no rewrite either
        "ALTER TABLE users ALTER COLUMN k TYPE INTEGER;"
        "ALTER TABLE users ALTER COLUMN email TYPE TEXT"  # varchar to text: no rewrite
    )
    found = lint_sql(later, PG, schema)
    assert [f.rule for f in found] == ["type_narrowing", "type_narrowing"]
    assert "varchar(255) to varchar(100)" in found[0].message
    assert "int8 to int4" in found[1].message
    my = Schema()
    lint_sql("CREATE TABLE events (kind VARCHAR(64) NOT NULL)", MY, my)
    (f,) = lint_sql("ALTER TABLE events MODIFY kind VARCHAR(32) NOT NULL", MY, my)
    assert f.rule == "type_narrowing"
    (f,) = lint_sql("ALTER TABLE events MODIFY kind VARCHAR(300) NOT NULL", MY, my)
    assert f.rule == "alter_column_type" and "length bytes" in f.message
    # the same type made nullable: in place, writes go on
    assert lint_sql("ALTER TABLE events MODIFY kind VARCHAR(300) NULL", MY, my) == []
    # the same type made NOT NULL: a rebuild that fails on a NULL
    (f,) = lint_sql("ALTER TABLE events MODIFY kind VARCHAR(300) NOT NULL", MY, my)
    assert f.rule == "set_not_null"
    found = lint_sql("ALTER TABLE t2 MODIFY c VARCHAR(10) NOT NULL", MY, my)
    assert [f.rule for f in found] == ["alter_column_type"]  # t2 unknown: said so
    assert "did not see its earlier type" in found[0].message


def test_unknown_dialect_is_refused() -> None:
    with pytest.raises(ValueError, match="no lint rules for dialect 'oracle'"):
        lint_sql("DROP TABLE t", "oracle")


# ------------------------------------------------------------------ revisions


def _url(kind: str, tmp: Path) -> str:
    """A URL that renders for *kind* without any server (PostgreSQL/MySQL: a closed port)."""
    if kind == LITE:
        return f"sqlite:///{tmp / 'lint.db'}"
    if kind == PG:
        return f"postgresql+psycopg://orch@127.0.0.1:{closed_port()}/nowhere"
    return f"mysql+pymysql://orch@127.0.0.1:{closed_port()}/nowhere"


CREATE_USERS = (
    "import sqlalchemy as sa\n"
    "op.create_table('users', sa.Column('id', sa.Integer, primary_key=True),\n"
    "    sa.Column('email', sa.String(255), nullable=False),\n"
    "    sa.Column('name', sa.String(50)))\n"
    "op.create_index('ix_users_email', 'users', ['email'])"
)
INDEX_EMAIL = "op.create_index('ix_users_email_id', 'users', ['email', 'id'])"
DROP_NAME = "op.drop_column('users', 'name')"
ADD_NOT_NULL = (
    "import sqlalchemy as sa\nop.add_column('users', sa.Column('n', sa.Integer(), nullable=False))"
)
CLEAN = "import sqlalchemy as sa\nop.add_column('users', sa.Column('nick', sa.String(20)))"


def _project(tmp: Path, kind: str, revs: list[Rev], url: str | None = None) -> Project:
    return make_project(tmp / "proj", {"core": revs}, {"core": url or _url(kind, tmp)})


def _lint(p: Project, *names: str, range_text: str | None = None) -> LintReport:
    from orch.config.registry import load_registry

    return lint(load_registry(str(p.registry_path)), None, names, range_text=range_text)


def _rules(report: LintReport) -> list[tuple[str, str]]:
    return [(f.revision, f.rule) for f in report.findings]


def test_postgresql_revisions_rendered_one_by_one(tmp_path: Path) -> None:
    p = _project(
        tmp_path,
        PG,
        [Rev(code=CREATE_USERS), Rev(code=INDEX_EMAIL), Rev(code=DROP_NAME), Rev(code=CLEAN)],
    )
    report = _lint(p, range_text="base:head")
    # the index on the table created in the same revision is not on an existing table
    assert _rules(report) == [
        (rev_id("core", 2), "index_without_concurrently"),
        (rev_id("core", 3), "drop_column"),
    ]
    idx, drop = report.findings
    assert idx.sql == "CREATE INDEX ix_users_email_id ON users (email, id)"
    assert idx.level == "warning" and drop.level == "error"
    assert drop.line is not None and drop.line > 1  # BEGIN; comes first
    assert report.exit_code == 1 and report.errors == 1 and report.warnings == 1
    assert report.databases[0].revisions == [rev_id("core", i) for i in range(1, 5)]
    doc = report.as_json()
    assert set(doc["findings"][0]) == {
        "database",
        "revision",
        "rule",
        "level",
        "line",
        "sql",
        "message",
    }
    assert doc["findings"][1]["database"] == "core"
    # a range of one clean revision passes
    clean = _lint(p, "core", range_text=f"{rev_id('core', 3)}:{rev_id('core', 4)}")
    assert clean.findings == [] and clean.exit_code == 0
    assert clean.databases[0].revisions == [rev_id("core", 4)]


def test_allow_comment_silences_one_rule_in_its_revision_only(tmp_path: Path) -> None:
    allow = "# orch-lint: allow drop_column -- name was never read since v2\n"
    p = _project(
        tmp_path,
        PG,
        [
            Rev(code=CREATE_USERS),
            Rev(code=allow + DROP_NAME + "\n" + INDEX_EMAIL),
            Rev(code="op.drop_column('users', 'email')"),
        ],
    )
    report = _lint(p, range_text="base:head")
    assert _rules(report) == [
        (rev_id("core", 2), "index_without_concurrently"),  # another rule: still reported
        (rev_id("core", 3), "drop_column"),  # another revision: still reported
    ]
    (a,) = report.allowed
    assert (a.revision, a.rule, a.silenced) == (rev_id("core", 2), "drop_column", 1)
    assert a.reason == "name was never read since v2"


@pytest.mark.parametrize(
    ("comment", "rule", "says"),
    [
        ("# orch-lint: allow drop_column", "bad_allow", "needs a reason"),
        ("# orch-lint: allow drop_column --   ", "bad_allow", "needs a reason"),
        ("# orch-lint: allow drop_colum -- typo", "bad_allow", "no such rule"),
        ("# orch-lint: allow bad_allow -- sneaky", "bad_allow", "no such rule"),
        ("# orch-lint: ignore drop_column -- nope", "bad_allow", "expected"),
        ("# orch-lint: allow drop_table -- not here", "unused_allow", "silences nothing"),
    ],
)
def test_bad_allow_comments_are_findings(
    tmp_path: Path, comment: str, rule: str, says: str
) -> None:
    p = _project(tmp_path, PG, [Rev(code=CREATE_USERS), Rev(code=comment + "\n" + DROP_NAME)])
    report = _lint(p, range_text="base:head")
    problems = [f for f in report.findings if f.rule == rule]
    assert len(problems) == 1, report.findings
    assert says in problems[0].message
    assert problems[0].sql is None and problems[0].line is not None  # a line of the file
    assert problems[0].level == RULES[rule].level
    # the allow did not silence anything it should not have
    assert (rev_id("core", 2), "drop_column") in _rules(report)


def test_an_allow_in_a_string_is_not_a_comment(tmp_path: Path) -> None:
    code = "note = '# orch-lint: allow drop_column -- in a string'\n" + DROP_NAME
    p = _project(tmp_path, PG, [Rev(code=CREATE_USERS), Rev(code=code)])
    assert _rules(_lint(p, range_text="base:head")) == [(rev_id("core", 2), "drop_column")]


def test_a_revision_that_cannot_render_is_a_finding_and_the_next_is_still_checked(
    tmp_path: Path,
) -> None:
    reads = (
        "import sqlalchemy as sa\n"
        "rows = op.get_bind().execute(sa.text('SELECT id FROM users')).fetchall()\n"
        "for r in rows:\n"
        "    op.execute(f'UPDATE users SET name = {r.id}')"
    )
    p = _project(tmp_path, PG, [Rev(code=CREATE_USERS), Rev(code=reads), Rev(code=DROP_NAME)])
    report = _lint(p, range_text="base:head")
    assert _rules(report) == [
        (rev_id("core", 2), "not_renderable"),
        (rev_id("core", 3), "drop_column"),
    ]
    nr = report.findings[0]
    assert nr.level == "error" and nr.sql is None
    assert "op.get_bind()" in nr.message and "orch lint has no connection" in nr.message
    # the get_bind() line of the revision file
    path = tmp_path / "proj" / "migrations" / "core" / f"{rev_id('core', 2)}.py"
    lines = path.read_text().splitlines()
    assert nr.line is not None and "op.get_bind()" in lines[nr.line - 1]
    # allowed with a reason, it passes; the allow is listed
    text = path.read_text().replace(
        "def upgrade() -> None:\n",
        "def upgrade() -> None:\n    # orch-lint: allow not_renderable -- reviewed by hand\n",
    )
    path.write_text(text)
    report = _lint(p, range_text=f"{rev_id('core', 1)}:{rev_id('core', 2)}")
    assert report.findings == [] and report.exit_code == 0
    assert [a.rule for a in report.allowed] == ["not_renderable"]


def test_a_revision_that_renders_but_calls_get_bind_is_a_warning(tmp_path: Path) -> None:
    echo = "import sqlalchemy as sa\nop.get_bind().execute(sa.text('UPDATE users SET name = 1'))"
    p = _project(tmp_path, PG, [Rev(code=CREATE_USERS), Rev(code=echo)])
    report = _lint(p, range_text="base:head")
    assert _rules(report) == [(rev_id("core", 2), "uses_get_bind")]
    assert report.exit_code == 0  # a warning


@pytest.mark.parametrize("kind", [MY, LITE])
def test_mysql_and_sqlite_revisions_parse_through_sqlglot(tmp_path: Path, kind: str) -> None:
    revs = [
        Rev(code=CREATE_USERS),
        Rev(code=INDEX_EMAIL),
        Rev(code=ADD_NOT_NULL),
        Rev(code="op.rename_table('users', 'people')"),
        Rev(code="op.drop_table('people')"),
    ]
    p = _project(tmp_path, kind, revs)
    report = _lint(p, range_text="base:head")
    assert report.databases[0].backend == kind
    assert _rules(report) == [
        (rev_id("core", 3), "not_null_without_default"),
        (rev_id("core", 4), "rename_table"),
        (rev_id("core", 5), "drop_table"),
    ]
    if kind == MY:
        assert "implicit default" in report.findings[0].message
    else:
        assert "SQLite refuses it" in report.findings[0].message


def test_mysql_column_changes_rendered_by_alembic(tmp_path: Path) -> None:
    change = (
        "import sqlalchemy as sa\n"
        "op.alter_column('users', 'email', type_=sa.String(100), "
        "existing_type=sa.String(255), existing_nullable=False)\n"
        "op.alter_column('users', 'name', new_column_name='nick', existing_type=sa.String(50))"
    )
    p = _project(tmp_path, MY, [Rev(code=CREATE_USERS), Rev(code=change)])
    report = _lint(p, range_text="base:head")
    # the earlier type was seen in the range (revision 1): a narrowing
    assert _rules(report) == [
        (rev_id("core", 2), "type_narrowing"),
        (rev_id("core", 2), "rename_column"),
    ]


def test_a_revision_in_a_range_needs_its_database_named(tmp_path: Path) -> None:
    from orch.errors import UsageError

    p = make_project(
        tmp_path / "proj",
        {"core": [Rev(code=CREATE_USERS)], "billing": [Rev(code=CREATE_USERS)]},
        {"core": _url(PG, tmp_path), "billing": _url(PG, tmp_path)},
    )
    with pytest.raises(UsageError, match="a revision belongs to one database"):
        _lint(p, range_text=f"{rev_id('core', 1)}:head")
    report = _lint(p, range_text="base:head")
    assert [d.name for d in report.databases] == ["core", "billing"]
    assert _lint(p, "core", range_text=f"{rev_id('core', 1)}:head").exit_code == 0


def test_range_problems_are_usage_errors(tmp_path: Path) -> None:
    from orch.errors import UsageError

    p = _project(tmp_path, PG, [Rev(code=CREATE_USERS), Rev(code=DROP_NAME)])
    for bad, says in [
        ("head", "expected FROM:TO"),
        ("base:", "expected FROM:TO"),
        ("head:base", "FROM cannot be head"),
        ("base:nope", "unknown revision 'nope'"),
        (f"{rev_id('core', 2)}:{rev_id('core', 1)}", "nothing to lint"),
    ]:
        with pytest.raises(UsageError, match=says):
            _lint(p, range_text=bad)


# ------------------------------------------------------------------ pending (live databases)


@pytest.mark.parametrize("kind", [LITE, PG, MY])
def test_pending_revisions_are_read_from_the_database(
    tmp_path: Path, kind: str, make_db: Callable[..., str]
) -> None:
    url = make_db(kind)
    p = _project(
        tmp_path,
        kind,
        [Rev(code=CREATE_USERS), Rev(code=DROP_NAME), Rev(code=INDEX_EMAIL), Rev(code=CLEAN)],
        url=url,
    )
    before = _lint(p)
    assert before.source == "pending"
    assert before.databases[0].start == ()
    assert len(before.databases[0].revisions) == 4
    assert p.orch("upgrade", f"core@{rev_id('core', 2)}").exit_code == 0
    report = _lint(p)
    assert report.databases[0].start == (rev_id("core", 2),)
    assert report.databases[0].revisions == [rev_id("core", 3), rev_id("core", 4)]
    # the drop in revision 2 is applied: only what is pending is checked
    expected = [(rev_id("core", 3), "index_without_concurrently")] if kind == PG else []
    assert _rules(report) == expected
    assert report.exit_code == 0
    assert p.orch("upgrade", "core").exit_code == 0
    assert _lint(p).databases[0].revisions == []


def test_an_unreachable_database_is_exit_1_and_a_range_needs_no_server(tmp_path: Path) -> None:
    p = _project(tmp_path, PG, [Rev(code=CREATE_USERS), Rev(code=DROP_NAME)])
    report = _lint(p)
    (db,) = report.databases
    assert db.error is not None and "--range" in db.error
    assert report.exit_code == 1 and "core:" in report.problem()
    assert _lint(p, range_text="base:head").databases[0].error is None


# ------------------------------------------------------------------ the command


def test_orch_lint_command(tmp_path: Path) -> None:
    p = _project(tmp_path, PG, [Rev(code=CREATE_USERS), Rev(code=INDEX_EMAIL), Rev(code=CLEAN)])
    r = p.orch("lint", "--range", "base:head")
    assert r.exit_code == 0, r.stderr  # warnings only
    assert "index_without_concurrently" in r.stdout and "warning" in r.stdout
    assert "0 error(s), 1 warning(s) in 3 revision(s) in the range" in r.stdout
    doc = p.orch("lint", "--range", "base:head", "--json").json()
    assert doc["schema"] == 1 and doc["exit_code"] == 0 and "error" not in doc
    (f,) = doc["findings"]
    assert f == {
        "database": "core",
        "revision": rev_id("core", 2),
        "rule": "index_without_concurrently",
        "level": "warning",
        "line": f["line"],
        "sql": "CREATE INDEX ix_users_email_id ON users (email, id)",
        "message": f["message"],
    }
    assert isinstance(f["line"], int)
    # a clean revision alone
    r = p.orch("lint", "core", "--range", f"{rev_id('core', 2)}:head")
    assert r.exit_code == 0 and "0 error(s), 0 warning(s) in 1 revision(s)" in r.stdout
    assert "LEVEL" not in r.stdout  # no table without findings
    # an error: exit 1, the result on stdout only
    (p.root / "migrations" / "core" / f"{rev_id('core', 3)}.py").write_text(
        (p.root / "migrations" / "core" / f"{rev_id('core', 3)}.py")
        .read_text()
        .replace("op.add_column('users', sa.Column('nick', sa.String(20)))", DROP_NAME)
    )
    r = p.orch("lint", "--range", "base:head", "--json")
    assert r.exit_code == 1
    doc = r.json()
    assert doc["exit_code"] == 1 and doc["error"] == "1 error(s) found"
    assert [f["rule"] for f in doc["findings"]] == ["index_without_concurrently", "drop_column"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["lint", "bogus"], "unknown database 'bogus'"),
        (["lint", "--range", "nope"], "expected FROM:TO"),
        (["lint", "--range", "base:zzz"], "unknown revision 'zzz'"),
    ],
)
def test_orch_lint_bad_input_is_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    p = _project(tmp_path, PG, [Rev(code=CREATE_USERS)])
    r = p.orch(*args)
    assert r.exit_code == 2 and says in r.stderr and r.stdout == ""
    doc = p.orch(*args, "--json").json()
    assert doc["exit_code"] == 2 and says in doc["error"]


def test_orch_lint_unreachable_database_is_exit_1(tmp_path: Path) -> None:
    p = _project(tmp_path, PG, [Rev(code=CREATE_USERS)])
    r = p.orch("lint")
    assert r.exit_code == 1
    assert "core: unreachable" in r.stderr and "--range" in r.stderr
    doc = p.orch("lint", "--json").json()
    assert doc["exit_code"] == 1 and doc["databases"][0]["from"] is None


def test_the_rules_table_of_the_reference_lists_every_rule_with_its_level() -> None:
    from conftest import REPO

    page = (REPO / "docs" / "reference" / "commands.md").read_text(encoding="utf-8")
    for rule in RULES.values():
        assert f"| `{rule.id}` | {rule.level} |" in page, rule.id


def test_the_python_api_lints_without_the_cli(tmp_path: Path) -> None:
    from orch.service import Project as Api

    p = _project(tmp_path, LITE, [Rev(code=CREATE_USERS), Rev(code=DROP_NAME)])
    report = Api.load(p.registry_path).lint(["core"], range="base:head")
    assert [(f.revision, f.rule) for f in report.findings] == [(rev_id("core", 2), "drop_column")]
    assert report.exit_code == 1


NARROW_EMAIL = (
    "import sqlalchemy as sa\n"
    "op.alter_column('users', 'email', type_=sa.String(100), existing_type=sa.String(255))"
)


@pytest.mark.parametrize("kind", [PG, MY])
def test_narrowing_knows_the_type_an_applied_revision_gave(
    tmp_path: Path, kind: str, make_db: Callable[..., str]
) -> None:
    p = _project(
        tmp_path,
        kind,
        [Rev(code=CREATE_USERS), Rev(code=CLEAN), Rev(code=NARROW_EMAIL)],
        url=make_db(kind),
    )
    assert p.orch("upgrade", f"core@{rev_id('core', 2)}").exit_code == 0
    report = _lint(p)  # only revision 3 is pending; users.email was made by revision 1
    assert report.databases[0].revisions == [rev_id("core", 3)]
    (f,) = report.findings
    assert f.rule == "type_narrowing" and "255" in f.message and "100" in f.message
    # the same from a range that starts after the table was made
    (f,) = _lint(p, range_text=f"{rev_id('core', 2)}:head").findings
    assert f.rule == "type_narrowing"


def test_an_unrenderable_earlier_revision_only_shortens_what_is_known(tmp_path: Path) -> None:
    reads = "op.get_bind().execute(sa.text('SELECT 1')).fetchall()"
    p = _project(
        tmp_path,
        PG,
        [
            Rev(code=CREATE_USERS),
            Rev(code="import sqlalchemy as sa\n" + reads),
            Rev(code=NARROW_EMAIL),
        ],
    )
    (f,) = _lint(p, range_text=f"{rev_id('core', 2)}:head").findings
    # revision 1 rendered before revision 2 stopped the history: the type is known
    assert f.rule == "type_narrowing"


def test_concurrently_needs_alembics_autocommit_block(tmp_path: Path) -> None:
    inside = "op.create_index('ix_c', 'users', ['name'], postgresql_concurrently=True)"
    outside = (
        "with op.get_context().autocommit_block():\n"
        "    op.create_index('ix_c2', 'users', ['name'], postgresql_concurrently=True)"
    )
    p = _project(tmp_path, PG, [Rev(code=CREATE_USERS), Rev(code=inside), Rev(code=outside)])
    report = _lint(p, range_text="base:head")
    assert _rules(report) == [(rev_id("core", 2), "concurrently_in_transaction")]
    assert report.findings[0].sql == "CREATE INDEX CONCURRENTLY ix_c ON users (name)"
