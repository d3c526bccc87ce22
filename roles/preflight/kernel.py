"""
What the kernel says of the GPUs: its log (amdgpu's chip lines, kfd's verdicts, VRAM, the NVIDIA
module's version) and the VRAM sizes amdgpu gives in sysfs.
"""

from __future__ import annotations

import re

from .command import split_notes
from .pci import SLOT, normalize_slot
from .text import unquote

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
    for line in split_notes(text or "")[0]:
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


def parse_drm_vram(text: str | None) -> dict[str, int]:
    """'0000:03:00.0 8573157376' lines (from /sys/class/drm/card*/device/mem_info_vram_total)."""
    vram = {}
    for line in split_notes(text or "")[0]:
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(SLOT, parts[0]) and parts[1].isdigit():
            vram[normalize_slot(parts[0])] = int(parts[1])
    return vram
