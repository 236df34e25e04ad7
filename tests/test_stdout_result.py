"""stdout is the command's result: what revisions, env.py and models print goes to stderr.

Revisions of real projects call ``print()``, and some write to file
descriptor 1 directly (``os.write(1, ...)``, a subprocess inheriting it).
Neither may corrupt the table or the one JSON document on stdout (``orch
upgrade --all --json | jq``), nor the SQL of ``--sql``; the text must still
be visible, on stderr.  Descriptor-level writes and worker processes can only
be observed from outside, so these tests run the console script in a
subprocess, inline (``--jobs 1``) and with workers (``--jobs 2``), on every
backend.  One test runs in-process, where ``sys.stdout`` is not descriptor 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import Project
from minproj import Rev, make_project, rev_id

DBS = ("alpha", "beta")  # independent: --jobs 2 runs them in two worker processes at once


def _noise(where: str) -> str:
    """Python that writes *where* to stdout both ways: print() and descriptor 1."""
    return f"print('PRINT-{where}')\nos.write(1, b'FD1-{where}\\n')\n"


def noisy_project(root: Path, urls: dict[str, str]) -> Project:
    """Two databases whose revisions, revision modules and env.py all write to stdout."""
    dbs = {
        db: [
            Rev(
                up=[f"CREATE TABLE {db}_t{i} (id INTEGER)"],
                down=[f"DROP TABLE {db}_t{i}"],
                code=_noise(f"{db}-upgrade-{i}"),
            )
            for i in (1, 2)
        ]
        for db in DBS
    }
    p = make_project(root, dbs, urls)
    for db in DBS:
        for i in (1, 2):
            path = root / "migrations" / db / f"{rev_id(db, i)}.py"
            path.write_text(path.read_text() + "\n" + _noise(f"import-{rev_id(db, i)}"))
    env_py = root / "migrations" / "env.py"
    env_py.write_text(env_py.read_text() + "\nimport os\n\n" + _noise("env.py"))
    return p


def _urls(make_db: Callable[..., str], backend: str) -> dict[str, str]:
    return {db: make_db(backend) for db in DBS}


def _doc(r: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        doc = json.loads(r.stdout)
    except json.JSONDecodeError as exc:  # the bug: something printed before the document
        raise AssertionError(f"stdout is not one JSON document ({exc}):\n{r.stdout}") from exc
    assert isinstance(doc, dict)
    return doc


def _no_noise(text: str) -> None:
    assert "PRINT-" not in text and "FD1-" not in text, text


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_run_commands_keep_stdout_one_json_document(
    tmp_path: Path, make_db: Callable[..., str], backend: str, jobs: str
) -> None:
    p = noisy_project(tmp_path / "proj", _urls(make_db, backend))

    r = p.orch_proc("upgrade", "--all", "--json", "--jobs", jobs, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = _doc(r)
    assert [(d["name"], d["outcome"]) for d in doc["databases"]] == [
        ("alpha", "done"),
        ("beta", "done"),
    ]
    _no_noise(r.stdout)
    # visible, on stderr: printed and written to descriptor 1, in every process.  Each text
    # is one write (atomic on a pipe); print()'s newline is a second one that another
    # worker may get in before, so only the texts are looked for.
    for db in DBS:
        for i in (1, 2):
            assert f"PRINT-{db}-upgrade-{i}" in r.stderr
            assert f"FD1-{db}-upgrade-{i}" in r.stderr
            assert f"FD1-import-{rev_id(db, i)}" in r.stderr
    assert "PRINT-env.py" in r.stderr and "FD1-env.py" in r.stderr

    r = p.orch_proc("status", "--json", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {d["state"] for d in _doc(r)["databases"]} == {"up_to_date"}
    _no_noise(r.stdout)

    r = p.orch_proc("downgrade", "alpha@base", "beta@-1", "--json", "--jobs", jobs, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [d["outcome"] for d in _doc(r)["databases"]] == ["done", "done"]
    _no_noise(r.stdout)
    assert f"FD1-import-{rev_id('alpha', 1)}" in r.stderr  # the modules ran to downgrade
    assert f"PRINT-import-{rev_id('beta', 2)}" in r.stderr

    r = p.orch_proc("stamp", "alpha@head", "--json", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _doc(r)["databases"][0]["outcome"] == "done"
    _no_noise(r.stdout)
    assert "FD1-env.py" in r.stderr

    r = p.orch_proc("upgrade", "--all", "--jobs", jobs, timeout=120)  # the table, too
    assert r.returncode == 0, r.stdout + r.stderr
    _no_noise(r.stdout)
    assert r.stdout.splitlines()[0].split()[:2] == ["DATABASE", "OUTCOME"]
    assert "FD1-beta-upgrade-2" in r.stderr


def test_sql_preview_stays_clean_sql(
    tmp_path: Path, make_db: Callable[..., str], backend: str
) -> None:
    """--sql imports every pending revision and runs env.py: not a word of that in the SQL."""
    p = noisy_project(tmp_path / "proj", _urls(make_db, backend))
    r = p.orch_proc("upgrade", "--all", "--sql", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    _no_noise(r.stdout)
    assert r.stdout.startswith("-- orch upgrade --sql: environment dev")
    assert "CREATE TABLE alpha_t2" in r.stdout and "CREATE TABLE beta_t1" in r.stdout
    assert f"FD1-import-{rev_id('alpha', 2)}" in r.stderr and "PRINT-env.py" in r.stderr
    r = p.orch_proc("upgrade", "--all", "--sql", "--json", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    sections = _doc(r)["databases"]
    assert [s["name"] for s in sections] == list(DBS)
    _no_noise(json.dumps(sections))
    # nothing ran: --sql wrote nothing, and the printing happened only while rendering
    r = p.orch_proc("status", "--json", timeout=120)
    assert {d["state"] for d in _doc(r)["databases"]} == {"behind"}


def test_check_with_printing_models_is_one_json_document(tmp_path: Path) -> None:
    """The models module (imported by check) and env.py may print too."""
    root = tmp_path / "proj"
    p = noisy_project(root, {db: f"sqlite:///{root}/{db}.db" for db in DBS})
    (root / "noisy_models.py").write_text(
        "import os\nfrom sqlalchemy import Column, Integer, MetaData, Table\n"
        + _noise("models")
        + "metadata = MetaData()\n"
        + "".join(f"Table('alpha_t{i}', metadata, Column('id', Integer))\n" for i in (1, 2))
    )
    data = yaml.safe_load(p.registry_path.read_text())
    data["databases"]["alpha"]["metadata"] = "noisy_models:metadata"
    p.write_registry(data)
    assert p.orch_proc("upgrade", "--all", timeout=120).returncode == 0
    r = p.orch_proc("check", "alpha", "--json", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _doc(r)["databases"][0]["state"] == "clean"
    _no_noise(r.stdout)
    assert "PRINT-models" in r.stderr and "FD1-models" in r.stderr


def test_inline_print_in_process_goes_to_stderr(tmp_path: Path) -> None:
    """Called in-process (sys.stdout replaced, not descriptor 1): print() still lands on stderr."""
    root = tmp_path / "proj"
    p = make_project(
        root,
        {"solo": [Rev(up=["CREATE TABLE t (id INTEGER)"], code="print('PRINT-solo')")]},
        {"solo": f"sqlite:///{root}/solo.db"},
    )
    r = p.orch("upgrade", "--all", "--json", "--jobs", "1")
    assert r.exit_code == 0, r
    assert r.json()["databases"][0]["outcome"] == "done"
    assert "PRINT-solo" in r.stderr
    r = p.orch("downgrade", "solo@base", "--sql")
    assert "PRINT" not in r.stdout


def test_no_stdout_at_all_is_no_error(project: Project) -> None:
    """``orch status >&-``: no result stream, nothing to protect; no traceback at exit."""
    r = subprocess.run(
        ["sh", "-c", f'"{sys.executable}" -m orch status >&-'],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "environment: dev" not in r.stderr
