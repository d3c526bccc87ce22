"""
Everything the rocm role reads from a host, in one round trip, and the parsers of what it reads.

The parsers are plain functions over command output so that they are tested against real
outputs (tests/fixtures/rocm/): ``rocminfo`` with and without a GPU agent, the kernel's kfd
lines, dpkg-query (``DPKG_FIELDS``).
"""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase

from roles import parsers
from roles.parsers import MARKER, dpkg_status
from roles.shell import DPKG_FIELDS, GPU_GROUPS, ROCMINFO, SHOW, group_ids, kept_dpkg

VERSION_FILE = "/opt/rocm/.info/version"
INSTALL_RECORD = "/var/lib/sdinfra/rocm-install"
REBOOT_MARKER = "/var/run/reboot-required"
APT_LISTS = "/etc/apt/sources.list.d/amdgpu*.list /etc/apt/sources.list.d/rocm*.list"
# The http(s) URL of each active deb line of AMD's sources (a commented line is not read by
# apt, and must not make a run rewrite the file again and again).
APT_URIS = ("sed -n 's%^[[:space:]]*deb\\(-src\\)\\{0,1\\}[[:space:]]\\(.*[[:space:]]\\)\\{0,1\\}"
            "\\(https\\{0,1\\}://[^[:space:]]*\\).*%\\3%p' "
            f"-- {APT_LISTS} 2>/dev/null || true")
PACKAGES = ("amdgpu-install", "rocm-core", "rocminfo", "rocm-smi")
GPU_AGENT = re.compile(r"^\s*Name:\s+(gfx[0-9a-f]+)\s*$")
# The same test as GPU_AGENT, for the shell (grep -E) in the verification command.
GPU_AGENT_ERE = r"^[[:space:]]*Name:[[:space:]]+gfx[0-9a-f]+[[:space:]]*$"
KERNEL = "dmesg 2>/dev/null | grep -i kfd | tail -n 20"


def kernel_lines(dmesg: str) -> list[str]:
    """What ``KERNEL`` prints, from a fuller kernel log (the preflight's dmesg section)."""
    return [line for line in dmesg.splitlines()
            if "kfd" in line.lower() and not line.startswith("#! ")][-20:]


def gpu_agents(rocminfo_output: list[str] | str) -> list[str]:
    """The gfx names of the GPU agents ``rocminfo`` lists (``["gfx1100", "gfx1030"]``)."""
    lines = rocminfo_output.splitlines() if isinstance(rocminfo_output, str) else rocminfo_output
    return [m.group(1) for line in lines if (m := GPU_AGENT.match(line))]


def atomics_rejected(kernel_lines: list[str] | str) -> str | None:
    """The kernel's ``PCI rejects atomics`` line for a skipped card, if there is one."""
    lines = kernel_lines.splitlines() if isinstance(kernel_lines, str) else kernel_lines
    for line in lines:
        if "kfd" in line and "rejects atomics" in line:
            return line.strip()
    return None


def record(text_lines: list[str]) -> dict[str, str]:
    """The install record the role writes: ``key=value`` lines."""
    found = {}
    for line in text_lines:
        key, sep, value = line.partition("=")
        if sep:
            found[key.strip()] = value.strip()
    return found


