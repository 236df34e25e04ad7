"""Worker processes under faults, and the dependency rules under concurrency.

A worker SIGKILLed in the middle of ``upgrade --all --jobs 4`` fails its own
database only: the others finish, the summary reads the killed one's real
state, and the rerun reaches head.  A downgrade raced with an upgrade never
leaves a dependent above base while its dependency is at base.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

from minproj import Rev, log_rows, make_project, rev_id, version_of
from test_safety import alive, popen, wait_for, wait_for_running

MakeDb = Callable[..., str]

# revision 2 of "slow": tell the test which process runs it, then wait to be killed
KILL_ME = (
    'if os.environ.get("ORCH_TEST_PIDFILE"):\n'
    "    import time\n"
    '    open(os.environ["ORCH_TEST_PIDFILE"], "w").write(str(os.getpid()))\n'
    "    time.sleep(60)"
)
# "late" waits for the test to open a gate: it is in flight when the other worker dies
GATED = (
    'gate = os.environ.get("ORCH_TEST_GATE")\n'
    "import time\n"
    "for _ in range(600):\n"
    "    if not gate or os.path.exists(gate):\n"
    "        break\n"
    "    time.sleep(0.05)"
)


def _urls(backend: str, make_db: MakeDb, tmp_path: Path, names: list[str]) -> dict[str, str]:
    if backend == "sqlite":
        (tmp_path / "dbs").mkdir(exist_ok=True)
        return {n: f"sqlite:///{tmp_path / 'dbs' / n}.db" for n in names}
    return {n: make_db(backend) for n in names}


def test_a_killed_worker_fails_only_its_own_database(
    backend: str, make_db: MakeDb, tmp_path: Path
) -> None:
    names = ["slow", "after", "late", "quick", "queued"]
    urls = _urls(backend, make_db, tmp_path, names)
    table = [Rev(up=["CREATE TABLE a (id int)"], down=["DROP TABLE a"])]
    p = make_project(
        tmp_path / "p",
        {
            "slow": [*table, Rev(code=KILL_ME, up=["CREATE TABLE b (id int)"])],
            "after": table,  # depends on slow: skipped
            "late": [*table, Rev(code=GATED, up=["CREATE TABLE b (id int)"])],
            "quick": table,
            "queued": [*table, Rev(up=["CREATE TABLE b (id int)"])],
        },
        urls,
        depends={"after": ["slow"]},
    )
    pidfile, gate = tmp_path / "pid", tmp_path / "gate"
    env = {"ORCH_TEST_PIDFILE": str(pidfile), "ORCH_TEST_GATE": str(gate)}
    proc = popen(p, "upgrade", "--all", "--jobs", "4", "--json", env=env)
    try:
        wait_for_running(urls["slow"], rev_id("slow", 2))
        wait_for(lambda: pidfile.exists() and pidfile.read_text() != "")
        wait_for_running(urls["late"], rev_id("late", 2))  # in flight when its sibling dies
        worker = int(pidfile.read_text())
        assert worker != proc.pid
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: not alive(worker), timeout=10)
        gate.write_text("open")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err
    doc = json.loads(out)
    got = {d["name"]: d for d in doc["databases"]}
    assert {n: d["outcome"] for n, d in got.items()} == {
        "slow": "failed",
        "after": "skipped",
        "late": "done",
        "quick": "done",
        "queued": "done",
    }, err
    for name, last in (("late", 2), ("quick", 1), ("queued", 2)):
        assert got[name]["from"] == [] and got[name]["to"] == [rev_id(name, last)], got[name]
        assert got[name]["error"] is None
        assert version_of(urls[name]) == [rev_id(name, last)]
    slow = got["slow"]
    assert "worker process died (signal 9, SIGKILL)" in slow["error"], slow
    assert slow["revision"] == rev_id("slow", 2)
    assert slow["from"] == [] and slow["to"] == [rev_id("slow", 1)]  # read after the death
    assert slow["applied"] == [rev_id("slow", 1)]
    assert slow["dirty"] is (backend == "mysql")
    assert "slow failed" in got["after"]["error"] and got["after"]["to"] == []
    # the rerun reaches head (on MySQL/MariaDB once the dirty database is repaired and stamped)
    rerun = p.orch("upgrade", "--all", "--lock-timeout", "10", "--json")
    if backend == "mysql":
        assert rerun.exit_code == 1
        outcomes = {d["name"]: d["outcome"] for d in rerun.json()["databases"]}
        assert outcomes["slow"] == "refused" and outcomes["after"] == "skipped"
        assert p.orch("stamp", f"slow@{rev_id('slow', 1)}").exit_code == 0
        rerun = p.orch("upgrade", "--all", "--lock-timeout", "10", "--json")
    assert rerun.exit_code == 0, rerun.stdout + rerun.stderr
    assert version_of(urls["slow"]) == [rev_id("slow", 2)]
    assert version_of(urls["after"]) == [rev_id("after", 1)]
    rows = [(x["revision"], x["outcome"]) for x in log_rows(urls["slow"]) if x["revision"]]
    assert (rev_id("slow", 2), "failed") in rows and rows[-1] == (rev_id("slow", 2), "ok")
