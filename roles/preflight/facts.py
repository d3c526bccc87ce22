"""
What a host is made of, gathered with one remote shell command and parsed on the controller.

The command prints sections, each opened by a marker line ``### NAME``. The same names are the
file names (``NAME.txt``) of the offline captures that ``python -m roles.preflight explain DIR``
reads, so one parser serves a live host and a folder of captured outputs alike.

Inside a section, lines that start with ``#! `` are notes from the command itself, not tool
output: ``#! missing TOOL`` (the tool is not installed), ``#! unavailable dmesg`` (the kernel log
could not be read, usually for lack of root) and ``#! df LABEL PATH`` (the next ``df`` row is the
filesystem holding LABEL's nearest existing directory PATH). A missing tool is not an error: its
facts are simply unknown.

Every parser here takes text and returns plain data (dicts, lists, strings, numbers, None), so the
facts can be printed as JSON and compared in tests.
"""

from __future__ import annotations

import re
import shlex

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

MARKER = "### "
NOTE = "#! "

AMD, NVIDIA, INTEL = "1002", "10de", "8086"
VENDOR_NAMES = {AMD: "amd", NVIDIA: "nvidia", INTEL: "intel"}
# How lspci spells vendors when it prints names only (no -nn).
VENDOR_PREFIXES = (
    ("Advanced Micro Devices, Inc. [AMD/ATI]", AMD),
    ("ATI Technologies", AMD),
    ("NVIDIA Corporation", NVIDIA),
    ("Intel Corporation", INTEL),
)
DISPLAY_CLASSES = {
    "VGA compatible controller": "0300",
    "3D controller": "0302",
    "Display controller": "0380",
}

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
        "R=$(command -v rocminfo || echo /opt/rocm/bin/rocminfo); "
        "if [ -x \"$R\" ]; then \"$R\" 2>&1 | head -n 3000; "
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
    lines = output.splitlines() if isinstance(output, str) else list(output)
    sections: dict[str, list[str]] = {}
    current = None
    for line in lines:
        if line.startswith(MARKER) and re.fullmatch(r"[a-z0-9-]+", line[len(MARKER):].strip()):
            current = line[len(MARKER):].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {name: "\n".join(body) for name, body in sections.items()}


def _notes(text: str) -> tuple[list[str], list[str]]:
    """Split a section into (tool output lines, note lines without the ``#! `` prefix)."""
    body, notes = [], []
    for line in (text or "").splitlines():
        if line.startswith(NOTE):
            notes.append(line[len(NOTE):].strip())
        else:
            body.append(line)
    return body, notes


def _state(sections: dict[str, str], name: str) -> str:
    """'absent' (not captured), 'missing' (tool not installed), 'unavailable' or 'present'."""
    if name not in sections:
        return "absent"
    _, notes = _notes(sections[name])
    for note in notes:
        word = note.split()[0] if note.split() else ""
        if word in ("missing", "unavailable"):
            return word
    return "present"


# --- CPU -------------------------------------------------------------------------------------

INTERESTING_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f")


def parse_cpu(text: str | None) -> dict:
    """/proc/cpuinfo or ``lscpu`` output: model, sockets, cores, threads, AVX family flags."""
    cpu = {"model": None, "vendor": None, "sockets": None, "cores": None, "threads": None,
           "flags": {flag: None for flag in INTERESTING_FLAGS}, "arch": None}
    lines, _ = _notes(text or "")
    if not any(line.strip() for line in lines):
        return cpu
    if any(re.match(r"\s*(Model name|Flags|Architecture|CPU\(s\)):", line) for line in lines):
        return _parse_lscpu(lines, cpu)
    processors = 0
    sockets, cores = set(), set()
    cores_per_socket = None
    flags = None
    physical = None
    for line in lines:
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            processors += 1
        elif key == "model name" and cpu["model"] is None:
            cpu["model"] = " ".join(value.split())
        elif key == "vendor_id" and cpu["vendor"] is None:
            cpu["vendor"] = value
        elif key == "physical id":
            physical = value
            sockets.add(value)
        elif key == "core id":
            cores.add((physical, value))
        elif key == "cpu cores" and cores_per_socket is None:
            cores_per_socket = _int(value)
        elif key == "flags" and flags is None:
            flags = value.split()
        elif key == "Features" and flags is None:
            flags = value.split()
            cpu["arch"] = "aarch64"
        elif key == "CPU implementer":
            cpu["arch"] = "aarch64"
    cpu["threads"] = processors or None
    cpu["sockets"] = len(sockets) or (1 if processors else None)
    if cores:
        cpu["cores"] = len(cores)
    elif cores_per_socket:
        cpu["cores"] = cores_per_socket * (cpu["sockets"] or 1)
    elif processors:
        cpu["cores"] = processors
    _set_flags(cpu, flags)
    return cpu


