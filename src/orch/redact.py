"""Hide passwords in URLs and in any text that might echo one.

Deliberately free of SQLAlchemy: it runs on the ``--help`` path and on every
error message.  Two layers: URLs are rendered with ``***`` in place of the
password (userinfo and ``password=`` query parameters), and free text such as
driver error messages is scrubbed of every password orch knows about.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, unquote_plus

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
_QUERY_PW = re.compile(r"(?i)(?P<key>[?&;](?:password|passwd|pwd)=)(?P<pw>[^&\s'\"]*)")
# libpq style "password=secret" in DSN strings echoed by drivers
_KV_PW = re.compile(r"(?i)(?P<key>\bpassword\s*=\s*)(?P<q>['\"]?)(?P<pw>[^\s'\"]+)(?P=q)")

MASK = "***"


def redact_url(url: str) -> str:
    """Return *url* with any password replaced by ``***``."""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)
    return _QUERY_PW.sub(lambda m: f"{m['key']}{MASK}", out)


def url_passwords(url: str) -> list[str]:
    """Every password that appears in *url*, raw and percent-decoded."""
    found: list[str] = []
    for m in _USERINFO.finditer(url):
        found.append(m["pw"])
    for m in _QUERY_PW.finditer(url):
        found.append(m["pw"])
    out: list[str] = []
    for pw in found:
        for variant in (pw, unquote(pw), unquote_plus(pw)):
            if variant and variant not in out:
                out.append(variant)
    return out


class Redactor:
    """Scrubs known secrets (and URL-shaped passwords) from arbitrary text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for s in secrets:
            self.add(s)

    def add(self, secret: str) -> None:
        # Very short strings would mangle ordinary text; URL masking still covers them.
        if secret and len(secret) >= 3:
            self._secrets.add(secret)

    def add_url(self, url: str) -> None:
        for pw in url_passwords(url):
            self.add(pw)

    def __call__(self, text: str) -> str:
        out = redact_url(text)
        out = _KV_PW.sub(lambda m: f"{m['key']}{m['q']}{MASK}{m['q']}", out)
        for secret in sorted(self._secrets, key=len, reverse=True):
            out = out.replace(secret, MASK)
        return out


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
