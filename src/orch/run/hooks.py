"""Per-environment shell hooks around each database's migration (backup first, notify after).

An environment may name ``before_upgrade``, ``after_upgrade``,
``before_downgrade`` and ``after_downgrade`` commands.  The executor runs
them in the worker that migrates the database, under that database's
migration lock, once per database and only when there is work to do: a
backup taken while another orch migrates the same database would be a
backup of a moving target, and a backup when nothing changes is waste.

Placeholders are brace words (``{db}`` ``{env}`` ``{host}`` ``{port}``
``{user}`` ``{database}`` ``{timestamp}``), replaced by values quoted for the
shell (``shlex.quote``), so a database name with a space or a quote cannot
break out of the command.  That quoting is right only where the shell reads
the placeholder as a plain word: a placeholder inside quotes, backticks,
``$(...)``, ``${...}``, a here-document or a comment, or after a backslash,
is a registry error (:func:`quoting_problems`), never a command that runs a
value as code.  Only those exact words are replaced; any other
brace text (``awk '{print $1}'``) is left alone, and an unknown brace word is
a registry error.  The password is never a placeholder: the hook receives
it in the driver's own variable (``PGPASSWORD`` / ``MYSQL_PWD``), which
``pg_dump``, ``psql``, ``mysqldump`` and ``mysql`` read, so it never appears
on a command line (``ps`` shows command lines to every user of the host).

A hook runs with ``/bin/sh -c`` in the registry's directory, with stdin
closed, in its own session (a Ctrl-C at the terminal reaches orch, which
stops gracefully, not the backup half-way), and with a timeout
(``settings.hook_timeout``, default one hour; ``0`` means none): on timeout
its whole process group is terminated.  Its combined output is kept
(redacted, control characters escaped, last 4,000 characters) for the
audit log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orch.backends import for_url
from orch.config.hookspec import WORD, quoting_problems
from orch.redact import redact
from orch.render import printable
from orch.store.db import os_user

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection as SAConnection

    from orch.config.registry import Registry, Target
    from orch.store.audit import AuditLog

OUTPUT_LIMIT = 4000


def timestamp(when: dt.datetime | None = None) -> str:
    """UTC, sortable and safe in file names: ``20240131T235959Z``."""
    when = when or dt.datetime.now(dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class Connection:
    """What a hook may know about a database: everything but the password."""

    kind: str  # the backend's name (orch.backends.Backend.name)
    host: str
    port: str
    user: str
    database: str
    password: str | None
    #: the variable the server's clients read the password from (None: no logins)
    password_env: str | None = None


def parse(url: str) -> Connection:
    """Split a database URL into hook values, filling the clients' defaults.

    A missing host, port or user gets what ``pg_dump``/``mysqldump`` would use
    anyway (localhost, 5432/3306, the OS user), so ``-h {host} -p {port}``
    never becomes ``-h '' -p ''``.  For SQLite, ``database`` is the file path
    and the other values are empty.
    """

    b = for_url(url)
    p = b.client_params(os_user())
    return Connection(b.name, p.host, p.port, p.user, p.database, p.password, b.password_env)


def values(conn: Connection, db: str, env: str, stamp: str) -> dict[str, str]:
    """The placeholder values (not yet quoted)."""
    return {
        "db": db,
        "env": env,
        "host": conn.host,
        "port": conn.port,
        "user": conn.user,
        "database": conn.database,
        "timestamp": stamp,
    }


def render(template: str, vals: Mapping[str, str]) -> str:
    """Replace placeholders with shell-quoted values; other brace text stays as written.

    A template with a placeholder the shell would not read as a plain word
    (see :func:`quoting_problems`) is refused here too, not only by the
    registry: no value is ever substituted where it could run as code.
    """
    unsafe = quoting_problems(template)
    if unsafe:
        word, where = unsafe[0]
        raise ValueError(f"placeholder {{{word}}} is {where}: its value could run as code")

    def repl(m: re.Match[str]) -> str:
        word = m.group(1)
        if word not in vals:
            return m.group(0)
        return shlex.quote(vals[word])

    return WORD.sub(repl, template)


def environment(conn: Connection, hook: str, db: str, env: str) -> dict[str, str]:
    """The hook's process environment: orch's own, the password in the driver's variable."""
    out = dict(os.environ)
    if conn.password_env is not None and conn.password:
        out[conn.password_env] = conn.password
    out["ORCH_HOOK"] = hook
    out["ORCH_DB"] = db
    out["ORCH_ENV"] = env
    return out


