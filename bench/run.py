"""Benchmark: orch against a plain Alembic loop and against the physical floor.

One command, one run, every figure side by side::

    python bench/run.py            # full: 20x100 status, 8x20 upgrade, 200-database fleet
    python bench/run.py --quick    # tiny sizes: checks the benchmark itself works

What is compared, per scenario (each a fresh generated project under
``bench/out/``):

* ``orch``: the CLI in a subprocess, as a user runs it.
* plain Alembic loop: what teams run today, one ``alembic`` process per
  database (``alembic -c plain/alembic.ini -n NAME current|upgrade head``),
  each database with its own ordinary env.py (Alembic's generic template).
* floor: one Python process that imports SQLAlchemy and SELECTs each
  database's version table (``bench/floor.py``); nothing can do status with
  less work.

Times are the median of ``--repeat`` runs of the whole command (wall clock).
Peak memory is the largest resident set of the command's process tree
(``os.wait4``'s rusage of the child, which folds in its reaped workers).  For
PostgreSQL the benchmark also samples ``pg_stat_activity`` to show the most
connections orch held at once.  PostgreSQL databases are created with a
unique prefix and dropped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import compileall
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from projectgen import ROOT, Project, make_project, stamp_sqlite, stamped_at  # noqa: E402

SRC = ROOT / "src"
FLOOR = Path(__file__).resolve().parent / "floor.py"
DEFAULT_PG = os.environ.get(
    "ORCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


# ---------------------------------------------------------------- measuring


@dataclass
class Run:
    seconds: float
    peak_kb: int


_LAUNCHER_CODE = r"""
import json, os, subprocess, sys, tempfile, time
for line in sys.stdin:
    job = json.loads(line)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(job["argv"], cwd=job["cwd"], env=job["env"], stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        reply = {"seconds": seconds, "peak_kb": usage.ru_maxrss,
                 "rc": os.waitstatus_to_exitcode(status),
                 "out": out.read().decode(errors="replace")[-3000:],
                 "err": err.read().decode(errors="replace")[-3000:]}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
"""


class _Launcher:
    """A small process that starts every measured command.

    Linux records the RSS high-water mark of the image a child had before
    ``exec`` (a copy of its parent) in the child's peak, so commands started
    from this benchmark (SQLAlchemy imported, ~60 MB) would all report at
    least that.  The launcher is a bare interpreter started before anything
    heavy is imported, so the peaks it reports are the commands' own.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _LAUNCHER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, argv: Sequence[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"argv": list(argv), "cwd": str(cwd), "env": env}) + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))


_LAUNCHER: _Launcher | None = None


def run_once(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> Run:
    """Run *argv* to completion; wall time and the peak RSS of its process tree."""
    global _LAUNCHER
    if _LAUNCHER is None:
        _LAUNCHER = _Launcher()
    reply = _LAUNCHER.run(argv, cwd, env)
    if reply["rc"] != 0:
        raise SystemExit(
            f"benchmark command failed (exit {reply['rc']}): {' '.join(argv)}\n"
            f"{reply['out']}{reply['err']}"
        )
    return Run(float(reply["seconds"]), int(reply["peak_kb"]))


def run_loop(commands: Sequence[Sequence[str]], cwd: Path, env: dict[str, str]) -> Run:
    """One process after another (a shell loop): total time, the largest peak."""
    runs = [run_once(c, cwd, env) for c in commands]
    return Run(sum(r.seconds for r in runs), max(r.peak_kb for r in runs))


@dataclass
class Figure:
    """The median of several runs of one variant of one scenario."""

    runs: list[Run] = field(default_factory=list)
    connections: int | None = None

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def peak_mb(self) -> float:
        return max(r.peak_kb for r in self.runs) / 1024


@dataclass
class Variant:
    """One way of doing a scenario's job: the command, its untimed setup, what to sample."""

    run: Callable[[], Run]
    setup: Callable[[], None] | None = None
    watch: Callable[[], AbstractContextManager[Callable[[], int]]] | None = None


def compare(variants: dict[str, Variant], repeat: int) -> dict[str, Figure]:
    """Run every variant *repeat* times, interleaved, so background load hits them alike.

    Connections are counted in one more, untimed run per watched variant:
    polling ``pg_stat_activity`` costs the server CPU that must not land in
    a timed run.
    """
    figs = {name: Figure() for name in variants}
    for _ in range(repeat):
        for name, v in variants.items():
            if v.setup is not None:
                v.setup()
            figs[name].runs.append(v.run())
    for name, v in variants.items():
        if v.watch is None:
            continue
        if v.setup is not None:
            v.setup()
        sampler = _Sampler(v.watch)
        try:
            v.run()
        finally:
            figs[name].connections = sampler.stop()
    return figs


def floor_command(project: Project) -> list[str]:
    """The floor script over the project's databases."""
    path = project.root / "floor-urls.json"
    path.write_text(json.dumps([project.urls[n] for n in project.names]))
    return [sys.executable, str(FLOOR), str(path)]


class _Sampler:
    """Polls a counter (PostgreSQL connections) in a thread; keeps the maximum."""

    def __init__(self, make: Callable[[], AbstractContextManager[Callable[[], int]]]) -> None:
        self.make = make
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        with self.make() as count:
            while not self._stop.is_set():
                with contextlib.suppress(Exception):  # a sample lost is not a failure
                    self.peak = max(self.peak, count())
                self._stop.wait(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


# ---------------------------------------------------------------- PostgreSQL


class Postgres:
    """Creates uniquely named databases and always drops them again."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        self.url = url
        self.prefix = f"orch_bench_{uuid.uuid4().hex[:6]}_"
        self.engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []
        atexit.register(self.drop_all)

    def scalar(self, sql: str) -> Any:
        from sqlalchemy import text

        with self.engine.connect() as c:
            return c.execute(text(sql)).scalar()

    def url_of(self, name: str) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def create(self, n: int, label: str) -> list[str]:
        names = [f"{self.prefix}{label}_{i:03d}" for i in range(n)]
        self.created.extend(names)  # before: a failure half-way still drops what exists
        self._each(names, 'CREATE DATABASE "{}"')
        return names

    def _each(self, names: Sequence[str], sql: str) -> None:
        """Run *sql* for every name, a few at a time.

        DROP DATABASE waits for a checkpoint; concurrent ones share it, so a
        fleet is dropped in seconds rather than minutes.
        """
        from concurrent.futures import ThreadPoolExecutor

        from sqlalchemy import text

        def one(name: str) -> None:
            with self.engine.connect() as c:
                c.execute(text(sql.format(name)))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, names))

    def run_in(self, name: str, sql: str) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        eng = create_engine(self.url_of(name), poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(text(sql))

    def reset(self, names: Sequence[str]) -> None:
        """Empty each database again (untimed, between runs of an upgrade)."""
        for name in names:
            self.run_in(name, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")

    def stamp(self, project: Project) -> None:
        for i, n in enumerate(project.names):
            at = stamped_at(project, i, n)
            db = project.urls[n].rsplit("/", 1)[1]
            self.run_in(
                db,
                "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL "
                f"PRIMARY KEY); DELETE FROM alembic_version; INSERT INTO alembic_version "
                f"VALUES ('{at}')",
            )

    @contextlib.contextmanager
    def connections(self) -> Iterator[Callable[[], int]]:
        """A counter of the connections to this benchmark's databases, on one held connection."""
        from sqlalchemy import text

        query = text("SELECT count(*) FROM pg_stat_activity WHERE datname LIKE :p")
        with self.engine.connect() as conn:
            yield lambda: int(conn.execute(query, {"p": self.prefix + "%"}).scalar() or 0)

    def drop_all(self) -> None:
        names, self.created = self.created, []
        if names:
            self._each(names, 'DROP DATABASE IF EXISTS "{}" WITH (FORCE)')


# ---------------------------------------------------------------- the report


@dataclass
class Row:
    scenario: str
    orch: Figure
    plain: Figure | None = None
    floor: Figure | None = None
    note: str = ""


def fmt_s(fig: Figure | None) -> str:
    return "-" if fig is None else f"{fig.seconds:.3f} s"


def ratio(a: Figure, b: Figure | None) -> str:
    if b is None:
        return "-"
    return show_ratio(a.seconds / b.seconds)


def show_ratio(r: float) -> str:
    """0.35x, or 1/30 for small ratios (how the goals are written)."""
    return f"1/{1 / r:.0f}" if r < 0.2 else f"{r:.2f}x"


def goal(what: str, a: Figure, b: Figure, limit: float) -> tuple[str, str, str, bool]:
    r = a.seconds / b.seconds
    return (what, show_ratio(r), f"<= {show_ratio(limit)}", r <= limit)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def render(rows: Sequence[Row]) -> str:
    headers = [
        "SCENARIO",
        "ORCH",
        "ALEMBIC LOOP",
        "FLOOR",
        "ORCH/LOOP",
        "ORCH/FLOOR",
        "ORCH PEAK",
        "LOOP PEAK",
        "FLOOR PEAK",
        "PG CONNS",
    ]
    body = []
    for r in rows:
        body.append(
            [
                r.scenario,
                fmt_s(r.orch),
                fmt_s(r.plain),
                fmt_s(r.floor),
                ratio(r.orch, r.plain),
                ratio(r.orch, r.floor),
                f"{r.orch.peak_mb:.0f} MB",
                f"{r.plain.peak_mb:.0f} MB" if r.plain else "-",
                f"{r.floor.peak_mb:.0f} MB" if r.floor else "-",
                str(r.orch.connections) if r.orch.connections is not None else "-",
            ]
        )
    return table(headers, body)


def _load() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every figure."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine() -> str:
    import alembic
    import sqlalchemy

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu or platform.processor() or 'unknown'}), "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"SQLAlchemy {sqlalchemy.__version__}, Alembic {alembic.__version__}"
    )