def _parse_lscpu(lines: list[str], cpu: dict) -> dict:
    values: dict[str, str] = {}
    last = None
    for line in lines:
        match = re.match(r"\s*([A-Za-z][^:]*):\s*(.*)$", line)
        if match:
            last = match.group(1).strip()
            values.setdefault(last, match.group(2).strip())
        elif last == "Flags" and line.strip():
            values["Flags"] += " " + line.strip()  # lscpu wraps long flag lists on a terminal
    cpu["model"] = " ".join(values.get("Model name", "").split()) or None
    cpu["vendor"] = values.get("Vendor ID")
    cpu["arch"] = values.get("Architecture")
    cpu["threads"] = _int(values.get("CPU(s)"))
    cpu["sockets"] = _int(values.get("Socket(s)"))
    per_socket = _int(values.get("Core(s) per socket"))
    if per_socket:
        cpu["cores"] = per_socket * (cpu["sockets"] or 1)
    _set_flags(cpu, values["Flags"].split() if "Flags" in values else None)
    return cpu


def _set_flags(cpu: dict, flags: list[str] | None) -> None:
    if flags is None:
        return
    have = set(flags)
    cpu["flags"] = {flag: flag in have for flag in INTERESTING_FLAGS}
    if cpu["arch"] is None and "lm" in have:
        cpu["arch"] = "x86_64"


# --- memory, disk, OS ------------------------------------------------------------------------


def parse_meminfo(text: str | None) -> dict:
    memory = {"total_gb": None, "available_gb": None, "swap_gb": None}
    keys = {"MemTotal": "total_gb", "MemAvailable": "available_gb", "SwapTotal": "swap_gb"}
    for line in _notes(text or "")[0]:
        match = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if match and match.group(1) in keys:
            memory[keys[match.group(1)]] = round(int(match.group(2)) / 1024 / 1024, 1)
    return memory


_SIZE = {"K": 1 / 1024 / 1024, "M": 1 / 1024, "G": 1.0, "T": 1024.0, "P": 1024.0 * 1024}


def parse_df(text: str | None, stack_dir: str = DEFAULT_STACK_DIR,
             docker_dir: str = DEFAULT_DOCKER_DIR) -> dict:
    """
    ``df -Pk`` (or ``df -h``) rows: free space where the stack and Docker's data live. Rows after
    a ``#! df LABEL PATH`` note belong to LABEL; otherwise the row whose mount point is the
    longest prefix of the directory is used.
    """
    result = {"stack": None, "docker": None}
    if not text:
        return result
    human = False
    rows = []
    label, labelled_path = None, None
    for line in text.splitlines():
        if line.startswith(NOTE):
            parts = line[len(NOTE):].split(None, 2)
            if len(parts) == 3 and parts[0] == "df":
                label, labelled_path = parts[1], parts[2]
            continue
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "Filesystem":
            human = "Size" in fields
            continue
        if len(fields) < 6:
            continue
        free = _size_gb(fields[3], human)
        if free is None:
            continue
        row = {"filesystem": fields[0], "mount": " ".join(fields[5:]), "free_gb": free,
               "path": labelled_path}
        rows.append(row)
        if label in result and result[label] is None:
            result[label] = row
        label, labelled_path = None, None
    for name, directory in (("stack", stack_dir), ("docker", docker_dir)):
        if result[name] is None:
            best = None
            for row in rows:
                mount = row["mount"].rstrip("/") + "/"
                if (directory.rstrip("/") + "/").startswith(mount):
                    if best is None or len(row["mount"]) > len(best["mount"]):
                        best = row
            if best is not None:
                result[name] = {**best, "path": directory}
    return result


def _size_gb(value: str, human: bool) -> float | None:
    if not human:
        return round(int(value) / 1024 / 1024, 1) if value.isdigit() else None
    match = re.fullmatch(r"([\d.]+)([KMGTP]?)i?B?", value)
    if not match:
        return None
    return round(float(match.group(1)) * _SIZE.get(match.group(2) or "K", 1 / 1024 / 1024), 1)


def parse_os_release(text: str | None) -> dict:
    values = {}
    for line in _notes(text or "")[0]:
        match = re.match(r"([A-Z_]+)=(.*)$", line.strip())
        if match:
            values[match.group(1)] = match.group(2).strip().strip('"').strip("'")
    return {
        "id": values.get("ID"),
        "version_id": values.get("VERSION_ID"),
        "codename": values.get("VERSION_CODENAME") or values.get("UBUNTU_CODENAME"),
        "pretty_name": values.get("PRETTY_NAME"),
        "id_like": values.get("ID_LIKE"),
    }


