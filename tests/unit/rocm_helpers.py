"""
What the rocm tests share: the fixtures' real command outputs (tests/fixtures/rocm/README.md says
where each comes from) and fake hosts in a given ROCm state.
"""

from __future__ import annotations

from roles.rocm import configfiles
from roles.rocm.settings import SETTINGS
from tests.unit.fakehost import FIXTURES, FakeHost, fact_output

ROCM = FIXTURES / "rocm"
DEPLOY = "tests/fixtures/rocm/rocm_only.py"
SHA = "5" * 64
JAMMY_URL = ("https://repo.radeon.com/amdgpu-install/5.3/ubuntu/jammy/"
             "amdgpu-install_5.3.50300-1_all.deb")
DEFAULTS = {s.name: s.default for s in SETTINGS}


def fixture(name: str) -> str:
    return (ROCM / name).read_text()


UBUNTU_ADDUSER = fixture("adduser.conf.ubuntu-excerpt")
DPKG_53 = fixture("dpkg-query-rocm-5.3.txt")
ROCMINFO_GPU = fixture("rocminfo-gfx1100-gfx1030.txt")
ROCMINFO_CPU = fixture("rocminfo-cpu-only.txt")
KFD_ATOMICS = fixture("dmesg-kfd-atomics.txt")


# --- fake hosts -----------------------------------------------------------------------------


def state_output(version="", dpkg="", record="", adduser=UBUNTU_ADDUSER, environment="",
                 groups=("video:x:44:", "render:x:109:sd"), users=None, reboot_pkgs=None, apt_uris=(),
                 rocminfo=None, kernel="", uname="5.15.0-56-generic",
                 sb_state="SecureBoot disabled") -> list[str]:
    """What the RocmState fact's command prints on a host in the given state (by default the
    Ubuntu 22.04.1 kernel AMD validated ROCm 5.3 for, without Secure Boot)."""
    parts = [("version", version), ("dpkg", dpkg), ("record", record)]
    if adduser is not None:
        parts.append(("adduser", adduser))
    parts += [("environment", environment), ("groups", groups),
              ("users", [f"{user}:{'!missing' if user_groups is None else ' '.join(user_groups)}"
                         for user, user_groups in (users or {}).items()])]
    if reboot_pkgs is not None:
        parts.append(("reboot-required", []))
    parts += [("reboot", reboot_pkgs or []), ("apt", apt_uris)]
    if rocminfo is not None:
        parts.append(("rocminfo", rocminfo))
    parts += [("kernel", kernel), ("uname", [uname] if uname else []),
              ("sb-state", sb_state or ""), ("end", [])]
    return fact_output("rocm-state", *parts)


def rocm_host(name="h", os_key="ubuntu22", **state) -> FakeHost:
    state.setdefault("users", {"sd": ["sd"]})
    host = FakeHost(name).os(os_key).set(rocm_users=list(state["users"]))
    return host.fact("rocm-state", state_output(**state))


def fresh(name="h", os_key="ubuntu22", **settings) -> FakeHost:
    host = rocm_host(name, os_key)
    return host.set(rocm_installer_sha256=SHA, **settings)


def converged(name="h", os_key="ubuntu22", pre_vega=False, **settings) -> FakeHost:
    env = "ROC_ENABLE_PRE_VEGA=1\n" if pre_vega else ""
    host = rocm_host(name, os_key, version="5.3.0-63", dpkg=DPKG_53,
                     record="release=5.3\ninstaller=5.3.50300-1\nusecases=rocm\ndkms=yes",
                     adduser=configfiles.adduser_conf(UBUNTU_ADDUSER),
                     environment='PATH="/usr/local/sbin:/usr/bin"\n' + env,
                     users={"sd": ["sd", "video", "render"]}, rocminfo=ROCMINFO_GPU)
    return host.set(rocm_pre_vega=pre_vega, **settings)


def rocm_changes(result, host="h") -> list[str]:
    assert result.returncode == 0, result.output
    return [c.removeprefix("ROCm | ") for c in result.changes(host) if c.startswith("ROCm | ")]
