"""The reference pages of the docs stay true to the code.

``docs/reference/`` lists every registry key, command, option, state,
outcome and exit code, and ``docs/design.md`` every layer.  Each test here
reads those from the code (the registry's key sets, Click's commands, the
state and outcome vocabularies, the exit code constants, the import-linter
contract) and fails when one is missing from its page, and when a page
documents one the code no longer has.  So adding a key, an option or a
state without documenting it fails the suite; the console examples of
these pages are run by tests/test_docs.py.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import tomllib
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any

import click
import pytest

from conftest import REPO

REFERENCE = REPO / "docs" / "reference"


def _page(name: str) -> str:
    return (REPO / "docs" / name).read_text(encoding="utf-8")


def sections(text: str, level: int = 2) -> dict[str, str]:
    """Heading text -> the text under it, up to the next heading of that level or above."""
    out: dict[str, str] = {}
    title: str | None = None
    body: list[str] = []
    fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(rf"^(#{{1,{level}}}) (.*)$", line)
        if m:
            if title is not None:
                out[title] = "\n".join(body)
            title, body = m.group(2).strip(), []
        elif title is not None:
            body.append(line)
    if title is not None:
        out[title] = "\n".join(body)
    return out


def table_words(text: str) -> list[str]:
    """The first cell of each table row, when it is one ``code`` word: ``| `word` | ...``."""
    return re.findall(r"^\| `([^`]+)` \|", text, re.M)


def missing(wanted: Iterable[str], present: Iterable[str]) -> list[str]:
    have = set(present)
    return sorted(w for w in wanted if w not in have)


def _words(values: Iterable[Any]) -> set[str]:
    return {v.value if isinstance(v, Enum) else str(v) for v in values}


# ------------------------------------------------------------ the vocabularies, from the code


def status_states() -> set[str]:
    """Every state ``status`` (or ``history``) can give a database."""
    from orch.outcomes import State

    return _words(State)


def run_outcomes() -> set[str]:
    """Every outcome the executor gives a database: its vocabulary and what it assigns."""
    from orch.outcomes import Outcome

    return _words(Outcome) | assigned_outcomes(REPO / "src" / "orch" / "run")


def check_states() -> set[str]:
    from orch.outcomes import CheckState

    return _words(CheckState)


def assigned_outcomes(package: Path) -> set[str]:
    """String outcomes written in code: ``res.outcome = "x"``, ``res.outcome, res.error = "x", e``
    and ``DbResult(name, direction, "x", ...)``, in every module of *package*.

    The vocabulary lists what the executor means to produce; this finds what
    it does produce, so an outcome assigned as a bare string and never added
    to the vocabulary still has to be documented.
    """
    found: set[str] = set()

    def word(node: ast.expr) -> str | None:
        return (
            node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
        )

    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Attribute) and target.attr == "outcome":
                        if (w := word(node.value)) is not None:
                            found.add(w)
                    elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        for t, v in zip(target.elts, node.value.elts, strict=False):
                            outcome = isinstance(t, ast.Attribute) and t.attr == "outcome"
                            if outcome and (w := word(v)) is not None:
                                found.add(w)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "DbResult"
                and len(node.args) >= 3
                and (w := word(node.args[2])) is not None
            ):
                found.add(w)
    return found


# ------------------------------------------------------------ registry.md


def registry_keys() -> set[str]:
    """Every key path of databases.yaml, as the reference names it."""
    from orch.config import registry as reg

    keys = set(reg.TOP_KEYS)
    keys |= {f"settings.{k}" for k in reg.SETTINGS_KEYS}
    keys |= {f"databases.<name>.{k}" for k in reg.DB_KEYS}
    keys |= {f"environments.<name>.{k}" for k in reg.ENV_KEYS}
    keys |= {f"environments.<name>.hooks.{h}" for h in reg.HOOK_NAMES}
    return keys


def documented_keys(text: str) -> set[str]:
    """Keys that have their own heading: ``### `settings.jobs```."""
    return set(re.findall(r"^#{3,4} `([^`]+)`\s*$", text, re.M))


def test_every_registry_key_has_its_entry() -> None:
    text = (REFERENCE / "registry.md").read_text(encoding="utf-8")
    keys, documented = registry_keys(), documented_keys(text)
    assert missing(keys, documented) == [], "databases.yaml keys not in reference/registry.md"
    assert missing(documented, keys) == [], "reference/registry.md documents unknown keys"
    for key in keys:
        entry = sections(text, 4)[f"`{key}`"]
        if key.count(".") < 3:  # a hook name's entry is its paragraph
            for part in ("**Type:**", "**Example:**"):
                assert part in entry, f"registry.md: `{key}` has no {part}"


def test_every_hook_placeholder_is_in_the_table() -> None:
    from orch.config.hookspec import PLACEHOLDERS

    text = (REFERENCE / "registry.md").read_text(encoding="utf-8")
    rows = [w.strip("{}") for w in table_words(sections(text, 4)["Placeholders"])]
    assert missing(PLACEHOLDERS, rows) == []
    assert missing(rows, PLACEHOLDERS) == []