def parse_uname(text: str | None) -> dict:
    """``uname -srm`` ("Linux 5.15.0-56-generic x86_64") or ``uname -a``."""
    words = " ".join(_notes(text or "")[0]).split()
    if not words:
        return {"kernel": None, "machine": None}
    if len(words) == 3:
        return {"kernel": words[1], "machine": words[2]}
    machine = next((w for w in words if w in ("x86_64", "aarch64", "ppc64le", "s390x", "i686")),
                   None)
    return {"kernel": words[2] if len(words) > 2 else None, "machine": machine}


# --- PCI -------------------------------------------------------------------------------------

_SLOT = r"(?:[0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"
_HEADER = re.compile(rf"^(?P<slot>{_SLOT})\s+(?P<cls>[^:\[]+?)\s*(?:\[(?P<clsid>[0-9a-f]{{4}})\])?"
                     r":\s*(?P<rest>.*)$")
_IDS = re.compile(r"\[([0-9a-f]{4}):([0-9a-f]{4})\]")


def normalize_slot(slot: str) -> str:
    """'0000:08:00.0', '00000000:08:00.0' and '08:00.0' are one slot: '08:00.0'."""
    slot = slot.strip().lower()
    parts = slot.split(":")
    if len(parts) == 3:
        domain = int(parts[0], 16)
        return f"{parts[1]}:{parts[2]}" if domain == 0 else f"{domain:04x}:{parts[1]}:{parts[2]}"
    return slot


# A device line whose class was cut by the one who pasted it ("05:00.0 ... NVIDIA Corporation
# GK210GL [Tesla K80] (rev a1)"): the vendor's name follows the slot.
_SHORT_HEADER = re.compile(rf"^(?P<slot>{_SLOT})\s+(?:\.\.\.\s+)?(?P<rest>(?:Advanced Micro Devices|"
                           r"ATI Technologies|NVIDIA Corporation).*)$")


def _pci_header(line: str) -> dict | None:
    match = _HEADER.match(line)
    if not match:
        short = _SHORT_HEADER.match(line)
        if not short:
            return None
        # Display or not, from the name alone: NVIDIA and AMD also make audio, USB and bridge
        # functions on the same card.
        other = re.search(r"Audio|USB|UCSI|Controller|Bridge", short.group("rest"))
        line = f"{short.group('slot')} {'Other' if other else 'VGA compatible controller'}: " \
               f"{short.group('rest')}"
        match = _HEADER.match(line)
    rest = match.group("rest")
    ids = _IDS.findall(rest)
    vendor_id = device_id = None
    if ids:
        vendor_id, device_id = ids[-1]
    numeric = re.match(r"([0-9a-f]{4}):([0-9a-f]{4})\b", rest)
    if not ids and numeric and re.fullmatch(r"[0-9a-f]{4}", match.group("cls").strip()):
        vendor_id, device_id = numeric.groups()  # lspci -n: "01:00.0 0300: 10de:1f08"
    name = _IDS.sub("", rest)
    name = re.sub(r"\s*\((rev [0-9a-f]+|prog-if [^)]*\)?)\)?", "", name)
    name = " ".join(name.split())
    if vendor_id is None:
        for prefix, vid in VENDOR_PREFIXES:
            if name.startswith(prefix):
                vendor_id = vid
                break
    cls = match.group("cls").strip()
    class_id = match.group("clsid") or DISPLAY_CLASSES.get(cls) or \
        (cls if re.fullmatch(r"[0-9a-f]{4}", cls) else None)
    rev = re.search(r"\(rev ([0-9a-f]+)\)", rest)
    return {
        "slot": normalize_slot(match.group("slot")),
        "class": cls,
        "class_id": class_id,
        "vendor_id": vendor_id,
        "device_id": device_id,
        "description": name,
        "rev": rev.group(1) if rev else None,
    }


def _is_display(device: dict) -> bool:
    return bool(device.get("class_id") and device["class_id"].startswith("03"))


