"""Announced = run: plan, ``--sql`` and the run take their steps from Alembic's resolver.

A branched and merged history (a1 -> b1, a1 -> c1, merge m1, then d1) used to
make orch announce one set of revisions and run another (``plan g@+1`` from
b1 said c1, the run applied c1, m1 and d1).  Every revision here records
itself in a table ``ran`` when it runs, so "what ran" is read from the
database, not from orch's own report.  Property tests generate histories
(branches, merges, several bases, labels) and every target form.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import REPO, Project

DB = "g"


@dataclass(frozen=True)
class R:
    """One revision of a generated history."""

    rev: str
    down: tuple[str, ...] = ()
    label: str | None = None


def write_history(versions: Path, revs: list[R]) -> None:
    """Revision files that record each upgrade and downgrade in the table ``ran``."""
    versions.mkdir(parents=True, exist_ok=True)
    for r in revs:
        down = None if not r.down else r.down[0] if len(r.down) == 1 else r.down
        (versions / f"{r.rev}.py").write_text(
            f'"""{r.rev}"""\n'
            "from alembic import op\n\n"
            f"revision = {r.rev!r}\n"
            f"down_revision = {down!r}\n"
            f"branch_labels = {(r.label,) if r.label else None!r}\n"
            "depends_on = None\n\n\n"
            "def upgrade() -> None:\n"
            f"    op.execute(\"INSERT INTO ran (rev, dir) VALUES ('{r.rev}', 'up')\")\n\n\n"
            "def downgrade() -> None:\n"
            f"    op.execute(\"INSERT INTO ran (rev, dir) VALUES ('{r.rev}', 'down')\")\n"
        )


def make_project(root: Path, revs: list[R], url: str) -> Project:
    """A one-database project (``g``) with *revs*, its database prepared: table ``ran``."""
    root.mkdir(parents=True)
    (root / "migrations").mkdir()
    shutil.copy(REPO / "migrations" / "env.py", root / "migrations" / "env.py")
    shutil.copy(REPO / "migrations" / "script.py.mako", root / "migrations" / "script.py.mako")
    write_history(root / "migrations" / DB, revs)
    registry = {
        "version": 1,
        "default_env": "dev",
        "settings": {"lock_timeout": 10, "connect_timeout": 5},
        "databases": {DB: {}},
        "environments": {"dev": {"urls": {DB: url}}},
    }
    (root / "databases.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
    with _connect(url) as c:
        c.exec_driver_sql("CREATE TABLE ran (n INTEGER, rev VARCHAR(40), dir VARCHAR(8))")
    return Project(root)


def _connect(url: str) -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(url, poolclass=NullPool).begin()


def set_state(url: str, heads: tuple[str, ...]) -> None:
    """Put the database at *heads* (version rows only) and forget what ran."""
    with _connect(url) as c:
        c.exec_driver_sql("DELETE FROM ran")
        c.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL "
            "PRIMARY KEY)"
        )
        c.exec_driver_sql("DELETE FROM alembic_version")
        for h in heads:
            c.exec_driver_sql(f"INSERT INTO alembic_version (version_num) VALUES ('{h}')")


def ran(url: str) -> list[tuple[str, str]]:
    """(revision, direction) of every revision that ran, in order (rows in insert order)."""
    with _connect(url) as c:
        return [(str(r[0]), str(r[1])) for r in c.exec_driver_sql("SELECT rev, dir FROM ran")]


def versions(url: str) -> list[str]:
    with _connect(url) as c:
        rows = c.exec_driver_sql("SELECT version_num FROM alembic_version")
        return sorted(str(r[0]) for r in rows)


def announced(p: Project, direction: str, spec: str) -> tuple[int, list[str], list[str]]:
    """(exit code, revisions, heads after) as ``plan --json`` / ``downgrade --sql --json`` say."""
    if direction == "upgrade":
        r = p.orch("plan", f"{DB}@{spec}", "--json")
        doc = r.json()
        if r.exit_code:
            return r.exit_code, [], []
        step = doc["steps"][0]
        return 0, step["revisions"], sorted(step["to"])
    r = p.orch("downgrade", f"{DB}@{spec}", "--sql", "--json")
    doc = r.json()
    if r.exit_code:
        return r.exit_code, [], []
    section = doc["databases"][0]
    assert section["error"] is None, section
    return 0, section["revisions"], sorted(section["to"])


def check_pair(p: Project, url: str, start: tuple[str, ...], direction: str, spec: str) -> str:
    """Announce, run, compare: what was announced is exactly what ran.  Returns the outcome."""
    set_state(url, start)
    code, revs, to = announced(p, direction, spec)
    assert ran(url) == [] and versions(url) == sorted(start)  # announcing wrote nothing
    r = p.orch(direction, f"{DB}@{spec}", "--json")
    doc = r.json()
    where = f"{direction} {DB}@{spec} from {start or 'base'}"
    if code:
        # refused by both, with the same exit code, and nothing ran
        assert code == 2, where
        assert r.exit_code == 2, f"{where}: announced a refusal, run said {doc}"
        assert ran(url) == [] and versions(url) == sorted(start), where
        return "refused"
    assert r.exit_code == 0, f"{where}: announced {revs}, run said {doc}"
    entry = doc["databases"][0]
    assert entry["applied"] == revs, f"{where}: announced {revs}, applied {entry['applied']}"
    way = "up" if direction == "upgrade" else "down"
    assert ran(url) == [(rev, way) for rev in revs], f"{where}: announced {revs}, ran {ran(url)}"
    assert versions(url) == to == sorted(entry["to"]), where
    return "ran" if revs else "unchanged"


# ---------------------------------------------------------------- the reported history

BRANCHED = [
    R("aaa1"),
    R("bbb1", ("aaa1",)),
    R("ccc1", ("aaa1",), label="side"),
    R("mmm1", ("bbb1", "ccc1")),
    R("ddd1", ("mmm1",)),
]

PAIRS: list[tuple[tuple[str, ...], str, str]] = [
    # (start, direction, target)
    ((), "upgrade", "+1"),
    ((), "upgrade", "+2"),  # Alembic: ambiguous walk over the branch point
    ((), "upgrade", "head"),
    ((), "upgrade", "bbb1"),
    (("aaa1",), "upgrade", "+1"),
    (("bbb1",), "upgrade", "+1"),  # the report: announced ccc1, ran ccc1, mmm1, ddd1
    (("bbb1",), "upgrade", "+2"),
    (("bbb1",), "upgrade", "+3"),
    (("bbb1",), "upgrade", "side"),
    (("bbb1",), "upgrade", "mm"),
    (("ccc1",), "upgrade", "+1"),
    (("bbb1", "ccc1"), "upgrade", "+1"),
    (("bbb1", "ccc1"), "upgrade", "heads"),
    (("mmm1",), "upgrade", "+1"),
    (("mmm1",), "upgrade", "bbb1"),  # below the current revision
    (("ddd1",), "upgrade", "+1"),  # past head
    (("mmm1",), "downgrade", "bbb1"),  # the report: announced mmm1 and ccc1, removed mmm1
    (("mmm1",), "downgrade", "-1"),
    (("ddd1",), "downgrade", "-1"),
    (("ddd1",), "downgrade", "-2"),
    (("ddd1",), "downgrade", "aaa1"),
    (("ddd1",), "downgrade", "side"),
    (("ddd1",), "downgrade", "base"),
    (("bbb1", "ccc1"), "downgrade", "-1"),  # several heads: relative is ambiguous
    (("bbb1", "ccc1"), "downgrade", "ccc1"),
    (("bbb1",), "downgrade", "-2"),
    (("bbb1",), "downgrade", "ccc1"),  # not below the current revision
]


def test_branched_history_announced_equals_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    p = make_project(tmp_path / "proj", BRANCHED, url)
    outcomes = [check_pair(p, url, start, d, spec) for start, d, spec in PAIRS]
    assert outcomes.count("ran") >= 15 and outcomes.count("refused") >= 7, outcomes


def test_relative_upgrade_from_one_side_of_a_merge_runs_what_plan_says(tmp_path: Path) -> None:
    """The reported case, spelled out: +1 from b1 is the merge, which needs c1 first."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    p = make_project(tmp_path / "proj", BRANCHED, url)
    set_state(url, ("bbb1",))
    r = p.orch("plan", f"{DB}@+1", "--json")
    assert r.exit_code == 0 and r.json()["steps"][0]["revisions"] == ["ccc1", "mmm1"]
    r = p.orch("upgrade", f"{DB}@+1", "--json")
    assert r.exit_code == 0 and r.json()["databases"][0]["applied"] == ["ccc1", "mmm1"]
    assert versions(url) == ["mmm1"] and ran(url) == [("ccc1", "up"), ("mmm1", "up")]
    # downgrading to one side of the merge undoes the merge only: both sides stay
    r = p.orch("downgrade", f"{DB}@bbb1", "--sql", "--json")
    assert r.exit_code == 0, r.stdout
    assert r.json()["databases"][0]["revisions"] == ["mmm1"]
    assert r.json()["databases"][0]["to"] == ["bbb1", "ccc1"]
    assert "mmm1" in r.json()["databases"][0]["sql"] and "ccc1', 'down" not in r.stdout


