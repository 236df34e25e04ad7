"""databases.yaml: loading, variables, discovery, environments and validation (no database)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import REPO, Project
from orch.config.registry import Registry, find_config, load_registry, parse_registry
from orch.errors import ConfigNotFound, RegistryError, UsageError

MINIMAL = """
version: 1
default_env: dev
databases:
  core: {}
  analytics:
    depends_on: [core]
environments:
  dev:
    urls:
      core: sqlite:///var/core.db
      analytics: sqlite:///var/analytics.db
"""


def write(tmp_path: Path, text: str, name: str = "databases.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str) -> Registry:
    return parse_registry(write(tmp_path, text))


def problems(tmp_path: Path, text: str) -> list[tuple[str, str, str]]:
    """(file, key path, reason) of every problem the registry has."""
    with pytest.raises(RegistryError) as info:
        load(tmp_path, text)
    return [(p.file, p.key, p.reason) for p in info.value.problems]


def reasons(tmp_path: Path, text: str) -> dict[str, str]:
    return {key: reason for _f, key, reason in problems(tmp_path, text)}


# ---------------------------------------------------------------- loading


def test_reference_registry_loads() -> None:
    reg = parse_registry(REPO / "databases.yaml")
    assert list(reg.databases) == ["core", "analytics"]
    assert reg.databases["analytics"].depends_on == ("core",)
    assert reg.databases["core"].metadata == "shop.models:core_metadata"
    assert reg.databases["core"].versions == REPO / "migrations" / "core"
    assert reg.databases["core"].branch == "core"
    assert reg.default_env == "dev"
    assert list(reg.environments) == ["dev", "staging", "prod"]
    assert reg.environments["prod"].protected
    assert reg.settings.lock_timeout == 60 and reg.settings.log_table == "orch_log"


def test_defaults(tmp_path: Path) -> None:
    reg = load(tmp_path, MINIMAL)
    core = reg.databases["core"]
    assert core.versions == tmp_path / "migrations" / "core"
    assert (core.branch, core.version_table, core.version_table_schema) == (
        "core",
        "alembic_version",
        None,
    )
    assert reg.settings.lock_timeout == 60.0 and reg.settings.connect_timeout == 5.0
    assert reg.prepend_sys_path == (tmp_path,)


def test_prepend_sys_path_is_relative_to_the_registry(tmp_path: Path) -> None:
    reg = load(tmp_path / "proj", MINIMAL + "prepend_sys_path: [., src, ../lib]\n")
    root = tmp_path / "proj"
    assert reg.prepend_sys_path == (root, root / "src", tmp_path / "lib")


def test_relative_sqlite_paths_are_relative_to_the_registry_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path / "proj",
        """
        databases: {a: {}, b: {}, c: {}}
        environments:
          dev:
            urls:
              a: sqlite:///var/a.db
              b: sqlite:////abs/b.db
              c: sqlite:///var/c.db?timeout=3
        """,
    )
    monkeypatch.chdir(tmp_path)  # not the registry's directory
    urls = {t.name: t.url for t in parse_registry(path).targets("dev")}
    root = tmp_path / "proj"
    assert urls == {
        "a": f"sqlite:///{root}/var/a.db",
        "b": "sqlite:////abs/b.db",
        "c": f"sqlite:///{root}/var/c.db?timeout=3",
    }


# ---------------------------------------------------------------- variables


VARS = """
databases: {core: {}, analytics: {}}
default_env: dev
environments:
  dev:
    urls:
      core: sqlite:///core.db
      analytics: sqlite:///analytics.db
  staging:
    urls:
      core: ${ORCH_T_CORE_URL}
      analytics: ${ORCH_T_ANALYTICS_URL:-sqlite:///fallback.db}
"""


def test_variables_are_only_needed_by_the_environment_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORCH_T_CORE_URL", raising=False)
    reg = load(tmp_path, VARS)  # loads although staging's variable is missing
    assert all(t.url for t in reg.targets("dev"))
    staging = {t.name: t for t in reg.targets("staging")}
    assert staging["core"].url is None
    assert staging["core"].missing is not None
    assert "ORCH_T_CORE_URL" in staging["core"].missing
    assert "environments.staging.urls.core" in staging["core"].missing


def test_variable_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_T_CORE_URL", "sqlite:////data/core.db")
    monkeypatch.delenv("ORCH_T_ANALYTICS_URL", raising=False)
    reg = load(tmp_path, VARS)
    urls = {t.name: t.url for t in reg.targets("staging")}
    assert urls["core"] == "sqlite:////data/core.db"
    assert urls["analytics"] == f"sqlite:///{tmp_path}/fallback.db"
    monkeypatch.setenv("ORCH_T_ANALYTICS_URL", "")  # like the shell: empty takes the default
    assert reg.targets("staging")[1].url == f"sqlite:///{tmp_path}/fallback.db"
    monkeypatch.setenv("ORCH_T_ANALYTICS_URL", "sqlite:////data/a.db")
    assert reg.targets("staging")[1].url == "sqlite:////data/a.db"


def test_an_empty_variable_without_default_is_named_not_a_bad_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_T_CORE_URL", "")
    reg = load(tmp_path, VARS)
    core = reg.targets("staging")[0]
    assert core.url is None
    assert core.missing is not None
    assert "ORCH_T_CORE_URL is set but empty" in core.missing


def test_password_in_a_variable_is_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orch.redact import redact

    monkeypatch.setenv("ORCH_T_CORE_URL", "postgresql+psycopg://u:s3cr3t-pw@db.example/core")
    reg = load(tmp_path, VARS)
    core = reg.targets("staging")[0]
    assert core.display_url == "postgresql+psycopg://u:***@db.example/core"
    assert "s3cr3t-pw" not in redact(f"connecting with s3cr3t-pw to {core.url}")


# ---------------------------------------------------------------- discovery


def test_discovery_explicit_then_env_var_then_nearest_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = write(tmp_path, MINIMAL)
    other = write(tmp_path / "elsewhere", MINIMAL, name="other.yaml")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.delenv("ORCH_CONFIG", raising=False)
    assert find_config(None, cwd=deep) == top
    monkeypatch.setenv("ORCH_CONFIG", str(other))
    assert find_config(None, cwd=deep) == other
    assert find_config(top, cwd=deep) == top  # --config beats $ORCH_CONFIG


def test_nearest_registry_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, MINIMAL)
    inner = write(tmp_path / "sub", MINIMAL)
    monkeypatch.delenv("ORCH_CONFIG", raising=False)
    assert find_config(None, cwd=tmp_path / "sub") == inner


def test_missing_registry_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCH_CONFIG", raising=False)
    with pytest.raises(ConfigNotFound, match=r"no databases\.yaml in .* or any parent"):
        find_config(None, cwd=tmp_path)
    with pytest.raises(ConfigNotFound, match=r"nope\.yaml: registry file not found \(from --con"):
        find_config(tmp_path / "nope.yaml")
    monkeypatch.setenv("ORCH_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigNotFound, match=r"gone\.yaml: .*from \$ORCH_CONFIG"):
        load_registry(None, cwd=tmp_path)


# ---------------------------------------------------------------- environment


def test_environment_selection(tmp_path: Path) -> None:
    reg = load(tmp_path, MINIMAL + "  prod:\n    urls: {}\n")
    assert reg.environment(None).name == "dev"
    assert reg.environment("prod").name == "prod"
    with pytest.raises(UsageError, match=r"unknown environment 'qa'; known: dev, prod"):
        reg.environment("qa")


def test_without_default_env(tmp_path: Path) -> None:
    one = load(tmp_path / "one", MINIMAL.replace("default_env: dev\n", ""))
    assert one.environment(None).name == "dev"  # the only one
    two = load(tmp_path / "two", MINIMAL.replace("default_env: dev\n", "") + "  qa: {}\n")
    with pytest.raises(UsageError, match=r"no default_env; use --env with one of: dev, qa"):
        two.environment(None)


def test_env_option_beats_orch_env_beats_default(project: Project) -> None:
    data = project.registry()
    data["environments"]["qa"] = {"urls": data["environments"]["dev"]["urls"]}
    project.write_registry(data)

    def env_of(*args: str, orch_env: str = "") -> str:
        r = project.orch("status", "--json", *args, env={"ORCH_ENV": orch_env})
        assert r.exit_code == 0, r.stderr
        return str(r.json()["environment"])

    assert env_of() == "dev"
    assert env_of(orch_env="qa") == "qa"
    assert env_of("--env", "dev", orch_env="qa") == "dev"


def test_config_option_and_orch_config(project: Project, tmp_path: Path) -> None:
    moved = project.root / "conf" / "registry.yaml"
    moved.parent.mkdir()
    project.registry_path.rename(moved)
    assert project.orch("status").exit_code == 2  # nothing to discover any more
    r = project.orch("status", "--json", "--config", str(moved))
    assert r.exit_code == 0, r.stderr
    r = project.orch("status", "--json", env={"ORCH_CONFIG": str(moved)})
    assert r.exit_code == 0, r.stderr


# ---------------------------------------------------------------- validation


def test_every_problem_is_reported_at_once_with_file_and_key(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
        version: 1
        databses: {}
        settings: {lock_timeout: -1, colour: true}
        databases:
          core:
            depends_on: [analytcs]
            metdata: shop.models:x
          analytics:
            versions: migrations/nowhere
          Bad-Name: {}
        environments:
          dev:
            protect: true
            urls:
              core: sqlite:///c.db
              billing: sqlite:///b.db
        """,
    )
    file = str(tmp_path / "databases.yaml")
    assert {f for f, _k, _r in found} == {file}
    got = {k: r for _f, k, r in found}
    assert got == {
        "databses": "unknown key (did you mean 'databases'?)",
        "settings.colour": "unknown key",
        "settings.lock_timeout": "must be a number of seconds from 0 to 604800 (one week), got -1",
        "databases.core.metdata": "unknown key (did you mean 'metadata'?)",
        "databases.core.depends_on[0]": "unknown database 'analytcs' (did you mean 'analytics'?)",
        "databases.analytics.versions": "directory 'migrations/nowhere' does not exist",
        "databases.Bad-Name": "database names must match [a-z][a-z0-9_]*",
        "environments.dev.protect": "unknown key (did you mean 'protected'?)",
        "environments.dev.urls.billing": "unknown database",
    }


