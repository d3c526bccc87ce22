"""
Edits of /etc/adduser.conf and /etc/environment, as functions of the current text.

Both keep every line they do not need to change, and both are idempotent: applied to their own
output they return it unchanged, so a converged host shows no change.

adduser reads its configuration line by line (Debian::AdduserCommon::read_config): lines that
start with ``#`` are comments, ``KEY = value`` lines set ``lc(KEY)`` with one pair of surrounding
quotes removed, and a later assignment overwrites an earlier one. So AMD's documented snippet::

    ADD_EXTRA_GROUPS=1
    EXTRA_GROUPS=video
    EXTRA_GROUPS=render

gives new users ``render`` only. ``adduser_conf`` leaves one ``EXTRA_GROUPS`` line holding every
group the active lines named, plus video and render, and one ``ADD_EXTRA_GROUPS=1`` line.
"""

from __future__ import annotations

import re

ASSIGNMENT = re.compile(r"^\s*([_a-zA-Z0-9]+)\s*=\s*(.*)$")
GPU_GROUPS = ("video", "render")


def _value(raw: str) -> str:
    """A value as adduser and pam_env read it: one pair of surrounding quotes removed."""
    raw = raw.rstrip("\n")
    for quote in ('"', "'"):
        if len(raw) >= 2 and raw.startswith(quote) and raw.endswith(quote):
            return raw[1:-1]
    return raw


def _active(lines: list[str], key: str) -> list[int]:
    """Indexes of the lines that assign ``key`` (case-insensitive, as adduser reads keys)."""
    found = []
    for index, line in enumerate(lines):
        if line.startswith("#"):
            continue
        match = ASSIGNMENT.match(line)
        if match and match.group(1).lower() == key.lower():
            found.append(index)
    return found


def _commented(lines: list[str], key: str) -> int | None:
    """Index of the first commented-out ``#KEY=...`` line (the file's documented default)."""
    pattern = re.compile(rf"^#\s*{key}\s*=", re.IGNORECASE)
    for index, line in enumerate(lines):
        if pattern.match(line):
            return index
    return None


def _set_single(lines: list[str], key: str, new_line: str) -> list[str]:
    """One active assignment of ``key``: the first one replaced, the others removed; or added."""
    active = _active(lines, key)
    if active:
        first, rest = active[0], set(active[1:])
        return [new_line if i == first else line for i, line in enumerate(lines) if i not in rest]
    commented = _commented(lines, key)
    if commented is not None:
        return lines[: commented + 1] + [new_line] + lines[commented + 1:]
    return lines + [new_line]


def _split_lines(text: str) -> list[str]:
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n") if text else []


def extra_groups(text: str) -> list[str] | None:
    """
    The groups adduser now gives new users, as this file configures it; None when extra groups
    are off (``ADD_EXTRA_GROUPS`` unset or 0).

    Without an active ``EXTRA_GROUPS`` line adduser uses its built-in default, which the
    commented-out ``#EXTRA_GROUPS=...`` line of Debian's and Ubuntu's file states.
    """
    lines = _split_lines(text)
    settings = {}
    for index in _active(lines, "ADD_EXTRA_GROUPS") + _active(lines, "EXTRA_GROUPS"):
        match = ASSIGNMENT.match(lines[index])
        settings[(index, match.group(1).lower())] = _value(match.group(2))
    add = [v for (i, k), v in sorted(settings.items()) if k == "add_extra_groups"]
    if not add or add[-1].strip() in ("", "0"):
        return None
    groups = [v for (i, k), v in sorted(settings.items()) if k == "extra_groups"]
    if groups:
        return groups[-1].split()
    commented = _commented(lines, "EXTRA_GROUPS")
    if commented is None:
        return None
    return _value(lines[commented].split("=", 1)[1]).split()


def adduser_conf(text: str, groups: tuple[str, ...] = GPU_GROUPS) -> str:
    """
    /etc/adduser.conf giving new users ``groups`` besides those they got before.

    - Active ``EXTRA_GROUPS`` lines: their groups, in order and once each, plus ``groups``, on
      one line where the first was; the other active lines are removed (AMD's snippet heals).
    - No active line but extra groups already on: adduser's built-in default (the commented line)
      is what new users got, so it is kept, plus ``groups``.
    - Extra groups off: new users got none, so they now get ``groups`` only.
    - ``ADD_EXTRA_GROUPS=1`` on one line: the first active one, or after the commented default.
    """
    lines = _split_lines(text)
    wanted: list[str] = []
    active = _active(lines, "EXTRA_GROUPS")
    if active:
        for index in active:
            wanted += _value(ASSIGNMENT.match(lines[index]).group(2)).split()
    else:
        wanted += extra_groups(text) or []
    for group in groups:
        wanted.append(group)
    unique = list(dict.fromkeys(wanted))
    lines = _set_single(lines, "ADD_EXTRA_GROUPS", "ADD_EXTRA_GROUPS=1")
    lines = _set_single(lines, "EXTRA_GROUPS", f'EXTRA_GROUPS="{" ".join(unique)}"')
    return "\n".join(lines) + "\n"


def environment(text: str, wanted: dict[str, str]) -> str:
    """
    /etc/environment with each ``wanted`` variable set; every other line kept as it is.

    pam_env reads ``KEY=value`` lines in order and the last one wins, so a variable that already
    has the wanted value (quoted or not) is left alone, and one with another value gets it on its
    last line. Variables not in ``wanted`` are never removed.
    """
    lines = _split_lines(text)
    for key, value in wanted.items():
        indexes = [i for i, line in enumerate(lines)
                   if (m := ASSIGNMENT.match(re.sub(r"^\s*export\s+", "", line)))
                   and m.group(1) == key and not line.lstrip().startswith("#")]
        current = None
        if indexes:
            current = _value(ASSIGNMENT.match(
                re.sub(r"^\s*export\s+", "", lines[indexes[-1]])).group(2).strip())
        if current == value:
            continue
        new_line = f'{key}="{value}"' if re.search(r"\s", value) else f"{key}={value}"
        if indexes:
            lines[indexes[-1]] = new_line
        else:
            lines.append(new_line)
    return "\n".join(lines) + "\n" if lines else ""
