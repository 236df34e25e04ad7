"""What a hook command in ``databases.yaml`` may say: its placeholders and their quoting.

Checked when the registry is read, before anything runs; the values are
filled in by :mod:`orch.run.hooks`.  A placeholder's value comes from a URL or
a database name, so it is only accepted where the shell cannot read it as
code (see :func:`quoting_problems`).
"""

from __future__ import annotations

import re

PLACEHOLDERS = ("db", "env", "host", "port", "user", "database", "timestamp")
WORD = re.compile(r"\{([a-z_]+)\}")


def unknown_placeholders(command: str) -> list[str]:
    """Brace words in *command* that are not placeholders (for registry validation)."""
    return [w for w in WORD.findall(command) if w not in PLACEHOLDERS]


# what each opened construct is called in an error
_WHERE = {
    "'": "inside single quotes",
    "$'": "inside $'...' quotes",
    '"': "inside double quotes",
    "`": "inside backticks",
    "$(": "inside $(...)",
    "${": "inside ${...}",
    "$[": "inside $[...]",
    "((": "inside ((...))",
    "#": "in a comment",
    "<<": "in a here-document",
    "\\": "right after a backslash",
}
_OPERATOR = set(";&|()<>")


def quoting_problems(command: str) -> list[tuple[str, str]]:
    """Placeholders of *command* that are not plain, unquoted shell words: (word, where).

    A value is substituted as one ``shlex.quote`` word, which is a literal
    only where the shell reads it as plain code.  Inside quotes, backticks,
    ``$(...)``, ``${...}``, a here-document or a comment, or after a
    backslash, the shell reads those quotes differently (or runs the text
    again), so a value holding a quote, ``$(...)`` or a newline would run as
    code: such a template is refused (a registry error) instead.  The scan
    follows the POSIX shell grammar as far as it decides where a word's
    quotes end: quotes, escapes, nesting, comments and here-documents.
    """
    where = _contexts(command)
    out: list[tuple[str, str]] = []
    for m in WORD.finditer(command):
        if m.group(1) not in PLACEHOLDERS:
            continue
        if m.start() > 0 and command[m.start() - 1] == "$":
            continue  # ${word}: reported as "not ${...}" by the registry
        place = where[m.start()]
        if place is not None:
            out.append((m.group(1), place))
    return out


def _contexts(cmd: str) -> list[str | None]:
    """For each character of *cmd*: None where it is plain shell code, else where it is."""
    n = len(cmd)
    ctx: list[str | None] = [None] * n
    stack: list[str] = []  # open constructs; "(" is a plain subshell or group
    heredocs: list[tuple[str, bool]] = []  # (delimiter, strip leading tabs), bodies pending
    word_start = True
    i = 0

    def here() -> str | None:
        for opened in reversed(stack):
            if opened != "(":
                return _WHERE[opened]
        return None

    while i < n:
        c = cmd[i]
        top = stack[-1] if stack else None
        nxt = cmd[i + 1] if i + 1 < n else ""
        if top == "'":
            ctx[i] = here()
            if c == "'":
                stack.pop()
            i += 1
            continue
        if top in ('"', "`", "$'"):
            ctx[i] = here()
            if c == "\\":
                if i + 1 < n:
                    ctx[i + 1] = here()
                i += 2
                continue
            if (c == '"' and top == '"') or (c == "`" and top == "`") or (c == "'" and top == "$'"):
                stack.pop()
            elif c == "`" and top == '"':
                stack.append("`")
            elif c == "$" and nxt in "({[" and nxt and top != "$'":
                stack.append("$" + nxt)
                ctx[i + 1] = here()
                i += 1
            elif c == '"' and top == "`":
                stack.append('"')
            elif c == "'" and top == "`":
                stack.append("'")
            i += 1
            continue
        # shell code: top is None, "(", "((", "$(", "${" or "$["
        if c == "\\":
            ctx[i] = here()
            if i + 1 < n:
                ctx[i + 1] = here() or _WHERE["\\"]
            i += 2
            word_start = False
            continue
        if c == "#" and word_start:
            end = cmd.find("\n", i)
            end = n if end < 0 else end
            for j in range(i, end):
                ctx[j] = here() or _WHERE["#"]
            i = end
            continue
        if c == "\n" and heredocs and not stack:
            i = _heredoc_bodies(cmd, i + 1, heredocs, ctx)
            heredocs = []
            word_start = True
            continue
        if c == "<" and nxt == "<" and cmd[i + 2 : i + 3] != "<":
            i = _heredoc_word(cmd, i + 2, heredocs, ctx, here())
            word_start = False
            continue
        if c in "'\"`":
            stack.append(c)
        elif c == "$" and nxt in "'({[" and nxt:
            stack.append("$" + nxt)
            ctx[i] = here()
            i += 1
        elif c == "(":
            stack.append("((" if nxt == "(" and word_start else "(")
            if stack[-1] == "((":
                ctx[i] = here()
                i += 1  # the second "(" is part of the construct
        elif c == ")" and top in ("(", "((", "$("):
            stack.pop()
            if top == "((" and nxt == ")":
                ctx[i] = here()
                i += 1
        elif (c, top) in (("}", "${"), ("]", "$[")):
            stack.pop()
        ctx[i] = ctx[i] or here()
        word_start = c.isspace() or c in _OPERATOR
        i += 1
    return ctx


def _heredoc_word(
    cmd: str, i: int, heredocs: list[tuple[str, bool]], ctx: list[str | None], where: str | None
) -> int:
    """Read the delimiter after ``<<`` (at *i*); return where the scan goes on."""
    n = len(cmd)
    strip = i < n and cmd[i] == "-"
    i += 1 if strip else 0
    while i < n and cmd[i] in " \t":
        i += 1
    start = i
    while i < n and not cmd[i].isspace() and cmd[i] not in _OPERATOR:
        i += 1
    word = cmd[start:i]
    for j in range(start, i):
        ctx[j] = where or _WHERE["<<"]  # a placeholder as the delimiter is refused too
    heredocs.append((word.replace("'", "").replace('"', "").replace("\\", ""), strip))
    return i


def _heredoc_bodies(
    cmd: str, i: int, heredocs: list[tuple[str, bool]], ctx: list[str | None]
) -> int:
    """Mark the here-document bodies that start at *i*; return the index after the last."""
    n = len(cmd)
    for delimiter, strip in heredocs:
        while i < n:
            end = cmd.find("\n", i)
            end = n if end < 0 else end
            line = cmd[i:end]
            for j in range(i, end):
                ctx[j] = _WHERE["<<"]
            i = end + 1
            if (line.lstrip("\t") if strip else line) == delimiter:
                break
    return min(i, n)
