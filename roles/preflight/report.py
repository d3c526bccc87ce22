"""The human-readable preflight report: what the host has, what it will run, and why."""

from __future__ import annotations

from .decide import Decision


def _yes(value) -> str:
    return {True: "yes", False: "no", None: "?"}[value]


def _gb(value) -> str:
    return "?" if value is None else f"{value:g} GB"


def report(host_name: str, decision: Decision, facts: dict,
           rocm_driver: str | None = None) -> str:
    """The report; ``rocm_driver``: the rocm role's kernel driver choice and why, when known."""
    lines = [f"Hardware preflight: {host_name}"]
    cpu = facts["cpu"]
    if cpu.get("model") or cpu.get("threads"):
        topology = []
        if cpu.get("sockets") and cpu["sockets"] > 1:
            topology.append(f"{cpu['sockets']} sockets")
        if cpu.get("cores"):
            topology.append(f"{cpu['cores']} cores")
        if cpu.get("threads"):
            topology.append(f"{cpu['threads']} threads")
        flags = ", ".join(f"{name} {_yes(cpu['flags'].get(name))}"
                          for name in ("avx", "avx2", "fma", "f16c"))
        lines.append(f"  CPU     {cpu.get('model') or '?'} ({', '.join(topology) or '?'}); "
                     f"{flags}")
    else:
        lines.append("  CPU     unknown (no cpuinfo)")
    memory = facts["memory"]
    if memory.get("total_gb") is not None:
        lines.append(f"  RAM     {_gb(memory['total_gb'])}"
                     + (f", swap {_gb(memory['swap_gb'])}" if memory.get("swap_gb") else ""))
    else:
        lines.append("  RAM     unknown (no meminfo)")
    disk = facts["disk"]
    for label, what in (("stack", "stack"), ("docker", "Docker")):
        row = disk.get(label)
        if row:
            lines.append(f"  Disk    {what}: {_gb(row['free_gb'])} free on {row['mount']}"
                         + (f" (nearest existing: {row['path']})" if row.get("path") else ""))
    os_facts = facts["os"]
    if os_facts.get("pretty_name") or os_facts.get("kernel"):
        lines.append(f"  OS      {os_facts.get('pretty_name') or os_facts.get('id') or '?'}"
                     + (f", kernel {os_facts['kernel']}" if os_facts.get("kernel") else ""))
    if not facts["gpus"]:
        states = facts["sections"]
        if states.get("lspci-nn") in ("missing", "absent") and \
                states.get("lspci-vvv") in ("missing", "absent"):
            lines.append("  GPU     unknown (no lspci output)")
        else:
            lines.append("  GPU     none found")
    for gpu in facts["gpus"]:
        details = []
        if gpu.get("driver"):
            details.append(f"driver {gpu['driver']}")
        if gpu.get("vram_mb"):
            details.append(f"VRAM {gpu['vram_mb'] / 1024:.1f} GB ({gpu['vram_source']})")
        if gpu.get("atomics_reqen") is not None:
            details.append(f"AtomicOpsCtl ReqEn{'+' if gpu['atomics_reqen'] else '-'}")
        if gpu.get("caps_denied"):
            details.append("PCIe capabilities hidden (lspci not run as root)")
        if gpu.get("link_sta"):
            details.append(f"link {gpu['link_sta']}"
                           + (f" of {gpu['link_cap']}" if gpu.get("link_cap") else ""))
        if gpu.get("rocm_agent"):
            details.append(f"rocminfo {gpu['rocm_agent']}")
        name = gpu.get("nvidia_name") or gpu.get("description") or "?"
        lines.append(f"  GPU     {gpu['slot'] or '?'} [{gpu.get('pci_id') or '?'}] {name}"
                     + (f" ({', '.join(gpu['sources'])})" if gpu.get("sources") else "")
                     + (f"; {', '.join(details)}" if details else ""))
    kfd = facts["kfd"]
    if kfd["readable"] is False:
        lines.append("  Kernel  dmesg not readable (run as root to see kfd's verdict)")
    if facts["sections"].get("dmesg") == "skipped":
        lines.append("  Kernel  dmesg not read: rocminfo lists a GPU agent for each AMD GPU, so "
                     "kfd accepted them all")
    for line in kfd["lines"]:
        lines.append(f"  Kernel  {line}")
    rocminfo = facts["rocminfo"]
    if rocminfo["present"]:
        agents = ", ".join(a["name"] or "?" for a in rocminfo["gpu_agents"]) or (
            "CPU agents only" if rocminfo["complete"] else "no GPU agent in the part captured")
        lines.append(f"  ROCm    rocminfo: {rocminfo['error'] or agents}")
    smi = facts["nvidia_smi"]
    if smi["present"]:
        found = ", ".join(f"{g['name']} {g['memory_mib'] or '?'} MiB" for g in smi["gpus"])
        lines.append(f"  NVIDIA  nvidia-smi: {smi['error'] or found or '?'}"
                     + (f"; driver {smi['driver']}" if smi.get("driver") else "")
                     + (f", CUDA {smi['cuda']}" if smi.get("cuda") else ""))
    missing = [name for name, state in facts["sections"].items()
               if state in ("missing", "unavailable")]
    if missing:
        lines.append(f"  Missing {', '.join(missing)} (not an error: those facts are unknown)")

    verdict = decision.backend
    if decision.backend == "none":
        verdict += " - not deployed"
    if decision.requested != "auto":
        verdict += f" (accelerator: {decision.requested} set)"
    lines.append(f"Backend: {verdict}")
    lines.extend(f"  - {reason}" for reason in decision.reasons)
    if decision.env:
        lines.append("Environment: " + " ".join(f"{k}={v}" for k, v in decision.env.items()))
    if decision.webui_args:
        lines.append("Web UI args: " + " ".join(decision.webui_args))
    if decision.cpu_threads:
        lines.append(f"CPU threads: {decision.cpu_threads}")
    if rocm_driver:
        lines.append(f"ROCm kernel driver: {rocm_driver}")
    if decision.warnings:
        lines.append("Warnings:")
        lines.extend(f"  ! {warning}" for warning in decision.warnings)
    return "\n".join(lines)
