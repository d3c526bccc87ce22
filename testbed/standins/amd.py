"""AMD's software as the deploys meet it: an ``amdgpu-install`` .deb whose installer
(programs/amdgpu-install.sh) "installs" ROCm as stand-in rocminfo, rocm-smi and
rocm_agent_enumerator that print what a host with an RX 460 (gfx803), or with no usable GPU,
shows."""

from __future__ import annotations

import os
from pathlib import Path

from testbed.standins.common import program
from testbed.standins.debs import build_deb

AMDGPU_INSTALL_VERSION = "5.3.50300-1"
AMDGPU_INSTALL_FILENAME = f"amdgpu-install_{AMDGPU_INSTALL_VERSION}_all.deb"
ROCM_VERSION_INFO = "5.3.0-50300"


ROCMINFO_HEAD = """\
ROCk module is loaded
=====================
HSA System Attributes
=====================
Runtime Version:         1.1
System Timestamp Freq.:  1000.000000MHz
Sig. Max Wait Duration:  18446744073709551615 (0xFFFFFFFFFFFFFFFF) (timestamp count)
Machine Model:           LARGE
System Endianness:       LITTLE

==========
HSA Agents
==========
*******
Agent 1
*******
  Name:                    Intel(R) Core(TM) i5-4590 CPU @ 3.30GHz
  Uuid:                    CPU-XX
  Marketing Name:          Intel(R) Core(TM) i5-4590 CPU @ 3.30GHz
  Vendor Name:             CPU
  Feature:                 None specified
  Profile:                 FULL_PROFILE
  Float Round Mode:        NEAR
  Max Queue Number:        0(0x0)
  Queue Min Size:          0(0x0)
  Queue Max Size:          0(0x0)
  Queue Type:              MULTI
  Node:                    0
  Device Type:             CPU
  Cache Info:
    L1:                      32768(0x8000) KB
  Chip ID:                 0(0x0)
  ASIC Revision:           0(0x0)
  Cacheline Size:          64(0x40)
  Max Clock Freq. (MHz):   3700
  BDFID:                   0
  Internal Node ID:        0
  Compute Unit:            4
  SIMDs per CU:            0
  Shader Engines:          0
  Shader Arrs. per Eng.:   0
  WatchPts on Addr. Ranges:1
  Features:                None
  Pool Info:
    Pool 1
      Segment:                 GLOBAL; FLAGS: FINE GRAINED
      Size:                    16315488(0xf8f460) KB
      Allocatable:             TRUE
      Alloc Granule:           4KB
      Alloc Alignment:         4KB
      Accessible by all:       TRUE
    Pool 2
      Segment:                 GLOBAL; FLAGS: KERNARG, FINE GRAINED
      Size:                    16315488(0xf8f460) KB
      Allocatable:             TRUE
      Alloc Granule:           4KB
      Alloc Alignment:         4KB
      Accessible by all:       TRUE
    Pool 3
      Segment:                 GLOBAL; FLAGS: COARSE GRAINED
      Size:                    16315488(0xf8f460) KB
      Allocatable:             TRUE
      Alloc Granule:           4KB
      Alloc Alignment:         4KB
      Accessible by all:       TRUE
  ISA Info:
"""

