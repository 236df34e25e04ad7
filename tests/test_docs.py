"""The documentation is built and its console examples are true.

Two promises: ``mkdocs build --strict`` succeeds (no broken link, no page left
out of the navigation), and every ```` ```console ```` block in README.md and
docs/ shows what orch really prints.  Each block runs, command by command, in a
fresh copy of the reference project (or an empty directory), and its output is
compared with the block's text.

A block is configured by an HTML comment on the line just before its fence
(invisible on the site and on GitHub)::

    <!-- example: project=empty dir=/tmp/newapp setup=models-add-customers -->

- ``project=reference`` (default) or ``project=empty``;
- ``dir=PATH``: the directory the text shows (the real one is replaced by it);
- ``setup=NAME[,NAME]``: steps from :data:`SETUPS` run before the block;
- ``postgresql=VAR[,VAR]``: each variable gets the URL of a new database on the
  test PostgreSQL server (the block then needs that server, as every
  PostgreSQL test does);
- ``before="CMD; CMD"``: orch commands run first, unseen (bring a database
  to the revision the example starts from); ``registry-from-page`` writes the
  page's registry, ``python-from-page`` its first ``python`` block as
  ``example.py``;
- ``chain=NAME``: the blocks of one page with the same chain run in order in
  one directory, as the steps of a walk-through (the first block's
  ``project``, ``dir`` and ``setup`` apply);
- ``not-run=REASON``: the block is shown but not run, for the reason given
  (installing orch, a production server).  The reason is required, so a
  skipped example is never silent.

Matching: ``...`` alone on a line stands for any number of lines, ``...``
inside a line for any text; durations (``0.59s``) match any duration.
Commands run through ``bash`` with the test interpreter's ``bin`` directory
first on ``PATH``, so ``orch`` is the console script of this checkout;
stdout and stderr are read together, in the order a terminal shows them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO, copy_project

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)```console\s*$")
OPTIONS = re.compile(r"^<!--\s*example:(?P<opts>.*?)-->\s*$")


@dataclass
class Example:
    page: Path
    line: int
    text: list[str]
    options: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def _parse_options(raw: str) -> dict[str, str]:
    """``a=b c="with spaces"`` -> dict; ``not-run=`` takes the rest of the comment as its reason."""
    raw = raw.strip()
    options: dict[str, str] = {}
    m = re.search(r"\bnot-run=(.*)$", raw)
    if m:
        options["not-run"] = m.group(1).strip()
        raw = raw[: m.start()]
    for part in shlex.split(raw):
        key, _, value = part.partition("=")
        options[key] = value
    return options


def examples() -> Iterator[Example]:
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            if fence := FENCE.match(lines[i]):
                indent = fence.group("indent")
                start = i
                options: dict[str, str] = {}
                if i > 0 and (m := OPTIONS.match(lines[i - 1].strip())):
                    options = _parse_options(m.group("opts"))
                i += 1
                body = []
                while i < len(lines) and lines[i] != indent + "```":
                    body.append(lines[i][len(indent) :])
                    i += 1
                yield Example(page, start + 1, body, options)
            i += 1


def split_commands(text: list[str]) -> list[tuple[str, list[str]]]:
    """``$ cmd`` lines and the output lines that follow each."""
    steps: list[tuple[str, list[str]]] = []
    for line in text:
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
        else:
            raise AssertionError(f"console example does not start with a '$ ' command: {line!r}")
    return steps


OPTION_NAMES = {"project", "dir", "setup", "postgresql", "before", "chain", "not-run"}
HEX_ID = re.compile(r"[0-9a-f]{12}")
SPACES = re.compile(r"(?<=\S) {2,}")


def _line_pattern(expected: str, known: frozenset[str]) -> re.Pattern[str]:
    """One expected line as a regex: ``...``, durations and new revision ids are wildcards.

    A revision id that the project does not have when the block starts (one
    that ``orch revision`` in the example creates) matches any id, since
    Alembic makes a new one each time; ids of existing revisions must match.
    Runs of spaces inside a line match any run, so a wider duration or id
    that shifts a table's columns still matches.
    """
    text = SPACES.sub(" ", expected)
    out = []
    for i, chunk in enumerate(text.split("...")):
        if i:
            out.append(".*")
        pos = 0
        for m in re.finditer(r"\b\d+\.\d+s\b|(?<![0-9a-z])[0-9a-f]{12}(?![0-9a-z])", chunk):
            out.append(re.escape(chunk[pos : m.start()]))
            token = m.group(0)
            if token.endswith("s") and not HEX_ID.fullmatch(token):
                out.append(r"\d+\.\d+s")
            elif token in known:
                out.append(token)
            else:
                out.append("[0-9a-f]{12}")
            pos = m.end()
        out.append(re.escape(chunk[pos:]))
    return re.compile("".join(out) + r"\Z")


def matches(expected: list[str], actual: list[str], known: frozenset[str] = frozenset()) -> bool:
    """Doctest-like matching with ``...`` for lines or text (see :func:`_line_pattern`)."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head.strip() == "...":
        return any(matches(rest, actual[k:], known) for k in range(len(actual) + 1))
    if not actual:
        return False
    line = SPACES.sub(" ", actual[0].rstrip())
    return bool(_line_pattern(head.rstrip(), known).match(line)) and matches(
        rest, actual[1:], known
    )


