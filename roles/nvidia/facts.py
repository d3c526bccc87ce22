"""
Everything the nvidia role reads from a host, in one round trip, and the parsers of what it reads.
"""

from __future__ import annotations

import json
import re
import shlex

from pyinfra.api import FactBase

from roles import parsers
from roles.parsers import MARKER, NOTE, architecture, dpkg_status, key_fingerprints
from roles.shell import DOCKER_PID, DOCKERD_RUNNING, DPKG_FIELDS, SHOW_KEY, kept_dpkg

KEYRING = "/etc/apt/keyrings/nvidia-container-toolkit.asc"
SOURCES = "/etc/apt/sources.list.d/nvidia-container-toolkit.sources"
# The files NVIDIA's install guide (and older guides) write for the same repository: with another
# Signed-By for the same URI, apt refuses every update ("Conflicting values set for option
# Signed-By"), so they go when the .sources file replaces them.
LEGACY_LISTS = ("/etc/apt/sources.list.d/nvidia-container-toolkit.list",
                "/etc/apt/sources.list.d/libnvidia-container.list",
                "/etc/apt/sources.list.d/nvidia-docker.list")
DAEMON_JSON = "/etc/docker/daemon.json"
REBOOT_MARKER = "/var/run/reboot-required"
DRIVER_VERSION = re.compile(r"Driver Version:\s*([0-9][0-9.]*)")


def driver_version(nvidia_smi_output: list[str] | str) -> str | None:
    """The driver version in ``nvidia-smi``'s table, None when it does not show one."""
    text = nvidia_smi_output if isinstance(nvidia_smi_output, str) else "\n".join(nvidia_smi_output)
    found = DRIVER_VERSION.search(text)
    return found.group(1) if found else None


