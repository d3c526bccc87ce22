"""
What a host is made of, gathered with one remote shell command (``command``) and parsed on the
controller: ``parse`` joins what each source says (``system``, ``pci``, ``kernel``,
``rocminfo``, ``nvidia_smi``) into one record per GPU.

Every parser takes text and returns plain data (dicts, lists, strings, numbers, None), so the
facts can be printed as JSON and compared in tests.
"""

from __future__ import annotations

from .command import (DEFAULT_DOCKER_DIR, DEFAULT_STACK_DIR, MARKER, NOTE, SECTIONS,
                      SKIPPED_NOTE, command, section_state, split_notes, split_sections)
from .kernel import parse_dmesg, parse_drm_vram
from .nvidia_smi import parse_nvidia_driver, parse_nvidia_smi
from .pci import AMD, INTEL, NVIDIA, VENDOR_NAMES, normalize_slot, parse_lspci
from .rocminfo import bdfid_slot, parse_rocminfo
from .system import parse_cpu, parse_df, parse_meminfo, parse_os_release, parse_uname
from .text import to_int, unquote

__all__ = [
    "AMD", "DEFAULT_DOCKER_DIR", "DEFAULT_STACK_DIR", "INTEL", "MARKER", "NOTE", "NVIDIA",
    "SECTIONS", "SKIPPED_NOTE", "bdfid_slot", "command", "merge_gpus", "normalize_slot", "parse",
    "parse_cpu", "parse_df", "parse_dmesg", "parse_drm_vram", "parse_lspci", "parse_meminfo",
    "parse_nvidia_driver", "parse_nvidia_smi", "parse_os_release", "parse_rocminfo",
    "parse_uname", "section_state", "split_notes", "split_sections", "to_int", "unquote",
]

# --- all together ----------------------------------------------------------------------------


def parse(sections: dict[str, str], stack_dir: str = DEFAULT_STACK_DIR,
          docker_dir: str = DEFAULT_DOCKER_DIR) -> dict:
    """
    Facts from the sections (live command output or offline files). Every key is always there;
    what could not be known is None (or empty). ``gpus`` merges lspci, the kernel log, rocminfo
    and nvidia-smi into one record per display device.
    """
    states = {name: section_state(sections, name) for name in SECTIONS}
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
