"""orch revision [--autogenerate] and orch merge: right directory, right parent, no writes."""

from __future__ import annotations

import re
from pathlib import Path

from authoring_support import (
    TAGS_MODEL,
    models_module,
    names,
    new_files,
    sqlite_file,
    tables,
    untouched,
    url_of,
)
from conftest import Project


def _header(path: object) -> dict[str, str]:
    text = Path(str(path)).read_text()
    out = {}
    for key in ("revision", "down_revision", "branch_labels"):
        m = re.search(rf"^{key}: [^=]+= (.+)$", text, re.M)
        assert m, key
        out[key] = m.group(1)
    return out


def test_autogenerate_finds_nothing_after_upgrade_and_writes_no_file(
    backend_project: Project,
) -> None:
    p = backend_project
    assert p.orch("upgrade", "--all").exit_code == 0
    before = names(p, "core")
    r = p.orch("revision", "core", "-m", "nothing", "--autogenerate")
    assert r.exit_code == 0, r.stderr
    assert "no changes detected" in r.stderr
    assert r.stdout == ""
    assert names(p, "core") == before
    doc = p.orch("revision", "core", "-m", "nothing", "--autogenerate", "--json").json()
    assert doc["created"] is False and doc["path"] is None


def test_autogenerate_writes_the_change_on_the_head_and_it_applies(
    backend_project: Project,
) -> None:
    """The type comparison and the ALTER dialect differ per backend; the result must apply
    and leave no drift on each of them."""
    p = backend_project
    assert p.orch("upgrade", "--all").exit_code == 0
    models_module(
        p,
        extra_core=TAGS_MODEL.replace("String(40)", "String(40)")
        + "\nAccount.__table__.c.plan.type.length = 48\n",
    )
    before = names(p, "core")
    analytics_before = names(p, "analytics")
    r = p.orch("revision", "core", "-m", "tags and wider plan", "--autogenerate")
    assert r.exit_code == 0, r.stderr
    [path] = new_files(p, "core", before)
    assert r.stdout.strip() == str(path)
    assert names(p, "analytics") == analytics_before
    head = _header(path)
    assert head["down_revision"] == "'bd61b77cf8aa'"
    assert head["branch_labels"] == "None"
    text = path.read_text()
    assert "op.create_table('tags'" in text
    assert "length=48" in text  # the type change was seen (compare_type)
    assert "detected add_table tags" in r.stderr
    if "sqlite" in url_of(p, "core"):
        assert "batch_alter_table('accounts'" in text  # SQLite cannot ALTER COLUMN
    # it applies, and afterwards models and schema agree
    r = p.orch("upgrade", "core")
    assert r.exit_code == 0, r.stderr + r.stdout
    assert p.orch("check", "core").exit_code == 0
    assert "tags" in tables(url_of(p, "core"))


def test_autogenerate_writes_nothing_to_a_new_database(backend_project: Project) -> None:
    """A database with no revisions yet: no version table, no orch_log, no SQLite file."""
    p = backend_project
    data = p.registry()
    data["databases"]["billing"] = {"metadata": "billing_models:metadata"}
    core_url = url_of(p, "core")
    if core_url.startswith("sqlite"):
        billing_url = "sqlite:///var/dev/billing.db"
    else:
        # a second, empty database on the same server: reuse analytics' (nothing ran yet)
        billing_url = url_of(p, "analytics")
        del data["databases"]["analytics"]
        del data["environments"]["dev"]["urls"]["analytics"]
        for env in ("staging", "prod"):
            data["environments"][env]["urls"].pop("analytics", None)
    data["environments"]["dev"]["urls"]["billing"] = billing_url
    for env in ("staging", "prod"):
        data["environments"][env]["urls"]["billing"] = "${BILLING_URL}"
    p.write_registry(data)
    (p.root / "src" / "billing_models.py").write_text(
        "from sqlalchemy import Column, Integer, MetaData, String, Table\n"
        "metadata = MetaData()\n"
        "invoices = Table('invoices', metadata, Column('id', Integer, primary_key=True),\n"
        "                 Column('number', String(20), nullable=False))\n"
    )
    r = p.orch("revision", "billing", "-m", "create invoices", "--autogenerate")
    assert r.exit_code == 0, r.stderr
    [path] = list((p.root / "migrations" / "billing").glob("*.py"))
    head = _header(path)
    assert head["down_revision"] == "None"
    assert head["branch_labels"] == "('billing',)"
    assert "op.create_table('invoices'" in path.read_text()
    url = url_of(p, "billing")
    assert tables(url) == set()
    sqlite = sqlite_file(url)
    assert sqlite is None or not sqlite.exists()
    # alembic.ini learnt the new directory, comments kept
    ini = (p.root / "alembic.ini").read_text()
    assert "%(here)s/migrations/billing" in ini
    assert "alembic.ini: added %(here)s/migrations/billing to version_locations" in r.stderr
    assert ini.startswith("# Alembic configuration")


