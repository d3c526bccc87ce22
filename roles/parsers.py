"""
The readers of what hosts print, one per format, for every role: os-release(5), ``dpkg -s``
stanzas. Plain functions over text (or lines), tested against real outputs.
"""

from __future__ import annotations

import shlex


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
    """``dpkg -s`` stanzas → {package: version} for the packages that are installed."""
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
