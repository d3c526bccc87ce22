"""
The preflight's one remote command, and how its output is cut into sections.

The command prints sections, each opened by a marker line ``### NAME``. The same names are the
file names (``NAME.txt``) of the offline captures that ``python -m roles.preflight explain DIR``
reads, so one parser serves a live host and a folder of captured outputs alike.

Inside a section, lines that start with ``#! `` are notes from the command itself, not tool
output: ``#! missing TOOL`` (the tool is not installed), ``#! unavailable dmesg`` (the kernel log
could not be read, usually for lack of root), ``#! exit N`` (nvidia-smi's exit status),
``#! df LABEL PATH`` (the ``df`` rows after these notes are, in the notes' order, the
filesystems holding each LABEL's nearest existing directory PATH) and ``#! skipped ...`` (the kernel log was not read: it could tell nothing more,
see SKIPPED_NOTE). A missing tool is not an error: its facts are simply unknown.
"""

from __future__ import annotations

import shlex

from roles import parsers
from roles import shell
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

# The dmesg section's note when the kernel log was not read because rocminfo lists a GPU agent
# for each AMD GPU of the PCI list: kfd accepted them all, so the log holds no verdict that
# changes a decision (a pasted dmesg.txt may hold this line too).
SKIPPED_NOTE = "skipped rocminfo lists a GPU agent for each AMD GPU"

# --- the one remote command ------------------------------------------------------------------


# The last line of the kept answers, an empty section: the lines above it were written whole.
KEPT = "kept"

# What makes the kept sections stale before the next boot, besides dpkg's status: a program
# added where the tools live, a device node added or removed (/dev/kfd, /dev/nvidia*,
# /dev/dri/renderD*), the amdgpu or nvidia module loaded again.
KEEP_WATCH = (*shell.DPKG_WATCH, "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin",
              "/opt/rocm/bin", "/dev", "/dev/dri", "/sys/module/amdgpu", "/sys/module/nvidia")