@dataclass
class HookResult:
    """One hook run: what ran (no password in it), how it ended, what it printed."""

    name: str
    command: str
    returncode: int | None
    output: str
    duration: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        return f"{self.name} {'ok' if self.ok else 'FAILED'} ({self.duration:.2f}s)"


def command_for(template: str, *, url: str, db: str, env: str, stamp: str) -> str:
    """The hook's command line with placeholders filled (it never holds the password)."""
    return render(template, values(parse(url), db, env, stamp))


def run_hook(
    name: str,
    template: str,
    *,
    url: str,
    db: str,
    env: str,
    cwd: Path,
    timeout: float | None,
    stamp: str,
) -> HookResult:
    """Run one hook for one database; never raises for the hook's own failure."""
    conn = parse(url)
    command = render(template, values(conn, db, env, stamp))
    shown = redact(command)
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
            command,
            shell=True,
            cwd=cwd,
            env=environment(conn, name, db, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        why = f"{name} hook could not start: {exc}"
        return HookResult(name, shown, None, "", time.monotonic() - t0, why)
    timed_out = False
    try:
        raw, _ = proc.communicate(timeout=timeout or None)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        try:
            raw, _ = proc.communicate(timeout=5.0)
        except subprocess.TimeoutExpired:  # a child left the group and holds the pipe
            raw = b""
    duration = time.monotonic() - t0
    output = shown_output(raw)
    error: str | None = None
    if timed_out:
        error = f"{name} hook timed out after {timeout:g}s (settings.hook_timeout) and was killed"
    elif proc.returncode != 0:
        last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "")
        code = proc.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit {code}"
        error = f"{name} hook failed ({how})" + (f": {last}" if last else "")
    return HookResult(name, shown, proc.returncode, output, duration, error)


def shown_output(raw: bytes) -> str:
    """What is kept of a hook's output: its tail, without passwords or terminal controls.

    Only the last 64 KiB are decoded and scrubbed (a hook that prints a dump
    to stdout by mistake costs no more than that), then the last
    ``OUTPUT_LIMIT`` characters are kept: a password cut at the 64 KiB edge
    is far outside what is kept.  Control characters (ANSI sequences, ``\\r``)
    are shown escaped, so the summary, the audit row and ``orch log`` never
    drive the terminal that shows them.
    """
    tail = raw[-65536:]
    text = printable(redact(tail.decode("utf-8", errors="replace")))
    if len(raw) > len(tail) or len(text) > OUTPUT_LIMIT:
        text = "..." + text[-OUTPUT_LIMIT:]
    return text


def run_logged(
    name: str,
    *,
    registry: Registry,
    target: Target,
    conn: SAConnection,
    audit: AuditLog,
    stamp: str,
    revision: str | None,
    say: Callable[[str], None],
) -> HookResult | None:
    """Run the environment's hook *name* for one database, with a row in its audit log.

    The row is committed as ``running`` before the hook starts (no transaction
    stays open on the migration connection while a backup runs for minutes)
    and finished with the outcome, the command and the output's tail.  Hook
    rows have direction ``hook``: they never count as migration steps for the
    dirty marker.  None when the environment has no such hook.
    """
    template = registry.environment(target.env).hooks.get(name)
    if template is None or target.url is None:
        return None
    shown = printable(
        redact(command_for(template, url=target.url, db=target.name, env=target.env, stamp=stamp))
    )
    say(f"{target.name}: {name}: {shown}")
    row = audit.start(revision, "hook", detail=f"{name}: {shown}")
    conn.commit()
    result = run_hook(
        name,
        template,
        url=target.url,
        db=target.name,
        env=target.env,
        cwd=registry.root,
        timeout=registry.settings.hook_timeout,
        stamp=stamp,
    )
    detail = f"{name}: {shown}" + (f"\n{result.output}" if result.output else "")
    audit.finish(row, "ok" if result.ok else "failed", error=result.error, detail=detail)
    conn.commit()
    say(f"  {result.summary()}")
    if not result.ok:
        tail = [ln for ln in result.output.splitlines() if ln.strip()][-5:]
        for ln in tail:
            say(f"    | {ln}")
    return result


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the hook's whole process group (the shell and what it started).

    SIGTERM first (``pg_dump`` cleans up on it), then SIGKILL for whatever is
    left after a grace period, so no child keeps the output pipe open.
    """
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5.0)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