def _known_ids(root: Path) -> frozenset[str]:
    return frozenset(
        m.group(0)
        for f in root.rglob("migrations/**/*.py")
        for m in [re.match(r"[0-9a-f]{12}", f.name)]
        if m
    )


def _strip_comment(command: str) -> str:
    """``orch status   # a remark`` -> ``orch status`` (a remark in the text, not in the shell)."""
    return re.sub(r"\s+#\s.*$", "", command)


# ------------------------------------------------------------ setups


def _init(root: Path) -> None:
    """``orch init`` in the example's directory: a new project with one database, ``main``."""
    subprocess.run(
        [sys.executable, "-m", "orch", "init", str(root)], check=True, capture_output=True
    )


def _models_add_customers(root: Path) -> None:
    """The scaffolded app of ``orch init`` gets a model: a customers table."""
    (root / "databases.yaml").write_text(
        (root / "databases.yaml")
        .read_text()
        .replace("    # metadata: myapp.models:Base", "    metadata: newapp_models:metadata")
    )
    (root / "newapp_models.py").write_text(
        "import sqlalchemy as sa\n\nmetadata = sa.MetaData()\n"
        "customers = sa.Table('customers', metadata,\n"
        "    sa.Column('id', sa.Integer, primary_key=True),\n"
        "    sa.Column('name', sa.String(100), nullable=False))\n"
    )


def _models_core_currency(root: Path) -> None:
    """The reference models gain accounts.currency and a wider accounts.plan."""
    models = root / "src" / "shop" / "models.py"
    text = models.read_text()
    line = "    plan: Mapped[str] = mapped_column(String(32), index=True)\n"
    assert line in text, "the reference models changed: update this setup"
    models.write_text(
        text.replace(
            line,
            "    plan: Mapped[str] = mapped_column(String(48), index=True)\n"
            "    currency: Mapped[str | None] = mapped_column(String(3))\n",
        )
    )


def _two_core_heads(root: Path) -> None:
    """Two developers each added a revision on core's head (65ab7fa1d760, 946c31bbcedb)."""
    for rev, msg in (("65ab7fa1d760", "add accounts.note"), ("946c31bbcedb", "add users.tz")):
        (root / "migrations" / "core" / f"{rev}_x.py").write_text(
            f'"""{msg}\n\nRevision ID: {rev}\nRevises: bd61b77cf8aa\n"""\n'
            f"revision = {rev!r}\ndown_revision = 'bd61b77cf8aa'\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n"
        )


