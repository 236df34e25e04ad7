"""The lint rules: SQL text and a dialect in, findings out.

Pure: nothing here reads a project, a revision file or a database.  The SQL is
parsed with a real parser, never matched with patterns: PostgreSQL's own
parser (pglast) for ``postgresql``, sqlglot for ``mysql`` (MariaDB too) and
``sqlite``.  Both are imported when a statement is parsed, never at import.

Each rule has a stable id and one level, whatever the dialect:

* ``error``: data is lost, code still running against the schema breaks, or
  the statement fails on a table with rows.  ``orch lint`` exits 1.
* ``warning``: a lock held or a table rewritten for a time that grows with the
  table.  Harmless on a small table, an outage on a large one; orch cannot
  know the size offline, so it says what the statement does.

A table created earlier in the same SQL (the same revision) is not
"existing": building an index on it, adding a NOT NULL column to it or
dropping it is not reported.  Column types are remembered in a
:class:`Schema` that the caller passes from one revision to the next, so a
type change can be called narrowing when the earlier type was seen.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

ERROR = "error"
WARNING = "warning"
LEVELS = (ERROR, WARNING)
DIALECTS = ("postgresql", "mysql", "sqlite")
_ALL = DIALECTS
_PG = ("postgresql",)
_MY = ("mysql",)


@dataclass(frozen=True)
class Rule:
    """A rule: its id and level never change once released (CI filters rely on them)."""

    id: str
    level: str
    dialects: tuple[str, ...]
    summary: str


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule("drop_table", ERROR, _ALL, "DROP TABLE of an existing table: its rows are gone"),
        Rule(
            "drop_column",
            ERROR,
            _ALL,
            "DROP COLUMN: its values are gone, and code still reading it fails",
        ),
        Rule(
            "rename_table",
            ERROR,
            _ALL,
            "renaming an existing table breaks the code still running against the old name",
        ),
        Rule(
            "rename_column",
            ERROR,
            _ALL,
            "renaming a column breaks the code still running against the old name",
        ),
        Rule(
            "type_narrowing",
            ERROR,
            ("postgresql", "mysql"),
            "a column type that holds less than its earlier type (shorter, smaller, fewer "
            "digits, or numbers from text): the change fails or truncates values",
        ),
        Rule(
            "not_null_without_default",
            ERROR,
            _ALL,
            "a NOT NULL column without a default added to an existing table: fails on a "
            "table with rows (MySQL/MariaDB fills in the type's implicit default instead)",
        ),
        Rule(
            "index_without_concurrently",
            WARNING,
            _PG,
            "an index built on an existing table without CONCURRENTLY: writes to the table "
            "wait for the whole build",
        ),
        Rule(
            "concurrently_in_transaction",
            ERROR,
            _PG,
            "CREATE/DROP INDEX CONCURRENTLY inside the revision's transaction: PostgreSQL "
            "refuses it; run it in op.get_context().autocommit_block()",
        ),
        Rule(
            "foreign_key_without_not_valid",
            WARNING,
            _PG,
            "ADD FOREIGN KEY without NOT VALID: both tables are locked while every row is checked",
        ),
        Rule(
            "check_without_not_valid",
            WARNING,
            _PG,
            "ADD CHECK without NOT VALID: the table is locked while every row is checked",
        ),
        Rule(
            "set_not_null",
            WARNING,
            ("postgresql", "mysql"),
            "SET NOT NULL on an existing column: the table is scanned (PostgreSQL) or "
            "rebuilt (MySQL/MariaDB) under lock, and it fails if a row holds NULL",
        ),
        Rule(
            "alter_column_type",
            WARNING,
            ("postgresql", "mysql"),
            "a column type change: the table is rewritten under an exclusive lock "
            "(PostgreSQL) or copied (MySQL/MariaDB ALGORITHM=COPY), writes blocked",
        ),
        Rule(
            "volatile_default",
            WARNING,
            _PG,
            "ADD COLUMN with a volatile default (random(), gen_random_uuid(), a serial, "
            "an identity or stored generated column): every row is rewritten under lock",
        ),
        Rule(
            "add_column_position",
            WARNING,
            _MY,
            "ADD COLUMN ... FIRST/AFTER: rebuilds the table before MySQL 8.0.29 and "
            "MariaDB 10.4 (instant only when added last)",
        ),
        Rule(
            "foreign_key_copy",
            WARNING,
            _MY,
            "ADD FOREIGN KEY on MySQL/MariaDB: ALGORITHM=COPY (the table is copied, writes "
            "blocked) unless foreign_key_checks is off",
        ),
        Rule(
            "unparsable",
            ERROR,
            _ALL,
            "a statement the parser cannot read: orch cannot vouch for it",
        ),
        # reported by the revision walker, not on SQL
        Rule(
            "not_renderable",
            ERROR,
            _ALL,
            "a revision that cannot be rendered offline (it reads the database through "
            "op.get_bind(), or needs reflection): its SQL cannot be checked",
        ),
        Rule(
            "uses_get_bind",
            WARNING,
            _ALL,
            "a revision that calls op.get_bind(): offline that returns no rows, so the SQL "
            "checked may not be all it runs",
        ),
        Rule(
            "bad_allow",
            ERROR,
            _ALL,
            "an '# orch-lint:' comment that is not 'allow RULE -- reason' with a known rule "
            "(it cannot be allowed itself)",
        ),
        Rule(
            "unused_allow",
            WARNING,
            _ALL,
            "an '# orch-lint: allow' comment whose rule found nothing in the revision",
        ),
    )
}


@dataclass(frozen=True)
class Finding:
    """One problem in one statement (``line`` and ``sql`` of that statement)."""

    rule: str
    level: str
    line: int | None
    sql: str | None
    message: str


def finding(rule: str, message: str, *, line: int | None = None, sql: str | None = None) -> Finding:
    """A finding of *rule*, at the rule's level."""
    return Finding(rule, RULES[rule].level, line, sql, message)