def parse_lspci(text: str | None) -> list[dict]:
    """
    ``lspci -nn``, ``lspci -k``, ``lspci -vvv`` or ``lspci -vvnn``: the display devices, with
    what the verbose forms add (driver, PCIe atomics control, link speed and width).
    """
    devices: list[dict] = []
    current = None
    header_text = None  # the last header, while the next line may be its re-wrapped end
    for raw in _notes(text or "")[0]:
        line = unquote(raw)
        if not line.strip():
            continue
        # A device line whatever its indent (pastes indent code by four spaces).
        header = _pci_header(line.strip())
        if header is not None:
            header_text = line.strip()
            current = header if _is_display(header) else None
            if current is not None:
                current.update({"driver": None, "atomics_cap": None, "atomics_reqen": None,
                                "caps_denied": False, "link_cap": None, "link_sta": None,
                                "verbose": False})
                devices.append(current)
            continue
        if header_text is not None and not line[0].isspace() and \
                re.search(r"\[[0-9a-f]{4}:[0-9a-f]{4}\]|\(rev [0-9a-f]+\)", line):
            # The rest of a device line a terminal or a web page wrapped.
            joined = _pci_header(f"{header_text} {line.strip()}")
            if current is not None and joined is not None:
                current.update({k: v for k, v in joined.items() if v is not None})
            header_text = None
            continue
        header_text = None
        if current is None:
            continue
        stripped = line.strip()
        current["verbose"] = True
        if stripped.startswith("Kernel driver in use:"):
            current["driver"] = stripped.split(":", 1)[1].strip()
        elif "AtomicOpsCap:" in stripped:
            current["atomics_cap"] = stripped.split("AtomicOpsCap:", 1)[1].strip()
        elif "AtomicOpsCtl:" in stripped:
            ctl = stripped.split("AtomicOpsCtl:", 1)[1]
            if "ReqEn+" in ctl:
                current["atomics_reqen"] = True
            elif "ReqEn-" in ctl:
                current["atomics_reqen"] = False
        elif stripped.startswith("Capabilities: <access denied>"):
            current["caps_denied"] = True
        elif stripped.startswith("LnkCap:"):
            current["link_cap"] = _link(stripped)
        elif stripped.startswith("LnkSta:"):
            current["link_sta"] = _link(stripped)
    return devices


def _link(line: str) -> str | None:
    speed = re.search(r"Speed ([\d.]+GT/s)(?: \((downgraded|ok)\))?", line)
    width = re.search(r"Width (x\d+)", line)
    if not speed:
        return None
    text = speed.group(1) + (f" {width.group(1)}" if width else "")
    return text + (" (downgraded)" if speed.group(2) == "downgraded" else "")


# --- kernel log ------------------------------------------------------------------------------


_MODESETTING = re.compile(r"(?:amdgpu ([0-9a-fA-F:.]+): (?:amdgpu: )?)?.*initializing kernel "
                          r"modesetting \((\w+) 0x([0-9A-Fa-f]{4}):0x([0-9A-Fa-f]{4})")
_NVRM = re.compile(r"NVRM: loading NVIDIA UNIX \S+ Kernel Module\s+(\d+\.\d+(?:\.\d+)?)")


def parse_dmesg(text: str | None, state: str = "present") -> dict:
    """
    What the kernel log says of each GPU: kfd's verdict ('PCI rejects atomics': skipped, or
    'added device'), amdgpu's chip name and PCI ID (``initializing kernel modesetting (POLARIS10
    0x1002:0x67DF ...)``) and the NVIDIA kernel module's version (``NVRM: loading ...``).
    """
    kfd = {"readable": None, "rejected": [], "added": [], "no_atomics": False, "vram_mb": {},
           "lines": [], "chips": {}, "nvidia_driver": None}
    if state == "unavailable":
        kfd["readable"] = False
        return kfd
    if state != "present":
        return kfd
    kfd["readable"] = True
    for line in _notes(text or "")[0]:
        line = unquote(line)
        lowered = line.lower()
        rejected = re.search(r"skipped device ([0-9a-f]{4}:[0-9a-f]{4}), pci rejects atomics",
                             lowered)
        added = re.search(r"kfd.*added device ([0-9a-f]{4}:[0-9a-f]{4})", lowered)
        if rejected:
            kfd["rejected"].append(rejected.group(1))
            kfd["lines"].append(line.strip())
        elif added:
            kfd["added"].append(added.group(1))
            kfd["lines"].append(line.strip())
        elif "pcie atomic ops is not supported" in lowered:
            kfd["no_atomics"] = True
            kfd["lines"].append(line.strip())
        chip = _MODESETTING.search(line)
        if chip:
            pci_id = f"{chip.group(3)}:{chip.group(4)}".lower()
            kfd["chips"].setdefault(pci_id, {
                "chip": chip.group(2), "slot": normalize_slot(chip.group(1)) if chip.group(1)
                else None})
        module = _NVRM.search(line)
        if module:
            kfd["nvidia_driver"] = module.group(1)
        vram = re.search(r"(?:amdgpu (\S+): )?.*?(\d+)M of VRAM memory ready", line)
        if vram:
            slot = normalize_slot(vram.group(1)) if vram.group(1) else ""
            kfd["vram_mb"][slot] = int(vram.group(2))
    kfd["rejected"] = sorted(set(kfd["rejected"]))
    kfd["added"] = sorted(set(kfd["added"]))
    return kfd


# --- rocminfo --------------------------------------------------------------------------------


