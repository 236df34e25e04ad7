"""The pure planner: selectors, --all, dependency rules, targets and order, from literals."""

from __future__ import annotations

from pathlib import Path

import pytest

from orch.config.registry import DatabaseSpec, Registry, Settings
from orch.config.revisions import Graph, Rev
from orch.errors import RefusedError, UsageError
from orch.planning.plan import (
    Plan,
    Selector,
    edges,
    levels,
    parse_selectors,
    plan_downgrade,
    plan_stamp,
    plan_upgrade,
)
from orch.planning.resolve import resolve_target

ROOT = Path("/nowhere")


def registry(deps: dict[str, tuple[str, ...]]) -> Registry:
    """A registry of databases in *deps* order, each depending on the named ones."""
    return Registry(
        path=ROOT / "databases.yaml",
        databases={
            name: DatabaseSpec(name, ROOT / "migrations" / name, name, depends_on)
            for name, depends_on in deps.items()
        },
        environments={},
        default_env=None,
        settings=Settings(),
        prepend_sys_path=(),
        script_location=ROOT / "migrations",
    )


def linear(name: str, n: int) -> Graph:
    ids = [f"{name[0]}{i}" for i in range(1, n + 1)]
    return Graph([Rev(r, (ids[i - 1],) if i else ()) for i, r in enumerate(ids)], name=name)


# core <- analytics <- reports; billing independent
REG = registry({"core": (), "analytics": ("core",), "reports": ("analytics",), "billing": ()})
GRAPHS = {"core": linear("core", 3), "analytics": linear("analytics", 2)}
GRAPHS["reports"] = linear("reports", 2)
GRAPHS["billing"] = linear("billing", 1)
AT_HEAD: dict[str, tuple[str, ...] | None] = {
    "core": ("c3",),
    "analytics": ("a2",),
    "reports": ("r2",),
    "billing": ("b1",),
}
EMPTY: dict[str, tuple[str, ...] | None] = {n: () for n in REG.databases}


def sel(*texts: str, **kw: str | bool) -> list[Selector]:
    return parse_selectors(REG, texts, **kw)  # type: ignore[arg-type]


def up(
    *texts: str,
    currents: dict[str, tuple[str, ...] | None] | None = None,
    all_: bool = False,
    **kw: bool,
) -> Plan:
    return plan_upgrade(
        REG,
        sel(*texts),
        all_=all_,
        graphs=GRAPHS,
        currents=currents or EMPTY,
        **kw,  # type: ignore[arg-type]
    )


def down(
    *texts: str, currents: dict[str, tuple[str, ...] | None] | None = None, force: bool = False
) -> Plan:
    return plan_downgrade(
        REG,
        sel(*texts, require_target=True, command="downgrade"),
        graphs=GRAPHS,
        currents=currents or AT_HEAD,
        force=force,
    )


def summary(plan: Plan) -> list[tuple[int, str, tuple[str, ...]]]:
    return [(s.level, s.db, s.revisions) for s in plan.steps]


# ---------------------------------------------------------------- selectors