ROCMINFO_GFX803 = """\
*******
Agent 2
*******
  Name:                    gfx803
  Uuid:                    GPU-XX
  Marketing Name:          Baffin [Radeon RX 460/560D / Pro 450/455/460/555/555X/560/560X]
  Vendor Name:             AMD
  Feature:                 KERNEL_DISPATCH
  Profile:                 BASE_PROFILE
  Float Round Mode:        NEAR
  Max Queue Number:        128(0x80)
  Queue Min Size:          64(0x40)
  Queue Max Size:          131072(0x20000)
  Queue Type:              MULTI
  Node:                    1
  Device Type:             GPU
  Cache Info:
    L1:                      16(0x10) KB
  Chip ID:                 26607(0x67ef)
  ASIC Revision:           0(0x0)
  Cacheline Size:          64(0x40)
  Max Clock Freq. (MHz):   1200
  BDFID:                   256
  Internal Node ID:        1
  Compute Unit:            14
  SIMDs per CU:            4
  Shader Engines:          2
  Shader Arrs. per Eng.:   1
  WatchPts on Addr. Ranges:4
  Features:                KERNEL_DISPATCH
  Fast F16 Operation:      TRUE
  Wavefront Size:          64(0x40)
  Workgroup Max Size:      1024(0x400)
  Workgroup Max Size per Dimension:
    x                        1024(0x400)
    y                        1024(0x400)
    z                        1024(0x400)
  Max Waves Per CU:        40(0x28)
  Max Work-item Per CU:    2560(0xa00)
  Grid Max Size:           4294967295(0xffffffff)
  Grid Max Size per Dimension:
    x                        4294967295(0xffffffff)
    y                        4294967295(0xffffffff)
    z                        4294967295(0xffffffff)
  Max fbarriers/Workgrp:   32
  Pool Info:
    Pool 1
      Segment:                 GLOBAL; FLAGS: COARSE GRAINED
      Size:                    2097152(0x200000) KB
      Allocatable:             TRUE
      Alloc Granule:           4KB
      Alloc Alignment:         4KB
      Accessible by all:       FALSE
    Pool 2
      Segment:                 GROUP
      Size:                    64(0x40) KB
      Allocatable:             FALSE
      Alloc Granule:           0KB
      Alloc Alignment:         0KB
      Accessible by all:       FALSE
  ISA Info:
    ISA 1
      Name:                    amdgcn-amd-amdhsa--gfx803
      Machine Models:          HSA_MACHINE_MODEL_LARGE
      Profiles:                HSA_PROFILE_BASE
      Default Rounding Mode:   NEAR
      Default Rounding Mode:   NEAR
      Fast f16:                TRUE
      Workgroup Max Size:      1024(0x400)
      Workgroup Max Size per Dimension:
        x                        1024(0x400)
        y                        1024(0x400)
        z                        1024(0x400)
      Grid Max Size:           4294967295(0xffffffff)
      Grid Max Size per Dimension:
        x                        4294967295(0xffffffff)
        y                        4294967295(0xffffffff)
        z                        4294967295(0xffffffff)
      FBarrier Max Size:       32
"""

ROCMINFO_TAIL = "*** Done ***\n"

ROCM_SMI_GPU = """\


======================= ROCm System Management Interface =======================
================================= Concise Info =================================
GPU  Temp (DieEdge)  AvgPwr  SCLK    MCLK    Fan     Perf  PwrCap  VRAM%  GPU%
0    35.0c           8.0W    214Mhz  300Mhz  19.61%  auto  48.0W     0%   0%
================================================================================
============================= End of ROCm SMI Log ==============================
"""

ROCM_SMI_NONE = """\


======================= ROCm System Management Interface =======================
WARNING: No AMD GPUs specified
================================= Concise Info =================================
GPU  Temp (DieEdge)  AvgPwr  SCLK  MCLK  Fan  Perf  PwrCap  VRAM%  GPU%
================================================================================
============================= End of ROCm SMI Log ==============================
"""


def _cat_script(text: str, what: str) -> str:
    return (f"#!/bin/sh\n# sdinfra STAND-IN for {what} (TEST ONLY; not AMD software)\n"
            f"cat <<'SDINFRA_EOF'\n{text}SDINFRA_EOF\n")


def build_amdgpu_install_deb(dest_dir: os.PathLike | str, *, gpu: bool = True) -> Path:
    """Stand-in ``amdgpu-install_5.3.50300-1_all.deb``.

    ``gpu=True``: the installed rocminfo lists a CPU agent and a gfx803 (Polaris, RX 460) agent;
    ``gpu=False``: CPU agents only (what a gfx8 card without PCIe atomics looks like).
    """
    base = "/usr/share/amdgpu-install-standin/rocm-5.3.0"
    rocminfo = ROCMINFO_HEAD + (ROCMINFO_GFX803 if gpu else "") + ROCMINFO_TAIL
    files = {
        "/usr/bin/amdgpu-install": (program("amdgpu-install.sh"), 0o755),
        f"{base}/bin/rocminfo": (_cat_script(rocminfo, "rocminfo"), 0o755),
        f"{base}/bin/rocm-smi": (
            _cat_script(ROCM_SMI_GPU if gpu else ROCM_SMI_NONE, "rocm-smi"), 0o755),
        f"{base}/bin/rocm_agent_enumerator": (
            _cat_script("gfx000\n" + ("gfx803\n" if gpu else ""), "rocm_agent_enumerator"),
            0o755),
        f"{base}/.info/version": (ROCM_VERSION_INFO + "\n", 0o644),
    }
    return build_deb(
        dest_dir, "amdgpu-install", AMDGPU_INSTALL_VERSION, files,
        description=(
            "sdinfra STAND-IN for AMD's amdgpu-install (TEST ONLY)\n"
            "Not AMD software.  amdgpu-install records its arguments in\n"
            "/var/log/amdgpu-install.args and copies stand-in rocminfo and rocm-smi\n"
            "(" + ("CPU agent + gfx803 agent" if gpu else "CPU agents only")
            + ") to /opt/rocm-5.3.0."),
        section="admin", filename=AMDGPU_INSTALL_FILENAME,
    )