class NvidiaState(FactBase):
    """
    What the nvidia role needs to know about a host, in one command: whether ``nvidia-smi``
    answers (unless ``smi=False``), the architecture, packages, the repository's key and source,
    daemon.json, whether the running Docker has loaded it (``runtimes_current``, from file times)
    or else the runtimes it has loaded (``docker info``), a pending reboot.

    .. code:: python

        {"smi": [...], "smi_rc": 0, "smi_found": True, "driver": "535.54.03", "arch": "amd64",
         "packages": {"nvidia-container-toolkit": "1.17.8-1"}, "key_fprs": ["C95B..."],
         "sources": "...", "legacy": [], "daemon": {"runtimes": {...}},
         "runtimes": ["io.containerd.runc.v2", "nvidia", "runc"], "runtimes_current": False,
         "reboot_pkgs": [],
         "reboot_required": False}
    """

    # The parts, each after a "### NAME" line (roles.parsers); nvidia-smi's exit status is a
    # note in its part ("#! exit N", as in the preflight's), yes-or-no parts are sections of
    # their own ("runtimes-current", "reboot-required").
    ahead = "nvidia-state"  # its part's name when read ahead (roles.hostfacts)
    SECTIONS = ("nvidia-state", "smi", "dpkg", "key", "sources", "legacy", "daemon",
                "runtimes", "runtimes-current", "reboot-required", "reboot", "end")

    def command(self, driver_package: str = "", smi: bool = True):
        packages = " ".join(shlex.quote(p) for p in ["nvidia-container-toolkit", driver_package]
                            if p)
        legacy = " ".join(LEGACY_LISTS)
        # With smi=False nvidia-smi is not run: the caller has its answer from this run already
        # (the preflight's fact).
        smi_part = (f"echo '{MARKER}smi'; if command -v nvidia-smi >/dev/null 2>&1; then "
                    f"timeout 60 nvidia-smi 2>&1; echo \"{NOTE}exit $?\"; "
                    f"else echo '{NOTE}missing nvidia-smi'; fi") if smi else f"echo '{NOTE}smi-skipped'"
        # Whether the running dockerd has loaded daemon.json as it is now: dockerd reads it
        # before it writes its pid file, so a pid file (of a live dockerd) newer than daemon.json
        # says so without asking Docker; otherwise `docker info` lists the loaded runtimes (a
        # SIGHUP reload, a daemon.json written after the start). The shell's own test, not
        # `find PID -newer JSON` (a process: a millisecond of the host's CPU), false as find's
        # when either file is missing: dash's -nt is false without the first file, but true
        # without the second in newer releases (bltin/test.c newerf(), as bash), hence -e.
        # dash compares to the nanosecond where stat has st_mtim (HAVE_ST_MTIM; Debian 12's
        # 0.5.12 does, checked by the unit tests with a tenth of a second); one comparing whole
        # seconds would only ask Docker more often.
        runtimes = (
            f"echo '{MARKER}runtimes'; if command -v docker >/dev/null 2>&1; then "
            f"if {DOCKERD_RUNNING} && [ -e {DAEMON_JSON} ] && "
            f"[ {DOCKER_PID} -nt {DAEMON_JSON} ]; then echo '{MARKER}runtimes-current'; "
            "else timeout 30 docker info --format '{{json .Runtimes}}' 2>/dev/null; fi; fi"
        )
        return "; ".join([
            f"echo '{MARKER}nvidia-state'",
            SHOW_KEY,
            smi_part,
            # dpkg's own package says the architecture: the one dpkg was built for, which is
            # what dpkg --print-architecture prints (dpkg 1.21.22 src/main/enquiry.c
            # printarch(), line 598: lib/dpkg/arch.c's native arch, line 103: ARCHITECTURE,
            # the build's host architecture). One dpkg-query instead of two dpkg runs.
            f"echo '{MARKER}dpkg'; {kept_dpkg(f'{DPKG_FIELDS} dpkg {packages}')}",
            f"echo '{MARKER}key'; show_key {KEYRING}",
            f"echo '{MARKER}sources'; show {SOURCES}",
            f"echo '{MARKER}legacy'; for f in {legacy}; do [ -e \"$f\" ] && echo \"$f\"; done",
            f"echo '{MARKER}daemon'; show {DAEMON_JSON}",
            runtimes,
            f"[ -e {REBOOT_MARKER} ] && echo '{MARKER}reboot-required'",
            f"echo '{MARKER}reboot'; show {REBOOT_MARKER}.pkgs",
            f"echo '{MARKER}end'; true",
        ])

    @staticmethod
    def default():
        return {"smi": [], "smi_rc": None, "smi_found": False, "driver": None, "arch": "",
                "packages": {}, "key_fprs": [], "sources": "", "legacy": [], "daemon": {},
                "daemon_valid": True, "runtimes": None, "runtimes_current": False,
                "reboot_pkgs": [], "reboot_required": False}

    def process(self, output):
        sections = parsers.sections(output, self.SECTIONS)
        state = self.default()
        smi, notes = parsers.split_notes(sections.get("smi", []))
        for note in notes:
            word, _, rc = note.partition(" ")
            if word == "exit":
                state["smi_found"] = True
                state["smi_rc"] = int(rc) if rc.isdigit() else None
        state["runtimes_current"] = "runtimes-current" in sections
        state["reboot_required"] = "reboot-required" in sections
        state["smi"] = smi
        state["driver"] = driver_version(state["smi"])
        state["arch"] = architecture(sections.get("dpkg", []), "dpkg")
        state["packages"] = {name: version
                             for name, version in dpkg_status(sections.get("dpkg", [])).items()
                             if name != "dpkg"}
        state["key_fprs"] = key_fingerprints(sections.get("key", []))
        sources = sections.get("sources", [])
        state["sources"] = "\n".join(sources) + "\n" if sources else ""
        state["legacy"] = [line.strip() for line in sections.get("legacy", []) if line.strip()]
        daemon = "\n".join(sections.get("daemon", [])).strip()
        if daemon:
            try:
                state["daemon"] = json.loads(daemon)
            except ValueError as error:
                state["daemon"], state["daemon_valid"] = {}, False
                state["daemon_error"] = str(error)
        runtimes = "\n".join(sections.get("runtimes", [])).strip()
        if runtimes:
            try:
                state["runtimes"] = sorted(json.loads(runtimes))
            except (ValueError, TypeError):
                state["runtimes"] = None
        state["reboot_pkgs"] = [p.strip() for p in sections.get("reboot", []) if p.strip()]
        return state