def command(stack_dir: str = DEFAULT_STACK_DIR, docker_dir: str = DEFAULT_DOCKER_DIR,
            keep: bool = False) -> str:
    """
    The single shell command that prints every section. Read-only (but for what ``keep``
    keeps): it runs lspci, reads /proc, /sys and /etc/os-release, asks df, dmesg, rocminfo and
    nvidia-smi, and always exits 0.
    POSIX sh (dash) compatible, one line so that logs show it whole.

    ``keep`` (HardwareFacts): the sections that only a boot, a package, a new program or a
    device changes (the PCI list, the CPU, the kernel log's kfd lines, rocminfo, nvidia-smi,
    uname, VRAM, Secure Boot) are kept (roles.shell.kept) and printed from there until one of
    KEEP_WATCH is newer or the key differs (the boot id, PATH, the PCI devices, the GPU device
    nodes and modules, this command's own text). Real rocminfo and nvidia-smi cost a host
    tenths of a second each run; a converged host pays one ``cat``. Not kept when a tool
    failed (a rocminfo that lists no agent, an nvidia-smi that exits non-zero): it is asked
    again next run. Memory, os-release and df are read each run.
    """
    def nearest(var: str, path: str) -> str:
        """``var`` = ``path``'s nearest existing directory (itself when it exists)."""
        return (f"{var}={shlex.quote(path)}; while [ ! -e \"${var}\" ]; do {var}=${{{var}%/*}}; "
                f"{var}=${{{var}:-/}}; done")

    # The sections a boot fixes, in a function: printed to the cache file or to the output.
    # $keep is emptied when an answer should not be kept.
    fixed = "; ".join([
        "sec lspci-nn",
        "if have lspci; then lspci -nn 2>&1; else echo '#! missing lspci'; fi",
        "sec lspci-vvv",
        # AMD display devices only: their PCIe atomics and link; -nn keeps the IDs in the headers.
        "if have lspci; then lspci -vvv -nn -d 1002: 2>&1; else echo '#! missing lspci'; fi",
        # cpuinfo's lines, the first flags line only.
        "sec cpuinfo",
        "awk '/^(processor|vendor_id|model name|physical id"
        "|core id|cpu cores|siblings|flags|Features|CPU implementer)[[:space:]]*:/ "
        "&& !(/^flags/ && f++)' /proc/cpuinfo",
        # rocminfo runs before the kernel log is read (its section is printed after), as the
        # container's ROCm runs it: no ROC_ENABLE_PRE_VEGA, which ROCr (rocminfo) and HIP never
        # read (ROCR-Runtime rocm-5.3.0 has no such variable; ROCclr reads it for OpenCL only,
        # device/device.hpp runtimeRocSupported). Bounded as the rocm role bounds it: a rocminfo
        # that hangs on a broken kfd must not hang the run. One that lists no agent failed.
        f"{ROCMINFO}; r=; if [ -n \"$R\" ]; then r=$(timeout 120 \"$R\" 2>&1 | head -n 3000); "
        "case $r in *Agent*) ;; *) keep= ;; esac; fi",
        "sec dmesg",
        # The kernel log (often megabytes: ~9 ms of a container's CPU to format and filter) is
        # read only where amdgpu's kfd lines can be ($amd), and not where they can tell nothing
        # more: a GPU agent is a device kfd added, and kfd adds only AMD devices of the PCI list,
        # so when rocminfo lists as many GPU agents ("Device Type: GPU"; counted with set -f, as
        # rocminfo prints "*******") as the list has AMD GPUs ($d), kfd rejected none, and the
        # GPUs, their gfx targets and VRAM come from rocminfo. SKIPPED_NOTE says so. With fewer
        # agents (a card kfd skipped), no rocminfo, a failed one or no PCI list, it is read.
        "if [ -n \"$amd\" ]; then n=0; if [ -n \"$r\" ] && [ -d /sys/bus/pci/devices ]; then "
        "set -f; p=; for w in $r; do [ \"$p$w\" = Type:GPU ] && n=$((n + 1)); p=$w; done; "
        "set +f; fi; "
        "if [ \"$n\" -gt 0 ] && [ \"$n\" -ge \"$d\" ]; then "
        f"echo '#! {SKIPPED_NOTE}'; else "
        "{ dmesg 2>/dev/null || echo '#! unavailable dmesg'; } | grep -i -E "
        "'kfd|atomic|VRAM memory ready|modesetting \\(|^#! unavailable dmesg$'; fi; fi",
        "sec rocminfo",
        "if [ -z \"$R\" ]; then echo '#! missing rocminfo'; "
        "elif [ -n \"$r\" ]; then printf '%s\\n' \"$r\"; fi",
        "sec nvidia-smi",
        # One nvidia-smi (each start costs the driver an initialisation): the query gives whole
        # names, memory, bus ids and the driver; its exit status is noted for the nvidia role,
        # which reuses this section rather than asking nvidia-smi again. Its output is bounded:
        # printed by the shell when it is 4096 characters or less (a header and a ~70-character
        # row per GPU, or an error line; no process), else cut to 50 lines by head.
        "if have nvidia-smi; then smi=$(timeout 60 nvidia-smi "
        "--query-gpu=index,name,memory.total,driver_version,pci.bus_id --format=csv 2>&1); "
        "rc=$?; [ $rc -eq 0 ] || keep=; if [ ${#smi} -le 4096 ]; then printf '%s\\n' \"$smi\"; "
        "else printf '%s\\n' \"$smi\" | head -n 50; fi; echo \"#! exit $rc\"; "
        "else echo '#! missing nvidia-smi'; fi",
        "sec nvidia-driver",
        # Without nvidia-smi, the loaded module's version from /proc and /sys (no process).
        "have nvidia-smi || for f in /proc/driver/nvidia/version /sys/module/nvidia/version; do "
        "[ -r \"$f\" ] && read -r v < \"$f\" && echo \"$v\" && break; done",
        "sec uname",
        "uname -srm",
        "sec drm-vram",
        "for f in /sys/class/drm/card[0-9]/device/mem_info_vram_total "
        "/sys/class/drm/card[0-9][0-9]/device/mem_info_vram_total; do [ -r \"$f\" ] && "
        "echo \"$(basename \"$(readlink -f \"${f%/mem_info_vram_total}\")\") $(cat \"$f\")\"; done",
        # Secure Boot, for the rocm role's choice of kernel driver (roles/rocm/driver.py): asked
        # where an AMD GPU may be ($amd, set before rocminfo runs), nothing elsewhere.
        "sec secureboot",
        "if [ -n \"$amd\" ] && have mokutil; then mokutil --sb-state 2>&1; fi",
    ])
    parts = [
        'sec() { echo "### $1"; }',
        'have() { command -v "$1" >/dev/null 2>&1; }',
        # Where an AMD GPU may be ($amd: /dev/kfd, an ATI/AMD PCI device (vendor 0x1002), or no
        # PCI list to tell), how many AMD display or accelerator devices (class 0x03, 0x12) the
        # PCI list holds ($d), and how many devices ($np, for the cache's key). Builtins only:
        # each process costs a container ~1 ms of CPU.
        "amd=; d=0; np=0; { [ -e /dev/kfd ] || ! [ -d /sys/bus/pci/devices ]; } && amd=1; "
        "for v in /sys/bus/pci/devices/*/vendor; do np=$((np + 1)); read -r x 2>/dev/null < "
        "\"$v\" && [ \"$x\" = 0x1002 ] && amd=1 && read -r c 2>/dev/null < "
        "\"${v%/vendor}/class\" && case $c in 0x03*|0x12*) d=$((d + 1));; esac; done",
        f"fixed() {{ {fixed}; }}",
        _kept(fixed) if keep else "fixed",
        # The rest changes while the host runs. meminfo up to SwapTotal, by the shell.
        "sec meminfo",
        "while IFS= read -r l; do case $l in MemTotal:*|MemAvailable:*) printf '%s\\n' \"$l\" ;; "
        "SwapTotal:*) printf '%s\\n' \"$l\"; break ;; esac; done < /proc/meminfo",
        "sec os-release",
        # Read by the shell, not cat (0.13 ms of CPU instead of 0.87 ms a run, measured with
        # dash): line by line as it is, backslashes and blanks kept, a last line without its
        # newline ended with one (cat would glue the next marker to it).
        "{ while IFS= read -r l || [ -n \"$l\" ]; do printf '%s\\n' \"$l\"; done "
        "< /etc/os-release; } 2>/dev/null || echo '#! missing /etc/os-release'",
        "sec df",
        # One df for both (each process costs a container ~1 ms of CPU): its rows come in the
        # order of its arguments, the notes' order; GNU df prints a row for each argument, the
        # same mount twice too.
        nearest("p", stack_dir),
        nearest("q", docker_dir),
        "echo \"#! df stack $p\"; echo \"#! df docker $q\"; df -Pk \"$p\" \"$q\" 2>/dev/null",
        "true",
    ]
    return "; ".join(parts)


