"""Revision headers read without importing the files, and the pure revision graph."""

from __future__ import annotations

from pathlib import Path

import pytest

from orch.config.revisions import (
    Graph,
    GraphError,
    Rev,
    load_graph,
    parse_header,
    scan_directory,
)
from orch.errors import UsageError
from orch.planning.resolve import resolve_target

HERE = Path("/nowhere/x.py")


def header(text: str) -> Rev:
    rev = parse_header(HERE, text)
    assert rev is not None
    return rev


# ---------------------------------------------------------------- headers


def test_plain_header() -> None:
    rev = header(
        '"""add users\n\nRevision ID: abc\n"""\n'
        "revision = 'abc'\n"
        "down_revision = 'parent1'\n"
        "branch_labels = None\n"
        "depends_on = None\n"
    )
    assert rev == Rev("abc", ("parent1",), (), (), str(HERE), "add users")


def test_type_annotated_header_as_alembic_writes_it() -> None:
    rev = header(
        "from typing import Sequence, Union\n"
        "revision: str = 'abc'\n"
        "down_revision: Union[str, None] = 'p'\n"
        "branch_labels: Union[str, Sequence[str], None] = ('core',)\n"
        "depends_on: Union[str, Sequence[str], None] = None\n"
    )
    assert (rev.revision, rev.down, rev.branch_labels, rev.depends_on) == (
        "abc",
        ("p",),
        ("core",),
        (),
    )


def test_first_revision_has_no_parent() -> None:
    assert header("revision = 'a'\ndown_revision = None\n").down == ()


def test_merge_tuple_and_trailing_comment() -> None:
    rev = header('revision = "m"  # merge\ndown_revision = ("a", "b")  # two parents\n')
    assert rev.revision == "m"
    assert rev.down == ("a", "b")


def test_multi_line_tuple() -> None:
    rev = header(
        "revision: str = 'm'\n"
        "down_revision: tuple[str, ...] = (\n"
        "    'a',\n"
        "    'b',  # the other branch\n"
        ")\n"
        "branch_labels = None\n"
    )
    assert rev.down == ("a", "b")
    assert rev.branch_labels == ()


def test_branch_labels_string_and_depends_on() -> None:
    rev = header(
        "revision = 'a'\ndown_revision = None\nbranch_labels = 'core'\ndepends_on = ['x', 'y']\n"
    )
    assert rev.branch_labels == ("core",)
    assert rev.depends_on == ("x", "y")


def test_non_literal_header_falls_back_to_importing_the_file(tmp_path: Path) -> None:
    path = tmp_path / "abc_computed.py"
    path.write_text(
        "PARENT = 'p' + 'arent'\nrevision = 'abc'\ndown_revision = PARENT\nbranch_labels = None\n"
    )
    rev = parse_header(path)
    assert rev is not None
    assert rev.down == ("parent",)


def test_file_without_revision_is_not_a_revision() -> None:
    assert parse_header(HERE, "import os\n") is None


def test_directory_with_a_non_revision_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "a_first.py").write_text("revision = 'a'\ndown_revision = None\n")
    (tmp_path / "helpers.py").write_text("X = 1\n")
    with pytest.raises(GraphError, match=r"helpers\.py: no 'revision' variable"):
        scan_directory(tmp_path)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text("revision = 'a'\ndown_revision = (\n")
    with pytest.raises(GraphError, match=r"bad\.py:\d+: syntax error"):
        parse_header(path)


def test_duplicate_revision_ids_name_both_files(tmp_path: Path) -> None:
    (tmp_path / "one.py").write_text("revision = 'a'\ndown_revision = None\n")
    (tmp_path / "two.py").write_text("revision = 'a'\ndown_revision = None\n")
    with pytest.raises(GraphError) as info:
        scan_directory(tmp_path)
    assert "revision a" in str(info.value)
    assert "one.py" in str(info.value) and "two.py" in str(info.value)


def test_missing_directory_is_an_empty_graph(tmp_path: Path) -> None:
    graph = load_graph(tmp_path / "nothing", "newdb")
    assert len(graph) == 0
    assert graph.heads == () and graph.bases == ()
    assert graph.pending(()) == []


def test_reference_project_directory() -> None:
    repo = Path(__file__).resolve().parent.parent
    graph = load_graph(repo / "migrations" / "core", "core")
    assert len(graph) == 4
    assert len(graph.heads) == 1 and len(graph.bases) == 1
    assert graph.resolve("core") == graph.bases[0]