# ---------------------------------------------------------------- the run refuses a changed plan


def test_an_announced_plan_whose_steps_changed_before_the_lock_runs_nothing(
    tmp_path: Path,
) -> None:
    """c1, m1 were announced; before the lock was taken another run applied c1: Alembic
    would now run m1 only, so the database runs nothing (refused, naming both)."""
    from orch.config.registry import load_registry
    from orch.run import execute
    from orch.service import Project

    url = f"sqlite:///{tmp_path / 'g.db'}"
    p = make_project(tmp_path / "proj", BRANCHED, url)
    set_state(url, ("bbb1",))
    project = Project(load_registry(p.registry_path), "dev")
    made = project.plan([f"{DB}@mmm1"])
    shown = made.approve()
    assert shown.steps[0].revisions == ("ccc1", "mmm1") and shown.steps[0].announced
    set_state(url, ("bbb1", "ccc1"))  # someone else applied ccc1 meanwhile
    result = project.run(shown, jobs=1)
    [res] = result.databases
    assert res.outcome == "refused", res
    assert "announced ccc1, mmm1 from bbb1" in (res.error or ""), res.error
    assert "Alembic would run mmm1" in (res.error or ""), res.error
    assert ran(url) == [] and versions(url) == ["bbb1", "ccc1"]
    assert result.exit_code == execute.exit_code([res]) == 2
    # a plan nobody was shown is resolved under the lock, as before
    [res] = project.run(made, jobs=1).databases
    assert res.outcome == "done" and res.applied == ["mmm1"], res
    assert ran(url) == [("mmm1", "up")]


