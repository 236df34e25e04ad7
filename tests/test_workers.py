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
import subprocess
from collections.abc import Callable
from pathlib import Path

from conftest import Project
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


def test_a_worker_that_died_idle_is_replaced(tmp_path: Path) -> None:
    """A worker killed between two databases (nothing in its hands) costs nothing: the next
    database it would have had goes to a fresh worker (before: 'worker pool' failures)."""
    names = ["slow", "quick", "after1", "after2"]
    urls = _urls("sqlite", lambda _kind: "", tmp_path, names)
    table = [Rev(up=["CREATE TABLE a (id int)"])]
    note_pid = 'open(os.environ["ORCH_TEST_PIDFILE"], "w").write(str(os.getpid()))'
    p = make_project(
        tmp_path / "p",
        {
            "slow": [Rev(code=GATED, up=["CREATE TABLE a (id int)"])],
            "quick": [Rev(code=note_pid, up=["CREATE TABLE a (id int)"])],
            "after1": table,
            "after2": table,
        },
        urls,
        depends={"after1": ["slow"], "after2": ["slow"]},
    )
    pidfile, gate = tmp_path / "pid", tmp_path / "gate"
    env = {"ORCH_TEST_PIDFILE": str(pidfile), "ORCH_TEST_GATE": str(gate)}
    proc = popen(p, "upgrade", "--all", "--jobs", "2", env=env)
    try:
        assert proc.stderr is not None
        # quick's lines are printed once the parent has its result: its worker is idle now
        for line in proc.stderr:
            if f"{rev_id('quick', 1)} ok" in line:
                break
        worker = int(pidfile.read_text())
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: not alive(worker), timeout=10)
        gate.write_text("open")  # slow finishes; after1 and after2 need both workers
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    assert all(version_of(u) == [rev_id(n, 1)] for n, u in urls.items())


# ---------------------------------------------------------------- the dependency rule under races

# a hook that holds the database named in $ORCH_TEST_HOLD (under its lock) until ./gate exists
HOLD = (
    'if [ "$ORCH_TEST_HOLD" = {db} ]; then touch held; while [ ! -e gate ]; do sleep 0.05; done; fi'
)


def _pair(
    backend: str,
    make_db: MakeDb,
    tmp_path: Path,
    *,
    before: tuple[str, ...] = (),
    also_needs: tuple[str, ...] = (),
) -> tuple[Project, dict[str, str]]:
    """fb depends on fa (and on *also_needs*); *before*: independent databases listed first.

    Four tiny revisions each.  The hooks hold the database named in
    $ORCH_TEST_HOLD until ./gate exists.
    """
    names = [*before, *also_needs, "fa", "fb"]
    urls = _urls(backend, make_db, tmp_path, names)
    revs = [Rev(up=[f"CREATE TABLE t{i} (id int)"], down=[f"DROP TABLE t{i}"]) for i in range(4)]
    depends = {"fb": ["fa", *also_needs]}
    p = make_project(tmp_path / "p", dict.fromkeys(names, revs), urls, depends=depends)
    data = p.registry()
    data["environments"]["dev"]["hooks"] = {"before_upgrade": HOLD, "before_downgrade": HOLD}
    p.write_registry(data)
    return p, urls


def _head(name: str) -> list[str]:
    return [rev_id(name, 4)]


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def test_a_downgrade_holds_its_dependents_locks_until_it_ends(
    backend: str, make_db: MakeDb, tmp_path: Path
) -> None:
    """``downgrade fa@base`` checked fb at base; an upgrade of fb now waits for the downgrade
    (before: it went ahead and left fb at head on top of fa at base)."""
    p, urls = _pair(backend, make_db, tmp_path)
    assert p.orch("upgrade", "fa").exit_code == 0
    proc = popen(p, "downgrade", "fa@base", "--json", env={"ORCH_TEST_HOLD": "fa"})
    try:
        wait_for(lambda: (p.root / "held").exists(), timeout=60)  # fa's downgrade is under way
        r = p.orch("upgrade", "fb", "--lock-timeout", "1", "--json")
    finally:
        (p.root / "gate").write_text("open")
        code, out, err = _finish(proc)
    assert r.exit_code == 3, r.stdout + r.stderr
    (fb,) = r.json()["databases"]
    assert fb["outcome"] == "locked"
    assert code == 0, out + err
    assert version_of(urls["fa"]) == [] and version_of(urls["fb"]) == []


def test_a_downgrade_refuses_when_a_dependent_moved_up_after_the_plan(
    backend: str, make_db: MakeDb, tmp_path: Path
) -> None:
    """The plan saw fb at base; fb went to head before fa's turn: fa is refused, untouched."""
    p, urls = _pair(backend, make_db, tmp_path, before=("f0",))
    assert p.orch("upgrade", "f0", "fa").exit_code == 0
    # f0 goes first (--jobs 1) and its hook holds the run after the plan was made
    proc = popen(
        p,
        "downgrade",
        "f0@base",
        "fa@base",
        "--jobs",
        "1",
        "--json",
        env={"ORCH_TEST_HOLD": "f0"},
    )
    try:
        wait_for(lambda: (p.root / "held").exists(), timeout=60)
        r = p.orch("upgrade", "fb")
    finally:
        (p.root / "gate").write_text("open")
        code, out, err = _finish(proc)
    assert r.exit_code == 0, r.stdout + r.stderr
    assert code == 2, out + err
    got = {d["name"]: d for d in json.loads(out)["databases"]}
    assert got["f0"]["outcome"] == "done"
    fa = got["fa"]
    assert fa["outcome"] == "refused" and f"fb (at {rev_id('fb', 4)})" in fa["error"], fa
    assert "--force" in fa["error"] and fa["to"] == _head("fa")
    assert version_of(urls["fa"]) == _head("fa") and version_of(urls["fb"]) == _head("fb")