# ------------------------------------------------------------------ column types


@dataclass(frozen=True)
class ColType:
    """A column type reduced to what narrowing needs.

    ``family``: int (size in bytes), float (bytes), numeric ((precision,
    scale), None unbounded), string (max characters, None unbounded) or
    other (``size`` is the type's text, compared for equality only).
    """

    family: str
    size: Any
    text: str

    def __str__(self) -> str:
        return self.text


_INTS = {
    "int1": 1,
    "tinyint": 1,
    "int2": 2,
    "smallint": 2,
    "smallserial": 2,
    "mediumint": 3,
    "int3": 3,
    "int": 4,
    "int4": 4,
    "integer": 4,
    "serial": 4,
    "int8": 8,
    "bigint": 8,
    "bigserial": 8,
}
_FLOATS = {"float4": 4, "real": 4, "float": 8, "float8": 8, "double": 8, "double precision": 8}
_TEXTS = {
    "text": None,
    "tinytext": 255,
    "mediumtext": 16_777_215,
    "longtext": 4_294_967_295,
}
_VARCHARS = ("varchar", "character varying", "nvarchar", "varchar2")
_CHARS = ("char", "bpchar", "character", "nchar")


def coltype(name: str, params: list[int], text: str) -> ColType:
    """A :class:`ColType` from a type name (any dialect's spelling) and its numbers."""
    n = name.lower()
    if n in _INTS:
        return ColType("int", _INTS[n], text)
    if n in _FLOATS:
        return ColType("float", _FLOATS[n], text)
    if n in ("numeric", "decimal"):
        if not params:
            return ColType("numeric", None, text)
        return ColType("numeric", (params[0], params[1] if len(params) > 1 else 0), text)
    if n in _TEXTS:
        # MySQL's TEXT holds 65535 bytes, PostgreSQL's is unbounded
        return ColType("string", _TEXTS[n], text)
    if n in _VARCHARS:
        return ColType("string", params[0] if params else None, text)
    if n in _CHARS:
        return ColType("string", params[0] if params else 1, text)
    return ColType("other", text.lower(), text)


def _digits(t: ColType) -> int | None:
    """Integer digits a numeric type holds (None: unbounded)."""
    if t.family == "int":
        return {1: 3, 2: 5, 3: 7, 4: 10, 8: 19}[t.size]
    if t.family == "numeric" and t.size is not None:
        return int(t.size[0] - t.size[1])
    return None


def narrowing(old: ColType, new: ColType) -> str | None:
    """Why *new* holds less than *old* (None when it holds as much, or orch cannot say)."""
    if old.family == new.family == "int" and new.size < old.size:
        return f"{old} to {new}: larger integers no longer fit"
    if old.family == new.family == "float" and new.size < old.size:
        return f"{old} to {new}: precision is lost"
    if old.family == new.family == "string":
        if new.size is not None and (old.size is None or new.size < old.size):
            return f"{old} to {new}: longer values no longer fit"
        return None
    if old.family == new.family == "numeric":
        if new.size is None:
            return None
        if old.size is None:
            return f"{old} to {new}: values beyond its precision no longer fit"
        if new.size[1] < old.size[1]:
            return f"{old} to {new}: decimal places are lost"
        if new.size[0] - new.size[1] < old.size[0] - old.size[1]:
            return f"{old} to {new}: larger values no longer fit"
        return None
    if old.family in ("numeric", "float") and new.family == "int":
        return f"{old} to {new}: fractions are lost"
    if old.family == "int" and new.family == "numeric":
        have, keep = _digits(old), _digits(new)
        if keep is not None and have is not None and keep < have:
            return f"{old} to {new}: larger integers no longer fit"
        return None
    if old.family == "string" and new.family in ("int", "float", "numeric"):
        return f"{old} to {new}: text that is not a number no longer converts"
    return None


def pg_rewrite_free(old: ColType, new: ColType) -> bool:
    """PostgreSQL changes these types without rewriting the table (binary coercible)."""
    if old.family == new.family == "string" and not old.text.lower().startswith(("char", "bp")):
        return new.size is None or (old.size is not None and new.size >= old.size)
    if old.family == new.family == "numeric" and old.size is not None:
        return new.size is None or (new.size[1] == old.size[1] and new.size[0] >= old.size[0])
    return old.family == new.family and old.size == new.size and old.family != "other"


@dataclass
class Column:
    type: ColType | None
    nullable: bool | None