def test_error_message_lists_every_problem(tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as info:
        load(tmp_path, "databases: {core: {depends_on: [x]}}\nbogus: 1\n")
    text = str(info.value)
    assert text.startswith("2 problems in the registry:")
    assert "databases.core.depends_on[0]: unknown database 'x'" in text
    assert f"{tmp_path / 'databases.yaml'}: bogus: unknown key" in text


def test_cycle_is_named_in_dependency_order(tmp_path: Path) -> None:
    got = reasons(
        tmp_path,
        """
        databases:
          a: {depends_on: [c]}
          b: {depends_on: [a]}
          c: {depends_on: [b]}
          d: {depends_on: [a]}
        """,
    )
    assert list(got) == ["databases"]
    cycle = got["databases"].removeprefix("dependency cycle: ").split(" -> ")
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["a", "b", "c"]
    # each name depends on the next one
    deps = {"a": "c", "b": "a", "c": "b"}
    assert all(deps[x] == y for x, y in zip(cycle, cycle[1:], strict=False))


def test_self_dependency(tmp_path: Path) -> None:
    got = reasons(tmp_path, "databases: {core: {depends_on: [core]}}\n")
    assert got["databases.core.depends_on[0]"] == "a database cannot depend on itself"


def test_one_branch_label_for_two_directories(tmp_path: Path) -> None:
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
    got = reasons(
        tmp_path,
        """
        databases:
          one: {versions: x, branch: shared}
          two: {versions: y, branch: shared}
        """,
    )
    assert got == {
        "databases.two.branch": "branch label 'shared' is already used by database 'one' "
        "for another directory"
    }


def test_shards_may_share_one_versions_directory(tmp_path: Path) -> None:
    (tmp_path / "migrations" / "shard").mkdir(parents=True)
    reg = load(
        tmp_path,
        """
        databases:
          shard_a: {versions: migrations/shard, branch: shard}
          shard_b: {versions: migrations/shard, branch: shard}
        environments:
          dev:
            urls: {shard_a: "sqlite:///a.db", shard_b: "sqlite:///b.db"}
        """,
    )
    assert reg.databases["shard_a"].versions == reg.databases["shard_b"].versions


def test_bad_names(tmp_path: Path) -> None:
    got = reasons(
        tmp_path,
        """
        databases: {1core: {}, Core: {}, ok_name2: {}}
        environments: {Prod: {}, staging-eu: {}}
        """,
    )
    assert got == {
        "databases.1core": "database names must match [a-z][a-z0-9_]*",
        "databases.Core": "database names must match [a-z][a-z0-9_]*",
        "environments.Prod": "environment names must be lowercase words ([a-z][a-z0-9_-]*)",
    }


def test_unknown_default_env(tmp_path: Path) -> None:
    got = reasons(tmp_path, "default_env: qa\ndatabases: {}\nenvironments: {dev: {}}\n")
    assert got == {"default_env": "unknown environment 'qa'"}


def test_unsupported_version(tmp_path: Path) -> None:
    got = reasons(tmp_path, "version: 2\n")
    assert "unsupported registry version 2" in got["version"]


def test_wrong_types(tmp_path: Path) -> None:
    got = reasons(
        tmp_path,
        """
        databases:
          core: [a]
          other: {depends_on: 3, metadata: nocolon}
        environments:
          dev: {protected: maybe, urls: {other: 5}}
        """,
    )
    assert got["databases.core"] == "must be a mapping, got list"
    assert got["databases.other.depends_on"] == "must be a list of strings"
    assert got["databases.other.metadata"] == "must be 'module:attribute'"
    assert got["environments.dev.protected"] == "must be true or false"
    assert got["environments.dev.urls.other"] == "must be a URL string"


def test_hooks_use_braces_not_dollar(tmp_path: Path) -> None:
    got = reasons(
        tmp_path,
        """
        databases: {core: {}}
        environments:
          prod:
            hooks:
              before_upgrade: "backup ${HOST}"
              before_upgarde: "x"
        """,
    )
    assert "brace placeholders" in got["environments.prod.hooks.before_upgrade"]
    assert got["environments.prod.hooks.before_upgarde"] == (
        "unknown key (did you mean 'before_upgrade'?)"
    )


def test_mysql_scheme_suggests_pymysql(tmp_path: Path) -> None:
    got = reasons(
        tmp_path,
        """
        databases: {core: {}}
        environments: {dev: {urls: {core: "mysql://u@h/db"}}}
        """,
    )
    assert got["environments.dev.urls.core"] == (
        "mysql:// needs driver MySQLdb, which is not installed; use mysql+pymysql:// instead"
    )


def test_two_entries_for_one_database_and_version_table(tmp_path: Path) -> None:
    got = reasons(
        tmp_path,
        """
        databases: {core: {}, analytics: {}}
        environments:
          dev:
            urls: {core: "sqlite:///same.db", analytics: "sqlite:///./same.db"}
        """,
    )
    assert (
        "points at the same database and version table as 'core'"
        in (got["environments.dev.urls.analytics"])
    )


def test_malformed_yaml_names_line_and_column(tmp_path: Path) -> None:
    found = problems(tmp_path, "databases:\n  core: {depends_on: [x]\n  other: {}\n")
    assert len(found) == 1
    where, _key, reason = found[0]
    assert where == f"{tmp_path / 'databases.yaml'}:3:3"
    assert reason.startswith("malformed YAML: ")


def test_registry_must_be_a_mapping(tmp_path: Path) -> None:
    assert problems(tmp_path, "- a\n- b\n")[0][2] == "the registry must be a YAML mapping"
