"""The ``orch`` command line: parse, call :mod:`orch.service`, render, exit.  Nothing else.

- :mod:`.app`: the group, the global options and the :class:`~.app.Options`
  they fill, the output helpers;
- :mod:`.runs`: ``upgrade``, ``downgrade``, ``stamp``, ``plan`` (and the
  protected-environment confirmation, the one prompt);
- :mod:`.reads`: ``status``, ``log``, ``check``, ``lint``, ``history``, ``graph``;
- :mod:`.authoring`: ``revision``, ``merge``, ``init``;
- :mod:`.testing`: ``test`` (the migrations themselves, on throwaway databases);
- :mod:`.process`: what the console script's process does around a command.

Every error is an :class:`~orch.errors.OrchError` turned into one line (or
one JSON document) here, in :func:`main`, with the documented exit code.
Heavy modules (SQLAlchemy, Alembic, drivers) are imported inside the
commands.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from orch.cli import authoring, reads, runs, testing  # noqa: F401  (each registers its commands)
from orch.cli.app import Options, cli, emit_json, err, out, report
from orch.errors import EXIT_FAILED, EXIT_USAGE, OrchError

__all__ = ["cli", "emit_json", "err", "main", "out", "run"]


def main(args: Sequence[str] | None = None, prog_name: str = "orch") -> None:
    """Console entry point: exactly one place turns errors into messages and exit codes.

    *args* None: the process's arguments (Click reads ``sys.argv``).
    Whether an error is reported as JSON or with a traceback comes from
    Click's parsing (the :class:`Options` its option callbacks fill, or
    :func:`orch.cli.app.output_options` when parsing itself failed), never
    from a scan of the arguments.
    """
    from orch import errors

    state = Options()
    code = 0
    errors.warning_sink = None  # Options.project() sets it for this command
    try:
        # standalone_mode=False: Click returns the code of an Exit (ours or --help's)
        rv = cli.main(args, prog_name=prog_name, standalone_mode=False, obj=state)
        code = rv if isinstance(rv, int) else 0
    except click.ClickException as exc:
        code = exc.exit_code if exc.exit_code else EXIT_USAGE
        report(state, exc.format_message(), code, exc)
    except click.exceptions.Abort:
        report(state, "aborted", EXIT_USAGE, None)
        code = EXIT_USAGE
    except OrchError as exc:
        code = exc.exit_code
        report(state, str(exc), code, exc)
    except KeyboardInterrupt:
        report(state, "interrupted", EXIT_FAILED, None)
        code = 130
    except Exception as exc:  # a bug: still one line unless -v
        from orch.store.db import describe_error

        code = EXIT_FAILED
        report(
            state,
            f"internal error: {type(exc).__name__}: {describe_error(exc)} "
            "(run with -v for the traceback)",
            code,
            exc,
        )
    sys.exit(code)


def run() -> None:
    """The ``orch`` console script and ``python -m orch``: :func:`main`, then a fast exit
    (see :mod:`orch.cli.process`).  :func:`main` itself keeps ``sys.exit`` for callers
    that embed orch and catch ``SystemExit``."""
    from orch.cli import process

    process.run(main)
