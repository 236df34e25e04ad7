"""The Python API (``orch.Project``, :mod:`orch.service`) on the reference project, no CLI.

What a program relies on: results are typed (``State``/``Outcome`` members),
the plan is what the run then applies, errors say which databases they are
about, nothing is printed, and Click is never imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import orch
from conftest import REPO, Project
from orch import Outcome, State


def load(project: Project, env: str = "dev") -> orch.Project:
    return orch.Project.load(project.registry_path, env=env)


def test_status_upgrade_status_downgrade_with_typed_results(
    project: Project,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # the registry's path is enough: not the working directory
    p = load(project)
    assert p.environment_name == "dev" and not p.protected

    before = p.status()
    assert [db.name for db in before] == ["core", "analytics"]
    for db in before:
        assert db.state is State.BEHIND and isinstance(db.state, State)
        assert (db.current, db.pending, len(db.heads)) == ([], 4, 1)
    assert before.exit_code(check=True) == 1 and before.exit_code() == 0

    # the plan is the run: core to head and analytics one step, applied as planned
    plan = p.plan(["core", "analytics@+1"])
    assert plan.direction is orch.Direction.UPGRADE
    assert [s.db for s in plan.steps] == ["core", "analytics"]
    planned = {s.db: list(s.revisions) for s in plan.steps}
    assert len(planned["core"]) == 4 and len(planned["analytics"]) == 1
    result = p.run(plan, jobs=1)
    assert result.ok and result.exit_code == 0 and result.error is None
    assert {r.name: r.outcome for r in result} == {"core": "done", "analytics": "done"}
    assert all(r.outcome is Outcome.DONE for r in result)
    assert {r.name: r.applied for r in result} == planned

    # the rest, in worker processes: outcomes come back typed across the pipe
    result = p.upgrade(all=True, jobs=2)
    assert result["core"].outcome is Outcome.UNCHANGED
    assert result["analytics"].outcome is Outcome.DONE and len(result["analytics"].applied) == 3
    after = p.status()
    assert {db.name: db.state for db in after} == {"core": "up_to_date", "analytics": "up_to_date"}
    assert all(db.state is State.UP_TO_DATE and db.pending == 0 for db in after)
    assert after.exit_code(check=True) == 0
    assert [r.state for r in p.check()] == [orch.CheckState.CLEAN, orch.CheckState.CLEAN]

    down = p.downgrade(["analytics@-1"])
    assert down.direction == "downgrade" and down["analytics"].outcome is Outcome.DONE
    assert down["analytics"].start != down["analytics"].end
    assert p.status()["analytics"].state is State.BEHIND
    assert p.status(["analytics"])["analytics"].pending == 1

    log = p.log(["analytics"], limit=None)
    assert log.exit_code == 0
    assert [e.direction for e in log][:1] == ["downgrade"]  # newest first
    assert sum(1 for e in log if e.direction == "upgrade") == 4
    history = p.history("core")
    assert history.state is State.UP_TO_DATE and all(e.applied for e in history.entries)
    # a library prints nothing
    captured = capfd.readouterr()
    assert (captured.out, captured.err) == ("", "")


def test_a_program_using_the_api_never_imports_click(project: Project) -> None:
    program = f"""
import json, sys
import orch
project = orch.Project.load({str(project.registry_path)!r}, env="dev")
states = [db.state for db in project.status()]
result = project.upgrade(all=True)
print(json.dumps({{"click": sorted(m for m in sys.modules if m.split(".")[0] == "click"),
                   "cli": "orch.cli" in sys.modules, "states": states,
                   "outcomes": [r.outcome for r in result], "code": result.exit_code}}))
"""
    r = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc == {
        "click": [],
        "cli": False,
        "states": ["behind", "behind"],
        "outcomes": ["done", "done"],
        "code": 0,
    }


def test_import_orch_is_light_and_exports_lazily() -> None:
    program = """
