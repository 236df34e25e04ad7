"""End-to-end behaviour of the core commands on every backend."""

from __future__ import annotations

from conftest import Project


def test_upgrade_status_downgrade_cycle(backend_project: Project) -> None:
    p = backend_project
    r = p.orch("upgrade", "--all")
    assert r.exit_code == 0, r.stderr
    assert "core" in r.stdout and "done" in r.stdout
    doc = p.orch("status", "--json").json()
    assert doc["schema"] == 1
    assert [d["state"] for d in doc["databases"]] == ["up_to_date", "up_to_date"]
    r = p.orch("downgrade", "analytics@base")
    assert r.exit_code == 0, r.stderr
    states = {d["name"]: d for d in p.orch("status", "--json").json()["databases"]}
    assert states["core"]["state"] == "up_to_date"
    assert states["analytics"]["state"] == "behind"
    assert states["analytics"]["current"] == []
    assert states["analytics"]["pending"] == 4
    assert p.orch("status", "--check").exit_code == 1
    plan = p.orch("plan", "--all")
    assert plan.exit_code == 0
    assert "analytics" in plan.stdout and "core" not in plan.stdout.split("\n", 1)[1]
    assert p.orch("upgrade", "--all").exit_code == 0
    assert p.orch("status", "--check").exit_code == 0


def test_console_script_exit_codes_output_and_closed_pipe(project: Project) -> None:
    """``python -m orch`` ends with a fast exit (no module teardown): nothing may get lost.

    Everything printed arrives, the exit code is the documented one, and a
    reader that closes the pipe early (``orch history | head -1``) gets no
    traceback from orch.
    """
    import subprocess
    import sys

    r = project.orch_proc("upgrade", "--all")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("done") == 2 and r.stdout.endswith("\n")
    r = project.orch_proc("status", "--json")
    assert r.returncode == 0 and r.stdout.rstrip().endswith("}")
    r = project.orch_proc("downgrade", "core@nosuchrev")
    assert r.returncode == 2 and r.stderr.startswith("orch: error: ")
    r = project.orch_proc("status", "--check", env={"ORCH_ENV": "dev"})
    assert r.returncode == 0
    # the reader is gone before orch writes a byte: no traceback, no "Exception ignored"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orch", "history", "core"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 1), err  # 1: Click's exit for a closed pipe
    assert "Traceback" not in err and "Exception" not in err, err