# ROCr's ISA name ("amdgcn-amd-amdhsa--gfx1031"), printed under each GPU agent's ISA Info.
_ISA_NAME = re.compile(r"amdgcn-amd-amdhsa--(gfx[0-9a-f]+)")
_GFX_NAME = re.compile(r"gfx[0-9a-f]{3,4}")


def unquote(line: str) -> str:
    """A pasted line without what Markdown or a mail quote added: ``> `` prefixes, backticks."""
    line = re.sub(r"^\s*(?:>\s?)+", "", line.rstrip())
    return line.replace("`", "")


def _agent() -> dict:
    return {"name": None, "marketing_name": None, "type": None, "chip_id": None, "bdfid": None,
            "vram_kb": None}


def parse_rocminfo(text: str | None, state: str = "present") -> dict:
    """
    rocminfo as run, or as pasted: whole, cut, without its ``Agent N`` headers, or filtered
    (``rocminfo | grep -E "Name|Marketing Name"``). An agent starts at an ``Agent N`` header or,
    when the headers were lost, at the next agent-level ``Name:`` line; a GPU agent is one whose
    Device Type is GPU or whose name is a gfx target (ISA names ``amdgcn-amd-amdhsa--gfxNNN``
    count when the agent's own line is missing). ``complete``: rocminfo's closing
    ``*** Done ***`` was there, so an agent it does not list is not there.
    """
    info = {"present": state == "present", "error": None, "agents": [], "gpu_agents": [],
            "cpu_agents": 0, "complete": False}
    if state != "present":
        return info
    lines = [unquote(line) for line in _notes(text or "")[0]]
    errors = [line.strip() for line in lines
              if re.search(r"HSA_STATUS_ERROR|hsa api call failure|NOT loaded|Permission denied"
                           r"|No such file|Call returned \d+", line)]
    if errors:
        info["error"] = errors[0]
    agent = None
    pool_segment = None

    def start() -> dict:
        nonlocal agent, pool_segment
        agent = _agent()
        info["agents"].append(agent)
        pool_segment = None
        return agent

    for line in lines:
        stripped = line.strip()
        if stripped == "*** Done ***":
            info["complete"] = True
            continue
        if re.fullmatch(r"Agent \d+", stripped):
            start()
            continue
        if ":" not in stripped:
            continue
        key, _, value = stripped.partition(":")
        key, value = key.strip(), value.strip()
        if key == "Name":
            isa = _ISA_NAME.search(value)
            if isa:
                # The ISA of the agent above; an agent of its own when that agent's line was
                # filtered out (``grep gfx``) or belongs to a CPU.
                if agent is None or (agent["name"] and agent["name"] != isa.group(1)
                                     and not _GFX_NAME.fullmatch(agent["name"])):
                    start()
                if agent["name"] is None:
                    agent["name"] = isa.group(1)
                continue
            if agent is None or agent["name"] is not None:
                start()
            agent["name"] = value
            continue
        fields = {"Marketing Name": "marketing_name", "Device Type": "type",
                  "Chip ID": "chip_id", "BDFID": "bdfid"}
        if key in fields and (agent is None or agent[fields[key]] is not None):
            start()  # a field seen twice: the next agent (its header and Name were filtered)
        if agent is None:
            continue
        if key == "Marketing Name":
            agent["marketing_name"] = value
        elif key == "Device Type":
            agent["type"] = value
        elif key == "Chip ID":
            hexa = re.search(r"0x([0-9a-fA-F]+)", value)
            agent["chip_id"] = f"{int(hexa.group(1), 16):04x}" if hexa else None
        elif key == "BDFID":
            agent["bdfid"] = _int(value)
        elif key == "Segment":
            pool_segment = value
        elif key == "Size" and pool_segment and "GLOBAL" in pool_segment and "COARSE" in \
                pool_segment and agent["vram_kb"] is None:
            agent["vram_kb"] = _int(value.split("(")[0])
    for agent in info["agents"]:
        if agent["type"] is None and agent["name"] and _GFX_NAME.fullmatch(agent["name"]):
            agent["type"] = "GPU"
    info["gpu_agents"] = [a for a in info["agents"] if a["type"] == "GPU"]
    info["cpu_agents"] = sum(1 for a in info["agents"] if a["type"] == "CPU")
    return info


def bdfid_slot(bdfid: int | None) -> str | None:
    """rocminfo's BDFID (bus << 8 | device << 3 | function) as an lspci slot."""
    if bdfid is None:
        return None
    return f"{(bdfid >> 8) & 0xff:02x}:{(bdfid >> 3) & 0x1f:02x}.{bdfid & 0x7}"


# --- nvidia-smi ------------------------------------------------------------------------------


