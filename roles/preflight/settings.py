"""Settings of the hardware preflight and the backend choice (see roles/settings.py)."""

from roles.settings import Setting, integer, one_of

SETTINGS = [
    Setting("accelerator", "auto", one_of("auto", "rocm", "cuda", "cpu"),
            "which backend the host runs; auto picks from the host's hardware"),
    Setting("preflight_min_ram_gb", 16, integer(1, 1024),
            "warn when the host has less RAM than this many GB"),
    Setting("preflight_min_free_disk_gb", 0, integer(0, 100000),
            "warn when free disk for the stack and Docker data is under this many GB; "
            "0 uses the backend's estimate (rocm 45, cuda 25, cpu 18)"),
    Setting("preflight_lowvram_below_gb", 3, integer(1, 64),
            "add --lowvram when the chosen GPU has less VRAM than this many GB"),
    Setting("preflight_medvram_below_gb", 7, integer(1, 64),
            "add --medvram when the chosen GPU has less VRAM than this many GB"),
    Setting("cuda_torch_build", "auto", one_of("auto", "cu121", "cu118"),
            "torch build of the cuda image; auto: the newest the host's NVIDIA driver runs "
            "(cu121 needs driver 525+, cu118 450.80.02+)"),
]


def check(host, values) -> list[str]:
    """Rules that tie settings together."""
    if values["preflight_medvram_below_gb"] < values["preflight_lowvram_below_gb"]:
        return ["preflight_medvram_below_gb must not be under preflight_lowvram_below_gb "
                f"({values['preflight_medvram_below_gb']} < "
                f"{values['preflight_lowvram_below_gb']})"]
    return []