def test_the_run_checks_alembics_own_steps_before_the_first_one(tmp_path: Path) -> None:
    """alembic_run.run compares the steps Alembic computed from the heads it read itself
    with the expected ones, before any step runs: a mismatch raises and nothing runs."""
    from orch.alembic_bridge import runner as alembic_run
    from orch.config.registry import load_registry
    from orch.store.db import connect

    url = f"sqlite:///{tmp_path / 'g.db'}"
    p = make_project(tmp_path / "proj", BRANCHED, url)
    set_state(url, ("bbb1",))
    registry = load_registry(p.registry_path)
    db = registry.database(DB)
    conn = connect(url, 5)
    try:
        differ = "announced ccc1, but Alembic would run ccc1, mmm1"
        with pytest.raises(alembic_run.StepsDiffer, match=differ):
            alembic_run.run(registry, db, url, conn, "upgrade", "+1", expect=["ccc1"])
        conn.rollback()
    finally:
        conn.close()
    assert ran(url) == [] and versions(url) == ["bbb1"]


def test_announced_equals_run_on_every_backend(
    backend: str, make_db: Callable[..., str], tmp_path: Path
) -> None:
    """The reported pairs that move the database, on PostgreSQL and MariaDB too."""
    url = make_db(backend)
    p = make_project(tmp_path / "proj", BRANCHED, url)
    picks = [
        (("bbb1",), "upgrade", "+1"),
        (("bbb1",), "upgrade", "+3"),
        (("mmm1",), "downgrade", "bbb1"),
        (("ddd1",), "downgrade", "-2"),
        (("bbb1", "ccc1"), "downgrade", "-1"),
    ]
    outcomes = [check_pair(p, url, start, d, spec) for start, d, spec in picks]
    assert outcomes == ["ran", "refused", "ran", "refused", "refused"]


# ---------------------------------------------------------------- generated histories


