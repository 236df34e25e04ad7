"""The physical floor for ``status``: one process, SQLAlchemy, one SELECT per database.

Nothing else: no registry, no revision files, no state vocabulary.  Whatever
``orch status`` costs above this is orch's own overhead.  Reads the URLs from
the JSON file given as the only argument (a list of URLs) and prints one line
per database.
"""

from __future__ import annotations

import json
import sys

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        urls = json.load(f)
    for url in urls:
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        print(url.rsplit("/", 1)[-1], ",".join(rows))


if __name__ == "__main__":
    main()
