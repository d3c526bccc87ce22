"""
The preflight's one remote command, and how its output is cut into sections.

The command prints sections, each opened by a marker line ``### NAME``. The same names are the
file names (``NAME.txt``) of the offline captures that ``python -m roles.preflight explain DIR``
reads, so one parser serves a live host and a folder of captured outputs alike.

Inside a section, lines that start with ``#! `` are notes from the command itself, not tool
output: ``#! missing TOOL`` (the tool is not installed), ``#! unavailable dmesg`` (the kernel log
could not be read, usually for lack of root), ``#! exit N`` (nvidia-smi's exit status) and
``#! df LABEL PATH`` (the next ``df`` row is the filesystem holding LABEL's nearest existing
directory PATH). A missing tool is not an error: its facts are simply unknown.
"""

from __future__ import annotations

import shlex

from roles import parsers
from roles.shell import ROCMINFO

DEFAULT_STACK_DIR = "/opt/stable-diffusion"
DEFAULT_DOCKER_DIR = "/var/lib/docker"

# The sections, in the order the command prints them. nvidia-driver is the kernel module's version
# (/proc/driver/nvidia/version, or `modinfo nvidia`), for hosts whose nvidia-smi is missing.
SECTIONS = (
    "lspci-nn",
    "lspci-vvv",
    "cpuinfo",
    "meminfo",
    "dmesg",
    "rocminfo",
    "nvidia-smi",
    "nvidia-driver",
    "os-release",
    "uname",
    "df",
    "drm-vram",
    "secureboot",
)

MARKER, NOTE = parsers.MARKER, parsers.NOTE  # roles.parsers: the marker protocol of every fact

# --- the one remote command ------------------------------------------------------------------