def parse_nvidia_smi(text: str | None, state: str = "present") -> dict:
    """
    The default table, ``--query-gpu ... --format=csv`` rows and ``nvidia-smi -q`` alike.
    ``exit``: nvidia-smi's exit status when the live command noted it (``#! exit N``), else None.
    """
    smi = {"present": state == "present", "error": None, "driver": None, "cuda": None,
           "gpus": [], "exit": None}
    if state != "present":
        return smi
    lines, notes = _notes(text or "")
    for note in notes:
        words = note.split()
        if len(words) == 2 and words[0] == "exit" and words[1].isdigit():
            smi["exit"] = int(words[1])
    by_key: dict[str, dict] = {}

    def gpu(key: str) -> dict:
        if key not in by_key:
            by_key[key] = {"index": None, "name": None, "memory_mib": None, "bus_id": None}
            smi["gpus"].append(by_key[key])
        return by_key[key]

    table_rows: list[dict] = []
    memory_rows: list[int] = []
    csv_header = None
    query_gpu = None
    for line in lines:
        stripped = line.strip()
        if re.search(r"has failed|couldn't communicate|No devices were found|not found", stripped):
            smi["error"] = smi["error"] or stripped
        header = re.search(r"Driver Version\s*:\s*([\d.]+)", stripped)
        if header:
            smi["driver"] = header.group(1)
        cuda = re.search(r"CUDA (?:UMD )?Version\s*:\s*([\d.]+)", stripped)
        if cuda:
            smi["cuda"] = cuda.group(1)
        row = re.match(r"^\|\s+(\d+)\s+(.+?)\s+(On|Off|WDDM|TCC)\s+\|\s+([0-9A-Fa-f]+:[0-9A-Fa-f]"
                       r"{2}:[0-9A-Fa-f]{2}\.\d)", stripped)
        if row:
            table_rows.append({"index": int(row.group(1)), "name": row.group(2).strip(),
                               "bus_id": normalize_slot(row.group(4))})
            continue
        memory = re.search(r"\|\s*(\d+)MiB\s*/\s*(\d+)MiB\s*\|", stripped)
        if memory:
            memory_rows.append(int(memory.group(2)))
            continue
        if stripped.startswith("index,") and "name" in stripped:
            csv_header = [c.strip() for c in stripped.split(",")]
            continue
        if csv_header and re.match(r"\d+,", stripped):
            values = [c.strip() for c in stripped.split(",")]
            record = dict(zip(csv_header, values))
            entry = gpu(record.get("index", str(len(by_key))))
            entry["index"] = _int(record.get("index"))
            entry["name"] = record.get("name")
            total = next((v for k, v in record.items() if k.startswith("memory.total")), "")
            entry["memory_mib"] = _int(total.split()[0]) if total else None
            bus = record.get("pci.bus_id")
            entry["bus_id"] = normalize_slot(bus) if bus else None
            if record.get("driver_version"):
                smi["driver"] = smi["driver"] or record["driver_version"]
            continue
        # nvidia-smi -q
        if re.match(r"GPU [0-9A-Fa-f]+:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.\d$", stripped):
            query_gpu = gpu("q" + stripped.split()[1])
            query_gpu["bus_id"] = normalize_slot(stripped.split()[1])
        elif query_gpu is not None and re.match(r"Device Id\s*:\s*0x[0-9A-Fa-f]{8}$", stripped):
            value = stripped.split("0x", 1)[1].lower()
            query_gpu["pci_id"] = f"{value[4:]}:{value[:4]}"
        elif query_gpu is not None and stripped.startswith("Product Name"):
            query_gpu["name"] = stripped.split(":", 1)[1].strip()
        elif query_gpu is not None and stripped.startswith("Total") and query_gpu["memory_mib"] \
                is None:
            total = re.search(r"(\d+)\s*MiB", stripped)
            if total:
                query_gpu["memory_mib"] = int(total.group(1))
    if table_rows and not smi["gpus"]:
        for i, row in enumerate(table_rows):
            entry = gpu(str(row["index"]))
            entry.update(row)
            if i < len(memory_rows):
                entry["memory_mib"] = memory_rows[i]
    elif table_rows:
        # The CSV (or -q) names are whole; the table's may be cut ("NVIDIA GeForce ...").
        for entry in smi["gpus"]:
            for row in table_rows:
                if entry["bus_id"] is None and entry["index"] == row["index"]:
                    entry["bus_id"] = row["bus_id"]
    if smi["gpus"] or smi["driver"]:
        smi["error"] = None if smi["gpus"] else smi["error"]
    return smi