@st.composite
def histories(draw: st.DrawFn) -> list[R]:
    """1-7 revisions; each has 0 (a new base), 1 or 2 (a merge) parents among the earlier
    ones, so there are branches, merges and several bases; some carry a branch label."""
    n = draw(st.integers(1, 7))
    revs: list[R] = []
    tag = uuid.uuid4().hex[:4]
    for i in range(n):
        earlier = [r.rev for r in revs]
        k = draw(st.integers(0, min(2, len(earlier))))
        if i and k == 0 and draw(st.booleans()):
            k = 1  # mostly chains and branches; a new base now and then
        down = tuple(sorted(draw(st.permutations(earlier))[:k])) if k else ()
        label = f"lab{i}" if draw(st.integers(0, 3)) == 0 else None
        revs.append(R(f"r{i}{tag}", down, label))
    return _drop_redundant_parents(revs)


def _drop_redundant_parents(revs: list[R]) -> list[R]:
    """A merge of a revision with its own ancestor is not a history Alembic accepts."""
    parents = {r.rev: r.down for r in revs}

    def ancestors(rev: str) -> set[str]:
        seen: set[str] = set()
        stack = list(parents[rev])
        while stack:
            cur = stack.pop()
            if cur not in seen:
                seen.add(cur)
                stack.extend(parents[cur])
        return seen

    out = []
    for r in revs:
        down = tuple(d for d in r.down if not any(d in ancestors(o) for o in r.down if o != d))
        parents[r.rev] = down
        out.append(R(r.rev, down, r.label))
    return out


def _heads(revs: list[R], applied: set[str]) -> tuple[str, ...]:
    below = {d for r in revs if r.rev in applied for d in r.down}
    return tuple(sorted(applied - below))


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[R], tuple[str, ...], str, str]:
    """A history, a start (an ancestor-closed set of applied revisions), a direction and a
    target in any form: +N, -N, id, prefix, head, heads, base, a branch label."""
    revs = draw(histories())
    applied: set[str] = set()
    for r in revs:  # parents come first: keep a revision only if its parents are kept
        if all(d in applied for d in r.down) and draw(st.booleans()):
            applied.add(r.rev)
    start = _heads(revs, applied)
    direction = draw(st.sampled_from(["upgrade", "downgrade"]))
    ids = [r.rev for r in revs]
    labels = [r.label for r in revs if r.label]
    forms = ["relative", "id", "prefix", "head", "heads", "base"] + (["label"] if labels else [])
    form = draw(st.sampled_from(forms))
    if form == "relative":
        sign = "+" if direction == "upgrade" else "-"
        spec = f"{sign}{draw(st.integers(1, 4))}"
    elif form == "id":
        spec = draw(st.sampled_from(ids))
    elif form == "prefix":
        spec = draw(st.sampled_from(ids))[:2]  # r<i>: unique among <= 10 revisions
    elif form == "label":
        spec = draw(st.sampled_from(labels))
    else:
        spec = form
    return revs, start, direction, spec


_counter = itertools.count()


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="orch_announced_"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases())
def test_generated_histories_announced_equals_run(
    case: tuple[list[R], tuple[str, ...], str, str], scratch: Path
) -> None:
    revs, start, direction, spec = case
    assume(len({r.rev[:2] for r in revs}) == len(revs))
    root = scratch / f"p{next(_counter)}"
    url = f"sqlite:///{root}.db"
    p = make_project(root, revs, url)
    check_pair(p, url, start, direction, spec)


