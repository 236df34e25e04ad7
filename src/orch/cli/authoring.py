"""``revision``, ``merge`` and ``init``: write files in the project, print where."""

from __future__ import annotations

import click
from click.exceptions import Exit

from orch.cli.app import cli, emit_json, err, global_options, options, out


@cli.command()
@click.argument("database", metavar="DB")
@click.option("--message", "-m", required=True, help="What the revision does.")
@click.option(
    "--autogenerate",
    is_flag=True,
    help="Compare DB's metadata with DB's live database (this environment) and write the "
    "difference; writes no file when there is none.",
)
@click.option(
    "--allow-empty", is_flag=True, help="With --autogenerate: write a file even if nothing changed."
)
@click.option("--rev-id", default=None, help="Revision id to use instead of a generated one.")
@global_options
def revision(
    database: str, message: str, autogenerate: bool, allow_empty: bool, rev_id: str | None
) -> None:
    """Create a new revision in DB's directory, on DB's head (the first carries DB's label).

    Autogenerate reads DB's live schema and writes nothing to it: no version
    table, no SQLite file.  DB must be at its head first.
    """
    st = options()
    written = st.project().revision(
        database, message, autogenerate=autogenerate, allow_empty=allow_empty, rev_id=rev_id
    )
    if st.json:
        emit_json(written.as_json())
        raise Exit(0)
    for note in written.notes:
        err(note)
    if written.path is None:
        err(f"{database}: no changes detected; no revision written (use --allow-empty to force)")
        raise Exit(0)
    for op in written.operations:
        err(f"  detected {op}")
    parent = ", ".join(written.parents) or "base"
    label = f", branch label {written.branch_label}" if written.branch_label else ""
    err(f"{database}: revision {written.revision} on {parent}{label}")
    out(str(written.path))
    raise Exit(0)


@cli.command()
@click.argument("database", metavar="DB")
@click.option("--message", "-m", default=None, help="Message of the merge revision.")
@click.option("--rev-id", default=None, help="Revision id to use instead of a generated one.")
@global_options
def merge(database: str, message: str | None, rev_id: str | None) -> None:
    """Merge the heads of DB (branches of one database) into one revision."""
    st = options()
    written = st.project().merge(database, message, rev_id=rev_id)
    if st.json:
        emit_json(written.as_json())
        raise Exit(0)
    for note in written.notes:
        err(note)
    if written.path is not None:
        err(f"{database}: merge revision {written.revision} of {', '.join(written.parents)}")
        out(str(written.path))
    raise Exit(0)


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False), metavar="[DIR]")
@click.option(
    "--database", "-d", default="main", show_default=True, help="Name of the first database."
)
@click.option(
    "--metadata",
    default=None,
    metavar="MODULE:ATTR",
    help="Its models (a MetaData or declarative Base), e.g. myapp.models:Base.",
)
@global_options
def init(directory: str, database: str, metadata: str | None) -> None:
    """Scaffold alembic.ini, databases.yaml, migrations/env.py, script.py.mako and a first
    database in DIR (default: here).  Never overwrites: existing files are skipped."""
    from orch.service import init as init_project

    st = options()
    result = init_project(directory, database, metadata)
    if st.json:
        emit_json(result.as_json())
        raise Exit(0)
    for a in result.actions:
        out(f"{a.action:8} {a.path}" + (f" ({a.reason})" if a.reason else ""))
    for note in result.notes:
        err(f"note: {note}")
    out()
    out("next:")
    for line in result.next_steps:
        out(f"  {line}")
    raise Exit(0)


@cli.command()
@click.argument("tag", metavar="TAG")
@click.option("--message", "-m", default="", help="What the release is (kept with the tag).")
@global_options
def release(tag: str, message: str) -> None:
    """Record every database's file heads as release TAG in migrations/releases.yaml.

    The heads of the revision files (what the repository ships), not an
    environment's applied revisions: connects to nothing.  A tag is written
    once.  Bring an environment to it with 'upgrade --to TAG' or
    'downgrade --to TAG'.
    """
    st = options()
    project = st.project()
    made = project.release(tag, message)
    if st.json:
        emit_json({"release": made.as_json(), "file": str(project.releases_path)})
        raise Exit(0)
    for db, heads in made.heads.items():
        err(f"  {db}: {', '.join(heads) or 'base'}")
    err(f"release {made.tag}: {len(made.heads)} database(s)")
    out(str(project.releases_path))
    raise Exit(0)
