"""
The decision: which backend a host runs (rocm, cuda, cpu, or none) and the settings that follow,
each with a one-line reason. Pure functions of the facts (see facts.py) and gpus.yml.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from .facts import AMD, NVIDIA, VENDOR_NAMES

GPUS_FILE = Path(__file__).with_name("gpus.yml")
BACKENDS = ("rocm", "cuda", "cpu")
DEFAULT_ROCM_RELEASE = "5.3"

# Below this much VRAM even --lowvram does not fit an SD 1.x model on the GPU.
MIN_USABLE_VRAM_GB = 1.5
# Disk the backend's image needs where Docker keeps its data, and the stack for models/outputs.
# The rocm figure is the seed's: rocm/pytorch is ~10 GB compressed, ~30 GB extracted, +5 GB build.
IMAGE_GB = {"rocm": 35, "cuda": 15, "cpu": 8}
STACK_GB = 10
# ROCm 5.3's amdgpu-install is published for these Ubuntu releases only.
ROCM_DISTRIBUTIONS = {("ubuntu", "20.04"), ("ubuntu", "22.04")}


@dataclass
class Decision:
    backend: str  # 'rocm' | 'cuda' | 'cpu' | 'none'
    reasons: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    webui_args: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    gpu: dict | None = None
    cpu_threads: int | None = None
    requested: str = "auto"
    rocm_release: str = DEFAULT_ROCM_RELEASE
    # The torch build the image installs (roles/webui TORCH_COMMANDS): cpu, rocm5.6, cu121, ...
    torch_build: str | None = None

    @property
    def deployable(self) -> bool:
        return self.backend != "none"

    def to_json(self) -> dict:
        """The machine-readable decision: the launch plan (env, webui_args, cpu_threads,
        torch_build) with its reasons and warnings, and the GPU chosen."""
        return {
            "backend": self.backend,
            "reasons": list(self.reasons),
            "env": dict(self.env),
            "webui_args": list(self.webui_args),
            "warnings": list(self.warnings),
            "gpu": dict(self.gpu) if self.gpu is not None else None,
            "cpu_threads": self.cpu_threads,
            "torch_build": self.torch_build,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


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


def override_target(version: str) -> str:
    """HSA_OVERRIDE_GFX_VERSION 10.3.0 -> gfx1030, 9.0.0 -> gfx900, 11.0.0 -> gfx1100."""
    major, minor, step = (version.split(".") + ["0", "0"])[:3]
    return f"gfx{major}{minor}{int(step):x}"


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


# --- the decision ----------------------------------------------------------------------------


def decide(facts: dict, requested: str = "auto", rocm_release: str = DEFAULT_ROCM_RELEASE,
           min_ram_gb: int = 16, lowvram_below_gb: float = 3, medvram_below_gb: float = 7,
           min_free_disk_gb: int | None = None, cuda_build: str = "auto") -> Decision:
    """
    Pick the backend for one host from its facts. ``requested`` is the user's ``accelerator``
    setting: 'auto' chooses; 'rocm', 'cuda' or 'cpu' wins, with warnings when the facts say it
    will not work. A host where nothing can run stock PyTorch builds gets backend 'none'.
    """
    if requested not in ("auto",) + BACKENDS:
        raise ValueError(f"accelerator must be auto, rocm, cuda or cpu, not {requested!r}")
    data = load_gpus()
    decision = Decision(backend="none", requested=requested, rocm_release=str(rocm_release))
    candidates = []
    for gpu in facts["gpus"]:
        if gpu["vendor_id"] == AMD:
            candidates.append(evaluate_amd(gpu, facts, str(rocm_release)))
        elif gpu["vendor_id"] == NVIDIA:
            candidates.append(evaluate_nvidia(gpu, facts, data, cuda_build))
    cpu = evaluate_cpu(facts)
    lspci_unknown = facts["sections"].get("lspci-nn") in ("missing", "absent") and \
        facts["sections"].get("lspci-vvv") in ("missing", "absent")
    if lspci_unknown and not candidates:
        decision.warnings.append("lspci not available: GPUs unknown (install pciutils, or "
                                 "capture `lspci -nn`)")

    usable = sorted((c for c in candidates if c["usable"]),
                    key=lambda c: (c["rank"], c["vram_gb"] or 0, c["vendor"] == "nvidia"),
                    reverse=True)
    chosen = None
    if requested == "auto":
        auto = [c for c in usable if c["rank"] >= 2]
        if auto:
            chosen = auto[0]
            decision.backend = "cuda" if chosen["vendor"] == "nvidia" else "rocm"
            decision.reasons.append(_gpu_reason(chosen, decision.rocm_release))
        else:
            for candidate in candidates:
                why = "; ".join(candidate["blockers"]) or _weak_reason(candidate)
                backend = "ROCm" if candidate["vendor"] == "amd" else "CUDA"
                decision.reasons.append(f"no {backend} on {candidate['label']}: {why}")
                decision.reasons.extend(f"evidence for {candidate['gpu']['slot'] or candidate['gpu']['pci_id']}: {e}"
                                        for e in candidate["evidence"])
            if not candidates:
                if lspci_unknown:
                    decision.reasons.append("GPUs unknown: no lspci output")
                else:
                    decision.reasons.append("no AMD or NVIDIA GPU found")
            if cpu["usable"]:
                decision.backend = "cpu"
                decision.reasons.append(f"cpu: {cpu['reason']}")
            else:
                decision.backend = "none"
                decision.reasons.append(cpu["reason"])
                decision.reasons.append("nothing on this host runs stock PyTorch builds: "
                                        "not deployed")
    else:
        decision.backend = requested
        vendor = {"rocm": "amd", "cuda": "nvidia"}.get(requested)
        mine = sorted((c for c in candidates if c["vendor"] == vendor),
                      key=lambda c: (c["usable"], c["rank"], c["vram_gb"] or 0), reverse=True)
        auto_choice = decide(facts, "auto", rocm_release, min_ram_gb, lowvram_below_gb,
                             medvram_below_gb, min_free_disk_gb, cuda_build).backend
        decision.reasons.append(f"accelerator: {requested} is set for this host (auto would "
                                f"pick {auto_choice})")
        if requested == "cpu":
            if not cpu["usable"]:
                decision.warnings.append(f"accelerator: cpu will not work here - {cpu['reason']}")
            else:
                decision.reasons.append(f"cpu: {cpu['reason']}")
        elif not mine:
            brand = "AMD" if vendor == "amd" else "NVIDIA"
            decision.warnings.append(f"accelerator: {requested} but no {brand} GPU was found: "
                                     "the web UI will not start on the GPU")
        else:
            chosen = mine[0]
            decision.reasons.append(_gpu_reason(chosen, decision.rocm_release))
            if chosen["blockers"]:
                decision.warnings.append(f"accelerator: {requested} will likely not work on "
                                         f"{chosen['label']}: " + "; ".join(chosen["blockers"]))

    if chosen is not None:
        _gpu_settings(decision, chosen, lowvram_below_gb, medvram_below_gb)
        _hide_others(decision, chosen, candidates, facts["kfd"]["rejected"])
    if decision.backend == "cpu":
        _cpu_settings(decision, facts)
        decision.torch_build = "cpu"
    elif decision.backend in ("rocm", "cuda"):
        decision.cpu_threads = facts["cpu"].get("cores")
    if decision.backend == "rocm":
        decision.torch_build = "rocm" + data["torch"]["rocm"]["wheel"].split("+rocm")[-1]
    elif decision.backend == "cuda":
        decision.torch_build = (chosen or {}).get("build") or \
            (cuda_build if cuda_build != "auto" else next(iter(data["torch"]["cuda"])))
        if chosen is not None:
            decision.reasons.extend(chosen["build_reasons"])
    for candidate in candidates:
        for caution in candidate["cautions"]:
            if caution not in decision.warnings and (candidate is chosen or
                                                     decision.backend == "none" or
                                                     "not in gpus.yml" in caution):
                decision.warnings.append(caution)
    if cpu["caution"] and decision.backend == "cpu":
        decision.warnings.append(cpu["caution"])
    _host_warnings(decision, facts, min_ram_gb, min_free_disk_gb)
    return decision


def _gpu_reason(candidate: dict, release: str) -> str:
    by_vendor = " (unknown chip: chosen by vendor)" if candidate["known"]["how"] == "vendor" \
        else ""
    if candidate["vendor"] == "nvidia":
        family = candidate["known"]["family"]
        cc = family.get("compute_capability")
        return (f"cuda: {candidate['label']}" + (f" (compute capability {cc})" if cc else "")
                + by_vendor)
    text = f"rocm: {candidate['label']}" + by_vendor
    status = candidate["status"]
    wheel = load_gpus()["torch"]["rocm"]["wheel"]
    if status == "supported":
        text += f", supported by the image's torch {wheel} wheel (it carries this target's code)"
    elif status == "override":
        text += f", torch {wheel}: {candidate['note']}"
    if candidate["atomics"] == "ok" and candidate["known"]["family"].get("needs_pcie_atomics"):
        text += "; PCIe atomics enabled"
    return text


def _weak_reason(candidate: dict) -> str:
    if candidate["status"] == "unknown":
        return "unknown chip, so not picked automatically (set accelerator to use it)"
    return candidate["status"]


def _gpu_settings(decision: Decision, chosen: dict, lowvram_below: float,
                  medvram_below: float) -> None:
    family = chosen["known"]["family"]
    gpu = chosen["gpu"]
    decision.gpu = {
        "slot": gpu["slot"],
        "pci_id": gpu.get("pci_id") or chosen["known"]["pci_id"],
        "vendor": chosen["vendor"],
        "name": chosen["known"]["name"],
        "family": chosen["known"]["family_key"],
        "target": family.get("gfx") or family.get("arch"),
        "compute_capability": family.get("compute_capability"),
        "vram_gb": chosen["vram_gb"],
        "vram_source": chosen["vram_source"],
        "rocm_status": chosen["status"] if chosen["vendor"] == "amd" else None,
        "pcie_atomics": chosen["atomics"],
        "identified_by": chosen["known"]["how"],
    }
    if decision.backend == "rocm":
        # No ROC_ENABLE_PRE_VEGA: it gates gfx8 in ROCclr's OpenCL path only (ROCclr rocm-5.3.0
        # device/device.hpp, runtimeRocSupported: `!IS_HIP && !ROC_ENABLE_PRE_VEGA`); ROCr
        # (rocminfo) and HIP (PyTorch) never read it.
        if family.get("hsa_override"):
            decision.env["HSA_OVERRIDE_GFX_VERSION"] = family["hsa_override"]
            decision.reasons.append(f"env HSA_OVERRIDE_GFX_VERSION={family['hsa_override']}: "
                                    f"{family.get('gfx')} runs the code stock builds carry for "
                                    f"{override_target(family['hsa_override'])}")
        if family.get("full_precision"):
            decision.webui_args += ["--precision", "full", "--no-half"]
            decision.reasons.append(f"--precision full --no-half: half precision gives NaNs or "
                                    f"black images on {family.get('gfx')}")
    vram, source = chosen["vram_gb"], chosen["vram_source"]
    if vram is None:
        decision.warnings.append("VRAM size unknown: no --lowvram/--medvram chosen")
        return
    where = "smallest variant of this card" if source == "table" else f"from {source}"
    if vram < lowvram_below:
        decision.webui_args.append("--lowvram")
        decision.reasons.append(f"--lowvram: {vram} GB VRAM ({where}) is under {lowvram_below} GB")
    elif vram < medvram_below:
        decision.webui_args.append("--medvram")
        decision.reasons.append(f"--medvram: {vram} GB VRAM ({where}) is under "
                                f"{medvram_below} GB")
    else:
        decision.reasons.append(f"no VRAM flag: {vram} GB VRAM ({where})")
    if source == "table":
        decision.warnings.append("VRAM not reported by the host; assumed the smallest variant "
                                 f"of this card ({vram} GB)")


def _hide_others(decision: Decision, chosen: dict, candidates: list[dict],
                 rejected: list[str]) -> None:
    """
    With more than one GPU of the chosen vendor the runtime would see, show it only the chosen
    one: a runtime that meets a GPU its build has no code for aborts ("hipErrorNoBinaryForGpu"),
    and the web UI would take device 0 whichever that is.

    NVIDIA: CUDA_DEVICE_ORDER=PCI_BUS_ID makes CUDA count in PCI bus order, nvidia-smi's own
    order, so the index is nvidia-smi's (or the rank of the slot among the NVIDIA GPUs).
    AMD: ROCR_VISIBLE_DEVICES counts ROCr's GPU agents, in KFD's topology order: rocminfo's
    order when rocminfo listed them; else the order amdgpu probed the cards in (PCI bus order)
    among those kfd added - an estimate, said so. HIP_VISIBLE_DEVICES is not set as well: it
    counts what ROCr left visible, so the same number would point past the one GPU left.
    """
    vendor = chosen["vendor"]
    # What the runtime lists: not a card bound to vfio-pci, not one kfd skipped.
    seen = [c for c in candidates if c["vendor"] == vendor and c["gpu"].get("driver") != "vfio-pci"
            and not (vendor == "amd" and c["gpu"].get("pci_id") in rejected)]
    if len(seen) < 2 or chosen not in seen:
        return
    others = ", ".join(c["label"] for c in seen if c is not chosen)
    gpu = chosen["gpu"]
    slots = sorted(c["gpu"].get("slot") or "~" for c in seen)
    rank = slots.index(gpu.get("slot") or "~")
    if vendor == "nvidia":
        index = gpu.get("nvidia_index")
        how = "nvidia-smi's index"
        if index is None:
            index, how = rank, "its rank in PCI bus order"
            if "~" in slots:
                decision.warnings.append("CUDA_VISIBLE_DEVICES: a GPU's PCI slot is unknown, so "
                                         "its index is a guess; check with nvidia-smi -L")
        decision.env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        decision.env["CUDA_VISIBLE_DEVICES"] = str(index)
        decision.reasons.append(f"env CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES={index} "
                                f"({how}): the web UI sees only {chosen['label']}, not {others}")
        return
    index = gpu.get("rocm_index")
    how = "its place among rocminfo's GPU agents"
    if index is None:
        index, how = rank, "its rank in PCI bus order, the order amdgpu probes cards in"
        decision.warnings.append(
            "ROCR_VISIBLE_DEVICES: ROCm counts GPUs in KFD's topology order, estimated here from "
            "the PCI bus order (no rocminfo); check with rocminfo that agent "
            f"{index} is {chosen['known']['family'].get('gfx') or chosen['label']}")
    decision.env["ROCR_VISIBLE_DEVICES"] = str(index)
    decision.reasons.append(f"env ROCR_VISIBLE_DEVICES={index} ({how}): ROCm sees only "
                            f"{chosen['label']}, not {others}")


def _cpu_settings(decision: Decision, facts: dict) -> None:
    decision.webui_args = ["--use-cpu", "all", "--precision", "full", "--no-half",
                           "--skip-torch-cuda-test"]
    decision.reasons.append("--use-cpu all --precision full --no-half --skip-torch-cuda-test: "
                            "the CPU computes in full precision and there is no GPU to test")
    cpu = facts["cpu"]
    cores, threads = cpu.get("cores"), cpu.get("threads")
    if cores:
        decision.cpu_threads = cores
        decision.env["OMP_NUM_THREADS"] = str(cores)
        smt = f" of {threads} threads" if threads and threads != cores else ""
        decision.reasons.append(f"OMP_NUM_THREADS={cores}: one thread per physical core{smt}; "
                                "hyper-threads add little to matrix math")


def _host_warnings(decision: Decision, facts: dict, min_ram_gb: int,
                   min_free_disk_gb: int | None) -> None:
    ram = facts["memory"].get("total_gb")
    if ram is not None and ram < min_ram_gb:
        text = (f"RAM {ram} GB is under {min_ram_gb} GB: an 8 GB host could not load the SD 1.4 "
                "model in the seed story (16 GB recommended)")
        if decision.backend == "cpu":
            text += "; the cpu backend keeps the whole model in RAM in full precision"
        decision.warnings.append(text)
    if decision.backend == "none":
        return
    disk = facts["disk"]
    image = IMAGE_GB[decision.backend]
    stack, docker = disk.get("stack"), disk.get("docker")
    if stack and docker and stack["filesystem"] == docker["filesystem"] and \
            stack["mount"] == docker["mount"]:
        need = min_free_disk_gb or image + STACK_GB
        if stack["free_gb"] < need:
            decision.warnings.append(
                f"free disk {stack['free_gb']} GB on {stack['mount']} (stack and Docker data) is "
                f"under {need} GB: the {decision.backend} image needs about {image} GB, models "
                f"{STACK_GB} GB more")
    else:
        for what, row, need in (("Docker data", docker, min_free_disk_gb or image),
                                ("the stack", stack, min_free_disk_gb or STACK_GB)):
            if row and row["free_gb"] < need:
                decision.warnings.append(
                    f"free disk {row['free_gb']} GB on {row['mount']} ({what}) is under "
                    f"{need} GB" + (f": the {decision.backend} image needs about {image} GB"
                                    if what == "Docker data" else ": models need room"))
    if decision.backend == "rocm":
        os_id, version = facts["os"].get("id"), facts["os"].get("version_id")
        if os_id and (os_id, version) not in ROCM_DISTRIBUTIONS:
            decision.warnings.append(
                f"{facts['os'].get('pretty_name') or os_id}: ROCm {decision.rocm_release}'s "
                "amdgpu-install is published for Ubuntu 20.04 and 22.04 only")
        if facts["sections"].get("rocminfo") in ("missing",):
            decision.warnings.append("ROCm is not installed yet (no rocminfo): the rocm role "
                                     "installs it and the host needs a reboot after")