def test_autogenerate_refuses_a_database_that_is_behind(backend_project: Project) -> None:
    p = backend_project
    r = p.orch("revision", "core", "-m", "x", "--autogenerate")
    assert r.exit_code == 2
    assert "not at its head" in r.stderr and "orch upgrade core" in r.stderr
    assert "Traceback" not in r.stderr
    assert untouched(p)


def test_autogenerate_without_metadata_is_a_usage_error(project: Project) -> None:
    data = project.registry()
    del data["databases"]["core"]["metadata"]
    project.write_registry(data)
    r = project.orch("revision", "core", "-m", "x", "--autogenerate")
    assert r.exit_code == 2
    assert "core has no 'metadata'" in r.stderr
    assert untouched(project)


def test_bad_metadata_is_named_before_anything_happens(project: Project) -> None:
    data = project.registry()
    data["databases"]["core"]["metadata"] = "shop.nope:core_metadata"
    project.write_registry(data)
    r = project.orch("revision", "core", "-m", "x", "--autogenerate")
    assert r.exit_code == 2
    assert "databases.core.metadata: cannot import 'shop.nope'" in r.stderr


def test_plain_revisions_chain_and_merge(project: Project) -> None:
    p = project
    r = p.orch("revision", "core", "-m", "first extra", "--rev-id", "aaa1")
    assert r.exit_code == 0, r.stderr
    assert _header(r.stdout.strip())["down_revision"] == "'bd61b77cf8aa'"
    # a second branch by hand (as two developers would), then merge
    r = p.orch("revision", "core", "-m", "second extra", "--rev-id", "bbb2")
    assert _header(r.stdout.strip())["down_revision"] == "'aaa1'"
    src = (p.root / "migrations" / "core").glob("bbb2_*.py")
    [b] = list(src)
    b.write_text(b.read_text().replace("= 'aaa1'", "= 'bd61b77cf8aa'"))
    r = p.orch("revision", "core", "-m", "third")
    assert r.exit_code == 2 and "run 'orch merge core' first" in r.stderr
    doc = p.orch("history", "core", "--json").json()
    assert sorted(doc["heads"]) == ["aaa1", "bbb2"]
    r = p.orch("merge", "core", "--rev-id", "mmm3")
    assert r.exit_code == 0, r.stderr
    head = _header(r.stdout.strip())
    assert head["down_revision"] in ("('aaa1', 'bbb2')", "('bbb2', 'aaa1')")
    assert p.orch("history", "core", "--json").json()["heads"] == ["mmm3"]
    r = p.orch("merge", "core")
    assert r.exit_code == 0 and "nothing to merge" in r.stderr
    # the new revisions run
    assert p.orch("upgrade", "--all").exit_code == 0
    assert p.orch("status", "--check").exit_code == 0


def test_rev_id_is_checked(project: Project) -> None:
    r = project.orch("revision", "core", "-m", "x", "--rev-id", "a" * 33)
    assert r.exit_code == 2 and "at most 32" in r.stderr
    r = project.orch("revision", "core", "-m", "x", "--rev-id", "bd61b77cf8aa")
    assert r.exit_code == 2 and "already has a revision" in r.stderr


def test_revision_json(project: Project) -> None:
    doc = project.orch("revision", "analytics", "-m", "x", "--rev-id", "j1", "--json").json()
    assert doc["schema"] == 1
    assert doc["created"] is True and doc["revision"] == "j1"
    assert doc["down_revision"] == ["ce37b359c1da"]


def test_autogenerate_names_a_missing_variable_and_creates_nothing(project: Project) -> None:
    data = project.registry()
    data["databases"]["billing"] = {"metadata": "shop.models:core_metadata"}
    for env in ("dev", "staging", "prod"):
        data["environments"][env]["urls"]["billing"] = "${BILLING_URL}"
    project.write_registry(data)
    r = project.orch("revision", "billing", "-m", "x", "--autogenerate")
    assert r.exit_code == 2
    assert "BILLING_URL" in r.stderr
    assert not (project.root / "migrations" / "billing").exists()
