"""
Settings: every value a user may set, declared once per role, checked before anything changes.

A role declares its settings in its ``settings.py``::

    SETTINGS = [
        Setting("docker_source", "docker", one_of("docker", "distro"),
                "where Docker comes from: Docker's repository or the distribution"),
    ]

and reads them with ``settings.read(host, SETTINGS)``, which returns a dict with the defaults
filled in. Users set them in inventory host data or group data (``group_data/all.py`` sets them
for every host). ``validate(*roles)`` checks every host of the inventory at once and stops the run
with one message naming each host, setting, bad value and what is allowed; it is called at the top
of every deploy file, before the first operation, so a mistake on one host changes no host.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from pyinfra import host as current_host
from pyinfra.api.exceptions import PyinfraError

# A check returns None when the value is fine, else a short phrase saying what is allowed.
Check = Callable[[Any], "str | None"]


class SettingsError(PyinfraError):
    """A user's mistake in the inventory: printed as a message, never as a traceback."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    check: Check
    help: str
    secret: bool = False  # never echoed back in messages


# --- checks -----------------------------------------------------------------------------------


def one_of(*allowed: Any) -> Check:
    def check(value):
        if value not in allowed:
            return "one of " + ", ".join(repr(a) for a in allowed)
        return None

    return check


def boolean(value):
    return None if isinstance(value, bool) else "true or false"


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            return _range_text("a whole number", minimum, maximum)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            return _range_text("a whole number", minimum, maximum)
        return None

    return check


def _range_text(what, minimum, maximum):
    if minimum is not None and maximum is not None:
        return f"{what} from {minimum} to {maximum}"
    if minimum is not None:
        return f"{what} of at least {minimum}"
    return what


def matches(pattern: str, describe: str, optional: bool = False) -> Check:
    regex = re.compile(pattern)

    def check(value):
        if optional and value in (None, ""):
            return None
        if not isinstance(value, str) or not regex.fullmatch(value):
            return describe + (" (or empty)" if optional else "")
        return None

    return check


def text(optional: bool = True) -> Check:
    def check(value):
        if value is None and optional:
            return None
        if not isinstance(value, str) or (not optional and not value):
            return "a non-empty string" if not optional else "a string"
        return None

    return check


SHA256 = r"[0-9a-f]{64}"
sha256 = matches(SHA256, "64 lower-case hex digits (a sha256)")
url = matches(r"(https?|file)://\S+", "an http(s):// or file:// URL")
optional_url = matches(r"(https?|file)://\S+", "an http(s):// or file:// URL", optional=True)
absolute_path = matches(r"/[^\0\n]*", "an absolute path")
fingerprint = matches(r"[0-9A-F]{40}", "a 40-digit upper-case hex OpenPGP fingerprint")
# POSIX user and group names as adduser accepts them by default.
UNIX_NAME = r"[a-z_][a-z0-9_-]{0,31}"


def list_of(item: Check, what: str) -> Check:
    def check(value):
        if not isinstance(value, (list, tuple)):
            return f"a list of {what}"
        for entry in value:
            reason = item(entry)
            if reason is not None:
                return f"a list of {what}; {entry!r} is not {reason}"
        return None

    return check


unix_names = list_of(matches(UNIX_NAME, "a user name"), "user names")
strings = list_of(text(optional=False), "non-empty strings")


# --- reading and validating ---------------------------------------------------------------------


def read(host, settings: Iterable[Setting]) -> dict[str, Any]:
    """The host's value of each setting, its default where the inventory sets none."""
    values = {}
    for setting in settings:
        value = host.data.get(setting.name, None)
        values[setting.name] = setting.default if value is None else value
    return values


def problems(host, settings: Iterable[Setting], extra: Callable | None = None) -> list[str]:
    """Every bad setting of one host, each as one line of the message users see."""
    settings = list(settings)
    values = read(host, settings)
    found = []
    for setting in settings:
        allowed = setting.check(values[setting.name])
        if allowed:
            shown = "(hidden)" if setting.secret else repr(values[setting.name])
            found.append(f"{setting.name} = {shown}: allowed is {allowed}")
    if not found and extra is not None:
        found.extend(extra(host, values) or [])
    return found


def unknown(host, known: set[str], prefixes: tuple[str, ...]) -> list[str]:
    """Settings that look like ours (same prefix) but are declared nowhere: usually a typo."""
    found = []
    for name in host.data.dict():
        if name.startswith(prefixes) and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            found.append(f"{name}: no such setting{hint}")
    return found


_checked: dict[int, list[str]] = {}


def validate(*roles) -> None:
    """
    Check the settings of every host in the inventory for the given roles, once per run.

    Each role module passed here offers ``SETTINGS`` (a list of Setting) and may offer
    ``check(host, values) -> list[str]`` for rules that tie settings together. Raises
    SettingsError, naming each host, when anything is wrong; nothing has run on any host yet.
    """
    from pyinfra import state

    key = (id(state.inventory), tuple(role.__name__ for role in roles))
    if key not in _checked:
        known = {s.name for role in roles for s in role.SETTINGS}
        prefixes = tuple(sorted({name.split("_")[0] + "_" for name in known}))
        lines = []
        for inventory_host in state.inventory:
            host_lines = unknown(inventory_host, known, prefixes)
            for role in roles:
                host_lines += problems(inventory_host, role.SETTINGS, getattr(role, "check", None))
            lines += [f"  host {inventory_host.name}: {line}" for line in host_lines]
        _checked[key] = lines
    if _checked[key]:
        raise SettingsError(
            "bad settings, no host was changed:\n" + "\n".join(_checked[key])
        )


def host_error(message: str) -> SettingsError:
    """An error about the current host's settings or facts, found before anything changed."""
    return SettingsError(f"host {current_host.name}: {message}; no host was changed")


def markdown_table(settings: Iterable[Setting]) -> str:
    """The README's table of a role's settings, generated so that it cannot drift."""
    rows = ["| setting | default | what it does |", "| --- | --- | --- |"]
    for s in settings:
        default = "" if s.default in (None, "") else f"`{s.default!r}`"
        rows.append(f"| `{s.name}` | {default} | {s.help} |")
    return "\n".join(rows)


# --- the README's tables ----------------------------------------------------------------------

ROLES_WITH_SETTINGS = ("preflight", "docker", "rocm", "nvidia", "webui")


def readme_tables(readme: str) -> str:
    """``readme`` with each ``<!-- settings:ROLE -->`` block replaced by the role's table."""
    import importlib

    for role in ROLES_WITH_SETTINGS:
        start, end = f"<!-- settings:{role} -->", f"<!-- /settings:{role} -->"
        if start not in readme:
            continue
        module = importlib.import_module(f"roles.{role}.settings")
        before, rest = readme.split(start, 1)
        _, after = rest.split(end, 1)
        readme = f"{before}{start}\n{markdown_table(module.SETTINGS)}\n{end}{after}"
    return readme


if __name__ == "__main__":
    # python -m roles.settings README.md: rewrite the README's settings tables from the code.
    import sys
    from pathlib import Path

    for name in sys.argv[1:]:
        path = Path(name)
        path.write_text(readme_tables(path.read_text()))