# ---------------------------------------------------------------- scenarios


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one run (smoke test)")
    ap.add_argument("--dbs", type=int, help="databases for status (default 20)")
    ap.add_argument("--revs", type=int, help="revisions per database for status (default 100)")
    ap.add_argument("--up-dbs", type=int, help="databases for upgrade (default 8)")
    ap.add_argument("--up-revs", type=int, help="revisions per database for upgrade (default 20)")
    ap.add_argument(
        "--fleet", type=int, help="databases in the PostgreSQL fleet (default 200; 0 skips)"
    )
    ap.add_argument(
        "--fleet-revs", type=int, help="revisions of the fleet's shared directory (default 20)"
    )
    ap.add_argument(
        "--fleet-schemas",
        type=int,
        help="tenants as schemas of one PostgreSQL database (default 1000; 0 skips)",
    )
    ap.add_argument(
        "--fleet-tenant-dbs",
        type=int,
        help="tenants as PostgreSQL databases (default 200; 0 skips)",
    )
    ap.add_argument("--repeat", type=int, help="runs per figure; the median is shown (default 3)")
    ap.add_argument(
        "--pg-url", default=DEFAULT_PG, help="PostgreSQL server (a role that may CREATE DATABASE)"
    )
    ap.add_argument("--no-postgres", action="store_true", help="SQLite scenarios only")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "out", help="where projects are generated"
    )
    a = ap.parse_args(argv)
    q = a.quick
    dbs = a.dbs or (2 if q else 20)
    revs = a.revs or (3 if q else 100)
    up_dbs = a.up_dbs or (2 if q else 8)
    up_revs = a.up_revs or (3 if q else 20)
    fleet = a.fleet if a.fleet is not None else (4 if q else 200)
    fleet_revs = a.fleet_revs or (3 if q else 20)
    repeat = a.repeat or (1 if q else 3)
    fleet_schemas = a.fleet_schemas if a.fleet_schemas is not None else (6 if q else 1000)
    fleet_dbs = a.fleet_tenant_dbs if a.fleet_tenant_dbs is not None else (3 if q else 200)

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("ORCH_CONFIG", None)
    env.pop("ORCH_ENV", None)
    env["NO_COLOR"] = "1"
    global _LAUNCHER
    _LAUNCHER = _Launcher()  # before SQLAlchemy is imported here (see _Launcher)
    out = a.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    pg: Postgres | None = None
    if not a.no_postgres:
        pg = Postgres(a.pg_url)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    # orch runs from src/ here; installed by pip it would be byte-compiled, as Alembic is:
    # compile it the same way, so a PYTHONDONTWRITEBYTECODE environment does not make
    # every orch process compile its own modules while Alembic's come precompiled
    compileall.compile_dir(str(SRC / "orch"), quiet=1)
    print(f"machine: {machine()}", flush=True)
    print(
        "bytecode: orch and Alembic precompiled; the generated revision files "
        + (
            "are compiled by every process (PYTHONDONTWRITEBYTECODE is set)"
            if os.environ.get("PYTHONDONTWRITEBYTECODE")
            else "are cached by the first process that imports them"
        ),
        flush=True,
    )
    print(f"load average at start: {_load()}", flush=True)
    if pg is not None:
        print(
            f"postgresql: {pg.scalar('SHOW server_version')}, "
            f"max_connections {pg.scalar('SHOW max_connections')}",
            flush=True,
        )
        print(f"scratch databases: {pg.prefix}* (dropped at the end)", flush=True)
    print(
        f"median of {repeat} run(s); peak = largest RSS of the command's process tree", flush=True
    )
    rows: list[Row] = []
    goals: list[tuple[str, str, str, bool]] = []

    def progress(msg: str) -> None:
        print(f"... {msg}", file=sys.stderr, flush=True)

    try:
        # status, SQLite
        progress(f"status sqlite {dbs}x{revs}")
        sq = make_project(
            out / "status-sqlite",
            {f"d{i:03d}": f"sqlite:///{out}/status-sqlite/var/d{i:03d}.db" for i in range(dbs)},
            revs,
        )
        stamp_sqlite(sq)
        f = compare(
            {
                "orch": Variant(lambda: run_once(sq.orch("status"), sq.root, env)),
                "loop": Variant(
                    lambda: run_loop([sq.plain(n, "current") for n in sq.names], sq.root, env)
                ),
                "floor": Variant(lambda: run_once(floor_command(sq), sq.root, env)),
                "help": Variant(lambda: run_once(sq.orch("--help"), sq.root, env)),
                "version": Variant(lambda: run_once(sq.orch("--version"), sq.root, env)),
            },
            repeat,
        )
        rows.append(
            Row(f"status, SQLite, {dbs} dbs x {revs} revs", f["orch"], f["loop"], f["floor"])
        )
        rows.append(Row("orch --help", f["help"], None, f["floor"]))
        rows.append(Row("orch --version", f["version"], None, f["floor"]))
        goals.append(goal("status SQLite: orch vs Alembic loop", f["orch"], f["loop"], 1 / 30))
        goals.append(goal("status SQLite: orch vs floor", f["orch"], f["floor"], 1.5))
        goals.append(goal("--help: orch vs floor", f["help"], f["floor"], 0.35))

        if pg is not None:
            watch = pg.connections
            # status, PostgreSQL
            progress(f"status postgresql {dbs}x{revs}")
            names = pg.create(dbs, "st")
            sp = make_project(
                out / "status-pg", {f"d{i:03d}": pg.url_of(n) for i, n in enumerate(names)}, revs
            )
            pg.stamp(sp)
            f = compare(
                {
                    "orch": Variant(lambda: run_once(sp.orch("status"), sp.root, env), watch=watch),
                    "loop": Variant(
                        lambda: run_loop([sp.plain(n, "current") for n in sp.names], sp.root, env)
                    ),
                    "floor": Variant(lambda: run_once(floor_command(sp), sp.root, env)),
                },
                repeat,
            )
            rows.append(
                Row(
                    f"status, PostgreSQL, {dbs} dbs x {revs} revs", f["orch"], f["loop"], f["floor"]
                )
            )
            goals.append(goal("status PostgreSQL: orch vs floor", f["orch"], f["floor"], 1.5))

            # upgrade --all, PostgreSQL, fresh databases
            progress(f"upgrade postgresql {up_dbs}x{up_revs}")
            names = pg.create(up_dbs, "up")
            up = make_project(
                out / "upgrade-pg",
                {f"d{i:03d}": pg.url_of(n) for i, n in enumerate(names)},
                up_revs,
            )

            def reset() -> None:
                pg.reset(names)

            f = compare(
                {
                    "orch": Variant(
                        lambda: run_once(up.orch("upgrade", "--all"), up.root, env), reset, watch
                    ),
                    "inline": Variant(
                        lambda: run_once(up.orch("upgrade", "--all", "--jobs", "1"), up.root, env),
                        reset,
                    ),
                    "loop": Variant(
                        lambda: run_loop(
                            [up.plain(n, "upgrade", "head") for n in up.names], up.root, env
                        ),
                        reset,
                    ),
                },
                repeat,
            )
            rows.append(
                Row(
                    f"upgrade --all, PostgreSQL, {up_dbs} dbs x {up_revs} revs",
                    f["orch"],
                    f["loop"],
                )
            )
            rows.append(Row("  the same, orch --jobs 1 (inline)", f["inline"], f["loop"]))
            goals.append(
                goal("upgrade PostgreSQL: orch vs Alembic loop", f["orch"], f["loop"], 1 / 5)
            )
            goals.append(
                goal("upgrade PostgreSQL: orch vs orch --jobs 1", f["orch"], f["inline"], 0.99)
            )

            if fleet:
                # a fleet: many databases sharing one version directory (tenants, shards)
                progress(f"fleet of {fleet} postgresql databases x {fleet_revs} revs (creating)")
                names = pg.create(fleet, "fl")
                fl = make_project(
                    out / "fleet-pg",
                    {f"t{i:03d}": pg.url_of(n) for i, n in enumerate(names)},
                    fleet_revs,
                    shared=True,
                    plain=False,
                )
                progress("fleet upgrade --all")
                fu = compare(
                    {
                        "orch": Variant(
                            lambda: run_once(fl.orch("upgrade", "--all"), fl.root, env), watch=watch
                        )
                    },
                    1,
                )["orch"]
                progress("fleet status")
                f = compare(
                    {
                        "orch": Variant(
                            lambda: run_once(fl.orch("status"), fl.root, env), watch=watch
                        ),
                        "floor": Variant(lambda: run_once(floor_command(fl), fl.root, env)),
                    },
                    repeat,
                )
                fs = f["orch"]
                rows.append(
                    Row(
                        f"status, PostgreSQL fleet, {fleet} dbs x {fleet_revs} revs",
                        fs,
                        None,
                        f["floor"],
                    )
                )
                rows.append(
                    Row(f"upgrade --all, PostgreSQL fleet, {fleet} dbs x {fleet_revs} revs", fu)
                )
                goals.append(
                    (
                        f"fleet status ({fleet} PostgreSQL dbs): time",
                        f"{fs.seconds:.2f} s",
                        "<= 3 s",
                        fs.seconds <= 3,
                    )
                )
                goals.append(
                    (
                        f"fleet status ({fleet} PostgreSQL dbs): peak memory",
                        f"{fs.peak_mb:.0f} MB",
                        "<= 200 MB",
                        fs.peak_mb <= 200,
                    )
                )
                max_conn = int(pg.scalar("SHOW max_connections"))
                most = max(fs.connections or 0, fu.connections or 0)
                goals.append(
                    (
                        "fleet: most PostgreSQL connections at once",
                        str(most),
                        f"< {max_conn // 2} (max_connections {max_conn})",
                        most < max_conn // 2,
                    )
                )
            if fleet_schemas or fleet_dbs:
                import fleets

                fleets.scenarios(
                    pg,
                    out,
                    env,
                    repeat,
                    fleet_schemas,
                    fleet_dbs,
                    compare=compare,
                    variant=Variant,
                    run_once=run_once,
                    row=Row,
                    rows=rows,
                    goals=goals,
                    progress=progress,
                )
    finally:
        if pg is not None:
            progress("dropping the benchmark's PostgreSQL databases")
            pg.drop_all()

    print(f"load average at end: {_load()}")
    print()
    print(render(rows))
    print()
    print(
        table(
            ["GOAL", "MEASURED", "TARGET", "MET"],
            [[g, m, t, "yes" if ok else "NO"] for g, m, t, ok in goals],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
