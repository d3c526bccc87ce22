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
import functools
import ipaddress
import posixpath
import re
from copy import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from pyinfra import host as current_host
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.host import Host
from pyinfra.context import ContextObject, ctx_host

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
fingerprint = matches(r"[0-9A-F]{40}", "a 40-digit upper-case hex OpenPGP fingerprint")

# Characters no URL of ours needs and that change meaning in a shell, a YAML or env file, or
# a Dockerfile: whitespace (a line break adds a line), quotes, backslash, backtick, controls.
_URL_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f'\"\\`<>{}|^]")


def url_of(*schemes: str, optional: bool = False) -> Check:
    """A URL that urllib.parse reads with one of ``schemes`` and a host, and nothing unsafe."""
    from urllib.parse import urlsplit

    names = [s for s in schemes if s not in ("http", "https")]
    if "http" in schemes:
        names.insert(0, "http(s)")
    describe = "an " + " or ".join(f"{s}://" for s in names) + " URL with a host"

    def check(value):
        if optional and value in (None, ""):
            return None
        if not isinstance(value, str) or _URL_UNSAFE.search(value):
            return describe + " (no spaces, quotes or line breaks)"
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a port that is no number
        except ValueError:
            return describe
        if parts.scheme not in schemes or not parts.hostname:
            return describe
        return None

    return check


# Downloads (models, keys, installers, apt repositories): http(s) only, never file:// (which
# would read the host's own files) nor a bare name.
url = url_of("http", "https")
optional_url = url_of("http", "https", optional=True)
# git remotes: also ssh:// and git://, and scp's user@host:path form.
_SCP_REMOTE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[A-Za-z0-9._~/+-]+")


def git_url(value):
    if isinstance(value, str) and _SCP_REMOTE.fullmatch(value):
        return None
    return url_of("http", "https", "ssh", "git")(value) and (
        "a git remote: an http(s)://, ssh:// or git:// URL with a host, or user@host:path")


def ipv4(value):
    """An IPv4 address as the ipaddress module reads it (no 192.168.1.300, no leading zeros)."""
    try:
        ipaddress.IPv4Address(value)
    except (ValueError, TypeError):
        return "an IPv4 address like 192.168.1.10 (or 0.0.0.0: all)"
    return None


def absolute_path(value):
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value \
            or re.search(r"[\x00-\x1f\x7f]", value):
        return "an absolute path (no line breaks)"
    return None


# The system's own directories: a project directory there writes into it and makes it the
# image's build context. These themselves, and anything under the kernel's virtual trees.
SYSTEM_DIRS = ("/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
               "/boot", "/dev", "/proc", "/sys", "/run", "/var", "/root", "/home")
VIRTUAL_TREES = ("/proc", "/sys", "/dev")


def project_dir(value):
    """An absolute, normalised path that is not a system directory (SYSTEM_DIRS)."""
    allowed = ("an absolute, normalised path (no //, . or ..) of plain characters "
               "[A-Za-z0-9._+@/-], not a system directory (/, /etc, /usr, /var, /home, ...) "
               "nor under /proc, /sys or /dev")
    if not isinstance(value, str) or not re.fullmatch(r"/[A-Za-z0-9._+@/-]*", value):
        return allowed
    trimmed = value.rstrip("/") or "/"
    if posixpath.normpath(trimmed) != trimmed:
        return allowed
    if trimmed in SYSTEM_DIRS or trimmed.startswith(tuple(d + "/" for d in VIRTUAL_TREES)):
        return allowed
    return None


