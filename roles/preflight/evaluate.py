"""
Each GPU and the CPU judged on their own: can the backend run on it, with which VRAM, and why
not (``evaluate_amd``, ``evaluate_nvidia``, ``evaluate_cpu``). ``decide`` picks among them.
"""

from __future__ import annotations

import re

from .gpus import identify, load_gpus, release_tuple, rocm_status, runs_code_for, version_tuple

# Below this much VRAM even --lowvram does not fit an SD 1.x model on the GPU.
MIN_USABLE_VRAM_GB = 1.5

# --- evaluating each GPU ---------------------------------------------------------------------


def _vram_gb(gpu: dict, known: dict) -> tuple[float | None, str]:
    if gpu.get("vram_mb"):
        return round(gpu["vram_mb"] / 1024, 1), gpu.get("vram_source") or "reported"
    sizes = (known["entry"] or {}).get("vram_gb")
    if sizes:
        return float(min(sizes)), "table"
    return None, "unknown"


def _label(gpu: dict, known: dict) -> str:
    target = known["family"].get("gfx") or known["family"].get("arch")
    ids = gpu.get("pci_id") or (f"{known['pci_id']} by name" if known.get("pci_id") else None)
    where = f" at {gpu['slot']}" if gpu.get("slot") else " (slot unknown)"
    return known["name"] + (f" [{ids}]" if ids else "") + (f", {target}" if target else "") \
        + where


