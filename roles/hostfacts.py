"""
What this run learned about one host, in one record that the deploy passes to each role.

A deploy builds it once per host (``preflight.learn()``: the hardware, the distribution and the
launch plan from the preflight's one command; ``hostfacts.learn()`` without the hardware for
deploy/docker.py) and hands it to the roles (``docker.install(known)``). Each role keeps what
its own fact read in it (``docker``, ``rocm``, ``nvidia``), so that a later step of the same run
asks the host nothing again, and takes what an earlier step learned from it (the nvidia role
reuses the preflight's nvidia-smi answer, the rocm role its rocminfo and kernel lines) without
importing that step's module.

.. code:: python

    from roles import docker, preflight, webui
    known = preflight.learn()              # one remote command
    docker.install(known)                  # known.docker: what the docker role read
    webui.stack(backend=known.plan.backend, known=known)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from roles import distro as distros
from roles.distro import Distro
from roles.parsers import split_notes


@dataclass
class HostFacts:
    host: Any  # the pyinfra host
    # The preflight's facts (roles.preflight.facts.parse), with "raw": the sections as printed;
    # None when this deploy did not read the hardware.
    hardware: dict | None = None
    plan: Any = None  # the preflight's Decision for the host: backend, flags, env, torch build
    docker: dict | None = None  # the docker role's DockerState: packages, daemon.json, service
    rocm: dict | None = None  # the rocm role's RocmState: release, packages, groups, users
    nvidia: dict | None = None  # the nvidia role's NvidiaState and what install() did to it
    dpkg_finished: bool = False  # an interrupted dpkg run is finished (or waited for) this run
    _distro: Distro | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def distro(self) -> Distro:
        """The distribution: the preflight's /etc/os-release when it read it, else pyinfra's
        LinuxDistribution fact, asked once."""
        if self._distro is None and self.section_state("os-release") == "present":
            self._distro = distros.from_os_release(self.section("os-release"))
        if self._distro is None:
            from pyinfra.facts.server import LinuxDistribution

            self._distro = distros.from_meta(self.host.get_fact(LinuxDistribution)["release_meta"])
        return self._distro

    def section_state(self, name: str) -> str:
        """How the preflight's command fared with a section: ``present``, ``missing`` (the
        tool is not installed), ``unavailable``, or ``absent`` (not read in this run)."""
        if self.hardware is None:
            return "absent"
        return self.hardware["sections"].get(name, "absent")

    def section(self, name: str) -> str | None:
        """A section of the preflight's command as printed, without the command's notes; None
        when this run did not print it."""
        raw = (self.hardware or {}).get("raw", {})
        if name not in raw:
            return None
        return "\n".join(split_notes(raw[name])[0])


def learn(host) -> HostFacts:
    """The record of a deploy that reads no hardware (deploy/docker.py)."""
    return HostFacts(host)