import json, sys
import orch
loaded = sorted(m for m in sys.modules if m.startswith(("orch.", "click", "sqlalchemy", "yaml")))
names = [orch.State.BEHIND, orch.Outcome.DONE]
print(json.dumps({"loaded": loaded, "names": names, "all": sorted(orch.__all__)}))
"""
    r = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["loaded"] == [] and doc["names"] == ["behind", "done"]
    for name in doc["all"]:
        assert getattr(orch, name) is not None
    with pytest.raises(AttributeError):
        orch.NoSuchThing  # noqa: B018


def test_errors_carry_the_databases_concerned(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = load(project)
    with pytest.raises(orch.UsageError) as unknown:
        p.status(["core", "nosuch"])
    assert unknown.value.databases == ("nosuch",) and unknown.value.exit_code == 2
    assert "'nosuch'" in str(unknown.value)
    with pytest.raises(orch.UsageError) as twice:
        p.plan(["core", "core@+1"])
    assert twice.value.databases == ("core",)
    with pytest.raises(orch.UsageError) as untargeted:
        p.downgrade(["analytics"])
    assert untargeted.value.databases == ("analytics",)

    with pytest.raises(orch.UsageError, match="on_failure 'undo': use one of stop, rollback"):
        p.upgrade(["core"], on_failure="undo")

    # the dependency rule names the dependency that is behind; nothing ran
    with pytest.raises(orch.RefusedError) as behind:
        p.upgrade(["analytics"])
    assert behind.value.databases == ("core",) and behind.value.exit_code == 2
    assert project.missing_file("analytics")

    # a missing variable names the database whose URL needs it
    monkeypatch.delenv("STAGING_CORE_URL", raising=False)
    monkeypatch.setenv("STAGING_ANALYTICS_URL", f"sqlite:///{project.root / 's.db'}")
    staging = load(project, "staging")
    with pytest.raises(orch.MissingVariable) as missing:
        staging.plan(all=True)
    assert missing.value.databases == ("core",) and "STAGING_CORE_URL" in str(missing.value)

    # downgrading core under an analytics that is not at base is refused, naming analytics
    p.upgrade(all=True, jobs=1)
    with pytest.raises(orch.RefusedError) as dependents:
        p.plan_downgrade(["core@-1"])
    assert dependents.value.databases == ("analytics",)


def test_a_protected_environment_runs_an_approved_plan_or_yes_only(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("core", "analytics"):
        monkeypatch.setenv(f"PROD_{name.upper()}_URL", f"sqlite:///{project.root / name}.db")
    data = project.registry()
    del data["environments"]["prod"]["hooks"]  # pg_dump: not for SQLite
    project.write_registry(data)
    p = load(project, "prod")
    assert p.protected
    with pytest.raises(orch.RefusedError) as refused:
        p.upgrade(all=True)
    assert refused.value.databases == ("core", "analytics")
    assert not (project.root / "core.db").exists()  # nothing was touched

    plan = p.plan(["core"])  # shown to someone, who approves exactly this
    assert [s.revisions for s in plan.steps][0] and not plan.approved
    result = p.run(plan.approve(), jobs=1)
    assert result["core"].outcome is Outcome.DONE
    assert p.upgrade(all=True, yes=True, jobs=1)["analytics"].outcome is Outcome.DONE


def test_a_failed_upgrade_rolls_back_and_says_so(project: Project) -> None:
    """``on_failure="rollback"``: the database the run changed goes back; outcomes stay."""
    bad = project.root / "migrations" / "analytics" / "zz_fails.py"
    heads = orch.Project.load(project.registry_path, env="dev").status()["analytics"].heads
    bad.write_text(
        '"""fails"""\n'
        "from alembic import op\n\n"
        f'revision = "zz0fails"\ndown_revision = "{heads[0]}"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n"
        '    op.execute("SELECT * FROM no_such_table")\n\n\n'
        "def downgrade() -> None:\n"
        "    pass\n"
    )
    p = load(project)
    seen: list[tuple[str, list[str]]] = []
    result = p.upgrade(
        all=True,
        jobs=1,
        on_failure="rollback",
        on_rollback=lambda why, names: seen.append((why, names)),
    )
    assert result.exit_code == 1 and result.rolled_back and not result.ok
    assert result.on_failure is orch.OnFailure.ROLLBACK
    assert result["analytics"].outcome is Outcome.FAILED
    assert result["analytics"].revision == "zz0fails"
    assert result["core"].outcome is Outcome.DONE  # what happened, not rewritten
    assert result["core"].rollback is not None and result["core"].rollback["outcome"] == "done"
    assert seen == [("the run did not succeed", ["analytics", "core"])]
    assert result.error is not None and "analytics failed" in result.error
    assert [db.current for db in p.status()] == [[], []]


def test_the_same_flow_on_postgresql(project: Project, make_db: Callable[..., str]) -> None:
    project.set_urls("dev", {"core": make_db("postgresql"), "analytics": make_db("postgresql")})
    p = load(project)
    assert [db.state for db in p.status()] == [State.BEHIND, State.BEHIND]
    plan = p.plan(all=True)
    result = p.run(plan)
    assert [r.outcome for r in result] == [Outcome.DONE, Outcome.DONE]
    assert {r.name: r.applied for r in result} == {s.db: list(s.revisions) for s in plan.steps}
    assert [db.state for db in p.status()] == [State.UP_TO_DATE, State.UP_TO_DATE]
    down = p.downgrade(["analytics@base"])
    assert down["analytics"].outcome is Outcome.DONE and down["analytics"].end == []
    status = p.status()
    assert status["analytics"].state is State.BEHIND and status["analytics"].pending == 4
    assert status["core"].state is State.UP_TO_DATE