# ------------------------------------------------------------ commands.md


def _usage(name: str, cmd: click.Command) -> str:
    from orch.cli import cli

    parent = click.Context(cli, info_name="orch")
    ctx = click.Context(cmd, info_name=name, parent=parent)
    return " ".join(["orch", name, *cmd.collect_usage_pieces(ctx)])


def _global_names() -> set[str]:
    from orch.cli import cli

    return {p.name for p in cli.params if p.name}


def option_problems(page: str) -> list[str]:
    """What the commands page lacks (or has too much of), walking Click's commands."""
    from orch.cli import cli

    problems: list[str] = []
    parts = sections(page)
    global_part = parts.get("Global options", "")
    help_names = cli.context_settings.get("help_option_names", ["--help"])
    for opt in [*help_names, *(o for p in cli.params for o in p.opts + p.secondary_opts)]:
        if not re.search(rf"`{re.escape(opt)}[ `]", global_part):
            problems.append(f"global option {opt}")
    titled = {t: body for t, body in parts.items() if re.fullmatch(r"`orch [a-z-]+`", t)}
    for name, cmd in sorted(cli.commands.items()):
        body = titled.pop(f"`orch {name}`", None)
        if body is None:
            problems.append(f"command {name}")
            continue
        if _usage(name, cmd) not in body:
            problems.append(f"{name}: usage line {_usage(name, cmd)!r}")
        if "**Exit codes:**" not in body:
            problems.append(f"{name}: exit codes")
        own: set[str] = set()
        for p in cmd.params:
            if not isinstance(p, click.Option):
                continue
            names = p.opts + p.secondary_opts
            if p.name in _global_names():
                if any(not re.search(rf"`{re.escape(o)}[ `]", global_part) for o in names):
                    problems.append(f"{name}: global option {names}")
                continue
            own.update(names)
            for o in names:
                if not re.search(rf"`{re.escape(o)}[ `]", body):
                    problems.append(f"{name}: option {o}")
            for choice in getattr(p.type, "choices", ()) or ():
                if f"`{choice}`" not in body:
                    problems.append(f"{name}: {names[0]} choice {choice}")
        rows = re.findall(r"^\| (`-[^|]*) \|", body, re.M)
        for row in rows:
            for o in re.findall(r"`(-{1,2}[a-z][a-z-]*)", row):
                if o not in own:
                    problems.append(f"{name}: documents {o}, which it does not have")
    problems += [f"documents a command that does not exist: {t}" for t in titled]
    return problems


def test_every_command_and_option_is_in_the_commands_page() -> None:
    page = (REFERENCE / "commands.md").read_text(encoding="utf-8")
    assert option_problems(page) == []


def test_the_option_check_finds_what_is_missing() -> None:
    """The check itself: a page without an option, or with one too many, is caught."""
    page = (REFERENCE / "commands.md").read_text(encoding="utf-8")
    assert "`--with-deps`" in page and "`--fail-fast`" in page
    without = page.replace("| `--fail-fast` |", "| `--fail-slow` |")
    found = option_problems(without)
    assert "upgrade: option --fail-fast" in found
    assert "upgrade: documents --fail-slow, which it does not have" in found
    assert "command graph" in option_problems(page.replace("## `orch graph`", "## graph"))


# ------------------------------------------------------------ json.md


def test_every_command_has_its_json_document() -> None:
    from orch.cli import cli

    titles = " ".join(sections(_page("reference/json.md")))
    for name in cli.commands:
        assert f"`{name}" in titles, f"docs/reference/json.md has no section for {name}"