def evaluate_amd(gpu: dict, facts: dict, release: str) -> dict:
    known = identify(gpu)
    family = known["family"]
    label = _label(gpu, known)
    kfd, rocminfo = facts["kfd"], facts["rocminfo"]
    blockers: list[str] = []
    cautions: list[str] = []
    evidence: list[str] = []

    # PCIe atomics and whether ROCm sees the card: decisive facts first.
    pci = gpu.get("pci_id")
    # "No GPU agent" only from a whole rocminfo (its "*** Done ***" there): a cut or filtered
    # paste that shows none proves nothing.
    cpu_only = (rocminfo["present"] and rocminfo["complete"] and not rocminfo["error"]
                and rocminfo["agents"] and not rocminfo["gpu_agents"])
    if (pci and pci in kfd["rejected"]) or kfd["no_atomics"]:
        line = next((l for l in kfd["lines"] if pci and pci in l.lower() and "atomic" in
                     l.lower()), None) or \
            next((l for l in kfd["lines"] if "atomic" in l.lower()), "PCI rejects atomics")
        text = f"the kernel skipped it for ROCm: \"{_kernel_message(line)}\""
        if gpu.get("atomics_reqen") is False:
            text += "; lspci shows AtomicOpsCtl: ReqEn-"
        if pci and pci in kfd["added"]:
            text += (f" (kfd added a {pci} too: of several cards of this model, one in another "
                     "slot has them)")
        if family.get("needs_pcie_atomics"):
            text += (" (gfx8 needs PCIe atomics from the CPU's root port: PCIe 3.0, Intel "
                     "Haswell or AMD Zen and newer)")
        blockers.append(text)
        if cpu_only:
            evidence.append(f"rocminfo lists CPU agents only ({rocminfo['cpu_agents']})")
        if gpu.get("link_sta") and "downgraded" in gpu["link_sta"]:
            evidence.append(f"PCIe link {gpu['link_sta']}, capable of {gpu.get('link_cap')}")
    elif cpu_only:
        blockers.append(f"rocminfo lists CPU agents only ({rocminfo['cpu_agents']}): "
                        "ROCm does not see this GPU")
    atomics = "not needed"
    if family.get("needs_pcie_atomics") or known["how"] == "vendor":
        if (pci and pci in kfd["rejected"]) or kfd["no_atomics"]:
            atomics = "rejected"
        elif (pci and pci in kfd["added"]) or gpu.get("rocm_agent"):
            atomics = "ok"
        elif gpu.get("atomics_reqen") is True:
            atomics = "ok"
        else:
            atomics = "unknown"
            if family.get("needs_pcie_atomics"):
                if gpu.get("atomics_reqen") is False and gpu.get("driver") == "amdgpu":
                    hint = ("lspci shows AtomicOpsCtl: ReqEn- with amdgpu loaded, so the kernel "
                            "probably could not enable PCIe atomics")
                else:
                    hint = "the GPU's own AtomicOpsCap does not tell whether the root port has them"
                cautions.append(f"{label}: gfx8 needs PCIe atomics and they could not be "
                                f"confirmed ({hint}); check with `sudo dmesg | grep kfd` "
                                "(\"PCI rejects atomics\" means no ROCm)")

    # What stock PyTorch ROCm builds make of this target in the chosen release.
    # Judged against the torch wheel the image installs: the container runs the wheel's own
    # ROCm; the host's release gives the kernel driver only.
    data = load_gpus()
    status, note = rocm_status(family, data)
    wheel = data["torch"]["rocm"]["wheel"]
    if known["how"] == "vendor":
        status = "unknown"
        cautions.append(f"{label}: unknown chip - neither its PCI ID nor a chip or product name "
                        "gpus.yml knows; deciding by vendor (AMD): check ROCm's support list "
                        "for this GPU")
    if status in ("community", "broken", "unsupported"):
        blockers.append(f"torch {wheel}: {note or status}")
    driving = bool(gpu.get("rocm_agent")) or (pci is not None and pci in kfd["added"])
    if family.get("driver_from") and release_tuple(release) < release_tuple(family["driver_from"]):
        if driving:
            cautions.append(f"{label}: the kernel drives it now, but ROCm {release}'s amdgpu "
                            f"kernel driver predates {family.get('gfx')} (ROCm "
                            f"{family['driver_from']} or newer): keep the kernel's own driver "
                            "(rocm_dkms: false) or set rocm_release to "
                            f"{family['driver_from']} or newer")
        else:
            blockers.append(f"the amdgpu kernel driver of ROCm {release} predates "
                            f"{family.get('gfx')}: set rocm_release to {family['driver_from']} "
                            "or newer")
    vram, vram_source = _vram_gb(gpu, known)
    if family.get("apu") and status not in ("community", "broken", "unsupported"):
        need = family.get("min_vram_gb", 4)
        if vram is None or vram_source == "table":
            blockers.append(f"APU whose VRAM carve-out is unknown; AUTOMATIC1111 asks at least "
                            f"{need} GB (set it in the firmware)")
        elif vram < need:
            blockers.append(f"APU with a {vram} GB VRAM carve-out; AUTOMATIC1111 asks at least "
                            f"{need} GB (raise the UMA frame buffer in the firmware)")
    if vram is not None and vram_source != "table" and vram < MIN_USABLE_VRAM_GB:
        blockers.append(f"only {vram} GB VRAM; SD needs about 2 GB even with --lowvram")
    if gpu.get("driver") == "vfio-pci":
        blockers.append("bound to vfio-pci (passed through to a virtual machine): this host "
                        "cannot use it")
    elif gpu.get("driver") and gpu["driver"] != "amdgpu":
        cautions.append(f"{label}: kernel driver in use is {gpu['driver']}, not amdgpu")

    rank = {"supported": 3, "override": 2, "unknown": 2}.get(status, 0)
    return {
        "vendor": "amd", "gpu": gpu, "known": known, "label": label, "status": status,
        "note": note, "blockers": blockers, "cautions": cautions, "evidence": evidence,
        "atomics": atomics, "vram_gb": vram, "vram_source": vram_source,
        "usable": not blockers, "rank": rank if not blockers else 0,
    }