# --- image references -----------------------------------------------------------------------
#
# The OCI reference grammar as github.com/distribution/reference writes it (regexp.go:
# alphanumeric, separator, domainNameComponent, ipv6address, optionalPort, tag, digestPat;
# ReferenceRegexp = name [":" tag] ["@" digest]; reference.go: NameTotalLengthMax = 255).
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = f"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_NAME = rf"(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?")
NAME_TOTAL_LENGTH_MAX = 255


def image_reference(value, optional: bool = False):
    """A settings check: an image reference Docker accepts (``registry.lan:5000/sd/webui:1``)."""
    if optional and value in (None, ""):
        return None
    found = IMAGE_REFERENCE.fullmatch(value) if isinstance(value, str) else None
    if not found or len(found.group("name")) > NAME_TOTAL_LENGTH_MAX:
        return ("an image reference like registry.lan:5000/sd/webui:v1 (lower-case name, "
                "optional :tag and @sha256:digest)")
    return None


# POSIX user and group names as adduser accepts them by default.
UNIX_NAME = r"[a-z_][a-z0-9_-]{0,31}"


def list_of(item: Check, what: str) -> Check:
    def check(value):
        if not isinstance(value, (list, tuple)):
            return f"a list of {what}"
        for number, entry in enumerate(value, 1):
            reason = item(entry)
            if reason is not None:
                # The entry is named by its place: the list may be a secret's.
                return f"a list of {what}; entry {number} is not {reason}"
        return None

    return check


unix_names = list_of(matches(UNIX_NAME, "a user name"), "user names")
strings = list_of(text(optional=False), "non-empty strings")


# --- reading and validating ---------------------------------------------------------------------


def read(host, settings: Iterable[Setting]) -> dict[str, Any]:
    """The host's value of each setting, its default where the inventory sets none."""
    get = _data_of(host)
    values = {}
    for setting in settings:
        value = get(setting.name)
        values[setting.name] = setting.default if value is None else value
    return values


# Where a pyinfra host keeps what its data said of each name this run (see _data_of).
_SEEN = "_sdinfra_data_seen"


def _data_of(host) -> Callable[[str], Any]:
    """
    ``host.data.get`` for names, each looked up once per run: pyinfra's host.data walks its five
    layers (override, host, groups, global, @deploy data) for every name, ~340 times 30 names a
    run on 12 hosts (~20 ms of the controller's CPU). The answers are kept while what can change
    them during a run stays the same: the host's overrides (``host.data.x = ...``) and the
    @deploy data in force. Each caller gets its own (shallow) copy, as from host.data.
    """
    if isinstance(host, ContextObject):  # pyinfra's ``host``: the one whose deploy runs now
        host = ctx_host.get() or host
    data = host.data
    if not isinstance(host, Host):  # a stand-in's data (tests): asked as it is
        return lambda name: data.get(name, None)
    deploy = host.get_deploy_data()
    state = (dict(data.override_datas), id(deploy) if deploy else None)
    seen = host.__dict__.get(_SEEN)
    if seen is None or seen[0] != state:
        seen = host.__dict__[_SEEN] = (state, {})
    found = seen[1]

    def get(name: str):
        if name not in found:
            found[name] = data.get(name, None)
        return copy(found[name])

    return get


def shown(setting: Setting, value) -> str:
    """A value as messages may print it: never a secret's, never a password inside a URL."""
    if setting.secret:
        return "(value hidden)"
    return _USERINFO.sub(r"\1***@", repr(value))


_USERINFO = re.compile(r"(://[^/@\s:'\"]*:)[^/@\s'\"]*@")


def problems(host, settings: Iterable[Setting], extra: Callable | None = None) -> list[str]:
    """Every bad setting of one host, each as one line of the message users see."""
    settings = list(settings)
    values = read(host, settings)
    found = []
    for setting in settings:
        allowed = setting.check(values[setting.name])
        if allowed:
            found.append(f"{setting.name} = {shown(setting, values[setting.name])}: "
                         f"allowed is {allowed}")
    if not found and extra is not None:
        found.extend(extra(host, values) or [])
    return found


# Settings of the run itself, whatever the roles: the user's own host-data keys.
COMMON = [
    Setting("own_keys", [], lambda v: None if isinstance(v, (list, tuple)) and all(
        isinstance(k, str) for k in v) else "a list of key names",
            "host-data keys of your own (for your own deploys): never taken for a misspelt "
            "setting"),
    # roles/download.py: a link that goes down mid-download must not hold the run.
    Setting("download_stall_timeout", 60, integer(5, 3600),
            "seconds a download may go below 1 KiB/s (a link that went down) before the "
            "attempt is given up"),
    Setting("download_retries", 3, integer(0, 20),
            "more attempts after a download stalled or failed to connect (30 s each)"),
]


@functools.cache
def pyinfra_keys() -> frozenset[str]:
    """
    The host-data keys pyinfra itself reads: its global arguments (``_sudo``, ...) and each
    connector's data (``ssh_hostname``, ``fake_responses``, ...), from pyinfra's own
    declarations, so that a new pyinfra's keys are known without a list kept here. Read once
    per run: finding the connectors parses every installed package's entry points (~20 ms).
    """
    from pyinfra.api.arguments import all_global_arguments
    from pyinfra.api.connectors import get_all_connectors

    keys = {name for name, _ in all_global_arguments()}
    for connector in get_all_connectors().values():
        keys.update(getattr(connector, "data_meta", {}) or {})
        keys.update(getattr(getattr(connector, "data_cls", None), "__annotations__", {}))
    return frozenset(keys)


@functools.lru_cache(maxsize=None)
def _closest(name: str, known: frozenset[str]) -> str | None:
    """The setting ``name`` is likely a typo of, if any. Kept per run: a fleet's hosts carry
    the same keys of their own, and each look costs ~1 ms per key (difflib against every
    setting)."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    return close[0] if close else None


def role_settings(role: str) -> list[Setting]:
    """A role's SETTINGS: from its package's settings.py, or a module's own (roles/apt.py)."""
    import importlib

    module = importlib.import_module(f"roles.{role}")
    return getattr(module, "settings", module).SETTINGS


def all_settings() -> list[Setting]:
    """Every setting of every role, and the common ones."""
    found = list(COMMON)
    for role in ROLES_WITH_SETTINGS:
        found += role_settings(role)
    return found


def unknown(host, known: set[str], prefixes: tuple[str, ...] = ()) -> list[str]:
    """
    Host-data keys that are no setting but look like one: a key with a role's prefix
    (``webui_verison``), or any key close to a setting's name (``acelerator``, ``webui_prot``,
    ``rocm_users_``). pyinfra's own keys and the ones listed in ``own_keys`` are left alone.
    """
    if not prefixes:
        prefixes = tuple(sorted({name.split("_")[0] + "_" for name in known if "_" in name}))
    own = host.data.get("own_keys", None) or []
    ignored = pyinfra_keys() | set(own if isinstance(own, (list, tuple)) else [])
    known = frozenset(known)
    found = []
    for name in host.data.dict():
        if name in known or name in ignored or not isinstance(name, str):
            continue
        close = _closest(name, known)
        if close:
            found.append(f"{name}: no such setting (did you mean {close}?); a key of your "
                         "own goes into own_keys")
        elif name.startswith(prefixes):
            found.append(f"{name}: no such setting; a key of your own goes into own_keys")
    return found


def validate(*roles) -> None:
    """
    Check the settings of every host in the inventory for the given roles, once per run.

    Each role module passed here offers ``SETTINGS`` (a list of Setting) and may offer
    ``check(host, values) -> list[str]`` for rules that tie settings together. Raises
    SettingsError, naming each host, when anything is wrong; nothing has run on any host yet.
    """
    from pyinfra import state

    from roles import summary

    checked = summary.collector(state).checked  # the verdicts of this run, one per set of roles
    key = tuple(role.__name__ for role in roles)
    if key not in checked:
        # Unknown keys are looked for against every role's settings: a key another deploy
        # reads is no typo here.
        known = {s.name for s in all_settings()}
        lines = []
        for inventory_host in state.inventory:
            host_lines = unknown(inventory_host, known)
            host_lines += problems(inventory_host, COMMON)
            for role in roles:
                host_lines += problems(inventory_host, role.SETTINGS, getattr(role, "check", None))
            lines += [f"  host {inventory_host.name}: {line}" for line in host_lines]
        checked[key] = lines
    if checked[key]:
        bad = sorted({line.split(":", 1)[0].split("host ", 1)[1] for line in checked[key]})
        summary.refused(f"bad settings on {', '.join(bad)}, listed above")
        raise SettingsError(
            "bad settings, no host was changed:\n" + "\n".join(checked[key])
        )


def host_error(message: str) -> SettingsError:
    """An error about the current host's settings or facts, found before anything changed."""
    from roles import summary

    summary.refused(f"host {current_host.name}: {message}")
    return SettingsError(f"host {current_host.name}: {message}; no host was changed")


def markdown_table(settings: Iterable[Setting]) -> str:
    """The README's table of a role's settings, generated so that it cannot drift."""
    rows = ["| setting | default | what it does |", "| --- | --- | --- |"]
    for s in settings:
        default = "" if s.default in (None, "") else f"`{s.default!r}`"
        rows.append(f"| `{s.name}` | {default} | {s.help} |")
    return "\n".join(rows)


# --- the README's tables ----------------------------------------------------------------------

ROLES_WITH_SETTINGS = ("apt", "preflight", "docker", "rocm", "nvidia", "webui", "cache")


def readme_tables(readme: str) -> str:
    """``readme`` with each ``<!-- settings:ROLE -->`` block replaced by the role's table."""
    for role in ("common", *ROLES_WITH_SETTINGS):
        start, end = f"<!-- settings:{role} -->", f"<!-- /settings:{role} -->"
        if start not in readme:
            continue
        declared = COMMON if role == "common" else role_settings(role)
        before, rest = readme.split(start, 1)
        _, after = rest.split(end, 1)
        readme = f"{before}{start}\n{markdown_table(declared)}\n{end}{after}"
    return readme


if __name__ == "__main__":
    # python -m roles.settings README.md: rewrite the README's settings tables from the code.
    import sys
    from pathlib import Path

    for name in sys.argv[1:]:
        path = Path(name)
        path.write_text(readme_tables(path.read_text()))
