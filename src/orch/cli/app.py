"""The ``orch`` group and what every command shares: global options, the
:class:`Options` they fill, the output helpers and the one error reporter.

Global options (``--config/-c``, ``--env/-e``, ``--json``, ``-v``) are accepted
before or after the command name; the last one given wins.  Heavy modules
(SQLAlchemy, Alembic, drivers) are imported inside the commands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

from orch import __version__

if TYPE_CHECKING:
    from orch.service import Project

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Options:
    """Options shared by every command, wherever they were given on the line."""

    config: str | None = None
    env: str | None = None
    json: bool = False
    verbose: int = 0
    loaded: Project | None = field(default=None, repr=False)
    warned: set[str] = field(default_factory=set, repr=False)

    def project(self) -> Project:
        """The registry and environment the options name, loaded once per command."""
        from orch import errors
        from orch.service import Project

        if self.loaded is None:
            self.loaded = Project.load(self.config, self.env)
            errors.warning_sink = self.warn  # what reading the revision graphs finds
        return self.loaded

    def warn(self, message: str) -> None:
        """One ``warning:`` line on stderr, once per command however often it is found."""
        if message not in self.warned:
            self.warned.add(message)
            err(f"warning: {message}")


def options() -> Options:
    ctx = click.get_current_context()
    return ctx.find_root().ensure_object(Options)


def _set(attr: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        state = ctx.find_root().ensure_object(Options)
        if attr == "verbose":
            if value:
                state.verbose = max(state.verbose, value)
        elif attr == "json":
            if value:
                state.json = True
        elif value is not None:
            setattr(state, attr, value)

    return callback


def global_options(f: F) -> F:
    """Attach --config/--env/--json/-v to a command (and to the group)."""
    opts = [
        click.option(
            "--config",
            "-c",
            metavar="PATH",
            expose_value=False,
            is_eager=True,
            callback=_set("config"),
            help="Registry file (default: $ORCH_CONFIG, else databases.yaml here or above).",
        ),
        click.option(
            "--env",
            "-e",
            metavar="NAME",
            expose_value=False,
            callback=_set("env"),
            help="Environment (default: $ORCH_ENV, else the registry's default_env).",
        ),
        click.option(
            "--json",
            "json_",
            is_flag=True,
            default=False,
            expose_value=False,
            callback=_set("json"),
            help="One JSON document on stdout (also on failure).",
        ),
        click.option(
            "--verbose",
            "-v",
            count=True,
            expose_value=False,
            callback=_set("verbose"),
            help="More detail; tracebacks for errors.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def emit_json(doc: dict[str, Any]) -> None:
    """Print one JSON document, passwords hidden in every string *before* encoding.

    Scrubbing only the encoded text would miss a password that JSON escapes
    (a quote, a backslash, any non-ASCII character); the text pass stays as a
    second net.
    """
    from orch.redact import redact, redact_data
    from orch.render import dumps
    from orch.streams import result

    click.echo(redact(dumps(redact_data(doc))), file=result())


def out(text: str = "") -> None:
    """A line of the command's result: the real stdout (see :mod:`orch.streams`)."""
    from orch.redact import redact
    from orch.streams import result

    click.echo(redact(text), file=result())


def err(text: str) -> None:
    """A diagnostic line: no password, and no control sequence from text orch did not write."""
    from orch.redact import redact
    from orch.render import printable

    click.echo(printable(redact(text), keep_colour=True), err=True)


def output_options(
    cmd: click.Command, ctx: click.Context, args: Sequence[str], *, interspersed: bool | None = None
) -> None:
    """Record ``--json`` and ``-v`` of arguments Click refused, as Click's own parser reads them.

    A usage error stops Click before the option callbacks run, so the
    :class:`Options` does not know yet whether the error is wanted as JSON or
    with a traceback.  The command's own parser, told to skip unknown
    options, reads the same arguments again: ``-eprev`` stays ``--env prev``
    and ``--env -v`` an environment named ``-v``, never a ``-v`` (a hand-made
    scan of argv got both wrong).  For the group, the subcommand's arguments
    are read by the subcommand's parser; after an unknown command name
    (*interspersed*), only the global options can be known.
    """
    parser = cmd.make_parser(ctx)
    parser.ignore_unknown_options = True
    parser.allow_interspersed_args = (
        cmd.allow_interspersed_args if interspersed is None else interspersed
    )
    try:
        opts, rest, _order = parser.parse_args(list(args))
    except click.UsageError:
        return
    state = ctx.find_root().ensure_object(Options)
    if opts.get("json_") is True:
        state.json = True
    count = opts.get("verbose")
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        state.verbose = max(state.verbose, count)
    if isinstance(cmd, click.Group) and interspersed is None:
        for i, token in enumerate(rest):
            sub = cmd.get_command(ctx, token)
            if sub is not None:
                output_options(sub, ctx, rest[i + 1 :])
                return


class OrchCommand(click.Command):
    """A subcommand: its usage errors still honour ``--json`` and ``-v`` (see
    :func:`output_options`), and while it runs, stdout is its result only.

    Revision code, env.py and the modules they import run inside commands
    and may print; :func:`orch.streams.result_to_private_stdout` sends that
    to stderr (descriptor 1 too, so worker processes inherit it) and keeps
    the real stdout for :func:`out` and :func:`emit_json`.  Help, version
    and usage errors come before it and are unaffected.
    """

    def invoke(self, ctx: click.Context) -> Any:
        from orch.streams import result_to_private_stdout

        with result_to_private_stdout():
            return super().invoke(ctx)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError:
            output_options(self, ctx, given)
            raise


class OrchGroup(click.Group):
    command_class = OrchCommand

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError:
            output_options(self, ctx, given)
            raise

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:  # an unknown command: its global options still count
            output_options(self, ctx, args[1:], interspersed=True)
            raise

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        formatter.write_text(
            "Exit codes: 0 ok; 1 ran and something failed (a database failed or is dirty, "
            "or a check found work/drift, or status could not read a database); 2 could "
            "not start (usage, registry, refusal); 3 only a lock timed out; 130/143 "
            "stopped by SIGINT/SIGTERM after the revisions in flight."
        )


@click.group(cls=OrchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="orch", message="%(prog)s %(version)s")
@global_options
def cli() -> None:
    """Run Alembic migrations for several databases that belong together.

    The registry (databases.yaml) names the databases, their dependencies and
    each environment's URLs.  Selectors name databases: DB, or DB@TARGET where
    TARGET is head, +N, -N, base or a revision (id or unique prefix).
    """


def report(state: Options, message: str, code: int, exc: BaseException | None) -> None:
    from orch.redact import redact
    from orch.render import printable

    if state.json:
        from orch.render import dumps

        click.echo(redact(dumps({"error": redact(message), "exit_code": code})))
    else:
        click.echo(printable(redact(f"orch: error: {message}")), err=True)
    if state.verbose and exc is not None:
        import traceback

        click.echo(printable(redact("".join(traceback.format_exception(exc)))), err=True)


def _shard(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    from orch.errors import UsageError
    from orch.planning.shards import parse_shard

    if value is None:
        return None
    try:
        return parse_shard(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc).removeprefix(f"--shard {value!r}: ")) from None


def shard_option(f: F) -> F:
    """``--shard I/N``: only the databases of shard I of N (see orch.planning.shards)."""
    return click.option(
        "--shard",
        metavar="I/N",
        default=None,
        callback=_shard,
        help="Only the selected databases of shard I of N (a stable split by name).",
    )(f)