_LEGACY_ENV = """from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
url = context.get_x_argument(as_dictionary=True).get("url")
if url:
    config.set_main_option("sqlalchemy.url", url)
engine = engine_from_config(config.get_section(config.config_ini_section), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

_LEGACY_REVISIONS: dict[str, list[tuple[str, str | None, str, str, str]]] = {
    "core": [
        (
            "c1",
            None,
            "create users",
            "op.create_table('users', sa.Column('id', sa.Integer, primary_key=True))",
            "op.drop_table('users')",
        ),
        (
            "c2",
            "c1",
            "add email",
            "op.add_column('users', sa.Column('email', sa.String(200)))",
            "op.drop_column('users', 'email')",
        ),
    ],
    "analytics": [
        (
            "a1",
            None,
            "create events",
            "op.create_table('events', sa.Column('id', sa.Integer, primary_key=True))",
            "op.drop_table('events')",
        ),
    ],
}


def _legacy_alembic(root: Path) -> None:
    """The layout of the adoption guide: one plain Alembic setup per database, run in a loop.

    ``dev`` (var/core.db, var/analytics.db) was migrated by plain ``alembic``;
    in ``legacy`` core was too, and analytics' ``events`` table was created by
    hand, so that database has no version table.
    """
    for db, revisions in _LEGACY_REVISIONS.items():
        d = root / f"alembic_{db}"
        (d / "versions").mkdir(parents=True)
        (d / "env.py").write_text(_LEGACY_ENV)
        (root / f"{db}.ini").write_text(
            f"[alembic]\nscript_location = %(here)s/alembic_{db}\n"
            f"sqlalchemy.url = sqlite:///%(here)s/var/{db}.db\n"
        )
        for rev, down, msg, up_code, down_code in revisions:
            (d / "versions" / f"{rev}_{msg.replace(' ', '_')}.py").write_text(
                f'"""{msg}\n\nRevision ID: {rev}\nRevises: {down or ""}\n"""\n'
                "import sqlalchemy as sa\nfrom alembic import op\n\n"
                f"revision = {rev!r}\ndown_revision = {down!r}\n"
                "branch_labels = None\ndepends_on = None\n\n\n"
                f"def upgrade():\n    {up_code}\n\n\ndef downgrade():\n    {down_code}\n"
            )
    (root / "var").mkdir()
    alembic = [sys.executable, "-m", "alembic"]
    for db in _LEGACY_REVISIONS:
        subprocess.run(
            [*alembic, "-c", f"{db}.ini", "upgrade", "head"],
            cwd=root,
            check=True,
            capture_output=True,
        )
    legacy_core = f"url=sqlite:///{root}/var/legacy-core.db"
    subprocess.run(
        [*alembic, "-c", "core.ini", "-x", legacy_core, "upgrade", "head"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    import sqlite3

    with sqlite3.connect(root / "var" / "legacy-analytics.db") as conn:
        conn.execute("CREATE TABLE events (id INTEGER NOT NULL PRIMARY KEY)")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "."], cwd=root, check=True)


def _registry_from_page(root: Path, page: Path) -> None:
    """databases.yaml as the page shows it (its first ``yaml`` block with ``databases:``)."""
    blocks = re.findall(r"^```yaml\n(.*?)^```$", page.read_text(), re.M | re.S)
    registry = next(b for b in blocks if "databases:" in b)
    (root / "databases.yaml").write_text(registry)


def _python_from_page(root: Path, page: Path) -> None:
    """example.py as the page shows it (its first ``python`` block): the API's example runs."""
    blocks = re.findall(r"^```python\n(.*?)^```$", page.read_text(), re.M | re.S)
    (root / "example.py").write_text(blocks[0])


def _shared_revision_id(root: Path) -> None:
    """core and analytics each get a new head with one hand-written id (the adoption guide)."""
    for db, down in (("core", "bd61b77cf8aa"), ("analytics", "ce37b359c1da")):
        table = f"{db}_extra"
        (root / "migrations" / db / f"a1b2c3d4e5f6_{table}.py").write_text(
            f'"""create {table}"""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
            f"revision = 'a1b2c3d4e5f6'\ndown_revision = {down!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n    op.create_table({table!r}, sa.Column('id', sa.Integer, "
            f"primary_key=True))\n\n\ndef downgrade():\n    op.drop_table({table!r})\n"
        )