def _kept(fixed: str) -> str:
    """Shell: the ``fixed()`` sections kept (see command). The file ends with KEPT's marker,
    whose echo fails when the file system is full, as any write before it then did."""
    return "; ".join([
        "b=; read -r b < /proc/sys/kernel/random/boot_id 2>/dev/null",
        "k=; for f in /dev/kfd /dev/nvidiactl /sys/module/amdgpu /sys/module/nvidia; do "
        "[ -e \"$f\" ] && k=\"$k $f\"; done",
        shell.kept("preflight", f"sdinfra-preflight {shell.digest(fixed)} boot=$b pci=$np "
                   "amd=$amd/$d path=$PATH has=$k", KEEP_WATCH,
                   "keep=1; if [ -n \"$kf\" ] && { echo \"$kk\"; fixed; "
                   f"echo '{MARKER}{KEPT}'; }} > \"$kf\" 2>/dev/null; then "
                   "[ -n \"$keep\" ] && kw=1; "
                   "{ read -r h; cat; } < \"$kf\"; else fixed; fi"),
    ])


# --- sections --------------------------------------------------------------------------------


def split_sections(output: str | list[str]) -> dict[str, str]:
    """Cut the command's output into {section name: text} at the ``### NAME`` markers."""
    return {name: "\n".join(body) for name, body in parsers.sections(output).items()}


def split_notes(text: str) -> tuple[list[str], list[str]]:
    """Split a section into (tool output lines, note lines without the ``#! `` prefix)."""
    return parsers.split_notes(text or "")


def section_state(sections: dict[str, str], name: str) -> str:
    """'absent' (not captured), 'missing' (tool not installed), 'unavailable', 'skipped' (not
    read: it could tell nothing more) or 'present'."""
    if name not in sections:
        return "absent"
    _, notes = split_notes(sections[name])
    for note in notes:
        word = note.split()[0] if note.split() else ""
        if word in ("missing", "unavailable", "skipped"):
            return word
    return "present"