@dataclass
class Schema:
    """Columns learned from the SQL linted so far, in order (one database).

    Only what the statements themselves say: a table orch has not seen is
    unknown, never assumed.
    """

    tables: dict[str, dict[str, Column]] = field(default_factory=dict)

    def column(self, table: str, col: str) -> Column | None:
        return self.tables.get(table, {}).get(col)

    def set(self, table: str, col: str, column: Column) -> None:
        self.tables.setdefault(table, {})[col] = column

    def rename_table(self, old: str, new: str) -> None:
        if old in self.tables:
            self.tables[new] = self.tables.pop(old)

    def rename_column(self, table: str, old: str, new: str) -> None:
        cols = self.tables.get(table)
        if cols is not None and old in cols:
            cols[new] = cols.pop(old)

    def drop_column(self, table: str, col: str) -> None:
        self.tables.get(table, {}).pop(col, None)


# ------------------------------------------------------------------ statements


@dataclass(frozen=True)
class Statement:
    text: str
    line: int


def _code_start(sql: str, start: int, end: int) -> int:
    """The offset of the first character that is not space or a comment in sql[start:end]."""
    i = start
    while i < end:
        if sql[i].isspace():
            i += 1
        elif sql.startswith("--", i):
            nl = sql.find("\n", i, end)
            i = end if nl < 0 else nl + 1
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2, end)
            i = end if close < 0 else close + 2
        else:
            break
    return i


def _statement(sql: str, start: int, end: int) -> Statement | None:
    begin = _code_start(sql, start, end)
    text = sql[begin:end].strip().rstrip(";").rstrip()
    if not text:
        return None
    return Statement(text, sql.count("\n", 0, begin) + 1)


class _Context:
    """What one SQL text (one revision) has done so far, statement by statement."""

    def __init__(self, dialect: str, schema: Schema) -> None:
        self.dialect = dialect
        self.schema = schema
        self.created: set[str] = set()
        self.in_transaction = False
        self.findings: list[Finding] = []
        self.dropped: list[tuple[str, Finding]] = []  # (table, its drop_table finding)
        self.renamed_into: set[str] = set()  # tables rebuilt by copy-and-move
        self.dropped_names: set[str] = set()
        self.new_columns: set[tuple[str, str]] = set()  # (table, column) added here
        self.stmt: Statement = Statement("", 0)

    def add(self, rule: str, message: str) -> Finding:
        f = finding(rule, message, line=self.stmt.line, sql=self.stmt.text)
        self.findings.append(f)
        return f

    def drop_table(self, table: str) -> None:
        """DROP TABLE *table*: reported unless created here, or rebuilt by copy-and-move."""
        if self.existing(table):
            f = self.add("drop_table", f"DROP TABLE: table {table} and its rows are deleted")
            self.dropped.append((table, f))
        self.dropped_names.add(table)

    def made_by_rename(self, table: str) -> None:
        """A table created here is renamed to *table*.

        When *table* was dropped before, this is a copy-and-move (SQLite
        batch): the rows were copied, so *table* still exists with its rows.
        Otherwise it is a new table under its final name.
        """
        if table in self.dropped_names:
            self.renamed_into.add(table)
            self.created.discard(table)
        else:
            self.created.add(table)

    def existing(self, table: str) -> bool:
        return table not in self.created

    def existing_column(self, table: str, column: str) -> bool:
        """A column of an existing table that was not added here."""
        return self.existing(table) and (table, column) not in self.new_columns

    def renamed_column(self, table: str, old: str, new: str) -> None:
        self.schema.rename_column(table, old, new)
        if (table, old) in self.new_columns:
            self.new_columns.add((table, new))

    def result(self) -> list[Finding]:
        """The findings, less the DROP TABLEs of a copy-and-move (SQLite batch).

        Alembic's batch mode creates ``_alembic_tmp_T``, copies the rows, drops
        ``T`` and renames the copy to ``T``: the table is rebuilt, not dropped.
        """
        rebuilt = {id(f) for table, f in self.dropped if table in self.renamed_into}
        return [f for f in self.findings if id(f) not in rebuilt]


def lint_sql(sql: str, dialect: str, schema: Schema | None = None) -> list[Finding]:
    """Findings of the statements in *sql* (one revision's rendered SQL), in order.

    *dialect*: ``postgresql``, ``mysql`` (MariaDB too) or ``sqlite``.
    *schema* is updated with the columns the statements create or change.
    """
    if dialect not in DIALECTS:
        raise ValueError(f"no lint rules for dialect {dialect!r} (known: {', '.join(DIALECTS)})")
    ctx = _Context(dialect, schema if schema is not None else Schema())
    if dialect == "postgresql":
        _lint_postgresql(sql, ctx)
    else:
        _lint_sqlglot(sql, ctx)
    return ctx.result()


# ------------------------------------------------------------------ PostgreSQL (pglast)


_VOLATILE = frozenset(
    {
        "random",
        "gen_random_uuid",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "random_normal",
        "uuidv4",
        "uuidv7",
    }
)
_SERIALS = frozenset({"serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"})


def _pg_scan_split(sql: str) -> list[tuple[int, int]]:
    """(start, end) of each statement, split at the scanner's semicolons.

    Only for SQL the parser refuses as a whole, so that each statement it can
    read is still checked and the others are reported one by one.
    """
    from pglast.parser import scan

    return _spans(
        (tok.name == "ASCII_59", tok.start, tok.end)
        for tok in scan(sql)
        if tok.name not in ("SQL_COMMENT", "C_COMMENT")
    )


