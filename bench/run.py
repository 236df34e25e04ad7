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
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
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


def measure(
    fn: Callable[[], Run],
    repeat: int,
    setup: Callable[[], None] | None = None,
    watch: Callable[[], int] | None = None,
) -> Figure:
    fig = Figure()
    for _ in range(repeat):
        if setup is not None:
            setup()
        sampler = _Sampler(watch) if watch is not None else None
        try:
            fig.runs.append(fn())
        finally:
            if sampler is not None:
                peak = sampler.stop()
                fig.connections = max(fig.connections or 0, peak)
    return fig


class _Sampler:
    """Polls a counter (PostgreSQL connections) in a thread; keeps the maximum."""

    def __init__(self, fn: Callable[[], int]) -> None:
        self.fn = fn
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.fn())
            except Exception:  # noqa: BLE001  a sample lost is not a failure
                pass
            self._stop.wait(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


# ---------------------------------------------------------------- projects


def rev_id(tag: str, i: int) -> str:
    return hashlib.sha1(f"{tag}:{i}".encode()).hexdigest()[:12]


REVISION = '''"""create table t_{i}

Revision ID: {rev}
Revises: {down_doc}
Create Date: 2024-01-01 00:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = {rev!r}
down_revision: Union[str, Sequence[str], None] = {down!r}
branch_labels: Union[str, Sequence[str], None] = {labels!r}
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "t_{i}",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=50), nullable=False),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("t_{i}")
'''


def write_revisions(directory: Path, label: str, k: int) -> list[str]:
    """K small linear revisions (one CREATE TABLE each); returns their ids, oldest first."""
    directory.mkdir(parents=True, exist_ok=True)
    ids: list[str] = []
    for i in range(k):
        rev = rev_id(f"{directory}:{label}", i)
        down = ids[-1] if ids else None
        (directory / f"{rev}_create_t_{i}.py").write_text(
            REVISION.format(
                i=i, rev=rev, down=down, down_doc=down or "", labels=(label,) if i == 0 else None
            )
        )
        ids.append(rev)
    return ids


PLAIN_ENV = '''"""Alembic's generic env.py: one per database, the way teams run a loop today."""
from logging.config import fileConfig

from sqlalchemy import engine_from_config, pool

from alembic import context

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)
target_metadata = None


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
'''

LOGGING_INI = """
[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = WARNING
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""


@dataclass
class Project:
    root: Path
    names: list[str]
    urls: dict[str, str]
    heads: dict[str, list[str]]  # database -> its revision ids, oldest first

    def orch(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "orch", *args]

    def plain(self, name: str, *args: str) -> list[str]:
        return [*ALEMBIC, "-c", str(self.root / "plain" / "alembic.ini"), "-n", name, *args]

    def floor(self) -> list[str]:
        path = self.root / "floor-urls.json"
        path.write_text(json.dumps([self.urls[n] for n in self.names]))
        return [sys.executable, str(FLOOR), str(path)]


def make_project(
    root: Path, urls: dict[str, str], k: int, *, shared: bool = False, plain: bool = True
) -> Project:
    """A project of len(urls) databases x *k* revisions: orch's registry and a plain-Alembic setup.

    *shared*: every database uses one version directory and branch label
    (tenants or shards of one schema), as SPEC section 2 allows.
    """
    if root.exists():
        shutil.rmtree(root)
    mig = root / "migrations"
    mig.mkdir(parents=True)
    shutil.copy(ROOT / "migrations" / "env.py", mig / "env.py")
    shutil.copy(ROOT / "migrations" / "script.py.mako", mig / "script.py.mako")
    names = list(urls)
    heads: dict[str, list[str]] = {}
    lines = ["version: 1", "default_env: bench", "settings:", "  connect_timeout: 5", "databases:"]
    if shared:
        ids = write_revisions(mig / "shared", "shared", k)
        for n in names:
            heads[n] = ids
            lines += [f"  {n}:", "    versions: migrations/shared", "    branch: shared"]
    else:
        for n in names:
            heads[n] = write_revisions(mig / n, n, k)
            lines.append(f"  {n}: {{}}")
    lines += ["environments:", "  bench:", "    urls:"]
    lines += [f"      {n}: {urls[n]}" for n in names]
    (root / "databases.yaml").write_text("\n".join(lines) + "\n")
    (root / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\npath_separator = os\n" + LOGGING_INI
    )
    if plain:
        sections = []
        for n in names:
            d = root / "plain" / n
            d.mkdir(parents=True)
            (d / "env.py").write_text(PLAIN_ENV)
            shutil.copy(ROOT / "migrations" / "script.py.mako", d / "script.py.mako")
            versions = mig / ("shared" if shared else n)
            sections.append(
                f"[{n}]\nscript_location = {d}\nversion_locations = {versions}\n"
                f"path_separator = os\nsqlalchemy.url = {urls[n]}\n"
            )
        (root / "plain" / "alembic.ini").write_text("\n".join(sections) + LOGGING_INI)
    return Project(root, names, urls, heads)


def stamp_sqlite(project: Project) -> None:
    """Give every SQLite database a version row: most at head, every 4th three behind."""
    import sqlite3

    for i, n in enumerate(project.names):
        path = Path(project.urls[n].split("///", 1)[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        ids = project.heads[n]
        at = ids[-1] if i % 4 else ids[max(0, len(ids) - 4)]
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL)")
        con.execute("DELETE FROM alembic_version")
        con.execute("INSERT INTO alembic_version VALUES (?)", (at,))
        con.commit()
        con.close()


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
        from sqlalchemy import text

        names = [f"{self.prefix}{label}_{i:03d}" for i in range(n)]
        with self.engine.connect() as c:
            for name in names:
                c.execute(text(f'CREATE DATABASE "{name}"'))
                self.created.append(name)
        return names

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
            ids = project.heads[n]
            at = ids[-1] if i % 4 else ids[max(0, len(ids) - 4)]
            db = project.urls[n].rsplit("/", 1)[1]
            self.run_in(
                db,
                "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL "
                f"PRIMARY KEY); DELETE FROM alembic_version; INSERT INTO alembic_version "
                f"VALUES ('{at}')",
            )

    def connections(self) -> int:
        return int(
            self.scalar(
                f"SELECT count(*) FROM pg_stat_activity WHERE datname LIKE '{self.prefix}%'"
            )
        )

    def drop_all(self) -> None:
        from sqlalchemy import text

        if not self.created:
            return
        with self.engine.connect() as c:
            for name in list(self.created):
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                self.created.remove(name)


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
    r = a.seconds / b.seconds
    return f"1/{1 / r:.0f}" if r < 0.2 else f"{r:.2f}x"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


def render(rows: Sequence[Row]) -> str:
    headers = [
        "SCENARIO", "ORCH", "ALEMBIC LOOP", "FLOOR", "ORCH/LOOP", "ORCH/FLOOR",
        "ORCH PEAK", "LOOP PEAK", "FLOOR PEAK", "PG CONNS",
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


def _alembic_command() -> list[str]:
    script = Path(sys.executable).with_name("alembic")
    return [str(script)] if script.exists() else [sys.executable, "-m", "alembic"]


ALEMBIC = _alembic_command()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one run (smoke test)")
    ap.add_argument("--dbs", type=int, help="databases for status (default 20)")
    ap.add_argument("--revs", type=int, help="revisions per database for status (default 100)")
    ap.add_argument("--up-dbs", type=int, help="databases for upgrade (default 8)")
    ap.add_argument("--up-revs", type=int, help="revisions per database for upgrade (default 20)")
    ap.add_argument("--fleet", type=int, help="databases in the PostgreSQL fleet (default 200; 0 skips)")
    ap.add_argument("--fleet-revs", type=int, help="revisions of the fleet's shared directory (default 20)")
    ap.add_argument("--repeat", type=int, help="runs per figure; the median is shown (default 3)")
    ap.add_argument("--pg-url", default=DEFAULT_PG, help="PostgreSQL server (a role that may CREATE DATABASE)")
    ap.add_argument("--no-postgres", action="store_true", help="SQLite scenarios only")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="where projects are generated")
    a = ap.parse_args(argv)
    q = a.quick
    dbs = a.dbs or (2 if q else 20)
    revs = a.revs or (3 if q else 100)
    up_dbs = a.up_dbs or (2 if q else 8)
    up_revs = a.up_revs or (3 if q else 20)
    fleet = a.fleet if a.fleet is not None else (4 if q else 200)
    fleet_revs = a.fleet_revs or (3 if q else 20)
    repeat = a.repeat or (1 if q else 3)

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

    print(f"machine: {machine()}", flush=True)
    if pg is not None:
        print(
            f"postgresql: {pg.scalar('SHOW server_version')}, "
            f"max_connections {pg.scalar('SHOW max_connections')}",
            flush=True,
        )
    print(f"median of {repeat} run(s); peak = largest RSS of the command's process tree", flush=True)
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
        o = measure(lambda: run_once(sq.orch("status"), sq.root, env), repeat)
        p = measure(lambda: run_loop([sq.plain(n, "current") for n in sq.names], sq.root, env), repeat)
        f = measure(lambda: run_once(sq.floor(), sq.root, env), repeat)
        rows.append(Row(f"status, SQLite, {dbs} dbs x {revs} revs", o, p, f))
        goals.append(("status SQLite: orch vs Alembic loop", ratio(o, p), "<= 1/30", o.seconds * 30 <= p.seconds))
        goals.append(("status SQLite: orch vs floor", ratio(o, f), "<= 1.50x", o.seconds <= 1.5 * f.seconds))

        # --help and --version
        progress("--help")
        h = measure(lambda: run_once(sq.orch("--help"), sq.root, env), max(repeat, 3))
        v = measure(lambda: run_once(sq.orch("--version"), sq.root, env), max(repeat, 3))
        rows.append(Row("orch --help", h, None, f))
        rows.append(Row("orch --version", v, None, f))
        goals.append(("--help: orch vs floor", ratio(h, f), "<= 0.35x", h.seconds <= 0.35 * f.seconds))

        if pg is not None:
            watch = pg.connections
            # status, PostgreSQL
            progress(f"status postgresql {dbs}x{revs}")
            names = pg.create(dbs, "st")
            sp = make_project(out / "status-pg", {f"d{i:03d}": pg.url_of(n) for i, n in enumerate(names)}, revs)
            pg.stamp(sp)
            o = measure(lambda: run_once(sp.orch("status"), sp.root, env), repeat, watch=watch)
            p = measure(lambda: run_loop([sp.plain(n, "current") for n in sp.names], sp.root, env), repeat)
            f = measure(lambda: run_once(sp.floor(), sp.root, env), repeat)
            rows.append(Row(f"status, PostgreSQL, {dbs} dbs x {revs} revs", o, p, f))

            # upgrade --all, PostgreSQL, fresh databases
            progress(f"upgrade postgresql {up_dbs}x{up_revs}")
            names = pg.create(up_dbs, "up")
            up = make_project(out / "upgrade-pg", {f"d{i:03d}": pg.url_of(n) for i, n in enumerate(names)}, up_revs)
            reset = lambda: pg.reset(names)  # noqa: E731
            o = measure(lambda: run_once(up.orch("upgrade", "--all"), up.root, env), repeat, reset, watch)
            o1 = measure(
                lambda: run_once(up.orch("upgrade", "--all", "--jobs", "1"), up.root, env), repeat, reset
            )
            p = measure(
                lambda: run_loop([up.plain(n, "upgrade", "head") for n in up.names], up.root, env),
                repeat,
                reset,
            )
            rows.append(Row(f"upgrade --all, PostgreSQL, {up_dbs} dbs x {up_revs} revs", o, p))
            rows.append(Row("  the same with --jobs 1 (inline)", o1, p))
            goals.append(("upgrade PostgreSQL: orch vs Alembic loop", ratio(o, p), "<= 1/5", o.seconds * 5 <= p.seconds))
            goals.append(("upgrade PostgreSQL: orch vs orch --jobs 1", ratio(o, o1), "< 1.00x", o.seconds < o1.seconds))

            if fleet:
                # fleet: many databases sharing one version directory
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
                fu = measure(lambda: run_once(fl.orch("upgrade", "--all"), fl.root, env), 1, watch=watch)
                progress("fleet status")
                fs = measure(lambda: run_once(fl.orch("status"), fl.root, env), repeat, watch=watch)
                ff = measure(lambda: run_once(fl.floor(), fl.root, env), repeat)
                rows.append(Row(f"status, PostgreSQL fleet, {fleet} dbs x {fleet_revs} revs", fs, None, ff))
                rows.append(Row(f"upgrade --all, PostgreSQL fleet, {fleet} dbs x {fleet_revs} revs", fu))
                goals.append((f"fleet status ({fleet} PostgreSQL dbs): time", f"{fs.seconds:.2f} s", "<= 3 s", fs.seconds <= 3))
                goals.append((f"fleet status ({fleet} PostgreSQL dbs): peak memory", f"{fs.peak_mb:.0f} MB", "<= 200 MB", fs.peak_mb <= 200))
                max_conn = int(pg.scalar("SHOW max_connections"))
                most = max(fs.connections or 0, fu.connections or 0)
                goals.append(("fleet: most PostgreSQL connections at once", str(most), f"< {max_conn // 2}", most < max_conn // 2))
    finally:
        if pg is not None:
            progress("dropping the benchmark's PostgreSQL databases")
            pg.drop_all()

    print()
    print(render(rows))
    print()
    print(table(["GOAL", "MEASURED", "TARGET", "MET"], [[g, m, t, "yes" if ok else "NO"] for g, m, t, ok in goals]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