def parse_nvidia_driver(text: str | None) -> str | None:
    """
    The NVIDIA kernel module's version from /proc/driver/nvidia/version ("NVRM version: NVIDIA
    UNIX x86_64 Kernel Module  470.182.03 ..."), ``modinfo nvidia`` ("version: 535.54.03") or
    /sys/module/nvidia/version (the number alone).
    """
    for line in _notes(text or "")[0]:
        line = unquote(line).strip()
        match = (re.search(r"Kernel Module\s+(\d+\.\d+(?:\.\d+)?)", line)
                 or re.match(r"version:\s+(\d+\.\d+(?:\.\d+)?)$", line)
                 or re.fullmatch(r"(\d{3}\.\d+(?:\.\d+)?)", line))
        if match:
            return match.group(1)
    return None


def parse_drm_vram(text: str | None) -> dict[str, int]:
    """'0000:03:00.0 8573157376' lines (from /sys/class/drm/card*/device/mem_info_vram_total)."""
    vram = {}
    for line in _notes(text or "")[0]:
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(_SLOT, parts[0]) and parts[1].isdigit():
            vram[normalize_slot(parts[0])] = int(parts[1])
    return vram


# --- all together ----------------------------------------------------------------------------


def parse(sections: dict[str, str], stack_dir: str = DEFAULT_STACK_DIR,
          docker_dir: str = DEFAULT_DOCKER_DIR) -> dict:
    """
    Facts from the sections (live command output or offline files). Every key is always there;
    what could not be known is None (or empty). ``gpus`` merges lspci, the kernel log, rocminfo
    and nvidia-smi into one record per display device.
    """
    states = {name: _state(sections, name) for name in SECTIONS}
    cpu = parse_cpu(sections.get("cpuinfo"))
    uname = parse_uname(sections.get("uname"))
    if uname["machine"]:
        cpu["arch"] = uname["machine"]
    kfd = parse_dmesg(sections.get("dmesg"), states["dmesg"])
    rocminfo = parse_rocminfo(sections.get("rocminfo"), states["rocminfo"])
    nvidia = parse_nvidia_smi(sections.get("nvidia-smi"), states["nvidia-smi"])
    # The driver's version: nvidia-smi's, else the kernel module's (/proc, modinfo, the log).
    nvidia["driver_source"] = "nvidia-smi" if nvidia["driver"] else None
    for source, version in (("nvidia-driver", parse_nvidia_driver(sections.get("nvidia-driver"))),
                            ("dmesg", kfd["nvidia_driver"])):
        if nvidia["driver"] is None and version:
            nvidia["driver"], nvidia["driver_source"] = version, source
    facts = {
        "sections": states,
        "cpu": cpu,
        "memory": parse_meminfo(sections.get("meminfo")),
        "disk": parse_df(sections.get("df"), stack_dir, docker_dir),
        "os": {**parse_os_release(sections.get("os-release")), "kernel": uname["kernel"]},
        "kfd": kfd,
        "rocminfo": rocminfo,
        "nvidia_smi": nvidia,
    }
    facts["gpus"] = merge_gpus(
        parse_lspci(sections.get("lspci-nn")),
        parse_lspci(sections.get("lspci-vvv")),
        kfd, rocminfo, nvidia, parse_drm_vram(sections.get("drm-vram")),
    )
    return facts


def _record(slot: str | None, vendor_id: str | None = None, device_id: str | None = None,
            description: str | None = None, class_id: str | None = "0300") -> dict:
    return {
        "slot": slot, "vendor_id": vendor_id, "device_id": device_id, "class_id": class_id,
        "description": description, "driver": None, "atomics_cap": None, "atomics_reqen": None,
        "caps_denied": False, "link_cap": None, "link_sta": None, "vram_mb": None,
        "vram_source": None, "rocm_agent": None, "rocm_name": None, "rocm_index": None,
        "nvidia_name": None, "nvidia_index": None, "chip": None, "sources": [],
    }


