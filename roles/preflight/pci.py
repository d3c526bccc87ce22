"""
The display devices ``lspci`` lists (``-nn``, ``-k``, ``-vvv``, pasted or re-wrapped): IDs,
driver, PCIe atomics and link.
"""

from __future__ import annotations

import re

from .command import split_notes
from .text import unquote

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


# --- PCI -------------------------------------------------------------------------------------

SLOT = r"(?:[0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"
_HEADER = re.compile(rf"^(?P<slot>{SLOT})\s+(?P<cls>[^:\[]+?)\s*(?:\[(?P<clsid>[0-9a-f]{{4}})\])?"
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
_SHORT_HEADER = re.compile(rf"^(?P<slot>{SLOT})\s+(?:\.\.\.\s+)?(?P<rest>(?:Advanced Micro Devices|"
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
    for raw in split_notes(text or "")[0]:
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
