"""
The decision: which backend a host runs (rocm, cuda, cpu, or none) and the launch plan that
follows (environment, web UI flags, CPU threads, torch build), each with a one-line reason. Pure
functions of the facts (facts.py), each GPU's evaluation (evaluate.py) and gpus.yml (gpus.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .evaluate import MIN_USABLE_VRAM_GB, evaluate_amd, evaluate_cpu, evaluate_nvidia
from .gpus import GPUS_FILE, identify, load_gpus, override_target, rocm_status
from .pci import AMD, NVIDIA

# Re-exported: what callers and tests read from here.
__all__ = ["BACKENDS", "DEFAULT_ROCM_RELEASE", "Decision", "GPUS_FILE", "MIN_USABLE_VRAM_GB",
           "build_without_hardware", "decide", "identify", "load_gpus", "override_target",
           "rocm_status"]

BACKENDS = ("rocm", "cuda", "cpu")
DEFAULT_ROCM_RELEASE = "5.3"

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


# --- the decision ----------------------------------------------------------------------------


def build_without_hardware(backend: str, cuda_build: str = "auto") -> tuple[str | None, bool]:
    """
    The torch build ``decide`` gives ``backend``, as far as it is known before the host's
    hardware is, and whether that is certain: cpu and rocm have one build each; a CUDA GPU in
    gpus.yml may ask its own (``build``), over the setting.
    """
    torch = load_gpus()["torch"]
    if backend == "cpu":
        return "cpu", True
    if backend == "rocm":
        return "rocm" + torch["rocm"]["wheel"].split("+rocm")[-1], True
    if backend == "cuda":
        return (cuda_build if cuda_build != "auto" else next(iter(torch["cuda"]))), False
    return None, False


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
        decision.torch_build = build_without_hardware("rocm")[0]
    elif decision.backend == "cuda":
        decision.torch_build = (chosen or {}).get("build") or \
            build_without_hardware("cuda", cuda_build)[0]
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
