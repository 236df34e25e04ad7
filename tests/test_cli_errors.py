"""Bad input on the command line: exit 2, one clear message, no traceback; --json as a document.

Run in-process (stdout and stderr apart), on a copy of the reference project.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest

import orch
from conftest import Project, Result


def break_registry_cycle(p: Project) -> None:
    data = p.registry()
    data["databases"]["core"]["depends_on"] = ["analytics"]
    p.write_registry(data)


def break_registry_unknown_dep(p: Project) -> None:
    data = p.registry()
    data["databases"]["analytics"]["depends_on"] = ["core", "billing"]
    p.write_registry(data)


def break_registry_unknown_key(p: Project) -> None:
    data = p.registry()
    data["databases"]["core"]["metdata"] = data["databases"]["core"].pop("metadata")
    p.write_registry(data)


def break_registry_yaml(p: Project) -> None:
    p.registry_path.write_text("version: 1\ndatabases:\n  core: {depends_on: [x]\n  b: {}\n")


def nothing(p: Project) -> None:
    pass


# (id, how to break the project, command line, what the one message must contain)
BAD_INPUT: list[tuple[str, Callable[[Project], None], list[str], list[str]]] = [
    (
        "cycle",
        break_registry_cycle,
        ["status"],
        ["databases: dependency cycle: ", "core -> analytics", "analytics -> core"],
    ),
    (
        "unknown-depends-on",
        break_registry_unknown_dep,
        ["upgrade", "--all"],
        ["databases.analytics.depends_on[1]: unknown database 'billing'"],
    ),
    (
        "unknown-key",
        break_registry_unknown_key,
        ["plan"],
        ["databases.core.metdata: unknown key (did you mean 'metadata'?)"],
    ),
    (
        "missing-variable",
        nothing,
        ["upgrade", "--all", "--env", "staging"],
        ["environment variable STAGING_CORE_URL is not set", "environments.staging.urls.core"],
    ),
    (
        "unknown-database",
        nothing,
        ["upgrade", "billing"],
        ["unknown database 'billing'; known: core, analytics"],
    ),
    (
        "malformed-yaml",
        break_registry_yaml,
        ["status"],
        ["databases.yaml:4:3: malformed YAML: "],
    ),
]


@pytest.fixture(autouse=True)
def _no_staging_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STAGING_CORE_URL", "STAGING_ANALYTICS_URL", "ORCH_ENV", "ORCH_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def run_broken(
    project: Project, breaker: Callable[[Project], None], args: list[str], *extra: str
) -> Result:
    breaker(project)
    return project.orch(*args, *extra)


@pytest.mark.parametrize(
    ("breaker", "args", "needles"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_input_is_one_line_on_stderr(
    project: Project, breaker: Callable[[Project], None], args: list[str], needles: list[str]
) -> None:
    r = run_broken(project, breaker, args)
    assert r.exit_code == 2, r
    assert r.stdout == ""
    assert r.stderr.startswith("orch: error: ")
    assert r.stderr.count("\n") == 1, r.stderr  # one message, one line
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in r.stderr


@pytest.mark.parametrize(
    ("breaker", "args", "needles"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_input_with_json_is_one_document(
    project: Project, breaker: Callable[[Project], None], args: list[str], needles: list[str]
) -> None:
    r = run_broken(project, breaker, args, "--json")
    assert r.exit_code == 2, r
    assert r.stderr == ""
    doc = json.loads(r.stdout)
    assert set(doc) == {"schema", "error", "exit_code"}
    assert doc["schema"] == 1 and doc["exit_code"] == 2
    for needle in needles:
        assert needle in doc["error"]


def test_several_registry_problems_are_one_message(project: Project) -> None:
    break_registry_unknown_dep(project)
    break_registry_unknown_key(project)
    r = project.orch("status")
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert lines[0] == "orch: error: 2 problems in the registry:"
    assert len(lines) == 3 and all(line.startswith("  - ") for line in lines[1:])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["upgrade"], "name the databases to upgrade (e.g. 'orch upgrade core') or use --all"),
        (["upgrade", "--all", "core"], "--all cannot be combined with database selectors"),
        (["plan", "--all", "core"], "--all cannot be combined with database selectors"),
        (
            ["downgrade", "analytics"],
            "downgrade needs an explicit target for 'analytics': analytics@-1, "
            "analytics@<revision> or analytics@base",
        ),
        (["upgrade", "core", "core@+1"], "database 'core' is named twice"),
        (["upgrade", "core@base"], "core@base: that is a downgrade target, not an upgrade"),
        (["upgrade", "core@nope"], "unknown revision 'nope' of core"),
        (["status", "--env", "qa"], "unknown environment 'qa'; known: dev, staging, prod"),
    ],
)
def test_usage_errors_exit_2_and_touch_nothing(
    project: Project, args: list[str], message: str
) -> None:
    r = project.orch(*args)
    assert (r.exit_code, r.stdout) == (2, ""), r
    assert r.stderr.strip().endswith(message), r.stderr
    assert r.stderr.count("\n") == 1
    assert not (project.root / "var").exists()


@pytest.mark.parametrize(
    "args", [["--bogus", "status"], ["status", "--bogus"], ["upgrade", "--all", "-Z"]]
)
def test_unknown_option_fails_hard(project: Project, args: list[str]) -> None:
    r = project.orch(*args)
    assert r.exit_code == 2
    assert r.stdout == ""
    assert "No such option" in r.stderr and "Traceback" not in r.stderr


def test_unknown_command(project: Project) -> None:
    r = project.orch("upgarde", "--all")
    assert r.exit_code == 2
    assert "No such command 'upgarde'" in r.stderr


def test_version(project: Project) -> None:
    r = project.orch("--version")
    assert (r.exit_code, r.stdout, r.stderr) == (0, f"orch {orch.__version__}\n", "")


def test_help_lists_the_commands(project: Project) -> None:
    r = project.orch("--help")
    assert r.exit_code == 0
    for command in ("upgrade", "downgrade", "stamp", "status", "plan", "revision"):
        assert command in r.stdout


# ---------------------------------------------------------------- global options


def test_global_options_before_or_after_the_command(project: Project) -> None:
    before = project.orch("--env", "dev", "status", "--json")
    after = project.orch("status", "--env", "dev", "--json")
    assert before.exit_code == after.exit_code == 0
    assert before.stdout == after.stdout
    assert before.json()["environment"] == "dev"
    short = project.orch("-e", "dev", "status", "--json", "-c", str(project.registry_path))
    assert short.stdout == before.stdout


def test_last_global_option_wins(project: Project) -> None:
    for args in (
        ["--env", "staging", "status", "--env", "dev", "--json"],
        ["status", "--env", "staging", "--env", "dev", "--json"],
    ):
        r = project.orch(*args)
        assert r.exit_code == 0, r.stderr
        assert r.json()["environment"] == "dev"
    r = project.orch("--env", "dev", "status", "--env", "staging", "--json")
    assert r.json()["environment"] == "staging"
    assert {d["state"] for d in r.json()["databases"]} == {"unconfigured"}


def test_internal_error_is_one_line_and_traceback_only_with_v(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orch.queries.status

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("boom in collect")

    monkeypatch.setattr(orch.queries.status, "collect", broken)
    r = project.orch("status")
    assert r.exit_code == 1
    assert r.stderr == (
        "orch: error: internal error: RuntimeError: boom in collect "
        "(run with -v for the traceback)\n"
    )
    r = project.orch("status", "-v")
    assert r.exit_code == 1
    assert r.stderr.startswith("orch: error: internal error: RuntimeError: boom in collect")
    assert "Traceback (most recent call last)" in r.stderr
    assert "in broken" in r.stderr
    r = project.orch("-v", "status", "--json")
    assert json.loads(r.stdout)["exit_code"] == 1


def test_verbose_shows_the_traceback_of_a_user_error_too(project: Project) -> None:
    r = project.orch("upgrade", "nope", "-v")
    assert r.exit_code == 2
    assert r.stderr.startswith("orch: error: unknown database 'nope'")
    assert "Traceback" in r.stderr


# ---------------------------------------------------------------- plan on a broken environment


def test_plan_with_a_missing_variable_refuses_like_upgrade(project: Project) -> None:
    r = project.orch("plan", "--env", "staging")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert "environment variable STAGING_CORE_URL is not set" in r.stderr
    assert r.stderr.count("\n") == 1


def test_plan_with_an_unreachable_database_exits_1_with_a_json_error(project: Project) -> None:
    urls = project.registry()["environments"]["dev"]["urls"]
    project.set_urls(
        "dev", {**urls, "core": "postgresql+psycopg://orch:Secret-pw-9@127.0.0.1:1/core"}
    )
    r = project.orch("plan", "--json")
    assert r.exit_code == 1
    doc = r.json()
    assert doc["schema"] == 1 and doc["exit_code"] == 1
    assert doc["error"].startswith("core: ")
    assert set(doc["unreadable"]) == {"core"}
    assert "Secret-pw-9" not in r.stdout + r.stderr
    assert not (project.root / "var").exists()  # read-only: analytics' file not created


# ---------------------------------------------------------------- --json and -v from Click


def add_environment_prev(p: Project) -> None:
    data = p.registry()
    data["environments"]["prev"] = {
        "urls": {"core": "${ORCH_T_PREV_CORE}", "analytics": "${ORCH_T_PREV_ANALYTICS}"}
    }
    p.write_registry(data)


# Click's wording changed across the versions pyproject allows ("No such option:
# --bogus" in 8.2, "No such option '--bogus'" later); both name the option.
NO_BOGUS = r"No such option:? '?--bogus'?"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-eprev", "status"], re.escape("unknown environment 'prev'")),
        (["status", "-eprev"], re.escape("unknown environment 'prev'")),
        (["--env", "-v", "status"], re.escape("unknown environment '-v'")),
        (["-e", "-v", "status"], re.escape("unknown environment '-v'")),
        (["--env=-v", "status"], re.escape("unknown environment '-v'")),
        (["revision", "core", "-m", "-v", "--bogus"], NO_BOGUS),
    ],
)
def test_an_option_value_that_looks_like_v_is_not_verbose(
    project: Project, args: list[str], needle: str
) -> None:
    """``-eprev`` is ``--env prev``, ``--env -v`` an environment named '-v': no traceback."""
    r = project.orch(*args)
    assert r.exit_code == 2, r
    assert r.stdout == ""
    assert r.stderr.startswith("orch: error: ") and re.search(needle, r.stderr), r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_an_environment_named_prev_runs_without_verbose(project: Project) -> None:
    """An existing environment 'prev' given as -eprev: its error is one line, no traceback."""
    add_environment_prev(project)
    r = project.orch("-eprev", "upgrade", "--all")
    assert r.exit_code == 2, r
    assert r.stderr.startswith("orch: error: ")
    assert "environment variable ORCH_T_PREV_CORE is not set" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = project.orch("-eprev", "upgrade", "--all", "--json")
    assert (r.exit_code, r.stderr) == (2, "")
    assert "ORCH_T_PREV_CORE" in r.json()["error"]
    r = project.orch("-eprev", "-v", "upgrade", "--all")  # a real -v still gives the traceback
    assert r.exit_code == 2 and "Traceback" in r.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["status", "--json", "--bogus"], NO_BOGUS),
        (["--bogus", "status", "--json"], NO_BOGUS),
        (["upgarde", "--all", "--json"], re.escape("No such command 'upgarde'")),
        (["upgrade", "--all", "--jobs", "0", "--json"], re.escape("Invalid value for '--jobs'")),
        (["revision", "core", "--json"], re.escape("Missing option '--message'")),
    ],
)
def test_a_usage_error_with_json_is_one_document(
    project: Project, args: list[str], needle: str
) -> None:
    r = project.orch(*args)
    assert (r.exit_code, r.stderr) == (2, ""), r
    doc = r.json()
    assert set(doc) == {"schema", "error", "exit_code"} and doc["exit_code"] == 2
    assert re.search(needle, doc["error"]), doc["error"]


def test_a_usage_error_with_v_shows_the_traceback(project: Project) -> None:
    r = project.orch("status", "-v", "--bogus")
    assert r.exit_code == 2
    assert re.match("orch: error: " + NO_BOGUS, r.stderr), r.stderr
    assert "Traceback" in r.stderr
    r = project.orch("revision", "core", "-m", "--json", "--bogus")  # --json is the message
    assert r.exit_code == 2 and r.stdout == "" and "No such option" in r.stderr
