"""NVIDIA's software as the deploys meet it: the NVIDIA Container Toolkit package (nvidia-ctk,
nvidia-container-runtime and its hook) and a driver package with only nvidia-smi. The programs
are programs/nvidia-*.{py,sh}."""

from __future__ import annotations

import os
from pathlib import Path

from testbed.standins.common import program
from testbed.standins.debs import build_deb

NVIDIA_CTK_VERSION = "1.14.3"
NVIDIA_DRIVER_VERSION = "525.147.05"


def build_nvidia_container_toolkit_deb(dest_dir: os.PathLike | str, *,
                                       version: str = NVIDIA_CTK_VERSION) -> Path:
    """Stand-in ``nvidia-container-toolkit`` (Architecture: all, Depends: python3)."""
    return build_deb(
        dest_dir, "nvidia-container-toolkit", f"{version}-1",
        {
            "/usr/bin/nvidia-ctk": (program("nvidia-ctk.py", VERSION=version), 0o755),
            "/usr/bin/nvidia-container-runtime": (program("nvidia-container-runtime.sh"), 0o755),
            "/usr/bin/nvidia-container-runtime-hook": (
                program("nvidia-container-runtime-hook.sh"), 0o755),
        },
        description=(
            "sdinfra STAND-IN for the NVIDIA Container Toolkit (TEST ONLY)\n"
            "Not NVIDIA software.  nvidia-ctk implements `runtime configure --runtime=docker`\n"
            "(merges runtimes.nvidia into /etc/docker/daemon.json) and --version;\n"
            "nvidia-container-runtime hands everything to runc."),
        depends="python3", section="utils",
    )


def build_nvidia_driver_deb(dest_dir: os.PathLike | str, *,
                            package: str = "nvidia-driver-standin",
                            version: str = f"{NVIDIA_DRIVER_VERSION}-1",
                            gpu_name: str = "NVIDIA GeForce GTX 950M", memory_mib: int = 2048,
                            driver_version: str = NVIDIA_DRIVER_VERSION,
                            cuda_version: str = "12.0", compute_cap: str = "5.0",
                            broken: bool = False) -> Path:
    """Stand-in NVIDIA driver: only ``/usr/bin/nvidia-smi`` (no kernel module, no libraries).

    ``broken=True`` gives the nvidia-smi of a host whose driver is installed but not loaded
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver", exit 9).
    """
    script = program("nvidia-smi.py", NAME=gpu_name, MEMORY_MIB=int(memory_mib),
                     DRIVER=driver_version, CUDA=cuda_version, COMPUTE_CAP=compute_cap,
                     BROKEN=bool(broken))
    return build_deb(
        dest_dir, package, version, {"/usr/bin/nvidia-smi": (script, 0o755)},
        description=(
            f"sdinfra STAND-IN for an NVIDIA driver (TEST ONLY)\n"
            f"Not NVIDIA software: no kernel module, no libraries.  Provides an nvidia-smi that\n"
            f"reports a {gpu_name} with {memory_mib} MiB"
            + (" (broken: driver not loaded)" if broken else "") + "."),
        depends="python3", section="non-free/utils",
    )
