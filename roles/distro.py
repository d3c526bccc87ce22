"""
The host's distribution, read once from /etc/os-release through pyinfra's LinuxDistribution fact.

Derivatives (Linux Mint, Pop!_OS, ...) name their Ubuntu base in ``UBUNTU_CODENAME``; the roles
use that, so a Mint 21 host is treated as jammy.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pyinfra import host
from pyinfra.facts.server import LinuxDistribution


@dataclass(frozen=True)
class Distro:
    id: str  # "ubuntu", "debian", "linuxmint", ...
    version: str  # "22.04", "12"
    codename: str  # the distribution's own codename: "jammy", "bookworm", "vera"
    ubuntu_codename: str  # the Ubuntu base, "" when not Ubuntu-based
    family: str  # "ubuntu" or "debian": whose packages and repositories fit this host

    @property
    def label(self) -> str:
        return f"{self.id} {self.version} ({self.codename})"

    def version_at_least(self, wanted: str) -> bool:
        def parts(text):
            return tuple(int(p) for p in text.split(".") if p.isdigit())

        return parts(self.version) >= parts(wanted)


_read: dict = {}


def read() -> Distro:
    """The current host's distribution; asked once per host and run (pyinfra does not cache),
    not at all when the host's /etc/os-release was read already (``remember``)."""
    key = (id(host.state), host.name)
    if key not in _read:
        _read[key] = _parse(host.get_fact(LinuxDistribution)["release_meta"])
    return _read[key]


def remember(target, os_release: str) -> None:
    """The distribution of ``target`` (a pyinfra host) is the one of this /etc/os-release text,
    read by another fact of the same run (the preflight's): ``read`` asks nothing more."""
    meta = os_release_values(os_release)
    if meta.get("ID"):
        _read[(id(target.state), target.name)] = _parse(meta)


def os_release_values(text: str) -> dict:
    """KEY=value lines of os-release(5), shell-quoted values unquoted, as pyinfra reads them."""
    values = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if not sep or not name.isidentifier() or name.startswith("#"):
            continue
        try:
            words = shlex.split(value, comments=False)
        except ValueError:
            continue
        values[name.upper()] = " ".join(words)
    return values


def _parse(meta: dict) -> Distro:
    distro_id = meta.get("ID", "").lower()
    like = meta.get("ID_LIKE", "").lower().split()
    ubuntu_codename = meta.get("UBUNTU_CODENAME", "")
    if distro_id == "ubuntu":
        ubuntu_codename = ubuntu_codename or meta.get("VERSION_CODENAME", "")
    family = "ubuntu" if distro_id == "ubuntu" or ubuntu_codename or "ubuntu" in like else "debian"
    return Distro(
        id=distro_id,
        version=meta.get("VERSION_ID", ""),
        codename=meta.get("VERSION_CODENAME", ""),
        ubuntu_codename=ubuntu_codename,
        family=family,
    )
