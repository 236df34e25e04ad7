"""pytest plugin: ``orch test``'s checks and migrated throwaway databases in your own suite.

Installed with orch (entry point ``pytest11``: ``orch``), so every suite in an
environment that has orch loads it.  It therefore imports nothing but
pytest at load time, adds only options and fixtures, and reads no registry
until one of its fixtures is used; ``-p no:orch`` turns it off.

Fixtures:

``orch_migration_checks``
    a function: ``orch_migration_checks()`` (or ``orch_migration_checks("core")``)
    runs every check of ``orch test`` and fails the test with each failure
    (database, check, revision, schema difference) when one fails; returns
    the results otherwise.
``orch_databases``
    ``{name: url}`` of throwaway databases upgraded to head, in dependency
    order, dropped after the test (each test gets fresh ones).
``orch_registry``
    the registry: ``--orch-config`` / ini ``orch_config``, else
    ``$ORCH_CONFIG``, else ``databases.yaml`` in the rootdir or above.

The environment (``--orch-env`` / ini ``orch_env``, else ``$ORCH_ENV``, else the
registry's ``default_env``) only says which server and login the throwaway
databases go to; its own databases are never touched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from orch.config.registry import Registry
    from orch.run.testing import DatabaseChecks


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("orch", "orch: migrations of several databases")
    group.addoption(
        "--orch-config",
        default=None,
        metavar="PATH",
        help="orch registry (default: ini orch_config, $ORCH_CONFIG, databases.yaml).",
    )
    group.addoption(
        "--orch-env",
        default=None,
        metavar="NAME",
        help="orch environment whose servers get the throwaway databases.",
    )
    parser.addini("orch_config", "orch registry file (databases.yaml)", default=None)
    parser.addini("orch_env", "orch environment for the throwaway databases", default=None)


def _option(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(f"orch_{name}") or config.getini(f"orch_{name}")
    return str(value) if value else None


def _env(config: pytest.Config) -> str | None:
    return _option(config, "env") or os.environ.get("ORCH_ENV") or None


@pytest.fixture(scope="session")
def orch_registry(pytestconfig: pytest.Config) -> Registry:
    """The project's registry (see the module docstring for where it is found)."""
    from orch.config.registry import load_registry

    explicit = _option(pytestconfig, "config")
    if explicit and not os.path.isabs(explicit):
        explicit = str(pytestconfig.rootpath / explicit)
    return load_registry(explicit, cwd=pytestconfig.rootpath)


@pytest.fixture
def orch_migration_checks(
    orch_registry: Registry, pytestconfig: pytest.Config
) -> Callable[..., list[DatabaseChecks]]:
    """``orch_migration_checks(*databases)``: every check of ``orch test``; fails on a failure."""
    from orch.run import testing

    env = _env(pytestconfig)

    def run(*databases: str) -> list[DatabaseChecks]:
        results = testing.check_migrations(orch_registry, env, list(databases) or None)
        failed = testing.failures(results)
        if failed:
            pytest.fail("orch migration checks failed:\n" + "\n".join(failed), pytrace=False)
        return results

    return run


@pytest.fixture
def orch_databases(
    orch_registry: Registry, pytestconfig: pytest.Config
) -> Iterator[dict[str, str]]:
    """``{name: url}`` of fresh databases at head (dependency order), dropped after the test."""
    from orch.run.testing import migrated_databases

    with migrated_databases(orch_registry, _env(pytestconfig)) as urls:
        yield urls