def test_the_protected_prompt_is_what_runs_or_nothing_runs(tmp_path: Path) -> None:
    """The prompt showed c1, m1 and the operator typed the name; meanwhile c1 was applied
    by someone else: the confirmed run refuses (exit 2) instead of running something else."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    url = f"sqlite:///{tmp_path / 'g.db'}"
    p = make_project(tmp_path / "proj", BRANCHED, url)
    data = p.registry()
    data["environments"]["dev"]["protected"] = True
    p.write_registry(data)
    set_state(url, ("bbb1",))
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orch", "upgrade", f"{DB}@mmm1", "--json"],
        cwd=p.root,
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**os.environ, "NO_COLOR": "1"},
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    while b"Type the environment's name" not in seen:
        assert time.monotonic() < deadline and proc.poll() is None, seen.decode()
        if select.select([leader], [], [], 1)[0]:
            seen += os.read(leader, 4096)
    assert b"ccc1, mmm1" in seen or b"bbb1 -> mmm1" in seen, seen.decode()
    set_state(url, ("bbb1", "ccc1"))  # another run applied ccc1 while the prompt waited
    os.write(leader, b"dev\n")
    out, _ = proc.communicate(timeout=60)
    os.close(leader)
    doc = json.loads(out)
    assert proc.returncode == 2, doc
    [entry] = doc["databases"]
    assert entry["outcome"] == "refused" and entry["applied"] == []
    assert "announced ccc1, mmm1 from bbb1" in entry["error"], entry["error"]
    assert ran(url) == [] and versions(url) == ["bbb1", "ccc1"]


def test_rollback_that_alembic_cannot_take_back_to_the_start_is_reported_not_half_done(
    tmp_path: Path,
) -> None:
    """From b1, upgrade to head applies c1 and m1, then d1 fails.  Alembic's downgrade to b1
    from m1 would undo m1 only and leave b1 and c1: the rollback says so and undoes nothing."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    p = make_project(tmp_path / "proj", BRANCHED, url)
    failing = p.root / "migrations" / DB / "ddd1.py"
    failing.write_text(
        failing.read_text().replace(
            "def upgrade() -> None:\n", "def upgrade() -> None:\n    raise RuntimeError('boom')\n"
        )
    )
    set_state(url, ("bbb1",))
    r = p.orch("upgrade", DB, "--on-failure", "rollback", "--json")
    [entry] = r.json()["databases"]
    assert r.exit_code == 1 and entry["outcome"] == "failed", entry
    assert entry["applied"] == ["ccc1", "mmm1"] and entry["to"] == ["mmm1"]
    rb = entry["rollback"]
    assert rb["outcome"] == "refused", rb
    assert "would run mmm1 and leave bbb1, ccc1, not bbb1" in rb["error"], rb["error"]
    assert ran(url) == [("ccc1", "up"), ("mmm1", "up")] and versions(url) == ["mmm1"]


def test_planning_with_alembics_resolver_imports_no_revision_module(tmp_path: Path) -> None:
    """The RevisionMap is built from the headers: plan reads no module; the run imports the
    modules of the revisions it runs, and only those."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    p = make_project(tmp_path / "proj", BRANCHED, url)
    marker = tmp_path / "imported"
    for f in sorted((p.root / "migrations" / DB).glob("*.py")):
        f.write_text(f.read_text() + f"\nopen({str(marker)!r}, 'a').write({f.stem!r} + ' ')\n")
    set_state(url, ("bbb1",))
    r = p.orch("plan", f"{DB}@+1", "--json")
    assert r.exit_code == 0 and r.json()["steps"][0]["revisions"] == ["ccc1", "mmm1"]
    assert p.orch("plan", "--json").exit_code == 0
    assert not marker.exists()
    assert p.orch("upgrade", f"{DB}@+1").exit_code == 0
    assert sorted(marker.read_text().split()) == ["ccc1", "mmm1"]


def test_a_failed_downgrade_from_two_heads_goes_back_up_to_both(tmp_path: Path) -> None:
    """Downgrading from b1 and c1 to base undoes both, then a1 fails: the rollback upgrades
    to "bbb1,ccc1" through Alembic's resolver and the database has exactly both heads again."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    p = make_project(tmp_path / "proj", BRANCHED, url)
    failing = p.root / "migrations" / DB / "aaa1.py"
    failing.write_text(
        failing.read_text().replace(
            "def downgrade() -> None:\n", "def downgrade() -> None:\n    raise RuntimeError('no')\n"
        )
    )
    set_state(url, ("bbb1", "ccc1"))
    r = p.orch("downgrade", f"{DB}@base", "--on-failure", "rollback", "--json")
    [entry] = r.json()["databases"]
    assert r.exit_code == 1 and entry["outcome"] == "failed", entry
    assert sorted(entry["applied"]) == ["bbb1", "ccc1"]
    assert entry["rollback"]["outcome"] == "done", entry["rollback"]
    assert sorted(entry["rollback"]["applied"]) == ["bbb1", "ccc1"]
    assert versions(url) == ["bbb1", "ccc1"]
    undone = [rev for rev, way in ran(url) if way == "down"]
    redone = [rev for rev, way in ran(url) if way == "up"]
    assert sorted(undone) == sorted(redone) == ["bbb1", "ccc1"]
