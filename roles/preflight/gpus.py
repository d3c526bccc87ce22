"""
What is known of a GPU, from gpus.yml: its family by PCI ID, chip or product name (``identify``),
and whether the torch wheel the image installs runs it (``rocm_status``, ``runs_code_for``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml

from .pci import VENDOR_NAMES

GPUS_FILE = Path(__file__).with_name("gpus.yml")


@lru_cache(maxsize=None)
def load_gpus(path: str = str(GPUS_FILE)) -> dict:
    # libyaml's loader when PyYAML has it: the pure-Python one takes ~10 times as long, at the
    # start of every run. Both are safe loaders and give the same data.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=loader)  # noqa: S506 - a safe loader


def release_tuple(release: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", str(release))) or (0,)


# --- knowing a GPU ---------------------------------------------------------------------------


def _named(pattern: str, text: str) -> bool:
    return re.search(rf"(?<![\w]){pattern}(?![\w])", text, re.IGNORECASE) is not None


def family_by_name(texts: list[str], vendor: str, families: dict) -> str | None:
    """
    The family whose chip name (GK106, Ellesmere, Navi 22, POLARIS10, ...) one of ``texts``
    carries, else the one whose product name (RTX 3060, RX 580, ...) it carries; None if none.
    """
    text = " | ".join(t for t in texts if t)
    for field_name in ("chips", "products"):
        for key, family in families.items():
            if family.get("vendor") == vendor and \
                    any(_named(p, text) for p in family.get(field_name, [])):
                return key
    return None


def identify(gpu: dict, data: dict | None = None) -> dict:
    """
    What gpus.yml says about one GPU record from the facts: its entry (by PCI ID, else by a name
    lspci/rocminfo/nvidia-smi printed), else its family (by rocminfo's gfx target, else by the
    chip or product name any source printed), and how sure that is ('pci-id', 'name', 'gfx',
    'family' or 'vendor': nothing but the vendor is known).
    """
    data = data or load_gpus()
    devices, families = data["devices"], data["families"]
    entry, how = None, "vendor"
    entry_id = None
    texts = [gpu.get("description"), gpu.get("nvidia_name"), gpu.get("rocm_name"),
             gpu.get("chip")]
    if gpu.get("pci_id") and gpu["pci_id"] in devices:
        entry, how, entry_id = devices[gpu["pci_id"]], "pci-id", gpu["pci_id"]
    if entry is None:
        joined = " | ".join(t for t in texts[:3] if t)
        best = None
        for pci_id, candidate in devices.items():
            if not pci_id.startswith(gpu.get("vendor_id") or ""):
                continue
            for name in candidate.get("names", []):
                if _named(re.escape(name), joined):
                    if best is None or len(name) > best[0]:
                        best = (len(name), pci_id, candidate)
        if best:
            entry, how, entry_id = best[2], "name", best[1]
    family_key = entry["family"] if entry else None
    agent = gpu.get("rocm_agent")
    if family_key is None and agent and agent in families:
        family_key, how = agent, "gfx"
    vendor = VENDOR_NAMES.get(gpu.get("vendor_id") or "")
    if family_key is None and vendor:
        family_key = family_by_name(texts, vendor, families)
        how = "family" if family_key else "vendor"
    family = families.get(family_key, {}) if family_key else {}
    described = re.sub(r"^(Advanced Micro Devices, Inc\. \[AMD/ATI\]|NVIDIA Corporation)\s+", "",
                       gpu.get("description") or "")
    name = (entry or {}).get("name") or gpu.get("nvidia_name") or gpu.get("rocm_name") \
        or described or gpu.get("chip") or gpu.get("pci_id") or "unknown GPU"
    return {"entry": entry, "family_key": family_key, "family": family, "how": how,
            "name": name, "pci_id": entry_id}


def rocm_status(family: dict, data: dict) -> tuple[str, str | None]:
    """
    (status, note) of an AMD family with the image's torch wheel: 'supported' (the wheel has
    code for its target), 'override' (it runs the code of a target the wheel has, under
    HSA_OVERRIDE_GFX_VERSION), or what gpus.yml says (broken, community, unsupported).
    """
    wheel = data["torch"]["rocm"]
    if family.get("status"):
        return family["status"], family.get("note")
    if not family.get("gfx"):
        return "unknown", None
    if family["gfx"] in wheel["targets"]:
        return "supported", family.get("note")
    override = family.get("hsa_override")
    if override and override_target(override) in wheel["targets"]:
        return "override", family.get("note")
    return "unsupported", (f"torch {wheel['wheel']} carries no {family['gfx']} code "
                           f"(its targets: {', '.join(wheel['targets'])})")


def version_tuple(version: str | None) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", str(version or ""))) or (0,)


def runs_code_for(capability: float, archs: list[float]) -> bool:
    """A GPU runs a build's code for its own major version at its minor or below (sm_86 code
    runs on 8.9, not on 9.0; the builds carry no PTX for newer majors)."""
    return any(int(a) == int(capability) and a <= capability + 1e-9 for a in archs)


def override_target(version: str) -> str:
    """HSA_OVERRIDE_GFX_VERSION 10.3.0 -> gfx1030, 9.0.0 -> gfx900, 11.0.0 -> gfx1100."""
    major, minor, step = (version.split(".") + ["0", "0"])[:3]
    return f"gfx{major}{minor}{int(step):x}"