def _spans(tokens: Iterable[tuple[bool, int, int]]) -> list[tuple[int, int]]:
    """(start, end) of each statement from (is a semicolon, start, last index) tokens."""
    spans: list[tuple[int, int]] = []
    start: int | None = None
    end = 0
    for semicolon, tok_start, tok_end in tokens:
        if semicolon:
            if start is not None:
                spans.append((start, tok_start))
            start = None
            continue
        if start is None:
            start = tok_start
        end = tok_end + 1
    if start is not None:
        spans.append((start, end))
    return spans


def _lint_postgresql(sql: str, ctx: _Context) -> None:
    import pglast

    try:
        parsed = pglast.parse_sql(sql)
    except pglast.Error:
        parsed = None
    if parsed is not None:
        for raw in parsed:
            start = raw.stmt_location or 0
            end = start + raw.stmt_len if raw.stmt_len else len(sql)
            stmt = _statement(sql, start, end)
            if stmt is not None:
                ctx.stmt = stmt
                _pg_statement(raw.stmt, ctx)
        return
    try:
        spans = _pg_scan_split(sql)
    except pglast.Error as exc:
        ctx.stmt = Statement(sql.strip(), 1)
        ctx.add("unparsable", f"PostgreSQL's scanner cannot read this SQL: {exc}")
        return
    for start, end in spans:
        stmt = _statement(sql, start, end)
        if stmt is None:
            continue
        ctx.stmt = stmt
        try:
            parsed = pglast.parse_sql(stmt.text)
        except pglast.Error as exc:
            ctx.add("unparsable", f"PostgreSQL's parser cannot read this statement: {exc}")
            continue
        for raw in parsed:
            _pg_statement(raw.stmt, ctx)


def _rel(relation: Any) -> str:
    """The table name of a RangeVar (schemas are not told apart)."""
    return str(getattr(relation, "relname", "") or "")


def _pg_name(names: Any) -> str:
    """The last part of a qualified name (schemas are not told apart)."""
    return str(names[-1].sval) if names else ""


def _pg_ints(typmods: Any) -> list[int]:
    out = []
    for m in typmods or ():
        val = getattr(m, "val", None)
        ival = getattr(val, "ival", None)
        if isinstance(ival, int):
            out.append(ival)
    return out


def _pg_type(type_name: Any) -> ColType | None:
    if type_name is None or not type_name.names:
        return None
    name = _pg_name(type_name.names)
    params = _pg_ints(type_name.typmods)
    text = name + (f"({','.join(map(str, params))})" if params else "")
    if getattr(type_name, "arrayBounds", None):
        return ColType("other", text + "[]", text + "[]")
    return coltype(name, params, text)


def _pg_nodes(node: Any) -> Iterator[Any]:
    """Every node under *node* (itself included)."""
    from pglast import ast

    if isinstance(node, tuple | list):
        for item in node:
            yield from _pg_nodes(item)
        return
    if not isinstance(node, ast.Node):
        return
    yield node
    for attr in node:
        yield from _pg_nodes(getattr(node, attr))


def _pg_volatile(expr: Any) -> str | None:
    from pglast import ast

    for node in _pg_nodes(expr):
        if isinstance(node, ast.FuncCall):
            fname = _pg_name(node.funcname).lower()
            if fname in _VOLATILE:
                return f"{fname}()"
    return None


def _pg_statement(s: Any, ctx: _Context) -> None:
    from pglast import ast
    from pglast.enums import ObjectType, TransactionStmtKind

    if isinstance(s, ast.TransactionStmt):
        if s.kind in (TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START):
            ctx.in_transaction = True
        elif s.kind in (
            TransactionStmtKind.TRANS_STMT_COMMIT,
            TransactionStmtKind.TRANS_STMT_ROLLBACK,
        ):
            ctx.in_transaction = False
    elif isinstance(s, ast.CreateStmt):
        table = _rel(s.relation)
        ctx.created.add(table)
        for elt in s.tableElts or ():
            if isinstance(elt, ast.ColumnDef):
                ctx.schema.set(table, str(elt.colname), _pg_column(elt))
    elif isinstance(s, ast.CreateTableAsStmt):
        ctx.created.add(_rel(getattr(s.into, "rel", None)))
    elif isinstance(s, ast.IndexStmt):
        table = _rel(s.relation)
        if s.concurrent and ctx.in_transaction:
            ctx.add(
                "concurrently_in_transaction",
                f"CREATE INDEX CONCURRENTLY on {table} inside a transaction: PostgreSQL refuses "
                "it; run it in op.get_context().autocommit_block()",
            )
        elif not s.concurrent and ctx.existing(table):
            ctx.add(
                "index_without_concurrently",
                f"CREATE INDEX on existing table {table} without CONCURRENTLY: inserts, updates "
                "and deletes on it wait until the index is built",
            )
    elif isinstance(s, ast.DropStmt):
        if s.removeType == ObjectType.OBJECT_TABLE:
            for obj in s.objects or ():
                ctx.drop_table(_pg_name(obj))
        elif s.removeType == ObjectType.OBJECT_INDEX and s.concurrent and ctx.in_transaction:
            ctx.add(
                "concurrently_in_transaction",
                "DROP INDEX CONCURRENTLY inside a transaction: PostgreSQL refuses it; run it in "
                "op.get_context().autocommit_block()",
            )
    elif isinstance(s, ast.RenameStmt):
        _pg_rename(s, ctx)
    elif isinstance(s, ast.AlterTableStmt):
        kind = getattr(s, "objtype", getattr(s, "relkind", None))
        if kind not in (None, ObjectType.OBJECT_TABLE):
            return
        table = _rel(s.relation)
        for cmd in s.cmds or ():
            _pg_alter(table, cmd, ctx)


