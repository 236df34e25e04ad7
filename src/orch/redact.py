"""Hide passwords in URLs and in any text that might echo one.

Deliberately free of SQLAlchemy: it runs on the ``--help`` path and on every
error message.  Two layers:

- A URL is *shown* with ``***`` for its password (userinfo and ``password=``
  query parameters).  A URL SQLAlchemy would misread (a raw ``@`` in the user
  name or password makes the rest of the password part of the host, and
  the driver then prints it in its error) or that is not URL-shaped at all
  (``postgresql+psycopg//...``, one slash, no scheme) is shown without any
  of its userinfo: everything up to its last ``@`` is hidden.
- Free text (driver errors, tracebacks, hook output, audit rows) is
  scrubbed of every password orch has seen.  The passwords are read from the
  URL text the registry holds, not from a parsed URL, because the parse is
  exactly what goes wrong with a malformed URL: every plausible reading is
  kept (the userinfo ending at any of its ``@``), in the forms a driver or
  a library may echo (percent-decoded, percent-encoded, JSON and ``repr``
  escaped).

Every pattern here is linear in the text it scans (bounded repetitions, one
``str.replace`` per secret): hook output of hundreds of kilobytes is
scrubbed under a migration lock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

MASK = "***"

# scheme://, anchored at the start of a URL string
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
# SQLAlchemy's own URL grammar (sqlalchemy.engine.url._parse_url), with a wider
# scheme: what the driver will be given, so what a password's reading must match
_SA_URL = re.compile(
    r"""
    (?P<name>[A-Za-z][A-Za-z0-9+.\-]*)://
    (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/?]+)\]|(?P<ipv4host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?
    (?:/(?P<database>[^?]*))?
    (?:\?(?P<query>.*))?
    """,
    re.X | re.S,
)
# a scheme-like head of a string that is not URL-shaped: kept when it is shown
_LOOSE_HEAD = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*(?::/*|/+)")
# ?password=... in a URL string: the value runs to the next '&' or the end
_QUERY_PW_URL = re.compile(r"(?i)(?P<key>[?&;](?:ssl)?(?:password|passwd|pwd)=)(?P<pw>[^&]*)")
# the same in free text: stops at white space and quotes too (bounded: linear)
_QUERY_PW = re.compile(
    r"(?i)(?P<key>[?&;](?:ssl)?(?:password|passwd|pwd)=)(?P<pw>[^&\s'\"]{1,512}+)"
)
# user:password@ after a scheme in free text (a URL orch never registered);
# the lookbehind makes a long run of letters cost one scan, not one per letter,
# and the possessive repetitions never backtrack
_USERINFO = re.compile(
    r"(?<![A-Za-z0-9+.\-])(?P<head>[A-Za-z][A-Za-z0-9+.\-]{0,63}+://[^\s:/@]{0,256}+:)"
    r"(?P<pw>[^\s@]{1,256}+)@"
)
# libpq style "password=secret" in DSN strings echoed by drivers
_KV_PW = re.compile(
    r"(?i)(?P<key>\bpassword\s{0,8}+=\s{0,8}+)(?P<q>['\"]?)(?P<pw>[^\s'\"]{1,512}+)(?P=q)"
)

#: how many '@' / ':' readings of one URL are kept (a URL has a handful at most)
_READINGS = 16


def _sa_parts(url: str) -> re.Match[str] | None:
    return _SA_URL.match(url)


def _misread(url: str) -> bool:
    """True when the URL has an ``@`` that does not end its userinfo (SQLite: never).

    SQLAlchemy ends the password at its *first* ``@`` (and a user name at
    the first ``/``): the text after a raw ``@`` in a password, up to the
    next ``/``, ``?`` or ``:``, becomes the host, the port or the query.  So
    any ``@`` after the one that ends the userinfo as SQLAlchemy reads it
    means the URL is not read as written.  ``@`` inside a user name
    (``user@tenant:pw@host``) is read right and stays allowed; an ``@`` in
    a query value or database name must be written ``%40`` (both are
    percent-decoded).
    """
    m = _sa_parts(url)
    if m is None or m["name"].lower().startswith("sqlite"):
        return False
    if m["username"] is None:
        after = m.end("name") + 3
    else:
        after = (m.end("password") if m["password"] is not None else m.end("username")) + 1
    return "@" in url[after:]


def _port_may_be_password(m: re.Match[str]) -> bool:
    """``user:password`` with no ``@host``: SQLAlchemy reads the password as the port."""
    port = m["port"]
    return m["username"] is None and bool(port) and not port.isdigit()


def userinfo_problem(url: str) -> str | None:
    """Why the URL's user name or password would be misread, or None.

    A raw ``@`` in a password makes the rest of it part of the host, port or
    query (which the driver then prints in its error); a raw ``/`` in a user
    name makes the password part of the database name.  Neither can connect;
    both are reported before anything is tried, with the URL shown without
    its userinfo.
    """
    if not _misread(url):
        return None
    return (
        "an '@' that does not end user:password (a raw '@' in the password, or a '/' "
        "in the user name): percent-encode '@' as %40 and '/' as %2F: "
        f"{redact_url(url)} (shown without its user name and password)"
    )


def redact_url(url: str) -> str:
    """Return *url* fit to show: ``user:***@`` for its password, or no userinfo at all.

    A URL that does not parse cleanly (see :func:`userinfo_problem`), or is not
    ``scheme://`` shaped, keeps nothing of what precedes its last ``@``.
    """
    m = _SCHEME.match(url)
    if m is None:
        out = _without_userinfo_loose(url)
    elif _misread(url):
        out = m.group(0) + MASK + url[url.rfind("@") :]
    else:
        sa = _sa_parts(url)
        if sa is None:
            out = url
        elif sa["password"] is not None:
            out = url[: sa.start("password")] + MASK + url[sa.end("password") :]
        elif _port_may_be_password(sa):  # and what follows: a password may hold '/' or '?'
            out = url[: sa.start("port")] + MASK
        else:
            out = url
    return _QUERY_PW_URL.sub(lambda q: f"{q['key']}{MASK}", out)


def _without_userinfo_loose(text: str) -> str:
    """A string that is not URL-shaped (a typo): hide all that precedes its last ``@``."""
    at = text.rfind("@")
    if at < 0:
        return text
    head = _LOOSE_HEAD.match(text)
    keep = head.group(0) if head is not None and head.end() <= at else ""
    return keep + MASK + text[at:]


def _at_positions(text: str) -> list[int]:
    return [i for i, c in enumerate(text) if c == "@"][:_READINGS]


def _raw_passwords(url: str) -> list[str]:
    """Every plausible password in *url* as written (raw, not decoded)."""
    found: list[str] = []
    m = _SCHEME.match(url)
    if m is not None:
        sa = _sa_parts(url)
        if sa is not None and sa["password"] is not None:
            found.append(sa["password"])
        if sa is not None and _port_may_be_password(sa):
            found += [sa["port"], url[sa.start("port") :]]
        if not m.group(1).lower().startswith("sqlite"):  # a path may hold '@' and ':'
            rest = url[m.end() :]
            for at in _at_positions(rest):  # the userinfo may end at any '@' (a raw one in it)
                info = rest[:at]
                if ":" in info:
                    found.append(info.split(":", 1)[1])
    else:
        # not URL-shaped: the password is after some ':' before some '@'
        for at in _at_positions(url):
            pre = url[:at]
            colons = [i for i, c in enumerate(pre) if c == ":"][:_READINGS]
            found.extend(pre[i + 1 :] for i in colons)
    found.extend(q["pw"] for q in _QUERY_PW_URL.finditer(url))
    found.extend(k["pw"] for k in _KV_PW.finditer(url))
    return found


def _echoed_forms(secret: str) -> list[str]:
    """The forms in which *secret* may be echoed: decoded, encoded, escaped."""
    out: list[str] = []
    for base in dict.fromkeys((secret, unquote(secret), unquote_plus(secret))):
        out += [
            base,
            quote(base, safe=""),
            quote(base, safe=" +"),  # how SQLAlchemy renders a password
            quote_plus(base),
            json.dumps(base)[1:-1],
            json.dumps(base, ensure_ascii=False)[1:-1],
            repr(base)[1:-1],
        ]
    return list(dict.fromkeys(out))


def url_passwords(url: str) -> list[str]:
    """Every password that may appear in *url*, in every form it may be echoed in."""
    out: list[str] = []
    for pw in _raw_passwords(url):
        out += _echoed_forms(pw)
    return list(dict.fromkeys(s for s in out if s))


class Redactor:
    """Scrubs known secrets (and URL-shaped passwords) from arbitrary text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._ordered: list[str] | None = None
        for s in secrets:
            self.add(s)

    def add(self, secret: str) -> None:
        # Very short strings would mangle ordinary text; URL masking still covers them.
        if secret and len(secret) >= 3 and secret not in self._secrets:
            self._secrets.add(secret)
            self._ordered = None

    def secrets(self) -> tuple[str, ...]:
        """The known secrets, sorted: handed to worker processes, which redact alike."""
        return tuple(sorted(self._secrets))

    def add_url(self, url: str) -> None:
        for pw in url_passwords(url):
            self.add(pw)

    def __call__(self, text: str) -> str:
        # known secrets first and longest first, so that a pattern below never
        # masks only part of one (a password with a space) and leaves the rest
        ordered = self._ordered
        if ordered is None:
            ordered = self._ordered = sorted(self._secrets, key=len, reverse=True)
        out = text
        for secret in ordered:
            if secret in out:
                out = out.replace(secret, MASK)
        out = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@", out)
        out = _QUERY_PW.sub(lambda m: f"{m['key']}{MASK}", out)
        return _KV_PW.sub(lambda m: f"{m['key']}{m['q']}{MASK}{m['q']}", out)


#: process-wide redactor; the registry registers every password it resolves
REDACTOR = Redactor()


def redact(text: str) -> str:
    """Scrub *text* with the process-wide redactor."""
    return REDACTOR(text)


def redact_data(value: Any) -> Any:
    """*value* (JSON-shaped: dicts, lists, strings, scalars) with every string scrubbed."""
    if isinstance(value, str):
        return REDACTOR(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value