def test_selector_syntax() -> None:
    assert sel("core", "analytics@+1", "billing@b1") == [
        Selector("core"),
        Selector("analytics", "+1"),
        Selector("billing", "b1"),
    ]
    assert str(Selector("analytics", "-1")) == "analytics@-1"


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["@head"], "bad selector '@head': expected DB or DB@TARGET"),
        (["core@"], "bad selector 'core@': nothing after '@'"),
        (["nope"], "unknown database 'nope'; known: core, analytics, reports, billing"),
        (["core", "core@+1"], "database 'core' is named twice"),
    ],
)
def test_bad_selectors(texts: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        sel(*texts)
    assert str(info.value) == message


def test_downgrade_selectors_need_a_target() -> None:
    with pytest.raises(UsageError, match=r"downgrade needs an explicit target for 'analytics'"):
        sel("analytics", require_target=True, command="downgrade")


# ---------------------------------------------------------------- --all and bare upgrade


def test_all_upgrades_everything_in_dependency_levels() -> None:
    plan = up(all_=True)
    assert summary(plan) == [
        (0, "core", ("c1", "c2", "c3")),
        (0, "billing", ("b1",)),
        (1, "analytics", ("a1", "a2")),
        (2, "reports", ("r1", "r2")),
    ]
    assert [[s.db for s in level] for level in plan.levels()] == [
        ["core", "billing"],
        ["analytics"],
        ["reports"],
    ]


def test_bare_upgrade_is_refused() -> None:
    with pytest.raises(UsageError, match=r"name the databases to upgrade .* or use --all"):
        up()


def test_all_with_selectors_is_refused() -> None:
    with pytest.raises(UsageError, match=r"--all cannot be combined with database selectors"):
        up("core", all_=True)


def test_with_deps_and_ignore_deps_exclude_each_other() -> None:
    with pytest.raises(UsageError, match=r"exclude each other"):
        up("core", with_deps=True, ignore_deps=True)


# ---------------------------------------------------------------- targets


def test_relative_and_explicit_upgrade_targets() -> None:
    cur = {**EMPTY, "core": ("c1",)}
    assert summary(up("core@+1", currents=cur)) == [(0, "core", ("c2",))]
    assert summary(up("core@c3", currents=cur)) == [(0, "core", ("c2", "c3"))]
    assert summary(up("core@c1", currents=cur)) == [(0, "core", ())]  # already there
    assert up("core@+2", currents=cur).steps[0].resolved.target == ("c3",)  # type: ignore[union-attr]


def test_relative_and_explicit_downgrade_targets() -> None:
    assert summary(down("core@-1", "analytics@base", "reports@base")) == [
        (0, "reports", ("r2", "r1")),
        (1, "analytics", ("a2", "a1")),
        (2, "core", ("c3",)),
    ]
    step = down("billing@base").steps[0]
    assert step.resolved is not None and step.resolved.target == ()


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["core@base"], "core@base: that is a downgrade target, not an upgrade"),
        (["core@-1"], "core@-1: that is a downgrade target, not an upgrade"),
        (["core@c1"], "core@c1: c1 is below the current revision (c2); use 'orch downgrade'"),
        (["core@+2"], "core@+2: only 1 revision(s) pending; +2 goes past head"),
        (["core@+0"], "core@+0: a relative target needs N >= 1"),
        (["core@zz"], "unknown revision 'zz' of core"),
    ],
)
def test_bad_upgrade_targets(texts: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        up(*texts, currents={**EMPTY, "core": ("c2",)})
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("billing@head", "billing@head: that is an upgrade target, not a downgrade"),
        ("billing@+1", "billing@+1: that is an upgrade target, not a downgrade"),
        ("billing@-2", "billing@-2: only 1 revision(s) applied; -2 goes past base"),
    ],
)
def test_bad_downgrade_targets(text: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        down(text)
    assert str(info.value) == message


def test_downgrade_to_a_revision_above_current() -> None:
    with pytest.raises(UsageError, match=r"core@c3: c3 is not below the current revision \(c1\)"):
        down("core@c3", currents={**AT_HEAD, "core": ("c1",)}, force=True)


def test_ambiguous_prefix() -> None:
    graphs = {"core": Graph([Rev("abc1"), Rev("abd2", ("abc1",))], name="core")}
    reg = registry({"core": ()})
    with pytest.raises(UsageError, match=r"revision prefix 'ab' of core is ambiguous"):
        plan_upgrade(
            reg, [Selector("core", "ab")], all_=False, graphs=graphs, currents={"core": ()}
        )
    plan = plan_upgrade(
        reg, [Selector("core", "abd")], all_=False, graphs=graphs, currents={"core": ()}
    )
    assert plan.steps[0].revisions == ("abc1", "abd2")


def test_database_at_an_unknown_revision_is_refused() -> None:
    with pytest.raises(UsageError, match=r"core: the database is at zz9, which no revision file"):
        up("core", currents={**EMPTY, "core": ("zz9",)})


def test_unreadable_database_still_gets_its_target_checked() -> None:
    cur: dict[str, tuple[str, ...] | None] = {**EMPTY, "core": None}
    plan = up("core", currents=cur)
    assert plan.steps[0].current is None and plan.steps[0].resolved is None
    with pytest.raises(UsageError, match=r"unknown revision 'nope' of core"):
        up("core@nope", currents=cur)
    with pytest.raises(UsageError, match=r"core@base: that is a downgrade target"):
        up("core@base", currents=cur)


# ---------------------------------------------------------------- dependency rules


def test_named_database_with_a_dependency_behind_is_refused() -> None:
    cur = {**AT_HEAD, "core": ("c2",), "analytics": ()}
    with pytest.raises(RefusedError) as info:
        up("analytics", currents=cur)
    assert "dependency behind: analytics needs core" in str(info.value)
    assert "--with-deps" in str(info.value) and "--ignore-deps" in str(info.value)


def test_transitive_dependency_behind_is_named() -> None:
    cur = {**AT_HEAD, "core": ("c2",), "reports": ()}
    with pytest.raises(RefusedError, match=r"reports needs core"):
        up("reports", currents=cur)


def test_dependency_at_head_is_fine() -> None:
    cur = {**AT_HEAD, "analytics": ()}
    assert summary(up("analytics", currents=cur)) == [(0, "analytics", ("a1", "a2"))]


def test_dependency_named_in_the_same_run_goes_first() -> None:
    plan = up("analytics", "core")
    assert [s.db for s in plan.steps] == ["core", "analytics"]
    assert [s.level for s in plan.steps] == [0, 1]


def test_dependency_named_short_of_head_is_refused() -> None:
    with pytest.raises(RefusedError, match=r"analytics needs core"):
        up("core@+1", "analytics")


def test_with_deps_does_not_override_an_explicit_target() -> None:
    with pytest.raises(RefusedError, match=r"--with-deps would move core@\+1 to head"):
        up("core@+1", "analytics", with_deps=True)


def test_with_deps_brings_dependencies_to_head_first() -> None:
    cur = {**AT_HEAD, "core": ("c1",), "analytics": ("a1",), "reports": ()}
    plan = up("reports", currents=cur, with_deps=True)
    assert summary(plan) == [
        (0, "core", ("c2", "c3")),
        (1, "analytics", ("a2",)),
        (2, "reports", ("r1", "r2")),
    ]


def test_with_deps_leaves_dependencies_at_head_alone() -> None:
    cur = {**AT_HEAD, "analytics": ("a1",), "reports": ()}
    plan = up("reports", currents=cur, with_deps=True)
    assert [s.db for s in plan.steps] == ["analytics", "reports"]


def test_ignore_deps_runs_only_the_named_database() -> None:
    plan = up("analytics", ignore_deps=True)
    assert [s.db for s in plan.steps] == ["analytics"]


def test_downgrade_refused_while_dependents_are_not_at_base() -> None:
    with pytest.raises(RefusedError) as info:
        down("core@-1")
    assert str(info.value) == (
        "core has dependents not at base: analytics, reports. "
        "Downgrade them to base in the same run, or use --force"
    )


def test_downgrade_allowed_when_dependents_are_at_base_or_go_there() -> None:
    cur = {**AT_HEAD, "reports": ()}
    assert [s.db for s in down("analytics@base", "core@-1", currents=cur).steps] == [
        "analytics",
        "core",
    ]
    assert [s.db for s in down("core@-1", force=True).steps] == ["core"]


def test_downgrade_of_a_dependent_to_one_step_does_not_count_as_base() -> None:
    with pytest.raises(RefusedError, match=r"core has dependents not at base: analytics"):
        down("core@-1", "analytics@-1", "reports@base")


def test_downgrade_with_an_unreadable_dependent_is_refused() -> None:
    with pytest.raises(RefusedError, match=r"analytics has dependents not at base: reports"):
        down("analytics@-1", currents={**AT_HEAD, "reports": None})


def test_stamp_needs_explicit_targets_and_checks_revisions() -> None:
    graphs: dict[str, Graph] = GRAPHS
    cur: dict[str, tuple[str, ...] | None] = {}
    plan = plan_stamp(REG, [Selector("core", "c2")], graphs=graphs, currents=cur)
    assert plan.steps[0].direction == "stamp"
    with pytest.raises(UsageError, match=r"stamp needs an explicit target for 'core'"):
        plan_stamp(REG, [Selector("core")], graphs=graphs, currents=cur)
    with pytest.raises(UsageError, match=r"core@\+1: stamp needs a revision, head or base"):
        plan_stamp(REG, [Selector("core", "+1")], graphs=graphs, currents=cur)


# ---------------------------------------------------------------- order


def test_levels_keep_transitive_edges_through_unselected_databases() -> None:
    # reports depends on core only through analytics, which is not selected
    assert levels(REG, ["reports", "core"]) == [["core"], ["reports"]]
    assert levels(REG, ["reports", "core"], reverse=True) == [["reports"], ["core"]]
    assert edges(REG, ["reports", "core"]) == {"reports": {"core"}, "core": set()}
    assert edges(REG, ["reports", "core"], reverse=True) == {"reports": set(), "core": {"reports"}}


def test_independent_databases_share_a_level_in_file_order() -> None:
    assert levels(REG, ["billing", "analytics", "core"]) == [["core", "billing"], ["analytics"]]


def test_downgrade_runs_dependents_first() -> None:
    plan = down("core@base", "reports@base", "analytics@base", "billing@base")
    assert [[s.db for s in level] for level in plan.levels()] == [
        ["reports", "billing"],
        ["analytics"],
        ["core"],
    ]


def test_resolve_target_is_pure_and_repeatable() -> None:
    g = linear("core", 3)
    first = resolve_target(g, ("c1",), "+1", "upgrade")
    assert first == resolve_target(g, ("c1",), "+1", "upgrade")
    assert first.path == ("c2",) and first.target == ("c2",) and first.label == "c2"
    again = resolve_target(g, ("c2",), "+1", "upgrade")  # relative to the live revision
    assert again.path == ("c3",)
    assert resolve_target(g, ("c3",), "-2", "downgrade").target == ("c1",)


def test_upgrade_to_several_revisions_ends_at_exactly_those_heads() -> None:
    """How ``downgrade --on-failure rollback`` returns a database to a start with two heads."""
    g = Graph(
        [Rev("a"), Rev("b", ("a",)), Rev("c1", ("b",)), Rev("c2", ("b",)), Rev("d1", ("c1",))]
    )
    back = resolve_target(g, ("a",), "c1,c2", "upgrade")
    assert back.target == ("c1", "c2") and back.label == "c1,c2"
    assert back.path[0] == "b" and sorted(back.path[1:]) == ["c1", "c2"]  # not d1: not a head
    assert resolve_target(g, ("c1",), "c1,c2", "upgrade").path == ("c2",)
    with pytest.raises(UsageError, match="b is below the current revision"):
        resolve_target(g, ("c1",), "b,c2", "upgrade")
