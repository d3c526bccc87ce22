"""
Everything the nvidia role reads from a host, in one round trip, and the parsers of what it reads.
"""

from __future__ import annotations

import json
import re
import shlex

from pyinfra.api import FactBase

from roles.parsers import dpkg_status
from roles.shell import DOCKER_PID, DOCKERD_RUNNING, SHOW

MARK = "##sdinfra:"
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

    # Reads use a shell function rather than "cat PATH", and "gpg --with-colons --show-keys"
    # rather than the other order, so that the command shares no text with the facts of other
    # roles (tests answer commands by the text they contain).
    def command(self, driver_package: str = "", smi: bool = True):
        packages = " ".join(shlex.quote(p) for p in ["nvidia-container-toolkit", driver_package]
                            if p)
        legacy = " ".join(LEGACY_LISTS)
        # With smi=False nvidia-smi is not run: the caller has its answer from this run already
        # (the preflight's fact).
        smi_part = (f"echo '{MARK}smi'; if command -v nvidia-smi >/dev/null 2>&1; then "
                    f"timeout 60 nvidia-smi 2>&1; echo \"{MARK}smi-rc=$?\"; "
                    f"else echo '{MARK}smi-missing'; fi") if smi else f"echo '{MARK}smi-skipped'"
        # Whether the running dockerd has loaded daemon.json as it is now: dockerd reads it
        # before it writes its pid file, so a pid file (of a live dockerd) newer than daemon.json
        # says so without asking Docker; otherwise `docker info` lists the loaded runtimes (a
        # SIGHUP reload, a daemon.json written after the start).
        runtimes = (
            f"echo '{MARK}runtimes'; if command -v docker >/dev/null 2>&1; then "
            f"if {DOCKERD_RUNNING} && [ -n \"$(find {DOCKER_PID} -newer {DAEMON_JSON} "
            f"2>/dev/null)\" ]; then echo '{MARK}runtimes-current'; "
            "else timeout 30 docker info --format '{{json .Runtimes}}' 2>/dev/null; fi; fi"
        )
        return "; ".join([
            f"echo '{MARK}nvidia-state'",
            SHOW,
            smi_part,
            f"echo '{MARK}arch'; dpkg --print-architecture 2>/dev/null",
            f"echo '{MARK}dpkg'; dpkg -s {packages} 2>/dev/null",
            f"echo '{MARK}key'; [ -e {KEYRING} ] && gpg --with-colons --show-keys {KEYRING} "
            "2>/dev/null | awk -F: '$1==\"pub\"{p=1;next} p && $1==\"fpr\"{print $10; p=0}'",
            f"echo '{MARK}sources'; show {SOURCES}",
            f"echo '{MARK}legacy'; for f in {legacy}; do [ -e \"$f\" ] && echo \"$f\"; done",
            f"echo '{MARK}daemon'; show {DAEMON_JSON}",
            runtimes,
            f"echo '{MARK}reboot'; [ -e {REBOOT_MARKER} ] && echo '{MARK}reboot-required'; "
            f"show {REBOOT_MARKER}.pkgs",
            f"echo '{MARK}end'; true",
        ])

    @staticmethod
    def default():
        return {"smi": [], "smi_rc": None, "smi_found": False, "driver": None, "arch": "",
                "packages": {}, "key_fprs": [], "sources": "", "legacy": [], "daemon": {},
                "daemon_valid": True, "runtimes": None, "runtimes_current": False,
                "reboot_pkgs": [], "reboot_required": False}

    def process(self, output):
        sections: dict[str, list[str]] = {}
        state = self.default()
        current = None
        for line in output:
            if line.startswith(MARK):
                name = line[len(MARK):].strip()
                if name.startswith("smi-rc="):
                    state["smi_found"] = True
                    rc = name.split("=", 1)[1]
                    state["smi_rc"] = int(rc) if rc.isdigit() else None
                elif name == "reboot-required":
                    state["reboot_required"] = True
                elif name == "runtimes-current":
                    state["runtimes_current"] = True
                elif name not in ("smi-missing", "smi-skipped"):
                    current = name
                    sections.setdefault(current, [])
            elif current is not None:
                sections[current].append(line)
        state["smi"] = sections.get("smi", [])
        state["driver"] = driver_version(state["smi"])
        arch = [line.strip() for line in sections.get("arch", []) if line.strip()]
        state["arch"] = arch[0] if arch else ""
        state["packages"] = dpkg_status(sections.get("dpkg", []))
        state["key_fprs"] = [line.strip() for line in sections.get("key", []) if line.strip()]
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
