"""
Which amdgpu kernel driver a ROCm host runs: the module amdgpu-install builds with DKMS
(``amdgpu-dkms``), or the kernel's own amdgpu/KFD (``amdgpu-install --no-dkms``).

The web UI's container brings its own ROCm user space and needs from the host only a kernel
driver with KFD (/dev/kfd). amdgpu-dkms is built for the kernels of its release's day: on a newer
kernel (Ubuntu 22.04's HWE kernel is 6.8 today) the module very likely fails to build, and the
install fails with it; with Secure Boot on, the kernel refuses the module unless it is signed
with a key enrolled at the console (MOK). So ``rocm_dkms: auto`` builds the module only on a
kernel AMD validated the release for, and without Secure Boot; ``true`` or ``false`` force it.

.. code:: python

    choose("auto", "5.3", "6.8.0-45-generic", "SecureBoot disabled")
    # Driver(dkms=False, reason="kernel 6.8.0-45-generic is newer than ...")
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The kernels AMD validated each release's amdgpu-dkms for, as (major, minor).
#
# ROCm 5.3: AMD's release notes (github.com/ROCm/ROCm, README.md at tag rocm-5.3.0, lines 20-24)
# add "Preview Support for Ubuntu 20.04.5 HWE" (kernel 5.15) and send to
# https://www.amd.com/en/support/kb/release-notes/rn-amdgpu-unified-linux-22-20 for it; the
# kernel table of the 5.3 documentation (docs.amd.com, 2022) could not be read here. The nearest
# table AMD published is the OS support page of the ROCm 5.4 documentation, docs/source/
# os_support.md in github.com/ROCm/ROCm at commit c002f2b9259c0cf0a9616626159b0fd2eefee456
# (2023-02-15): "Ubuntu 20.04.5 LTS | 5.15" and "Ubuntu 22.04.1 LTS | 5.15, OEM 5.17" (RHEL 9.1
# 5.14 and 8.6-8.7 4.18 are not sdinfra's). The same kernels are taken for 5.3 and 5.4.
VALIDATED_KERNELS = {
    "5.3": ((5, 15), (5, 17)),
    "5.4": ((5, 15), (5, 17)),
}
SB_STATE = "mokutil --sb-state"
IN_TREE = "the kernel's own amdgpu/KFD serves the container"


@dataclass(frozen=True)
class Driver:
    dkms: bool
    reason: str

    @property
    def label(self) -> str:
        return ("amdgpu-dkms (a module DKMS builds)" if self.dkms
                else "the kernel's own amdgpu (amdgpu-install --no-dkms)")

    def line(self) -> str:
        return f"{self.label}: {self.reason}"


def secure_boot(sb_state: str | None) -> bool | None:
    """What ``mokutil --sb-state`` printed: True (enabled), False (disabled, or no EFI to have
    it), None (not known: no mokutil, or an answer not seen before)."""
    text = (sb_state or "").lower()
    if "secureboot enabled" in text:
        return True
    if ("secureboot disabled" in text or "doesn't support secure boot" in text
            or "efi variables are not supported" in text):
        return False
    return None


def kernel_version(release: str | None) -> tuple[int, int] | None:
    """``uname -r`` ("6.8.0-45-generic") as (6, 8)."""
    found = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


def _shown(kernels) -> str:
    return ", ".join(f"{major}.{minor}" for major, minor in kernels)


def choose(setting, release: str, kernel: str | None, sb_state: str | None,
           source: str = "amdgpu-install") -> Driver:
    """
    The driver for one host. ``setting``: rocm_dkms ("auto", True or False); ``release``:
    rocm_release; ``kernel``: ``uname -r``; ``sb_state``: what ``mokutil --sb-state`` printed
    (None without mokutil).
    """
    if source == "distro":
        return Driver(False, "rocm_source: distro installs no amdgpu-install; " + IN_TREE)
    secure = secure_boot(sb_state)
    if setting is True:
        why = "rocm_dkms: true"
        if secure:
            why += ("; Secure Boot is enabled: the module loads only once its signing key is "
                    "enrolled (MOK) at the console")
        return Driver(True, why)
    if setting is False:
        return Driver(False, f"rocm_dkms: false; {IN_TREE}")
    if secure:
        return Driver(False, f"Secure Boot is enabled ({SB_STATE}): the kernel refuses an "
                             "amdgpu module that is not signed with a key enrolled at the "
                             f"console; {IN_TREE}")
    validated = VALIDATED_KERNELS.get(".".join(release.split(".")[:2]))
    if validated is None:
        return Driver(True, f"no kernel statement of AMD for ROCm {release} is known to "
                            "sdinfra: amdgpu-install's default (set rocm_dkms: false to keep "
                            "the kernel's own driver)")
    version = kernel_version(kernel)
    said = f"AMD validated ROCm {release}'s amdgpu-dkms for {_shown(validated)} kernels"
    if version is None:
        return Driver(False, f"the running kernel is not known; {said}; {IN_TREE} (set "
                             "rocm_dkms: true to build the module)")
    if version in validated:
        unknown = "; Secure Boot state unknown (no mokutil)" if secure is None else ""
        return Driver(True, f"kernel {kernel}: {said}{unknown}")
    if version > max(validated):
        return Driver(False, f"kernel {kernel} is newer than the kernels {said}: the module "
                             f"very likely fails to build on it; {IN_TREE}")
    return Driver(False, f"kernel {kernel} is older than the kernels {said}; {IN_TREE} (an "
                         "older kernel may not know newer GPUs: set rocm_dkms: true to try "
                         "the module)")