def command(stack_dir: str = DEFAULT_STACK_DIR, docker_dir: str = DEFAULT_DOCKER_DIR) -> str:
    """
    The single shell command that prints every section. Read-only: it runs lspci, reads /proc,
    /sys and /etc/os-release, asks df, dmesg, rocminfo and nvidia-smi, and always exits 0.
    POSIX sh (dash) compatible, one line so that logs show it whole.
    """
    def df(label: str, path: str) -> str:
        return (
            f"p={shlex.quote(path)}; while [ ! -e \"$p\" ]; do p=${{p%/*}}; p=${{p:-/}}; done; "
            f"echo \"#! df {label} $p\"; df -Pk \"$p\" 2>/dev/null"
        )

    parts = [
        'sec() { echo "### $1"; }',
        'have() { command -v "$1" >/dev/null 2>&1; }',
        "sec lspci-nn",
        "if have lspci; then lspci -nn 2>&1; else echo '#! missing lspci'; fi",
        "sec lspci-vvv",
        # AMD display devices only: their PCIe atomics and link; -nn keeps the IDs in the headers.
        "if have lspci; then lspci -vvv -nn -d 1002: 2>&1; else echo '#! missing lspci'; fi",
        # cpuinfo's lines (the first flags line only), then "### meminfo" and meminfo's: one
        # process for both sections.
        "sec cpuinfo",
        "awk 'FILENAME == \"/proc/meminfo\" && FNR == 1 { print \"### meminfo\" } "
        "FILENAME == \"/proc/cpuinfo\" { if ($0 ~ /^(processor|vendor_id|model name|physical id"
        "|core id|cpu cores|siblings|flags|Features|CPU implementer)[[:space:]]*:/ "
        "&& !($0 ~ /^flags/ && f++)) print; next } "
        "/^(MemTotal|MemAvailable|SwapTotal):/' /proc/cpuinfo /proc/meminfo",
        "sec dmesg",
        # The kernel log (often megabytes) is read only where amdgpu's kfd lines can be: with
        # /dev/kfd, an ATI/AMD graphics PCI device (vendor 0x1002), or no PCI list to tell.
        # Without one the section stays empty, as a log without kfd lines leaves it.
        "amd=; { [ -e /dev/kfd ] || ! [ -d /sys/bus/pci/devices ]; } && amd=1; "
        "for v in /sys/bus/pci/devices/*/vendor; do [ -n \"$amd\" ] && break; "
        "read -r x 2>/dev/null < \"$v\" && [ \"$x\" = 0x1002 ] && amd=1; done; "
        "if [ -n \"$amd\" ]; then "
        "{ dmesg 2>/dev/null || echo '#! unavailable dmesg'; } | grep -i -E "
        "'kfd|atomic|VRAM memory ready|modesetting \\(|^#! unavailable dmesg$'; fi",
        "sec rocminfo",
        # Run as the container's ROCm runs it: no ROC_ENABLE_PRE_VEGA, which ROCr (rocminfo)
        # and HIP never read (ROCR-Runtime rocm-5.3.0 has no such variable; ROCclr reads it
        # for OpenCL only, device/device.hpp runtimeRocSupported).
        f"{ROCMINFO}; if [ -n \"$R\" ]; then \"$R\" 2>&1 | head -n 3000; "
        "else echo '#! missing rocminfo'; fi",
        "sec nvidia-smi",
        # One nvidia-smi (each start costs the driver an initialisation): the query gives whole
        # names, memory, bus ids and the driver; its exit status is noted for the nvidia role,
        # which reuses this section rather than asking nvidia-smi again.
        "if have nvidia-smi; then smi=$(timeout 60 nvidia-smi "
        "--query-gpu=index,name,memory.total,driver_version,pci.bus_id --format=csv 2>&1); "
        "rc=$?; printf '%s\\n' \"$smi\" | head -n 50; echo \"#! exit $rc\"; "
        "else echo '#! missing nvidia-smi'; fi",
        "sec nvidia-driver",
        # Without nvidia-smi, the loaded module's version from /proc and /sys (no process).
        "have nvidia-smi || for f in /proc/driver/nvidia/version /sys/module/nvidia/version; do "
        "[ -r \"$f\" ] && read -r v < \"$f\" && echo \"$v\" && break; done",
        "sec os-release",
        "cat /etc/os-release 2>/dev/null || echo '#! missing /etc/os-release'",
        "sec uname",
        "uname -srm",
        "sec df",
        df("stack", stack_dir),
        df("docker", docker_dir),
        "sec drm-vram",
        "for f in /sys/class/drm/card[0-9]/device/mem_info_vram_total "
        "/sys/class/drm/card[0-9][0-9]/device/mem_info_vram_total; do [ -r \"$f\" ] && "
        "echo \"$(basename \"$(readlink -f \"${f%/mem_info_vram_total}\")\") $(cat \"$f\")\"; done",
        # Secure Boot, for the rocm role's choice of kernel driver (roles/rocm/driver.py): asked
        # where an AMD GPU may be ($amd, from the dmesg section), nothing elsewhere.
        "sec secureboot",
        "if [ -n \"$amd\" ] && have mokutil; then mokutil --sb-state 2>&1; fi",
        "true",
    ]
    return "; ".join(parts)


# --- sections --------------------------------------------------------------------------------


def split_sections(output: str | list[str]) -> dict[str, str]:
    """Cut the command's output into {section name: text} at the ``### NAME`` markers."""
    return {name: "\n".join(body) for name, body in parsers.sections(output).items()}


def split_notes(text: str) -> tuple[list[str], list[str]]:
    """Split a section into (tool output lines, note lines without the ``#! `` prefix)."""
    return parsers.split_notes(text or "")


def section_state(sections: dict[str, str], name: str) -> str:
    """'absent' (not captured), 'missing' (tool not installed), 'unavailable' or 'present'."""
    if name not in sections:
        return "absent"
    _, notes = split_notes(sections[name])
    for note in notes:
        word = note.split()[0] if note.split() else ""
        if word in ("missing", "unavailable"):
            return word
    return "present"