def merge_gpus(short: list[dict], verbose: list[dict], kfd: dict, rocminfo: dict, nvidia: dict,
               drm_vram: dict[str, int]) -> list[dict]:
    """
    One record per GPU from every source, joined by PCI slot, else by PCI ID (vendor:device),
    else by vendor when one device of that vendor is left to match: any one source is enough to
    know a GPU (a kfd line, a rocminfo agent, an nvidia-smi row without lspci), and what each
    says of it lands on the same record. A GPU whose slot no source printed has slot None.
    """
    records: list[dict] = []
    by_slot: dict[str, dict] = {}
    for device in short + verbose:
        record = by_slot.get(device["slot"])
        if record is None:
            record = by_slot[device["slot"]] = _record(device["slot"], class_id=None)
            records.append(record)
        for key in ("vendor_id", "device_id", "class_id", "description", "driver", "atomics_cap",
                    "atomics_reqen", "link_cap", "link_sta"):
            if device.get(key) is not None:
                record[key] = device[key]
        record["caps_denied"] = record["caps_denied"] or device.get("caps_denied", False)
        source = "lspci-vvv" if device in verbose else "lspci-nn"
        if source not in record["sources"]:
            record["sources"].append(source)

    def find(vendor_id: str, device_id: str | None, slot: str | None, taken: str) -> dict | None:
        """The record a source's GPU is: same slot, same ID, or the one of its vendor left."""
        if slot and slot in by_slot:
            return by_slot[slot]
        mine = [r for r in records if r["vendor_id"] == vendor_id and
                not (slot and r["slot"] and r["slot"] != slot)]
        if device_id:
            same = [r for r in mine if r["device_id"] == device_id and not r[taken]]
            if same:
                return same[0]
            if any(r["device_id"] == device_id for r in mine):
                return None  # a second card of that model: a record of its own
        open_ = [r for r in mine if not r[taken] and (r["device_id"] is None or not device_id)]
        return open_[0] if len(open_) == 1 else None

    def add(target: dict | None, vendor_id: str, device_id: str | None, slot: str | None,
            description: str | None, source: str) -> dict:
        if target is None:
            target = _record(slot, vendor_id, device_id, description)
            records.append(target)
            if slot:
                by_slot[slot] = target
        if target["device_id"] is None and device_id:
            target["device_id"] = device_id
        if target["slot"] is None and slot:
            target["slot"] = slot
            by_slot[slot] = target
        if source not in target["sources"]:
            target["sources"].append(source)
        return target

    # The kernel log: amdgpu's chip line and kfd's verdicts name AMD devices by PCI ID.
    for pci_id, chip in kfd["chips"].items():
        vendor_id, device_id = pci_id.split(":")
        target = find(vendor_id, device_id, chip["slot"], "chip")
        target = add(target, vendor_id, device_id, chip["slot"], None, "dmesg")
        target["chip"] = chip["chip"]
    for pci_id in kfd["rejected"] + kfd["added"]:
        vendor_id, device_id = pci_id.split(":")
        if any(f"{r['vendor_id']}:{r['device_id']}" == pci_id for r in records):
            for r in records:
                if f"{r['vendor_id']}:{r['device_id']}" == pci_id and "dmesg" not in r["sources"]:
                    r["sources"].append("dmesg")
            continue
        target = find(vendor_id, device_id, None, "chip")
        add(target, vendor_id, device_id, None, None, "dmesg")

    # rocminfo's GPU agents: BDFID is the slot, Chip ID the PCI device ID. Their order is the
    # runtime's (ROCR_VISIBLE_DEVICES counts in it).
    for index, agent in enumerate(rocminfo["gpu_agents"]):
        slot = bdfid_slot(agent["bdfid"])
        target = find(AMD, agent["chip_id"], slot, "rocm_agent")
        target = add(target, AMD, agent["chip_id"], slot,
                     agent["marketing_name"] or agent["name"], "rocminfo")
        target["rocm_agent"] = agent["name"]
        target["rocm_name"] = agent["marketing_name"]
        target["rocm_index"] = index
        if agent["vram_kb"] and target["vram_mb"] is None:
            target["vram_mb"] = agent["vram_kb"] // 1024
            target["vram_source"] = "rocminfo"

    # nvidia-smi's GPUs: bus id, and the PCI ID where -q printed it.
    for entry in nvidia["gpus"]:
        device_id = (entry.get("pci_id") or "").split(":")[-1] or None
        target = find(NVIDIA, device_id, entry["bus_id"], "nvidia_name")
        target = add(target, NVIDIA, device_id, entry["bus_id"], entry["name"], "nvidia-smi")
        target["nvidia_name"] = entry["name"]
        target["nvidia_index"] = entry["index"]
        if entry["memory_mib"]:
            target["vram_mb"] = entry["memory_mib"]
            target["vram_source"] = "nvidia-smi"

    for slot, size in drm_vram.items():
        if slot in by_slot and by_slot[slot]["vram_source"] not in ("nvidia-smi",):
            by_slot[slot]["vram_mb"] = size // (1024 * 1024)
            by_slot[slot]["vram_source"] = "sysfs"
    amd = [g for g in records if g["vendor_id"] == AMD]
    for slot, size_mb in kfd["vram_mb"].items():
        target = by_slot.get(slot) if slot else (amd[0] if len(amd) == 1 else None)
        if target is not None and target["vram_mb"] is None:
            target["vram_mb"] = size_mb
            target["vram_source"] = "dmesg"
    for record in records:
        record["pci_id"] = (f"{record['vendor_id']}:{record['device_id']}"
                            if record["vendor_id"] and record["device_id"] else None)
        record["vendor"] = VENDOR_NAMES.get(record["vendor_id"] or "", "other")
    return sorted(records, key=lambda g: (g["slot"] is None, g["slot"] or "", g["pci_id"] or ""))


def _int(value) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None
