"""``nvidia-smi``'s GPUs and driver (its table, ``--query-gpu`` CSV, ``-q``), and the NVIDIA
kernel module's version where nvidia-smi is missing."""

from __future__ import annotations

import re

from .command import split_notes
from .pci import normalize_slot
from .text import to_int, unquote

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
    lines, notes = split_notes(text or "")
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
            entry["index"] = to_int(record.get("index"))
            entry["name"] = record.get("name")
            total = next((v for k, v in record.items() if k.startswith("memory.total")), "")
            entry["memory_mib"] = to_int(total.split()[0]) if total else None
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
    for line in split_notes(text or "")[0]:
        line = unquote(line).strip()
        match = (re.search(r"Kernel Module\s+(\d+\.\d+(?:\.\d+)?)", line)
                 or re.match(r"version:\s+(\d+\.\d+(?:\.\d+)?)$", line)
                 or re.fullmatch(r"(\d{3}\.\d+(?:\.\d+)?)", line))
        if match:
            return match.group(1)
    return None
