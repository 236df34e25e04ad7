"""The header scan reads what Python itself would: every shape of revision header.

``status``, ``plan`` and ``history`` never import revision modules; they read
the four header variables from the text.  These tests write revision files in
every shape found in real projects and compare the scan with the values the
module really has when imported.
"""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest

from orch.config.revisions import GraphError, Rev, load_graph, parse_header, scan_directory

SHAPES = {
    "alembic 1.13+ template (annotated)": (
        '"""add users\n\nRevision ID: a1\nRevises: \n"""\n'
        "from typing import Sequence, Union\n\n"
        "revision: str = 'a1'\n"
        "down_revision: Union[str, Sequence[str], None] = None\n"
        "branch_labels: Union[str, Sequence[str], None] = ('core',)\n"
        "depends_on: Union[str, Sequence[str], None] = None\n"
    ),
    "old template, double quotes, trailing comments": (
        '"""old style"""\n'
        'revision = "b2"  # the id\n'
        'down_revision = "a1"  # parent\n'
        "branch_labels = None\n"
        "depends_on = None\n"
    ),
    "merge: tuple of parents over several lines": (
        "'''merge heads'''\n"
        "revision = 'c3'\n"
        "down_revision = (\n    'a1',\n    'b2',\n)\n"
        "branch_labels = None\n"
    ),
    "list branch labels and depends_on": (
        "revision = 'd4'\ndown_revision = 'c3'\nbranch_labels = ['x', 'y']\ndepends_on = ['a1']\n"
    ),
    "CRLF line endings": 'r"""crlf"""\r\nrevision = \'e5\'\r\ndown_revision = None\r\n',
    "BOM": '\ufeff"""with bom"""\nrevision = \'f6\'\ndown_revision = None\n',
    "escaped quote in a string value falls back to ast": (
        "revision = 'g7'\ndown_revision = None\nbranch_labels = 'it\\'s'\n"
    ),
    "names mentioned in the docstring and in code are not the header": (
        '"""revision = \'nope\' in a docstring\n\nRevision ID: h8\n"""\n'
        "def upgrade():\n    revision = 'local'\n\n"
        "revision = 'h8'\n"
        "down_revision = None\n"
        "down_revision_note = 'x'\n"
    ),
    "computed value: the module is imported": (
        "PREFIX = 'i'\nrevision = PREFIX + '9'\ndown_revision = None\n"
    ),
}


def imported(path: Path) -> dict[str, object]:
    spec = importlib.util.spec_from_file_location(f"_hdr_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {
        n: getattr(module, n, None)
        for n in ("revision", "down_revision", "branch_labels", "depends_on")
    }


def as_tuple(v: object) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    assert isinstance(v, list | tuple)
    return tuple(v)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_header_scan_reads_what_python_evaluates(shape: str, tmp_path: Path) -> None:
    path = tmp_path / "rev.py"
    path.write_bytes(SHAPES[shape].encode("utf-8"))
    rev = parse_header(path)
    assert isinstance(rev, Rev)
    real = imported(path)
    assert rev.revision == real["revision"]
    assert rev.down == as_tuple(real["down_revision"])
    assert rev.branch_labels == as_tuple(real["branch_labels"])
    assert rev.depends_on == as_tuple(real["depends_on"])
    assert rev.path == str(path)


def test_docstring_first_line_is_the_message(tmp_path: Path) -> None:
    path = tmp_path / "rev.py"
    path.write_text('"""\n  add users.display_name\n\nmore\n"""\nrevision = \'a\'\n')
    rev = parse_header(path)
    assert rev is not None and rev.doc == "add users.display_name"


def test_pep263_latin1_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "rev.py"
    path.write_bytes(
        '# -*- coding: latin-1 -*-\n"""caf\xe9"""\nrevision = \'a\'\n'.encode("latin-1")
    )
    rev = parse_header(path)
    assert rev is not None and rev.doc == "caf\xe9" and rev.revision == "a"


def test_undecodable_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "rev.py"
    path.write_bytes(b"revision = '\xff\xfe'\n")
    with pytest.raises(GraphError, match="rev.py: cannot read revision file"):
        parse_header(path)


def test_scan_ignores_non_sources_and_reports_a_file_without_revision(tmp_path: Path) -> None:
    (tmp_path / "a_one.py").write_text("revision = 'a'\ndown_revision = None\n")
    (tmp_path / "notes.txt").write_text("revision = 'zzz'\n")
    (tmp_path / ".#a_one.py").write_text("editor lock file")
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "sub.py").mkdir()  # a directory with a .py name is not a revision
    assert list(scan_directory(tmp_path)) == ["a"]
    (tmp_path / "b_two.py").write_text("x = 1\n")
    with pytest.raises(GraphError, match="b_two.py: no 'revision' variable"):
        scan_directory(tmp_path)


def test_missing_directory_is_an_empty_graph(tmp_path: Path) -> None:
    assert len(load_graph(tmp_path / "nope")) == 0