def evaluate_nvidia(gpu: dict, facts: dict, data: dict, cuda_build: str = "auto") -> dict:
    known = identify(gpu, data)
    family = known["family"]
    label = _label(gpu, known)
    blockers, cautions, reasons = [], [], []
    builds = data["torch"]["cuda"]
    names = [cuda_build] if cuda_build != "auto" else list(builds)
    capability = family.get("compute_capability")
    if known["how"] == "vendor":
        cautions.append(f"{label}: unknown chip - neither its PCI ID nor a chip or product name "
                        "gpus.yml knows; deciding by vendor (NVIDIA): the image's CUDA builds "
                        "need compute capability 5.0 or newer")
    fitting = [n for n in names if capability is None or runs_code_for(capability,
                                                                       builds[n]["archs"])]
    if not fitting:
        carried = "; ".join(f"{n} ({builds[n]['torch']}): "
                            + ", ".join(str(a) for a in builds[n]["archs"]) for n in names)
        blockers.append(f"compute capability {capability} ({family.get('arch')}): the image's "
                        f"torch builds carry no code for it ({carried})")
    smi = facts["nvidia_smi"]
    driver = smi.get("driver")
    build = None
    if fitting:
        runnable = [n for n in fitting if driver is None or
                    version_tuple(driver) >= version_tuple(builds[n]["min_driver"])]
        build = runnable[0] if runnable else fitting[0]
        need = builds[build]["min_driver"]
        if driver is None:
            cautions.append(f"NVIDIA driver version unknown: torch {builds[build]['torch']} "
                            f"needs driver {need} or newer (CUDA minor version compatibility)")
        elif runnable:
            reasons.append(f"torch {builds[build]['torch']}: driver {driver} "
                           f"({smi.get('driver_source')}) is {need} or newer"
                           + (f"; {fitting[0]} would need {builds[fitting[0]]['min_driver']}"
                              if build != fitting[0] else ""))
        else:
            needs = ", ".join(f"{n}: {builds[n]['min_driver']}" for n in fitting)
            cautions.append(f"NVIDIA driver {driver} is older than every build the image can "
                            f"install needs ({needs}): upgrade the driver to {need} or newer, "
                            "or the web UI fails at every start on torch.cuda.is_available()")
    vram, vram_source = _vram_gb(gpu, known)
    if vram is not None and vram_source != "table" and vram < MIN_USABLE_VRAM_GB:
        blockers.append(f"only {vram} GB VRAM; SD needs about 2 GB even with --lowvram")
    if gpu.get("driver") == "vfio-pci":
        blockers.append("bound to vfio-pci (passed through to a virtual machine): this host "
                        "cannot use it")
    if not smi["present"] and driver is None:
        cautions.append("nvidia-smi not found: install the NVIDIA driver before the container "
                        "toolkit (it needs a working driver)")
    elif smi["present"] and smi["error"]:
        cautions.append(f"nvidia-smi failed: \"{smi['error']}\" - the driver is not working")
    rank = 3 if known["how"] != "vendor" else 2
    return {
        "vendor": "nvidia", "gpu": gpu, "known": known, "label": label, "status": "supported",
        "note": None, "blockers": blockers, "cautions": cautions, "evidence": [],
        "atomics": "not needed", "vram_gb": vram, "vram_source": vram_source,
        "usable": not blockers, "rank": rank if not blockers else 0, "build": build,
        "build_reasons": reasons,
    }


def _kernel_message(line: str) -> str:
    return re.sub(r"^\[\s*[\d.]+\]\s*", "", line).strip()


# --- the CPU ---------------------------------------------------------------------------------


def evaluate_cpu(facts: dict) -> dict:
    cpu = facts["cpu"]
    model = cpu.get("model") or "the CPU"
    arch = cpu.get("arch")
    avx = cpu["flags"].get("avx")
    if arch and arch not in ("x86_64", "aarch64"):
        return {"usable": False, "reason": f"{arch}: no stock PyTorch build for this "
                                           "architecture", "caution": None}
    if arch == "aarch64":
        return {"usable": True, "reason": f"{model} (aarch64): stock PyTorch has CPU wheels for "
                                          "aarch64", "caution": "aarch64 CPU hosts are untested "
                                                                "by sdinfra"}
    if avx is False:
        return {"usable": False, "caution": None,
                "reason": f"no stock CPU build: {model} lacks AVX; official PyTorch wheels "
                          "die with \"Illegal instruction (core dumped)\", exit 132"}
    if avx is None:
        return {"usable": True, "reason": "CPU flags unknown (no cpuinfo)",
                "caution": "CPU flags unknown: official PyTorch wheels need AVX; check "
                           "`grep -o avx /proc/cpuinfo`"}
    extra = ", ".join(f for f in ("avx2", "fma", "f16c") if cpu["flags"].get(f))
    return {"usable": True, "caution": None,
            "reason": f"{model} has AVX" + (f" ({extra})" if extra else "")}