def _failing_analytics_revision(root: Path) -> None:
    """analytics gets a new head, 0badc0ffee00, whose upgrade adds a column and then raises."""
    (root / "migrations" / "analytics" / "0badc0ffee00_add_events_source.py").write_text(
        '"""add events.source, then backfill it\n\nRevision ID: 0badc0ffee00\n'
        'Revises: ce37b359c1da\n"""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        "revision = '0badc0ffee00'\ndown_revision = 'ce37b359c1da'\n"
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade():\n    op.add_column('events', sa.Column('source', sa.String(32)))\n"
        "    raise RuntimeError('the backfill found 3 events without a user')\n\n\n"
        "def downgrade():\n    op.drop_column('events', 'source')\n"
    )


def _core_drop_column(root: Path, allow: str = "") -> None:
    """core gets a new head, 5e1ec7ab1e00, that drops users.is_active (orch lint's example)."""
    (root / "migrations" / "core" / "5e1ec7ab1e00_drop_users_is_active.py").write_text(
        '"""drop users.is_active\n\nRevision ID: 5e1ec7ab1e00\n'
        'Revises: bd61b77cf8aa\n"""\nfrom alembic import op\n\n'
        "revision = '5e1ec7ab1e00'\ndown_revision = 'bd61b77cf8aa'\n"
        "branch_labels = None\ndepends_on = None\n\n\n"
        f"def upgrade():\n{allow}    op.drop_column('users', 'is_active')\n\n\n"
        "def downgrade():\n    pass\n"
    )


def _core_drop_column_allowed(root: Path) -> None:
    """The same revision, with the drop allowed."""
    reason = "no release since 2.3 reads is_active (ticket 812)"
    _core_drop_column(root, f"    # orch-lint: allow drop_column -- {reason}\n")


