"""
The readers of what hosts print, one per format, for every role: the sections of a fact that
reads several things in one command (``sections``), os-release(5), ``dpkg -s`` stanzas. Plain
functions over text (or lines), tested against real outputs.
"""

from __future__ import annotations

import re
import shlex

# How a fact's command says what comes next: a line "### NAME" opens the section NAME (the
# preflight's offline captures are files NAME.txt); inside a section, a line "#! ..." is a
# note of the command about its own run ("#! missing lspci"), not the output of what it ran.
MARKER = "### "
NOTE = "#! "
_NAME = re.compile(r"[a-z0-9-]+")


def parts(output: list[str] | str, names=None) -> list[tuple[str, list[str]]]:
    """
    ``[(NAME, lines), ...]`` of the output cut at its ``### NAME`` lines, in their order (a
    name may come again: one part per file of a list); lines before the first are dropped.
    ``names``: the only names that open a part, so that a line of a file the command shows whole
    (``### notes`` in someone's config) stays that file's line.
    """
    found: list[tuple[str, list[str]]] = []
    for line in lines_of(output):
        name = line[len(MARKER):].strip() if line.startswith(MARKER) else None
        if name is not None and _NAME.fullmatch(name) and (names is None or name in names):
            found.append((name, []))
        elif found:
            found[-1][1].append(line)
    return found


def sections(output: list[str] | str, names=None) -> dict[str, list[str]]:
    """``{NAME: lines}`` of ``parts`` (a name printed twice: its last part)."""
    return dict(parts(output, names))


def split_notes(lines: list[str] | str) -> tuple[list[str], list[str]]:
    """A section's (output lines, the command's notes without their ``#! ``)."""
    body, notes = [], []
    for line in lines_of(lines):
        if line.startswith(NOTE):
            notes.append(line[len(NOTE):].strip())
        else:
            body.append(line)
    return body, notes


def lines_of(output: list[str] | str) -> list[str]:
    return output.splitlines() if isinstance(output, str) else list(output)


def os_release(output: list[str] | str) -> dict[str, str]:
    """
    KEY=value lines of os-release(5), shell-quoted values unquoted, as pyinfra reads them
    (``{"ID": "ubuntu", "VERSION_ID": "22.04", ...}``); comments, notes and lines that are not
    assignments are skipped.
    """
    values = {}
    for line in lines_of(output):
        name, sep, value = line.strip().partition("=")
        if not sep or not name.isidentifier() or name.startswith("#"):
            continue
        try:
            words = shlex.split(value, comments=False)
        except ValueError:
            continue
        values[name.upper()] = " ".join(words)
    return values


def dpkg_status(output: list[str] | str) -> dict[str, str]:
    """``dpkg -s`` stanzas (or roles.shell.DPKG_FIELDS's) → {package: version} for the
    packages that are installed."""
    lines = lines_of(output)
    found, package, status, version = {}, None, "", None

    def flush():
        if package and version and status.split()[-1:] == ["installed"]:
            found[package] = version

    for line in lines + [""]:
        if not line.strip():
            flush()
            package, status, version = None, "", None
        elif line.startswith("Package:"):
            package = line.split(":", 1)[1].strip()
        elif line.startswith("Status:"):
            status = line.split(":", 1)[1].strip()
        elif line.startswith("Version:"):
            version = line.split(":", 1)[1].strip()
    return found


def architecture(output: list[str] | str, package: str) -> str:
    """The Architecture field of ``package``'s stanza in ``dpkg -s`` stanzas (or
    roles.shell.DPKG_FIELDS's), "" when there is none."""
    current = None
    for line in lines_of(output):
        if line.startswith("Package:"):
            current = line.split(":", 1)[1].strip()
        elif line.startswith("Architecture:") and current == package:
            return line.split(":", 1)[1].strip()
    return ""