class RocmState(FactBase):
    """
    What the rocm role needs to know about a host: installed release and packages, the files it
    edits, groups and users, a pending reboot, and (with ``verify``) what ``rocminfo`` and the
    kernel say. One command; every part is read-only.

    .. code:: python

        {"rocm_version": "5.3.0-63", "packages": {"amdgpu-install": "5.3.50300-1"},
         "record": {"release": "5.3", ...}, "adduser": "...", "adduser_exists": True,
         "environment": "...", "groups": {"video": "44", "render": "109"},
         "users": {"sd": ["sd", "video"]}, "reboot_pkgs": ["amdgpu-dkms"],
         "reboot_required": True, "rocminfo": [...], "rocminfo_found": True,
         "kernel": ["... kfd kfd: amdgpu: skipped device 1002:67ef, PCI rejects atomics 730<0"],
         "apt_uris": ["https://repo.radeon.com/amdgpu/5.3/ubuntu"],
         "uname": "5.15.0-56-generic", "sb_state": "SecureBoot disabled"}
    """

    # The parts, each after a "### NAME" line (roles.parsers); a part that is a yes or no is a
    # section of its own, printed or not ("adduser" only when /etc/adduser.conf exists,
    # "reboot-required", "rocminfo" only when there is one to run).
    ahead = "rocm-state"  # its part's name when read ahead (roles.hostfacts)
    SECTIONS = ("rocm-state", "version", "dpkg", "record", "adduser", "environment", "groups",
                "users", "reboot-required", "reboot", "apt", "rocminfo", "kernel", "uname",
                "sb-state", "end")

    def command(self, users: str = "", verify: bool = False, env: str = "",
                rocminfo: bool = True, kernel: bool = True, driver: bool = False):
        # rocminfo=False, kernel=False: the caller has that part from this run already (the
        # preflight's fact ran rocminfo and read the kernel log).
        quoted_users = " ".join(shlex.quote(u) for u in users.split())
        parts = [
            f"echo '{MARKER}rocm-state'",
            SHOW,
            f"echo '{MARKER}version'; show {VERSION_FILE}",
            f"echo '{MARKER}dpkg'; {kept_dpkg(DPKG_FIELDS + ' ' + ' '.join(PACKAGES))}",
            f"echo '{MARKER}record'; show {INSTALL_RECORD}",
            f"[ -e /etc/adduser.conf ] && {{ echo '{MARKER}adduser'; show /etc/adduser.conf; }}",
            f"echo '{MARKER}environment'; show /etc/environment",
            f"echo '{MARKER}groups'; {GPU_GROUPS}",
            # `id` fails for a user without an account: one process per user.
            f"echo '{MARKER}users'; for u in {quoted_users}; do "
            'if g=$(id -Gn -- "$u" 2>/dev/null); then echo "$u:$g"; '
            'else echo "$u:!missing"; fi; done',
            f"[ -e {REBOOT_MARKER} ] && echo '{MARKER}reboot-required'",
            f"echo '{MARKER}reboot'; show {REBOOT_MARKER}.pkgs",
            f"echo '{MARKER}apt'; {APT_URIS}",
        ]
        if verify and rocminfo:
            parts.append(f"{ROCMINFO}; if [ -n \"$R\" ]; then "
                         f"echo '{MARKER}rocminfo'; {env} timeout 120 \"$R\" 2>&1; fi")
        if verify and kernel:
            parts.append(f"echo '{MARKER}kernel'; {KERNEL}")
        if driver:
            # What roles.rocm.driver decides from, when the preflight did not read it already.
            parts.append(f"echo '{MARKER}uname'; uname -r; echo '{MARKER}sb-state'; "
                         "command -v mokutil >/dev/null 2>&1 && mokutil --sb-state 2>&1")
        parts.append(f"echo '{MARKER}end'; true")
        return "; ".join(parts)

    @staticmethod
    def default():
        return {"rocm_version": "", "packages": {}, "record": {}, "adduser": "",
                "adduser_exists": False, "environment": "", "groups": {}, "users": {},
                "reboot_pkgs": [], "reboot_required": False, "rocminfo": [],
                "rocminfo_found": False, "kernel": [], "apt_uris": [], "uname": None,
                "sb_state": None}

    def process(self, output):
        sections = parsers.sections(output, self.SECTIONS)
        state = self.default()
        version = [line.strip() for line in sections.get("version", []) if line.strip()]
        state["rocm_version"] = version[0] if version else ""
        state["packages"] = dpkg_status(sections.get("dpkg", []))
        state["record"] = record(sections.get("record", []))
        state["adduser_exists"] = "adduser" in sections
        adduser = sections.get("adduser", [])
        state["adduser"] = "\n".join(adduser) + "\n" if adduser else ""
        environment = sections.get("environment", [])
        state["environment"] = "\n".join(environment) + "\n" if environment else ""
        state["groups"] = group_ids(sections.get("groups", []))
        for line in sections.get("users", []):  # USER:GROUP GROUP ... (id -Gn)
            name, _, groups = line.partition(":")
            if name:
                state["users"][name] = None if groups == "!missing" else groups.split()
        state["reboot_required"] = "reboot-required" in sections
        state["reboot_pkgs"] = [p.strip() for p in sections.get("reboot", []) if p.strip()]
        state["rocminfo_found"] = "rocminfo" in sections
        state["rocminfo"] = sections.get("rocminfo", [])
        state["kernel"] = sections.get("kernel", [])
        state["apt_uris"] = [u.strip() for u in sections.get("apt", []) if u.strip()]
        uname = [line.strip() for line in sections.get("uname", []) if line.strip()]
        state["uname"] = uname[0] if uname else None
        state["sb_state"] = "\n".join(sections.get("sb-state", [])).strip() or None
        return state
