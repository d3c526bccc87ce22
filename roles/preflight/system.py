"""
The CPU, memory, disks and OS of a host: /proc/cpuinfo (or lscpu), /proc/meminfo, df,
/etc/os-release and uname, as the preflight's command prints them or as pasted.
"""

from __future__ import annotations

import re

from roles.parsers import os_release

from .command import DEFAULT_DOCKER_DIR, DEFAULT_STACK_DIR, NOTE, split_notes
from .text import to_int

# --- CPU -------------------------------------------------------------------------------------

INTERESTING_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f")


def parse_cpu(text: str | None) -> dict:
    """/proc/cpuinfo or ``lscpu`` output: model, sockets, cores, threads, AVX family flags."""
    cpu = {"model": None, "vendor": None, "sockets": None, "cores": None, "threads": None,
           "flags": {flag: None for flag in INTERESTING_FLAGS}, "arch": None}
    lines, _ = split_notes(text or "")
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
            cores_per_socket = to_int(value)
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
    cpu["threads"] = to_int(values.get("CPU(s)"))
    cpu["sockets"] = to_int(values.get("Socket(s)"))
    per_socket = to_int(values.get("Core(s) per socket"))
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
    for line in split_notes(text or "")[0]:
        match = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if match and match.group(1) in keys:
            memory[keys[match.group(1)]] = round(int(match.group(2)) / 1024 / 1024, 1)
    return memory


_SIZE = {"K": 1 / 1024 / 1024, "M": 1 / 1024, "G": 1.0, "T": 1024.0, "P": 1024.0 * 1024}


def parse_df(text: str | None, stack_dir: str = DEFAULT_STACK_DIR,
             docker_dir: str = DEFAULT_DOCKER_DIR) -> dict:
    """
    ``df -Pk`` (or ``df -h``) rows: free space where the stack and Docker's data live. The rows
    after ``#! df LABEL PATH`` notes belong to those labels in the notes' order (one note and
    its row, or both notes and one df's two rows); when their counts differ (df failed for a
    path and printed no row for it) or there are no notes, the row whose mount point is the
    longest prefix of the directory is used.
    """
    result = {"stack": None, "docker": None}
    if not text:
        return result
    human = False
    rows = []
    notes: list[tuple[str, str]] = []  # the labels of the group of rows that follows
    group: list[dict] = []

    def close() -> None:
        if len(group) == len(notes):
            for (label, path), row in zip(notes, group):
                row["path"] = path
                if label in result and result[label] is None:
                    result[label] = row
        notes.clear()
        group.clear()

    for line in text.splitlines():
        if line.startswith(NOTE):
            parts = line[len(NOTE):].split(None, 2)
            if len(parts) == 3 and parts[0] == "df":
                if group:
                    close()
                notes.append((parts[1], parts[2]))
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
               "path": None}
        rows.append(row)
        group.append(row)
    close()
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
    """/etc/os-release as the report shows it (roles.parsers.os_release reads the lines)."""
    values = os_release(split_notes(text or "")[0])
    return {
        "id": values.get("ID"),
        "version_id": values.get("VERSION_ID"),
        "codename": values.get("VERSION_CODENAME") or values.get("UBUNTU_CODENAME"),
        "pretty_name": values.get("PRETTY_NAME"),
        "id_like": values.get("ID_LIKE"),
    }


def parse_uname(text: str | None) -> dict:
    """``uname -srm`` ("Linux 5.15.0-56-generic x86_64") or ``uname -a``."""
    words = " ".join(split_notes(text or "")[0]).split()
    if not words:
        return {"kernel": None, "machine": None}
    if len(words) == 3:
        return {"kernel": words[1], "machine": words[2]}
    machine = next((w for w in words if w in ("x86_64", "aarch64", "ppc64le", "s390x", "i686")),
                   None)
    return {"kernel": words[2] if len(words) > 2 else None, "machine": machine}
