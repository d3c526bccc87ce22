"""
The homelab of the story this project comes from, as a pyinfra inventory.

- sd-server: Ubuntu 22.04, two Xeon X5670 (no AVX), 12 GB RAM, Radeon RX 460 4 GB (Polaris,
  gfx803). The preflight will say that ROCm cannot use this card here (no PCIe atomics on that
  platform) and that stock PyTorch cannot run on these CPUs (no AVX).
- laptop: i7-7700HQ, 8 GB RAM, GTX 950M 2 GB: cuda with --lowvram.
- desktop: a CPU-only machine.

Settings shared by every host live in group_data/all.py, per-group ones in group_data/<group>.py.
Run: pyinfra inventories/home.py deploy/site.py
"""

rocm = [
    ("sd-server", {
        "ssh_hostname": "192.168.1.10",
        "rocm_pre_vega": True,  # Polaris is gfx8: ROC_ENABLE_PRE_VEGA=1
        "webui_vram": "med",  # 4 GB
    }),
]

cuda = [
    ("laptop", {
        "ssh_hostname": "192.168.1.20",
        "webui_vram": "low",  # 2 GB
    }),
]

cpu = [
    ("desktop", {"ssh_hostname": "192.168.1.30"}),
]