def _instance(cls: type) -> Any:
    """An instance of dataclass *cls* with empty values, enough for its ``as_json``."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        kind = str(f.type)
        if "tuple" in kind:
            kwargs[f.name] = ()
        elif "list" in kind:
            kwargs[f.name] = []
        elif "dict" in kind or "Mapping" in kind:
            kwargs[f.name] = {}
        elif kind.startswith("str"):
            kwargs[f.name] = ""
        elif kind.startswith(("int", "float")):
            kwargs[f.name] = 0
        else:
            kwargs[f.name] = None
    return cls(**kwargs)


def _json_classes() -> list[tuple[str, type]]:
    from orch.authoring.revision import Written
    from orch.authoring.scaffold import InitResult
    from orch.queries.drift import DriftResult
    from orch.queries.history import Entry, History
    from orch.queries.lint.walk import Allow, DbLint, LintFinding
    from orch.queries.offline import Section
    from orch.queries.status import DbStatus
    from orch.run.execute import DbResult
    from orch.run.testing import CheckResult, DatabaseChecks
    from orch.store.audit import LogRow

    return [
        ("status", DbStatus),
        ("upgrade", DbResult),
        ("upgrade --sql", Section),
        ("log", LogRow),
        ("check", DriftResult),
        ("history", History),
        ("history", Entry),
        ("lint", DbLint),
        ("lint", LintFinding),
        ("lint", Allow),
        ("revision", Written),
        ("init", InitResult),
        ("test", DatabaseChecks),
        ("test", CheckResult),
    ]


@pytest.mark.parametrize(("where", "cls"), _json_classes(), ids=lambda v: getattr(v, "__name__", v))
def test_every_field_of_a_json_entry_is_described(where: str, cls: type) -> None:
    """Each field of the entries commands print with ``--json`` has its row in json.md."""
    page = _page("reference/json.md")
    part = next(body for title, body in sections(page).items() if f"`{where}" in title)
    keys = set(_instance(cls).as_json())
    assert missing(keys, table_words(part)) == [], f"{cls.__name__} fields not in json.md ({where})"


def test_every_field_of_a_rollback_entry_is_described() -> None:
    from orch.outcomes import Direction, Outcome
    from orch.run import rollback
    from orch.run.execute import DbResult

    entry = rollback.entry(DbResult("core", Direction.DOWNGRADE, Outcome.DONE), [])
    part = sections(_page("reference/json.md"))["`upgrade`, `downgrade`, `stamp`"]
    rows = part.split("A `rollback` entry:")[1]
    assert missing(entry, table_words(rows)) == []


# ------------------------------------------------------------ states.md


def _table_of(title: str) -> list[str]:
    return table_words(sections(_page("reference/states.md"))[title])


def test_every_database_state_is_explained() -> None:
    rows = _table_of("Database states")
    page = sections(_page("reference/states.md"))["Database states"]
    documented = set(rows) | ({"absent"} if "**`absent`**" in page else set())
    assert missing(status_states(), documented) == []
    assert missing(rows, status_states()) == []


def test_every_run_outcome_is_explained() -> None:
    rows = _table_of("Run outcomes")
    assert missing(run_outcomes(), rows) == []
    assert missing(rows, run_outcomes()) == []


def test_every_check_state_is_explained() -> None:
    rows = _table_of("Check states")
    assert missing(check_states(), rows) == []
    assert missing(rows, check_states()) == []


def test_every_migration_check_and_its_states_are_explained() -> None:
    from orch.outcomes import Verdict
    from orch.run.testing import CHECKS

    part = sections(_page("reference/states.md"))["Migration checks"]
    rows = table_words(part)
    assert missing(_words(Verdict), rows) == []
    assert missing(CHECKS, rows) == []
    assert missing(rows, _words(Verdict) | set(CHECKS)) == []


def test_the_outcome_scan_reads_assignments(tmp_path: Path) -> None:
    """The scan itself: an outcome assigned as a bare string is found, wherever it is."""
    (tmp_path / "m.py").write_text(
        "def f(res, e):\n"
        "    res.outcome = 'vanished'\n"
        "    res.outcome, res.error = 'postponed', e\n"
        "    return DbResult('db', 'upgrade', 'deferred')\n"
    )
    assert assigned_outcomes(tmp_path) == {"vanished", "postponed", "deferred"}


# ------------------------------------------------------------ exit-codes.md


def test_every_exit_code_is_explained() -> None:
    from orch import errors, stopping

    rows = re.findall(r"^\| `(\d+)` \| ([^|]*) \|", _page("reference/exit-codes.md"), re.M)
    by_code = {int(code): where for code, where in rows}
    constants = {n: v for n, v in vars(errors).items() if n.startswith("EXIT_")}
    assert constants, "orch.errors has no EXIT_ constants any more: update this test"
    for name, value in constants.items():
        assert value in by_code, f"exit code {value} ({name}) not in exit-codes.md"
        assert f"`{name}`" in by_code[value], f"exit-codes.md: {value} is not named {name}"
    for value in stopping.EXIT_CODES.values():
        assert value in by_code, f"exit code {value} (a signal) not in exit-codes.md"
    known = set(constants.values()) | set(stopping.EXIT_CODES.values())
    assert missing(map(str, by_code), map(str, known)) == []


def test_every_command_has_its_row_of_exit_codes() -> None:
    """The per-command table of exit-codes.md names every command (a row may name several)."""
    from orch.cli import cli

    part = sections(_page("reference/exit-codes.md"))["Per command"]
    named = {
        w
        for row in re.findall(r"^\| (`[^|]*) \|", part, re.M)
        for w in re.findall(r"`([a-z]+)", row)
    }
    assert missing(cli.commands, named) == [], "commands without a row in exit-codes.md"
    assert missing(named, cli.commands) == [], "exit-codes.md has rows for unknown commands"


# ------------------------------------------------------------ design.md


def test_the_design_page_names_every_layer_of_the_contract() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["type"] == "layers")
    page = _page("design.md")
    for layer in layers:
        for module in re.split(r"[|\s()]+", layer):
            if module:
                assert f"`{module}`" in page, f"docs/design.md does not describe {module}"
    assert "tests/test_architecture.py" in page and "pyproject.toml" in page
