"""``test``: the migrations themselves checked on throwaway databases; render, exit.

The work (creating, migrating and dropping the throwaway databases) is
:meth:`orch.service.Project.test_migrations`'s.
"""

from __future__ import annotations

from typing import Any

import click
from click.exceptions import Exit

from orch.cli.app import cli, emit_json, err, global_options, options, out


@cli.command("test")
@click.argument("databases", nargs=-1, metavar="[DB]...")
@global_options
def migration_test(databases: tuple[str, ...]) -> None:
    """Test the migrations themselves, on throwaway databases, in dependency order.

    Per database: single_head (one head), upgrade (base to head), stairway
    (each revision up, down, up), no_trace (each downgrade restores the
    schema its upgrade found) and models_match (at head, no autogenerate
    difference; where 'metadata' is set).  The throwaway databases are new
    SQLite files in a temporary directory, or orch_test_<db>_<random>
    databases on the environment's server with its login; they are dropped
    afterwards, also on failure and Ctrl-C.  The environment's own databases
    are never touched.  Exit 1 when a check failed, 2 when it could not start.
    """
    from orch.cli import process
    from orch.outcomes import Verdict
    from orch.render import table
    from orch.run.testing import CHECKS

    st = options()
    notes: Any = err if st.verbose else None
    try:
        process.startup_over()  # migrations of throwaway databases: a run's garbage
        report = st.project().test_migrations(databases, on_note=notes)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (orch.run.testing.Terminated)
        import signal

        from orch.stopping import EXIT_CODES

        signum = getattr(exc, "signum", signal.SIGINT)
        code = EXIT_CODES[signum]
        message = f"stopped by {signum.name}; the throwaway databases are dropped"
        if st.json:
            emit_json({"error": message, "exit_code": code})
        else:
            err(f"orch: {message}")
        raise Exit(code) from None
    if st.json:
        emit_json(report.as_json())
        raise Exit(report.exit_code)
    out(f"environment: {report.environment}")
    rows = [[r.name, *(r.check(c).state for c in CHECKS)] for r in report]
    out(table(["DATABASE", *(c.upper() for c in CHECKS)], rows))
    for r in report:
        for c in r.checks:
            if c.state == Verdict.PASSED:
                continue
            where = f"{c.revision}: " if c.revision else ""
            out(f"  {r.name} {c.check}: {c.state}: {where}{c.detail}")
            for d in c.differences:
                out(f"    {d['text']}")
    raise Exit(report.exit_code)
