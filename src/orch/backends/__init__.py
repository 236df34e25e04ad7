"""What differs between database servers, owned in one place per backend.

Everything above this package asks a backend object instead of branching on
a backend's name.  This module itself is URL-level knowledge that needs no
driver or SQLAlchemy: the async drivers orch migrates through and their
synchronous twins (see :mod:`orch.store.aio`).
"""

from __future__ import annotations

#: async driver scheme -> (driver module, the synchronous scheme of the same server)
ASYNC_DRIVERS: dict[str, tuple[str, str]] = {
    "postgresql+asyncpg": ("asyncpg", "postgresql+psycopg"),
    "sqlite+aiosqlite": ("aiosqlite", "sqlite"),
    "mysql+aiomysql": ("aiomysql", "mysql+pymysql"),
    "mariadb+aiomysql": ("aiomysql", "mariadb+pymysql"),
    "mysql+asyncmy": ("asyncmy", "mysql+pymysql"),
    "mariadb+asyncmy": ("asyncmy", "mariadb+pymysql"),
}

#: URL query options that only the async driver understands (dropped for its sync twin)
_ASYNC_ONLY_QUERY = {
    "postgresql": {
        "prepared_statement_cache_size",
        "prepared_statement_name_func",
        "statement_cache_size",
        "max_cached_statement_lifetime",
        "max_cacheable_statement_size",
        "command_timeout",
        "timeout",
    },
}


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def is_async(url: str) -> bool:
    """Whether *url* names one of the async drivers orch migrates through."""
    return scheme(url) in ASYNC_DRIVERS


def sync_url(url: str) -> str:
    """The URL of the same database through the synchronous driver (unchanged if not async).

    Only the scheme changes, plus the few query options that differ between
    the two drivers of one server: asyncpg's ``ssl=`` is libpq's ``sslmode=``
    (same values), and asyncpg's statement-cache and timeout options have no
    meaning for psycopg (libpq would refuse them).  Host, port, login,
    database and every other option stay as written.
    """
    s = scheme(url)
    if s not in ASYNC_DRIVERS:
        return url
    target = ASYNC_DRIVERS[s][1]
    rest = url.split("://", 1)[1]
    if "?" not in rest or not target.startswith("postgresql"):
        return f"{target}://{rest}"
    from urllib.parse import parse_qsl, urlencode

    head, query = rest.split("?", 1)
    drop = _ASYNC_ONLY_QUERY["postgresql"]
    pairs = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in drop:
            continue
        pairs.append(("sslmode" if key == "ssl" else key, value))
    return f"{target}://{head}" + (f"?{urlencode(pairs)}" if pairs else "")