def _pg_column(col: Any) -> Column:
    from pglast.enums import ConstrType

    types = {c.contype for c in col.constraints or ()}
    not_null = ConstrType.CONSTR_NOTNULL in types or ConstrType.CONSTR_PRIMARY in types
    return Column(_pg_type(col.typeName), not not_null)


def _pg_rename(s: Any, ctx: _Context) -> None:
    from pglast.enums import ObjectType

    if s.relation is None:
        return
    table = _rel(s.relation)
    if s.renameType == ObjectType.OBJECT_TABLE:
        if ctx.existing(table):
            ctx.add(
                "rename_table",
                f"RENAME of table {table} to {s.newname}: code still using {table} fails",
            )
        else:
            ctx.made_by_rename(s.newname)
        ctx.schema.rename_table(table, s.newname)
    elif s.renameType == ObjectType.OBJECT_COLUMN:
        if ctx.existing_column(table, s.subname):
            ctx.add(
                "rename_column",
                f"RENAME of column {table}.{s.subname} to {s.newname}: code still using "
                f"{s.subname} fails",
            )
        ctx.renamed_column(table, s.subname, s.newname)


def _pg_alter(table: str, cmd: Any, ctx: _Context) -> None:
    from pglast import ast
    from pglast.enums import AlterTableType, ConstrType

    sub = cmd.subtype
    existing = ctx.existing(table)
    if sub == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
        col: Any = cmd.def_
        types = {c.contype: c for c in col.constraints or ()}
        serial = _pg_name(col.typeName.names).lower() in _SERIALS if col.typeName else False
        filled = (
            ConstrType.CONSTR_DEFAULT in types
            or ConstrType.CONSTR_IDENTITY in types
            or ConstrType.CONSTR_GENERATED in types
            or serial
        )
        not_null = ConstrType.CONSTR_NOTNULL in types or ConstrType.CONSTR_PRIMARY in types
        if existing and not_null and not filled:
            ctx.add(
                "not_null_without_default",
                f"ADD COLUMN {table}.{col.colname} NOT NULL without a default: fails when "
                f"{table} has rows (add it nullable, backfill, then SET NOT NULL; or give a "
                "default)",
            )
        if existing:
            why = None
            if ConstrType.CONSTR_DEFAULT in types:
                func = _pg_volatile(types[ConstrType.CONSTR_DEFAULT].raw_expr)
                if func:
                    why = f"its default {func} is volatile"
            if serial:
                why = f"a {_pg_name(col.typeName.names)} takes a new sequence value per row"
            elif ConstrType.CONSTR_IDENTITY in types:
                why = "an identity column takes a new value per row"
            elif ConstrType.CONSTR_GENERATED in types:
                why = "a stored generated column is computed for every row"
            if why:
                ctx.add(
                    "volatile_default",
                    f"ADD COLUMN {table}.{col.colname}: {why}, so every row of {table} is "
                    "rewritten under an ACCESS EXCLUSIVE lock",
                )
            if ConstrType.CONSTR_FOREIGN in types and not getattr(
                types[ConstrType.CONSTR_FOREIGN], "skip_validation", False
            ):
                _pg_fk(table, ctx)
        ctx.schema.set(table, col.colname, _pg_column(col))
        ctx.new_columns.add((table, str(col.colname)))
    elif sub == AlterTableType.AT_DropColumn:
        if ctx.existing_column(table, cmd.name):
            ctx.add(
                "drop_column",
                f"DROP COLUMN {table}.{cmd.name}: its values are deleted, and code still "
                "reading it fails",
            )
        ctx.schema.drop_column(table, cmd.name)
    elif sub == AlterTableType.AT_AlterColumnType and isinstance(cmd.def_, ast.ColumnDef):
        new = _pg_type(cmd.def_.typeName)
        known = ctx.schema.column(table, cmd.name)
        if existing and new is not None:
            _type_change(table, cmd.name, known, new, ctx)
        if known is not None:
            known.type = new
        else:
            ctx.schema.set(table, cmd.name, Column(new, None))
    elif sub == AlterTableType.AT_SetNotNull:
        if existing:
            ctx.add(
                "set_not_null",
                f"SET NOT NULL on {table}.{cmd.name}: {table} is scanned under an ACCESS "
                "EXCLUSIVE lock (PostgreSQL 12+ skips the scan when a valid CHECK "
                f"({cmd.name} IS NOT NULL) constraint exists: add it NOT VALID, VALIDATE it, "
                "then SET NOT NULL)",
            )
        known = ctx.schema.column(table, cmd.name)
        if known is not None:
            known.nullable = False
    elif sub == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        con = cmd.def_
        if not existing or getattr(con, "skip_validation", False):
            return
        if con.contype == ConstrType.CONSTR_FOREIGN:
            _pg_fk(table, ctx)
        elif con.contype == ConstrType.CONSTR_CHECK:
            ctx.add(
                "check_without_not_valid",
                f"ADD CHECK on {table} without NOT VALID: {table} is locked (ACCESS EXCLUSIVE) "
                "while every row is checked; add it NOT VALID, then VALIDATE CONSTRAINT",
            )
        elif con.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY) and not getattr(
            con, "indexname", None
        ):
            what = "UNIQUE" if con.contype == ConstrType.CONSTR_UNIQUE else "PRIMARY KEY"
            ctx.add(
                "index_without_concurrently",
                f"ADD {what} on existing table {table} builds its index under an ACCESS "
                "EXCLUSIVE lock: CREATE UNIQUE INDEX CONCURRENTLY first, then ADD "
                f"{what} USING INDEX",
            )


