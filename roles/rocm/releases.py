"""
ROCm releases, amdgpu-install package versions and the checksums the role knows.

AMD numbers one release three ways; all three are read here into the same ``(major, minor,
patch)`` tuple so that "which release is installed" has one answer:

- the release directory on repo.radeon.com: ``5.3``, ``5.4.3``;
- the amdgpu-install package version: ``5.3.50300-1`` (``50300`` = 5*10000 + 3*100 + 0);
- what is installed: ``/opt/rocm/.info/version`` (``5.3.0-63``) and the rocm-core package
  (``5.3.0.50300-63~22.04``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml

Release = tuple  # (major, minor, patch)

CHECKSUMS_FILE = Path(__file__).with_name("checksums.yml")

# Ubuntu releases AMD lists as supported, by the first ROCm release of each span. The role refuses
# others (a derivative counts as its Ubuntu base) unless rocm_allow_unsupported_distro is set.
SUPPORTED = [
    ((5, 0, 0), ("focal",)),
    ((5, 3, 0), ("focal", "jammy")),
    ((6, 2, 0), ("focal", "jammy", "noble")),
    ((6, 3, 0), ("jammy", "noble")),
]
UBUNTU_NAMES = {"focal": "Ubuntu 20.04 (focal)", "jammy": "Ubuntu 22.04 (jammy)",
                "noble": "Ubuntu 24.04 (noble)"}


def parse_release(text: str) -> Release | None:
    """``"5.3"`` → (5, 3, 0); ``"5.4.3"`` → (5, 4, 3); anything else → None."""
    found = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not found:
        return None
    return (int(found.group(1)), int(found.group(2)), int(found.group(3) or 0))


def show(release: Release | None) -> str:
    return "none" if release is None else ".".join(str(part) for part in release)


def build_number(release: Release) -> int:
    return release[0] * 10000 + release[1] * 100 + release[2]


def installer_version(release_text: str) -> str:
    """The amdgpu-install package version AMD gives a release: ``5.3`` → ``5.3.50300-1``."""
    release = parse_release(release_text)
    if release is None:
        raise ValueError(f"not a ROCm release: {release_text!r}")
    return f"{release[0]}.{release[1]}.{build_number(release)}-1"


def release_of_installer(version: str) -> Release | None:
    """``5.3.50300-1`` → (5, 3, 0); ``5.7.00.48.50700-1`` → (5, 7, 0)."""
    found = re.match(r"\d+\.\d+\.(?:[\d.]*\.)?(\d{5,})-", version.strip())
    if not found:
        return None
    build = int(found.group(1))
    return (build // 10000, build // 100 % 100, build % 100)


def release_of_rocm(version: str) -> Release | None:
    """``/opt/rocm/.info/version`` (``5.3.0-63``) or rocm-core's (``5.3.0.50300-63~22.04``)."""
    found = re.match(r"(\d+)\.(\d+)\.(\d+)", version.strip())
    if not found:
        return None
    return (int(found.group(1)), int(found.group(2)), int(found.group(3)))


def supported_codenames(release: Release) -> tuple[str, ...]:
    codenames: tuple[str, ...] = ()
    for first, names in SUPPORTED:
        if release >= first:
            codenames = names
    return codenames


def installer_url(template: str, repo: str, release: str, codename: str, version: str) -> str:
    return template.format(repo=repo.rstrip("/"), release=release, codename=codename,
                           version=version)


def checksum_key(release: str, codename: str) -> str:
    return f"{release}/{codename}"


@lru_cache(maxsize=1)
def known_checksums() -> dict[str, str]:
    """The table in checksums.yml: ``{"5.3/jammy": "<sha256>"}``, empty when none is known."""
    data = yaml.safe_load(CHECKSUMS_FILE.read_text()) or {}
    return dict(data.get("installers") or {})


def checksum_for(values: dict, release: str, codename: str) -> str:
    """The sha256 to pin for this host: its own setting, then the users' table, then ours."""
    if values.get("rocm_installer_sha256"):
        return values["rocm_installer_sha256"]
    key = checksum_key(release, codename)
    users = values.get("rocm_installer_sha256s") or {}
    return users.get(key) or known_checksums().get(key, "")
