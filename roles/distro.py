"""
A host's distribution, from its /etc/os-release (roles.parsers.os_release): the preflight's
command prints it, pyinfra's LinuxDistribution fact reads it where the preflight did not run
(roles.hostfacts keeps it for the run).

Derivatives (Linux Mint, Pop!_OS, ...) name their Ubuntu base in ``UBUNTU_CODENAME``; the roles
use that, so a Mint 21 host is treated as jammy.
"""

from __future__ import annotations

from dataclasses import dataclass

from roles.parsers import os_release


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


def from_os_release(text: str) -> Distro | None:
    """The distribution this /etc/os-release text names; None when it names none (no ID)."""
    meta = os_release(text)
    return from_meta(meta) if meta.get("ID") else None


def from_meta(meta: dict) -> Distro:
    """From os-release's values (pyinfra's LinuxDistribution fact: its ``release_meta``)."""
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