# ---------------------------------------------------------------- graph


def linear(*ids: str, name: str = "core") -> Graph:
    revs = [Rev(r, (ids[i - 1],) if i else ()) for i, r in enumerate(ids)]
    return Graph(revs, name=name)


def branched() -> Graph:
    """a -> b -> (c1, c2) -> m (merge) -> n, and a separate branch x off a (label 'side')."""
    return Graph(
        [
            Rev("a", (), ("core",)),
            Rev("b", ("a",)),
            Rev("c1", ("b",)),
            Rev("c2", ("b",)),
            Rev("m", ("c1", "c2")),
            Rev("n", ("m",)),
            Rev("x", ("a",), ("side",)),
        ],
        name="core",
    )


def test_heads_bases_and_branches() -> None:
    g = branched()
    assert g.heads == ("n", "x")
    assert g.bases == ("a",)
    assert sorted(g.children["b"]) == ["c1", "c2"]  # a branch point
    assert g.children["c1"] == ["m"] and g.children["c2"] == ["m"]  # a merge point


def test_pending_in_apply_order() -> None:
    g = linear("a", "b", "c")
    assert g.pending(()) == ["a", "b", "c"]
    assert g.pending(("b",)) == ["c"]
    assert g.pending(("c",)) == []


def test_pending_through_a_merge_puts_parents_first() -> None:
    g = branched()
    pending = g.pending(("c1",))
    assert set(pending) == {"c2", "m", "n", "x"}
    assert pending.index("c2") < pending.index("m") < pending.index("n")


def test_upgrade_and_downgrade_paths_are_alembics() -> None:
    g = linear("a", "b", "c", "d")
    assert resolve_target(g, ("a",), "c", "upgrade").path == ("b", "c")
    assert resolve_target(g, ("d",), "b", "downgrade").path == ("d", "c")
    assert resolve_target(g, ("b",), "base", "downgrade").path == ("b", "a")


def test_downgrade_below_a_merge_undoes_both_branches_newest_first() -> None:
    g = branched()
    resolved = resolve_target(g, ("n",), "b", "downgrade")
    assert set(resolved.path) == {"n", "m", "c1", "c2"}
    assert resolved.path[0] == "n" and resolved.path[1] == "m"
    assert resolved.target == ("b",)


def test_depends_on_orders_like_a_parent() -> None:
    g = Graph([Rev("a"), Rev("b", ("a",)), Rev("z"), Rev("c", ("b",), (), ("z",))])
    path = resolve_target(g, ("a",), "c", "upgrade").path
    assert sorted(path[:2]) == ["b", "z"] and path[2] == "c"


def test_resolve_full_id_prefix_and_label() -> None:
    g = Graph([Rev("abc123"), Rev("abd456", ("abc123",), ("core",))], name="core")
    assert g.resolve("abc123") == "abc123"
    assert g.resolve("abd") == "abd456"
    assert g.resolve("core") == "abd456"


def test_resolve_ambiguous_prefix_lists_candidates() -> None:
    g = Graph([Rev("abc123"), Rev("abd456", ("abc123",))], name="core")
    with pytest.raises(UsageError, match=r"'ab' of core is ambiguous: abc123, abd456"):
        g.resolve("ab")


def test_resolve_unknown_revision_names_database() -> None:
    with pytest.raises(UsageError, match=r"unknown revision 'zzz' of core"):
        linear("a", "b").resolve("zzz")


def test_cycle_is_named() -> None:
    with pytest.raises(GraphError) as info:
        Graph([Rev("a", ("c",)), Rev("b", ("a",)), Rev("c", ("b",))], name="core")
    message = str(info.value)
    assert "revision cycle in core" in message
    assert all(r in message for r in ("a", "b", "c"))


def test_missing_parent_is_named() -> None:
    with pytest.raises(GraphError, match=r"down_revision 'gone' is not a revision of core"):
        Graph([Rev("a"), Rev("b", ("gone",), path="/m/core/b.py")], name="core")


def test_missing_depends_on_is_named() -> None:
    with pytest.raises(GraphError, match=r"depends_on 'other' is not a revision of core"):
        Graph([Rev("a", (), (), ("other",))], name="core")


def test_unknown_current_revisions() -> None:
    assert linear("a", "b").unknown(("a", "q")) == ["q"]


def test_heads_of_a_set() -> None:
    g = branched()
    assert g.heads_of({"a", "b", "c1", "c2"}) == ("c1", "c2")
    assert g.heads_of(set()) == ()
