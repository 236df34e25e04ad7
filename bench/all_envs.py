"""Benchmark: how long ``orch status --all-envs`` takes when hosts are down or silent.

The promise: every cell of the matrix is queried at once, each bounded by the
registry's ``connect_timeout``, so the whole view takes about one connect
timeout however many environments and databases cannot answer.  Measured
here, not asserted in tests (timings belong to benchmarks)::

    python bench/all_envs.py                  # 1, 4 and 8 silent environments x 2 databases
    python bench/all_envs.py --timeout 3      # another connect_timeout

Every "host" is on loopback: refused ones are closed ports on 127.0.0.1,
silent ones a local socket that accepts TCP connections and never sends a
byte (the kernel completes the handshake from the listen backlog), so the
drivers wait for a greeting until their timeout.  Half the databases use
psycopg, half PyMySQL.  PostgreSQL (libpq) never waits less than 2 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _project(root: Path, envs: int, silent_port: int, timeout: float) -> None:
    for name in ("databases.yaml", "alembic.ini"):
        shutil.copy(REPO / name, root / name)
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "migrations", root / "migrations", ignore=skip)
    shutil.copytree(REPO / "src" / "shop", root / "src" / "shop", ignore=skip)
    data = yaml.safe_load((root / "databases.yaml").read_text())
    data["settings"]["connect_timeout"] = timeout
    closed = _closed_port()
    environments = {"dev": data["environments"]["dev"]}
    for i in range(envs):
        environments[f"silent{i}"] = {
            "urls": {
                "core": f"postgresql+psycopg://app:pw@127.0.0.1:{silent_port}/c{i}",
                "analytics": f"mysql+pymysql://app:pw@127.0.0.1:{silent_port}/a{i}",
            }
        }
        environments[f"refused{i}"] = {
            "urls": {
                "core": f"postgresql+psycopg://app:pw@127.0.0.1:{closed}/c{i}",
                "analytics": f"mysql+pymysql://app:pw@127.0.0.1:{closed}/a{i}",
            }
        }
    data["environments"] = environments
    (root / "databases.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--timeout", type=float, default=2.0, help="connect_timeout (seconds)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--envs", type=int, nargs="+", default=[1, 4, 8])
    args = ap.parse_args()

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    silent_port = int(listener.getsockname()[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    print(
        f"connect_timeout={args.timeout:g}s (PostgreSQL waits at least 2 s), "
        f"median of {args.repeat} runs"
    )
    print(f"{'silent envs':>11}  {'refused envs':>12}  {'cells':>5}  {'wall (s)':>8}  states")
    try:
        for n in args.envs:
            with tempfile.TemporaryDirectory(prefix="orch-bench-envs-") as tmp:
                root = Path(tmp)
                _project(root, n, silent_port, args.timeout)
                times = []
                states = ""
                for _ in range(args.repeat):
                    t0 = time.monotonic()
                    r = subprocess.run(
                        [sys.executable, "-m", "orch", "status", "--all-envs", "--json"],
                        cwd=root,
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=600,
                    )
                    times.append(time.monotonic() - t0)
                    if r.returncode != 0:
                        sys.exit(f"orch failed: {r.stderr}")
                    import json

                    doc = json.loads(r.stdout)
                    found: dict[str, int] = {}
                    for e in doc["environments"]:
                        for d in e["databases"]:
                            found[d["state"]] = found.get(d["state"], 0) + 1
                    states = ", ".join(f"{k}={v}" for k, v in sorted(found.items()))
                cells = 2 * (2 * n + 1)
                print(f"{n:>11}  {n:>12}  {cells:>5}  {statistics.median(times):>8.2f}  {states}")
    finally:
        listener.close()


if __name__ == "__main__":
    main()