def _leaky_analytics_downgrade(root: Path) -> None:
    """analytics gets a new head, 5ca1ab1e0001, whose downgrade forgets the table it created."""
    (root / "migrations" / "analytics" / "5ca1ab1e0001_create_events_archive.py").write_text(
        '"""create events_archive\n\nRevision ID: 5ca1ab1e0001\nRevises: ce37b359c1da\n"""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        "revision = '5ca1ab1e0001'\ndown_revision = 'ce37b359c1da'\n"
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade():\n    op.create_table('events_archive', "
        "sa.Column('id', sa.Integer, primary_key=True))\n\n\n"
        "def downgrade():\n    pass\n"
    )


SETUPS: dict[str, Callable[[Path], None]] = {
    "leaky-analytics-downgrade": _leaky_analytics_downgrade,
    "core-drop-column": _core_drop_column,
    "core-drop-column-allowed": _core_drop_column_allowed,
    "failing-analytics-revision": _failing_analytics_revision,
    "legacy-alembic": _legacy_alembic,
    "init": _init,
    "models-core-currency": _models_core_currency,
    "two-core-heads": _two_core_heads,
    "models-add-customers": _models_add_customers,
    "shared-revision-id": _shared_revision_id,
}


# ------------------------------------------------------------ tests


ALL = list(examples())


def test_the_docs_have_examples_and_every_one_is_run_or_says_why_not() -> None:
    assert len(ALL) >= 10, [e.id for e in ALL]
    for e in ALL:
        reason = e.options.get("not-run")
        assert reason is None or len(reason) > 10, f"{e.id}: not-run needs a reason"
        unknown = set(e.options) - OPTION_NAMES
        assert not unknown, f"{e.id}: unknown example options {sorted(unknown)}"
        for name in filter(None, e.options.get("setup", "").split(",")):
            assert name in SETUPS, f"{e.id}: unknown setup {name!r}"


def _prepare(
    e: Example, tmp_path: Path, make_db: Callable[..., str]
) -> tuple[Path, dict[str, str]]:
    if e.options.get("project", "reference") == "empty":
        root = tmp_path / "work"
        root.mkdir()
    else:
        root = copy_project(tmp_path / "proj").root
    for name in filter(None, e.options.get("setup", "").split(",")):
        SETUPS[name](root)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("ORCH_CONFIG", None)
    env.pop("ORCH_ENV", None)
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    for var in filter(None, e.options.get("postgresql", "").split(",")):
        env[var] = make_db("postgresql")
    return root, env


def _run_example(e: Example, root: Path, env: dict[str, str], shown: str | None) -> None:
    for before in filter(None, (c.strip() for c in e.options.get("before", "").split(";"))):
        if before == "registry-from-page":
            _registry_from_page(root, e.page)
            continue
        if before == "python-from-page":
            _python_from_page(root, e.page)
            continue
        subprocess.run(["bash", "-c", before], cwd=root, env=env, check=True, capture_output=True)
    known = _known_ids(root)
    status = 0  # each command's shell sees the previous one's exit status, for `echo $?`
    for command, expected in split_commands(e.text):
        proc = subprocess.run(
            ["bash", "-c", f"(exit {status}); {_strip_comment(command)} 2>&1"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        status = proc.returncode
        out = proc.stdout
        if shown:
            out = out.replace(str(root), shown)
        actual = out.rstrip("\n").splitlines() if out.strip() else []
        assert matches(expected, actual, known), (
            f"{e.id}: `{command}` printed:\n"
            + "\n".join(actual)
            + "\n\nthe docs say:\n"
            + "\n".join(expected)
        )


def _units() -> list[list[Example]]:
    """Each example alone, or the examples of one chain together, in page order."""
    units: list[list[Example]] = []
    chains: dict[tuple[Path, str], list[Example]] = {}
    for e in ALL:
        if "not-run" in e.options:
            continue
        chain = e.options.get("chain")
        if chain is None:
            units.append([e])
        elif (e.page, chain) in chains:
            chains[(e.page, chain)].append(e)
        else:
            chains[(e.page, chain)] = [e]
            units.append(chains[(e.page, chain)])
    return units


@pytest.mark.parametrize("unit", _units(), ids=lambda u: u[0].id)
def test_console_example_shows_real_output(
    unit: list[Example], tmp_path: Path, make_db: Callable[..., str]
) -> None:
    root, env = _prepare(unit[0], tmp_path, make_db)
    for e in unit:
        _run_example(e, root, env, unit[0].options.get("dir"))


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """The site builds with no warning: every page in the navigation, every link resolves."""
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("mkdocs is part of the test extra: pip install -e '.[test]'")
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "index.html").exists()


def test_the_repository_cites_no_file_outside_it() -> None:
    """README's links resolve inside the repository, and no file points at documents it lacks.

    The project's working notes (a product contract, notes about Alembic)
    are not part of the repository; code, tests and docs that cite them
    send a reader nowhere.
    """
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme):
        if "://" in target:
            continue
        assert (REPO / target).exists(), f"README.md links to {target}, which is not here"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.split()
    if not tracked:  # not a git checkout (an sdist): read the usual places
        tracked = [
            str(p.relative_to(REPO))
            for d in ("src", "tests", "docs", "bench")
            for p in (REPO / d).rglob("*")
            if p.is_file()
        ]
    outside = re.compile(
        r"\.\./shared|\bSPEC(?:\.md| section)|notes/(?:ALEMBIC|PEERS|STYLE)|DEVELOPERS\.md"
    )
    this = Path(__file__).resolve()
    for name in tracked:
        path = REPO / name
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".ini", ".toml", ".tmpl", ".mako"}:
            continue
        if path.resolve() == this or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
            assert not outside.search(line), f"{name}:{n + 1} cites a file outside the repo"
