"""``rocminfo``'s agents, as run or as pasted (whole, cut, filtered with grep)."""

from __future__ import annotations

import re

from .command import split_notes
from .text import to_int, unquote

# --- rocminfo --------------------------------------------------------------------------------


# ROCr's ISA name ("amdgcn-amd-amdhsa--gfx1031"), printed under each GPU agent's ISA Info.
_ISA_NAME = re.compile(r"amdgcn-amd-amdhsa--(gfx[0-9a-f]+)")
_GFX_NAME = re.compile(r"gfx[0-9a-f]{3,4}")



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
    lines = [unquote(line) for line in split_notes(text or "")[0]]
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
            agent["bdfid"] = to_int(value)
        elif key == "Segment":
            pool_segment = value
        elif key == "Size" and pool_segment and "GLOBAL" in pool_segment and "COARSE" in \
                pool_segment and agent["vram_kb"] is None:
            agent["vram_kb"] = to_int(value.split("(")[0])
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
