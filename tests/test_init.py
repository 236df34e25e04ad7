"""orch init: from an empty directory to a first applied revision of one's own models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO, run_orch
from orch.authoring.scaffold import template

MODELS = """
from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
"""


def _orch(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command in a fresh process, as a user would run it."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("ORCH_CONFIG", None)
    env.pop("ORCH_ENV", None)
    return subprocess.run(
        [sys.executable, "-m", "orch", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_init_to_first_applied_revision(tmp_path: Path) -> None:
    root = tmp_path / "app"
    r = _orch(tmp_path, "init", "app")
    assert r.returncode == 0, r.stderr
    for rel in (
        "alembic.ini",
        "databases.yaml",
        "migrations/env.py",
        "migrations/script.py.mako",
        "migrations/main/",
    ):
        assert f"created  {rel}" in r.stdout
    assert (root / "migrations" / "main").is_dir()
    assert "orch revision main" in r.stdout
    # the user's models, named in the registry
    (root / "myapp").mkdir()
    (root / "myapp" / "__init__.py").write_text("")
    (root / "myapp" / "models.py").write_text(MODELS)
    reg = (root / "databases.yaml").read_text()
    assert "# metadata: myapp.models:Base" in reg
    (root / "databases.yaml").write_text(reg.replace("# metadata:", "metadata:"))
    assert _orch(root, "check").returncode == 1  # models ahead of the (missing) database
    r = _orch(root, "upgrade", "--all")
    assert r.returncode == 0, r.stderr
    r = _orch(root, "revision", "main", "-m", "create customers", "--autogenerate")
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip())
    assert path.parent == root / "migrations" / "main"
    text = path.read_text()
    assert "op.create_table('customers'" in text
    assert "branch_labels: Union[str, Sequence[str], None] = ('main',)" in text
    assert _orch(root, "check").returncode == 1  # written, not applied yet
    r = _orch(root, "upgrade", "--all")
    assert r.returncode == 0, r.stderr
    r = _orch(root, "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "clean" in r.stdout
    st = _orch(root, "status", "--json")
    assert '"up_to_date"' in st.stdout
    # plain alembic sees the database's head through the scaffolded alembic.ini
    alembic = subprocess.run(
        [sys.executable, "-m", "alembic", "heads"],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert "(main) (head)" in alembic.stdout, alembic.stderr


def test_init_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "alembic.ini").write_text("# mine\n[alembic]\nscript_location = migrations\n")
    r = run_orch(["init", str(tmp_path), "--database", "core", "--metadata", "app.db:meta"])
    assert r.exit_code == 0, r.stderr
    assert "skipped  alembic.ini (exists; not changed)" in r.stdout
    assert (tmp_path / "alembic.ini").read_text().startswith("# mine")
    assert "no version_locations" in r.stderr  # plain alembic would not see migrations/core
    reg = yaml.safe_load((tmp_path / "databases.yaml").read_text())
    assert reg["databases"]["core"] == {"metadata": "app.db:meta"}
    assert reg["environments"]["dev"]["urls"]["core"] == "sqlite:///var/dev/core.db"
    before = {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    r = run_orch(["init", str(tmp_path)])
    assert r.exit_code == 0
    assert "created" not in r.stdout and r.stdout.count("skipped") == 4
    assert {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_init_in_an_app_with_its_own_env_py(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "env.py").write_text("# the old single-database env.py\n")
    r = run_orch(["init", str(tmp_path), "--json"])
    assert r.exit_code == 0
    doc = r.json()
    actions = {f["path"]: f["action"] for f in doc["files"]}
    assert actions["migrations/env.py"] == "skipped"
    assert actions["databases.yaml"] == "created"
    assert any("not orch's env.py" in n for n in doc["notes"])


def test_init_rejects_bad_names(tmp_path: Path) -> None:
    r = run_orch(["init", str(tmp_path), "--database", "Bad-Name"])
    assert r.exit_code == 2 and "--database" in r.stderr
    r = run_orch(["init", str(tmp_path), "--metadata", "nocolon"])
    assert r.exit_code == 2
    assert not any(tmp_path.iterdir())


def test_reference_project_uses_the_shipped_templates() -> None:
    """env.py and script.py.mako of the reference project are the ones init writes."""
    assert (REPO / "migrations" / "env.py").read_text() == template("env.py")
    assert (REPO / "migrations" / "script.py.mako").read_text() == template("script.py.mako")
