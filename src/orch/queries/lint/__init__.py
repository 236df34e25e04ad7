"""``orch lint``: dangerous DDL in revisions, found in the SQL they render.

Two parts.  :mod:`orch.queries.lint.rules` is the rule engine: SQL text and a
dialect in, findings out, nothing read or imported from a project (pglast
parses PostgreSQL, sqlglot MySQL/MariaDB and SQLite; both are imported only
when a statement is parsed, so ``orch --help`` never loads them).
:mod:`orch.queries.lint.walk` chooses the revisions (the pending ones, or a
``--range``), renders each alone offline, applies the revision files'
``# orch-lint: allow RULE -- reason`` comments and reports.
"""