def _pg_fk(table: str, ctx: _Context) -> None:
    ctx.add(
        "foreign_key_without_not_valid",
        f"ADD FOREIGN KEY on {table} without NOT VALID: {table} and the referenced table are "
        "locked while every row is checked; add it NOT VALID, then VALIDATE CONSTRAINT in a "
        "later revision",
    )


def _type_change(table: str, col: str, known: Column | None, new: ColType, ctx: _Context) -> None:
    """A column's type changes: narrowing, a rewrite, or (PostgreSQL) free."""
    old = known.type if known is not None else None
    where = f"{table}.{col}"
    if old is not None:
        why = narrowing(old, new)
        if why:
            ctx.add("type_narrowing", f"type of {where} narrowed from {why}")
            return
        if ctx.dialect == "postgresql" and pg_rewrite_free(old, new):
            return
    was = f"from {old} " if old is not None else ""
    unknown = (
        ""
        if old is not None
        else " (orch did not see its earlier type: if the new one holds less, values may not fit)"
    )
    if ctx.dialect == "postgresql":
        ctx.add(
            "alter_column_type",
            f"type of {where} changed {was}to {new}: {table} is rewritten under an ACCESS "
            f"EXCLUSIVE lock{unknown}",
        )
    elif (
        old is not None
        and old.family == new.family == "string"
        and old.text.lower().startswith("varchar")
        and new.text.lower().startswith("varchar")
    ):
        ctx.add(
            "alter_column_type",
            f"{where} widened from {old} to {new}: in place only when both lengths need the "
            "same number of length bytes (up to 255 bytes, or both over: with utf8mb4 a "
            f"character takes up to 4 bytes, so VARCHAR(63) is the limit); otherwise {table} "
            "is copied (ALGORITHM=COPY, writes blocked)",
        )
    else:
        ctx.add(
            "alter_column_type",
            f"{where} redefined {was}as {new}: a type change copies {table} (ALGORITHM=COPY, "
            "writes blocked); a NULL/NOT NULL change rebuilds it in place; only widening a "
            "VARCHAR within the same length-byte size is in place without a rebuild" + unknown,
        )


# ------------------------------------------------------------------ MySQL/MariaDB, SQLite


@contextlib.contextmanager
def _quiet_sqlglot() -> Iterator[None]:
    """sqlglot logs a warning when it falls back to a Command: findings say it instead."""
    log = logging.getLogger("sqlglot")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _sqlglot_split(sql: str, dialect: str) -> list[tuple[int, int]]:
    """(start, end) of each statement, from sqlglot's tokenizer (comments are not tokens)."""
    from sqlglot.dialects.dialect import Dialect

    return _spans(
        (tok.token_type.name == "SEMICOLON", tok.start, tok.end)
        for tok in Dialect.get_or_raise(dialect).tokenize(sql)
    )


