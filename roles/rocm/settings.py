"""Settings of the rocm role: each one a user may set, with its default and what it does."""

from __future__ import annotations

import re

from roles.settings import (SHA256, Setting, boolean, list_of, matches, one_of, strings, unix_names,
                            url)

VENDOR_REPO = "https://repo.radeon.com"
INSTALLER_URL = "{repo}/amdgpu-install/{release}/ubuntu/{codename}/amdgpu-install_{version}_all.deb"
RELEASE = r"\d+\.\d+(\.\d+)?"
# "5.3.50300-1"; AMD's driver bundles also ship names like "5.7.00.48.50700-1".
INSTALLER_VERSION = r"\d+\.\d+\.(\d+\.)*\d{5,}-\d+"
UBUNTU_CODENAMES = ("focal", "jammy", "noble")
USECASE = r"[a-z][a-z0-9_-]*"


def _installer_url(value):
    allowed = ("a URL template: {repo} (rocm_repo_url) or an http(s):// URL, whose "
               "only placeholders are {repo}, {release}, {codename} and {version}")
    if not isinstance(value, str):
        return allowed
    try:
        example = value.format(repo="https://mirror", release="5.3", codename="jammy",
                               version="5.3.50300-1")
    except (KeyError, IndexError, ValueError):
        return allowed
    return None if url(example) is None else allowed


def _sha256s(value):
    if not isinstance(value, dict):
        return 'a mapping of "release/codename" to sha256, like {"5.3/jammy": "<64 hex>"}'
    for key, digest in value.items():
        if not (isinstance(key, str) and re.fullmatch(rf"{RELEASE}/[a-z]+", key)):
            return f'a mapping whose keys are "release/codename" like "5.3/jammy" ({key!r} is not)'
        if not (isinstance(digest, str) and re.fullmatch(SHA256, digest)):
            return (f"a mapping whose values are sha256s (64 lower-case hex digits; {key!r}'s "
                    "is not)")
    return None


def _dkms(value):
    # one_of would take 1 and 0 for true and false (1 == True).
    return None if value == "auto" or isinstance(value, bool) else "'auto', true or false"


SETTINGS = [
    Setting("rocm_source", "amdgpu-install", one_of("amdgpu-install", "distro"),
            "`amdgpu-install`: AMD's installer and repositories (Ubuntu 20.04/22.04 for 5.3); "
            "`distro`: the distribution's `rocminfo` and `rocm-smi` (Debian 12) with the kernel's "
            "own amdgpu driver, enough for the web UI's container"),
    Setting("rocm_release", "5.3", matches(RELEASE, "a ROCm release like 5.3 or 5.4.3"),
            "ROCm release to install (the directory under repo.radeon.com/amdgpu-install/)"),
    Setting("rocm_installer_version", "",
            matches(INSTALLER_VERSION, "an amdgpu-install version like 5.3.50300-1",
                    optional=True),
            "version of the amdgpu-install package; empty: derived from rocm_release "
            "(5.3 → 5.3.50300-1, 5.4.3 → 5.4.50403-1)"),
    Setting("rocm_repo_url", VENDOR_REPO, url,
            "base URL of AMD's repositories; a mirror's URL here also rewrites the apt sources "
            "that amdgpu-install adds"),
    Setting("rocm_installer_url", INSTALLER_URL, _installer_url,
            "URL template of the amdgpu-install package: {repo} is rocm_repo_url, then "
            "{release}, {codename} (focal/jammy, the host's) and {version}"),
    Setting("rocm_installer_sha256", "",
            matches(SHA256, "64 lower-case hex digits (a sha256)", optional=True),
            "sha256 of the installer package for this host; checked before it is installed"),
    Setting("rocm_installer_sha256s", {}, _sha256s,
            'sha256s of installer packages by "release/codename", e.g. {"5.3/jammy": "..."}; '
            "`python -m roles.rocm checksums 5.3` prints them. Without a known sha256 nothing is "
            "installed"),
    Setting("rocm_usecases", ["rocm"], list_of(matches(USECASE, "a use case"), "use cases"),
            "amdgpu-install `--usecase` values (rocm, hip, hiplibsdk, opencl, dkms, ...)"),
    Setting("rocm_dkms", "auto", _dkms,
            "`auto`: amdgpu-install builds its kernel module (DKMS) only on a kernel AMD "
            "validated the release for (5.15/5.17 for 5.3) and without Secure Boot, else "
            "`--no-dkms` keeps the kernel's own amdgpu (no module, no reboot); `true`/`false` "
            "force either"),
    Setting("rocm_installer_options", [], strings,
            "more amdgpu-install flags, e.g. `--accept-eula` for releases that ask for it"),
    Setting("rocm_change_release", False, boolean,
            "when another ROCm release is installed: remove it (`amdgpu-install --uninstall`) and "
            "install rocm_release; false: warn and leave it"),
    Setting("rocm_users", [], unix_names,
            "existing users who join the `render` and `video` groups (GPU access)"),
    Setting("rocm_pre_vega", False, boolean,
            "`ROC_ENABLE_PRE_VEGA=1` in /etc/environment and the container: lets ROCm's OpenCL "
            "use gfx8 cards (Polaris, Fiji); HIP and PyTorch do not read it"),
    Setting("rocm_hsa_override_gfx_version", "",
            matches(r"\d+\.\d+\.\d+", "a gfx version like 10.3.0", optional=True),
            "`HSA_OVERRIDE_GFX_VERSION` in /etc/environment and the container (10.3.0 for "
            "RDNA1/2 consumer cards, 11.0.0 for RDNA3)"),
    Setting("rocm_allow_reboot", False, boolean,
            "reboot a host whose kernel driver was just installed, then go on; false: the run "
            "ends naming the hosts to reboot"),
    Setting("rocm_verify", True, boolean,
            "check that `rocminfo` lists a GPU (gfx) agent, and fail the host with the kernel's "
            "reason when it does not"),
    Setting("rocm_allow_unsupported_distro", False, boolean,
            "install the Ubuntu amdgpu-install package on a distribution AMD does not support "
            "for that release (e.g. Debian 12), with a warning"),
    Setting("rocm_ubuntu_codename", "jammy", one_of(*UBUNTU_CODENAMES),
            "with rocm_allow_unsupported_distro: whose Ubuntu package an unsupported host gets"),
]


def check(host, values) -> list[str]:
    """Rules that tie settings together."""
    from roles.rocm.releases import installer_version, release_of_installer

    found = []
    wanted = installer_version(values["rocm_release"])
    given = values["rocm_installer_version"]
    if given and release_of_installer(given) != release_of_installer(wanted):
        found.append(f"rocm_installer_version = {given!r}: belongs to another release than "
                     f"rocm_release = {values['rocm_release']!r} (which is {wanted})")
    if values["rocm_usecases"] == ["dkms"] and values["rocm_dkms"] is False:
        found.append("rocm_usecases = ['dkms'] with rocm_dkms = False installs nothing")
    if not values["rocm_usecases"]:
        found.append("rocm_usecases = []: allowed is at least one use case, like ['rocm']")
    return found