def test_an_upgrade_rechecks_its_dependencies_under_its_lock(
    backend: str, make_db: MakeDb, tmp_path: Path
) -> None:
    """The plan saw fa at head; fa went to base before fb's turn: fb is refused, untouched."""
    p, urls = _pair(backend, make_db, tmp_path, also_needs=("fx",))
    assert p.orch("upgrade", "fa").exit_code == 0
    # fx goes first (fb needs it) and its hook holds the run after the plan was made
    proc = popen(p, "upgrade", "fx", "fb", "--json", env={"ORCH_TEST_HOLD": "fx"})
    try:
        wait_for(lambda: (p.root / "held").exists(), timeout=60)
        r = p.orch("downgrade", "fa@base")
    finally:
        (p.root / "gate").write_text("open")
        code, out, err = _finish(proc)
    assert r.exit_code == 0, r.stdout + r.stderr
    assert code == 2, out + err
    got = {d["name"]: d for d in json.loads(out)["databases"]}
    assert got["fx"]["outcome"] == "done"
    fb = got["fb"]
    assert fb["outcome"] == "refused" and "fa (at base)" in fb["error"], fb
    assert "--ignore-deps" in fb["error"] and fb["to"] == []
    assert version_of(urls["fa"]) == [] and version_of(urls["fb"]) == []
    # --ignore-deps skips the check, as it skips the plan's
    r = p.orch("upgrade", "fb", "--ignore-deps")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert version_of(urls["fb"]) == _head("fb")


def test_a_downgrade_raced_with_an_upgrade_never_breaks_the_dependency_order(
    backend: str, make_db: MakeDb, tmp_path: Path
) -> None:
    """The race of the issue, 20 times: ``downgrade fb@base fa@base`` against
    ``upgrade fa fb``, both started at once with both databases at head.  Whatever the
    interleaving, fb is never above base while fa is not at head; neither run waits for a
    lock it cannot get (no deadlock: every run ends well within its lock timeout)."""
    p, urls = _pair(backend, make_db, tmp_path)
    seen = set()
    for attempt in range(20):
        assert p.orch("upgrade", "fa", "fb").exit_code == 0
        runs = [("downgrade", "fb@base", "fa@base"), ("upgrade", "fa", "fb")]
        if attempt % 2:
            runs.reverse()
        procs = [popen(p, *args, "--json", "--lock-timeout", "30") for args in runs]
        codes = {args[0]: _finish(pr, timeout=90) for args, pr in zip(runs, procs, strict=True)}
        fa, fb = version_of(urls["fa"]), version_of(urls["fb"])
        assert fb == [] or fa == _head("fa"), (attempt, fa, fb, codes)
        for command, (code, out, err) in codes.items():
            assert code in (0, 2), (attempt, command, out, err)  # never locked (3) or failed
        seen.add((tuple(fa), tuple(fb)))
    assert seen <= {((), ()), (tuple(_head("fa")), tuple(_head("fb")))}, seen


_GC_PROBE = """
import gc, multiprocessing, sys
from orch.cli import process

def main():
    seen = {"start": gc.isenabled()}
    ctx = multiprocessing.get_context("fork")
    q = ctx.SimpleQueue()
    p = ctx.Process(target=lambda: q.put(gc.isenabled()))
    p.start(); p.join()
    seen["worker"] = q.get()
    seen["parent after the fork"] = gc.isenabled()
    seen["frozen"] = gc.get_freeze_count() > 0
    process.startup_over()
    seen["after startup_over"] = gc.isenabled()
    print(seen)
    sys.exit(0)

if sys.argv[1] == "console":
    process.run(main)
else:  # a program using orch as a library: its collector is its own
    gc.disable()
    process.startup_over()
    print({"library": gc.isenabled()})
"""


def test_the_console_script_collects_no_garbage_while_it_starts_and_every_worker_does(
    tmp_path: Path,
) -> None:
    """``orch`` turns the cyclic collector off while it imports and plans (start-up makes
    only long-lived objects); the first fork freezes what exists and turns it on again,
    in the worker and in the parent, and a library caller's collector is left alone."""
    import ast
    import sys

    script = tmp_path / "probe.py"
    script.write_text(_GC_PROBE)
    out = subprocess.run(
        [sys.executable, str(script), "console"], capture_output=True, text=True, check=True
    ).stdout
    assert ast.literal_eval(out.strip()) == {
        "start": False,
        "worker": True,
        "parent after the fork": True,
        "frozen": True,
        "after startup_over": True,
    }
    out = subprocess.run(
        [sys.executable, str(script), "library"], capture_output=True, text=True, check=True
    ).stdout
    assert ast.literal_eval(out.strip()) == {"library": False}