def _lint_sqlglot(sql: str, ctx: _Context) -> None:
    import sqlglot
    from sqlglot.errors import ParseError, TokenError

    read = ctx.dialect
    with _quiet_sqlglot():
        try:
            spans = _sqlglot_split(sql, read)
        except TokenError as exc:
            ctx.stmt = Statement(sql.strip(), 1)
            ctx.add("unparsable", f"sqlglot cannot read this SQL ({read}): {exc}")
            return
        for start, end in spans:
            stmt = _statement(sql, start, end)
            if stmt is None:
                continue
            ctx.stmt = stmt
            try:
                tree = sqlglot.parse_one(stmt.text, read=read)
            except (ParseError, TokenError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                ctx.add("unparsable", f"sqlglot cannot read this statement ({read}): {first}")
                continue
            _sg_statement(tree, ctx)


def _sg_exp(name: str) -> Any:
    """A sqlglot expression class by name (None in versions without it)."""
    from sqlglot import exp

    return getattr(exp, name, None)


def _sg_isinstance(node: Any, *names: str) -> bool:
    classes = tuple(c for c in (_sg_exp(n) for n in names) if c is not None)
    return bool(classes) and isinstance(node, classes)


def _sg_type(dtype: Any) -> ColType | None:
    if dtype is None:
        return None
    name = getattr(dtype.this, "name", str(dtype.this)).lower()
    params: list[int] = []
    for p in dtype.expressions or ():
        text = p.name if hasattr(p, "name") else str(p)
        if text.isdigit():
            params.append(int(text))
    text = dtype.sql()
    return coltype(name, params, text)


def _sg_constraints(coldef: Any) -> set[str]:
    """Names of a column definition's constraint kinds ('NotNullColumnConstraint', ...)."""
    out = set()
    for c in coldef.args.get("constraints") or ():
        kind = c.args.get("kind")
        if kind is None:
            continue
        name = type(kind).__name__
        if name == "NotNullColumnConstraint" and kind.args.get("allow_null"):
            name = "NullColumnConstraint"
        out.add(name)
    return out


def _sg_column(coldef: Any) -> Column:
    cons = _sg_constraints(coldef)
    not_null = "NotNullColumnConstraint" in cons or "PrimaryKeyColumnConstraint" in cons
    return Column(_sg_type(coldef.args.get("kind")), not not_null)


def _sg_table(node: Any) -> str:
    from sqlglot import exp

    table = node if isinstance(node, exp.Table) else node.find(exp.Table)
    return str(table.name) if table is not None else ""


def _sg_statement(e: Any, ctx: _Context) -> None:
    from sqlglot import exp

    if isinstance(e, exp.Create):
        kind = str(e.args.get("kind") or "").upper()
        if kind == "TABLE":
            table = _sg_table(e.this)
            ctx.created.add(table)
            if isinstance(e.this, exp.Schema):
                for col in e.this.expressions:
                    if isinstance(col, exp.ColumnDef):
                        ctx.schema.set(table, col.name, _sg_column(col))
    elif isinstance(e, exp.Drop):
        if str(e.args.get("kind") or "").upper() == "TABLE":
            tables = e.args.get("tables") or [e.this]
            for t in tables:
                table = _sg_table(t)
                if table:
                    ctx.drop_table(table)
    elif _sg_isinstance(e, "Alter", "AlterTable"):
        if str(e.args.get("kind") or "TABLE").upper() != "TABLE":
            return
        table = _sg_table(e.this)
        for action in e.args.get("actions") or ():
            _sg_action(table, action, ctx)
    elif isinstance(e, exp.Command):
        _sg_command(e, ctx)


def _sg_action(table: str, a: Any, ctx: _Context) -> None:
    from sqlglot import exp

    existing = ctx.existing(table)
    mysql = ctx.dialect == "mysql"
    if isinstance(a, exp.ColumnDef):
        cons = _sg_constraints(a)
        filled = cons & {
            "DefaultColumnConstraint",
            "AutoIncrementColumnConstraint",
            "GeneratedAsIdentityColumnConstraint",
            "ComputedColumnConstraint",
        }
        not_null = cons & {"NotNullColumnConstraint", "PrimaryKeyColumnConstraint"}
        if existing and not_null and not filled:
            if mysql:
                effect = (
                    f"existing rows of {table} silently get the type's implicit default "
                    "(0, '', a zero date)"
                )
            else:
                effect = f"fails when {table} has rows (SQLite refuses it outright)"
            ctx.add(
                "not_null_without_default",
                f"ADD COLUMN {table}.{a.name} NOT NULL without a default: {effect}; add it "
                "nullable and backfill, or give a default",
            )
        position = a.args.get("position")
        if mysql and existing and position is not None:
            where = position.sql(dialect="mysql")
            ctx.add(
                "add_column_position",
                f"ADD COLUMN {table}.{a.name} {where}: instant only on MySQL 8.0.29+ and "
                f"MariaDB 10.4+; older servers rebuild {table} (add it last to stay instant)",
            )
        ctx.schema.set(table, a.name, _sg_column(a))
        ctx.new_columns.add((table, a.name))
    elif isinstance(a, exp.Drop) and str(a.args.get("kind") or "").upper() == "COLUMN":
        cols = a.args.get("tables") or [a.this]
        for c in cols:
            name = c.name if c is not None else ""
            if ctx.existing_column(table, name):
                ctx.add(
                    "drop_column",
                    f"DROP COLUMN {table}.{name}: its values are deleted, and code still "
                    "reading it fails",
                )
            ctx.schema.drop_column(table, name)
    elif _sg_isinstance(a, "RenameColumn"):
        old, new = a.this.name, a.args["to"].name
        _sg_rename_column(table, old, new, ctx)
    elif _sg_isinstance(a, "ModifyColumn"):
        coldef = a.this
        new_name = coldef.name
        old_name = a.args.get("rename_from")
        name = old_name.name if old_name is not None else new_name
        if name != new_name:
            _sg_rename_column(table, name, new_name, ctx)
        _sg_redefine(table, new_name, coldef, ctx)
    elif isinstance(a, exp.AlterColumn):
        col = a.name
        dtype = a.args.get("dtype")
        known = ctx.schema.column(table, col)
        if dtype is not None:
            new = _sg_type(dtype)
            if existing and new is not None:
                _type_change(table, col, known, new, ctx)
            ctx.schema.set(table, col, Column(new, known.nullable if known else None))
        if a.args.get("allow_null") is False and existing and mysql:
            ctx.add("set_not_null", f"SET NOT NULL on {table}.{col}: {table} is rebuilt")
    elif _sg_isinstance(a, "AlterRename", "RenameTable"):
        _sg_rename_table(table, _sg_table(a.this), ctx)
    elif (
        (_sg_isinstance(a, "AddConstraint") or isinstance(a, exp.Constraint))
        and mysql
        and existing
        and a.find(exp.ForeignKey) is not None
    ):
        ctx.add(
            "foreign_key_copy",
            f"ADD FOREIGN KEY on {table}: MySQL/MariaDB copy {table} (ALGORITHM=COPY, writes "
            "blocked) unless foreign_key_checks is off for the statement",
        )


def _sg_redefine(table: str, col: str, coldef: Any, ctx: _Context) -> None:
    """MODIFY/CHANGE: a full new definition of the column (MySQL/MariaDB)."""
    new_col = _sg_column(coldef)
    known = ctx.schema.column(table, col)
    if ctx.existing(table) and new_col.type is not None:
        same = known is not None and known.type is not None and known.type == new_col.type
        if not same:
            _type_change(table, col, known, new_col.type, ctx)
        elif new_col.nullable is False and known is not None and known.nullable is not False:
            ctx.add(
                "set_not_null",
                f"{table}.{col} becomes NOT NULL: {table} is rebuilt in place, and the change "
                "fails on a row holding NULL (strict mode)",
            )
    ctx.schema.set(table, col, new_col)


def _sg_rename_column(table: str, old: str, new: str, ctx: _Context) -> None:
    if ctx.existing_column(table, old):
        ctx.add(
            "rename_column",
            f"RENAME of column {table}.{old} to {new}: code still using {old} fails",
        )
    ctx.renamed_column(table, old, new)


def _sg_rename_table(old: str, new: str, ctx: _Context) -> None:
    if ctx.existing(old):
        ctx.add("rename_table", f"RENAME of table {old} to {new}: code still using {old} fails")
    else:
        ctx.made_by_rename(new)
    ctx.schema.rename_table(old, new)


_TABLE_COMMENT = re.compile(r"\s*TABLE\s+[`\"\w.$]+\s+COMMENT\s*=?\s*'", re.IGNORECASE)
_ALTER_RENAME = re.compile(
    r"\s*TABLE\s+([`\"\w.$]+)\s+RENAME\s+TO\s+([`\"\w.$]+)\s*$", re.IGNORECASE
)
_RENAME_PAIR = re.compile(r"([`\"\w.$]+)\s+TO\s+([`\"\w.$]+)", re.IGNORECASE)


def _sg_command(e: Any, ctx: _Context) -> None:
    """A statement sqlglot kept as text: MySQL's RENAME TABLE, or an unknown DDL."""
    head = str(e.this or "").upper()
    rest = e.expression
    tail = str(rest.name if hasattr(rest, "name") else rest or "")
    if head == "RENAME" and tail.upper().startswith("TABLE"):
        for old, new in _RENAME_PAIR.findall(tail[5:]):
            _sg_rename_table(_unquote(old), _unquote(new), ctx)
        return
    renamed = _ALTER_RENAME.match(tail) if head == "ALTER" else None
    if renamed is not None:  # sqlglot 30.0-30.7 keep SQLite's RENAME TO as text
        _sg_rename_table(_unquote(renamed[1]), _unquote(renamed[2]), ctx)
        return
    if head == "ALTER" and _TABLE_COMMENT.match(tail):  # sqlglot before 30.x keeps it as text
        return  # a table's comment: metadata only
    m = _MODIFY.match(tail)
    if head == "ALTER" and m is not None and ctx.dialect == "mysql":
        # sqlglot before 30.8 keeps MODIFY/CHANGE as text: its column definition is
        # parsed as the one of an ADD COLUMN
        _sg_modify_text(_unquote(m["table"]), m["verb"], m["old"], m["rest"], ctx)
        return
    if head in ("ALTER", "DROP", "RENAME", "TRUNCATE"):
        ctx.add(
            "unparsable",
            f"sqlglot does not understand this {head} statement ({ctx.dialect}); review it by hand",
        )


def _unquote(name: str) -> str:
    return name.split(".")[-1].strip('`"')


_MODIFY = re.compile(
    r"\s*TABLE\s+(?P<table>[`\"\w.$]+)\s+(?P<verb>MODIFY|CHANGE)(?:\s+COLUMN)?\s+"
    r"(?P<old>[`\"\w$]+)\s+(?P<rest>.+)$",
    re.IGNORECASE | re.DOTALL,
)


def _sg_modify_text(table: str, verb: str, col: str, rest: str, ctx: _Context) -> None:
    """``MODIFY col DEF`` or ``CHANGE old new DEF`` from the text sqlglot kept."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError, TokenError

    old = _unquote(col)
    definition = rest if verb.upper() == "CHANGE" else f"{col} {rest}"
    try:
        tree = sqlglot.parse_one(f"ALTER TABLE t ADD COLUMN {definition}", read="mysql")
    except (ParseError, TokenError):
        tree = None
    coldef = tree.find(exp.ColumnDef) if tree is not None else None
    if coldef is None:
        ctx.add("unparsable", "sqlglot does not understand this ALTER statement (mysql)")
        return
    if coldef.name != old:
        _sg_rename_column(table, old, coldef.name, ctx)
    _sg_redefine(table, coldef.name, coldef, ctx)
