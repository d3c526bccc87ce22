"""Locally built stand-ins for the vendor artefacts the end-to-end tests cannot download.

AMD's, NVIDIA's, Docker Hub's and GitHub's servers are out of reach on the machines this project
is tested on, so the paths of the deploys that need them run against files built here, from
scratch, into a directory the caller owns, and served over plain HTTP on loopback and on the
host-side veth addresses of the test hosts.  Nothing is cached outside that directory (gpg runs in
a short-lived GNUPGHOME under the system temporary directory, removed before the call returns).

What is built (see :func:`build_all`)::

    WORKDIR/
      www/                                   <- serve this directory (see serve())
        keys/sdinfra-standin.asc             armored public key of the repository key
        keys/sdinfra-standin.gpg             the same key, binary ("dearmored") keyring
        keys/wrong-key.asc, wrong-key.gpg    another key, for "signed with another key" faults
        apt/                                 signed apt repository, dists layout:
          dists/stable/{Release,InRelease,Release.gpg}
          dists/stable/main/binary-amd64/{Packages,Packages.gz}
          pool/main/*.deb                    nvidia-container-toolkit, nvidia-driver-standin
        apt-wrongkey/                        the same packages, signed with the wrong key
        libnvidia-container/gpgkey           the repository key, where NVIDIA publishes theirs
        libnvidia-container/stable/deb/amd64/  the same packages as a flat repository
                                             ("deb [signed-by=...] URL/stable/deb/amd64 /"),
                                             the layout NVIDIA's real repository has
        libnvidia-container-wrongkey/stable/deb/amd64/  that flat repository signed with the
                                             wrong key
        radeon/amdgpu-install/5.3/ubuntu/{focal,jammy}/amdgpu-install_5.3.50300-1_all.deb
        radeon-cpuonly/...                   the same path; its rocminfo shows CPU agents only
        images/webui-standin.tar             `docker load -i` archive (legacy docker save format):
                                             the web UI stand-in, see webui_image.py
        models/standin.safetensors           a few KB, valid safetensors header
        models/checksums.sha256              "<sha256>  standin.safetensors"
      private/                               secret keys (never served)

Where each is built: debs.py (keys, .debs, apt repositories), nvidia.py, amd.py,
webui_image.py (the web UI stand-in image; what it copies from upstream is listed there),
model.py; where they are served: serve.py. What a web UI image build on a host reads (a base
image in a registry layout, the web UI's tree, a large torch wheel) is not built here but by
image_build.build_sources, into the same served directory, for the fleets that build. The programs the packages install are real files
in programs/ (read by common.program).

Every stand-in says it is one (package descriptions, program output, the web page), so that
nobody mistakes a test host for a real GPU host.

Debian packages this module needs on the machine that builds: dpkg (dpkg-deb), apt-utils
(apt-ftparchive), gnupg and gpgv, busybox-static (its /bin/busybox goes into the image),
python3 (Debian's /usr/bin/python3 and its libraries go into the image).
The tests also use apt (apt-get), util-linux (unshare) and coreutils (chroot), all priority
required/important on Debian.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

# Where each is built; the names the tests, the demo and the benchmark use, from one place.
from testbed.standins.amd import (AMDGPU_INSTALL_FILENAME, AMDGPU_INSTALL_VERSION,
                                  ROCM_VERSION_INFO, build_amdgpu_install_deb)
from testbed.standins.common import EPOCH, STANDIN_MAINTAINER, sha256_file
from testbed.standins.debs import (AptRepo, GpgKey, build_apt_repo, build_deb,
                                   build_wrong_key_repo, deb822_sources, make_gpg_key)
from testbed.standins.model import ModelFile, build_model, read_safetensors_header
from testbed.standins.nvidia import (NVIDIA_CTK_VERSION, NVIDIA_DRIVER_VERSION,
                                     build_nvidia_container_toolkit_deb, build_nvidia_driver_deb)
from testbed.standins.serve import Request, Server, serve
from testbed.standins.webui_image import (DEFAULT_IMAGE_TAG, LAUNCH_PY, START_SH, WEBUI_PORT,
                                          WebuiImage, _elf_has_interp, build_rootfs_layer,
                                          build_webui_image, find_static_busybox)


@dataclasses.dataclass(frozen=True)
class StandIns:
    """What :func:`build_all` made.  ``*_path`` values are relative to ``root`` (= URL paths)."""

    root: Path                     # serve this directory
    key: GpgKey
    wrong_key: GpgKey
    apt: AptRepo                   # dists layout, suite "stable", component "main"
    apt_wrong_key: AptRepo         # same, signed with wrong_key
    apt_flat: AptRepo              # flat layout (NVIDIA-like), signed with key
    apt_flat_wrong_key: AptRepo    # the same flat repository, signed with wrong_key
    key_path: str                  # "keys/sdinfra-standin.asc"
    key_gpg_path: str              # "keys/sdinfra-standin.gpg"
    wrong_key_path: str
    apt_path: str                  # "apt"
    apt_wrong_key_path: str        # "apt-wrongkey"
    apt_flat_path: str             # "libnvidia-container/stable/deb/amd64"
    apt_flat_wrong_key_path: str   # "libnvidia-container-wrongkey/stable/deb/amd64"
    nvidia_gpgkey_path: str        # "libnvidia-container/gpgkey"
    nvidia_toolkit_deb: Path
    nvidia_driver_deb: Path
    nvidia_driver_package: str
    amdgpu_base_path: str          # "radeon": replaces https://repo.radeon.com
    amdgpu_cpuonly_base_path: str  # "radeon-cpuonly"
    amdgpu_deb_path: str           # radeon/amdgpu-install/5.3/ubuntu/jammy/amdgpu-install_...deb
    amdgpu_cpuonly_deb_path: str
    amdgpu_sha256: str
    amdgpu_cpuonly_sha256: str
    image: WebuiImage
    image_path: str                # "images/webui-standin.tar"
    model: ModelFile
    model_path: str                # "models/standin.safetensors"
    model_checksums_path: str      # "models/checksums.sha256"

    def url(self, base: str, rel: str) -> str:
        """``url("http://10.77.1.1:8080", s.apt_path)`` -> ``http://10.77.1.1:8080/apt``."""
        return base.rstrip("/") + "/" + rel.lstrip("/")

    def apt_sources(self, base: str, signed_by: str, *, wrong_key: bool = False,
                    flat: bool = False) -> str:
        repo, rel = ((self.apt_flat_wrong_key, self.apt_flat_wrong_key_path)
                     if flat and wrong_key else
                     (self.apt_flat, self.apt_flat_path) if flat else
                     (self.apt_wrong_key, self.apt_wrong_key_path) if wrong_key else
                     (self.apt, self.apt_path))
        return repo.sources(self.url(base, rel), signed_by)


def build_all(workdir: os.PathLike | str, *, image_tag: str = DEFAULT_IMAGE_TAG,
              nvidia_driver_package: str = "nvidia-driver-standin") -> StandIns:
    """Build every stand-in into ``workdir`` (``workdir/www`` is what to serve)."""
    work = Path(workdir)
    www = work / "www"
    private = work / "private"
    scratch = work / "build"
    for d in (www, scratch):
        if d.exists():
            shutil.rmtree(d)
    www.mkdir(parents=True)
    private.mkdir(parents=True, exist_ok=True)
    os.chmod(private, 0o700)
    scratch.mkdir(parents=True)

    keys = www / "keys"
    key = make_gpg_key(keys, "sdinfra-standin", private_dir=private)
    wrong = make_gpg_key(keys, "wrong-key",
                         uid="sdinfra WRONG key (TEST ONLY) <wrong-key@sdinfra.invalid>",
                         private_dir=private)

    toolkit = build_nvidia_container_toolkit_deb(scratch)
    driver = build_nvidia_driver_deb(scratch, package=nvidia_driver_package)
    apt = build_apt_repo(www / "apt", [toolkit, driver], key)
    apt_wrong = build_wrong_key_repo(www / "apt-wrongkey", apt, wrong)
    flat_rel = "libnvidia-container/stable/deb/amd64"
    apt_flat = build_apt_repo(www / flat_rel, [toolkit, driver], key, layout="flat")
    flat_wrong_rel = "libnvidia-container-wrongkey/stable/deb/amd64"
    apt_flat_wrong = build_wrong_key_repo(www / flat_wrong_rel, apt_flat, wrong)
    shutil.copy2(key.public_asc, www / "libnvidia-container" / "gpgkey")

    amd_rel = {}
    amd_sha = {}
    for base, gpu in (("radeon", True), ("radeon-cpuonly", False)):
        deb = build_amdgpu_install_deb(scratch / base, gpu=gpu)
        for codename in ("focal", "jammy"):
            d = www / base / "amdgpu-install" / "5.3" / "ubuntu" / codename
            d.mkdir(parents=True)
            shutil.copy2(deb, d / deb.name)
        amd_rel[base] = f"{base}/amdgpu-install/5.3/ubuntu/jammy/{deb.name}"
        amd_sha[base] = sha256_file(deb)

    image = build_webui_image(www / "images" / "webui-standin.tar", tag=image_tag)
    model = build_model(www / "models")
    shutil.rmtree(scratch)

    return StandIns(
        root=www, key=key, wrong_key=wrong, apt=apt, apt_wrong_key=apt_wrong, apt_flat=apt_flat,
        apt_flat_wrong_key=apt_flat_wrong, apt_flat_wrong_key_path=flat_wrong_rel,
        key_path="keys/sdinfra-standin.asc", key_gpg_path="keys/sdinfra-standin.gpg",
        wrong_key_path="keys/wrong-key.asc", apt_path="apt", apt_wrong_key_path="apt-wrongkey",
        apt_flat_path=flat_rel, nvidia_gpgkey_path="libnvidia-container/gpgkey",
        nvidia_toolkit_deb=next((www / "apt" / "pool").rglob(toolkit.name)),
        nvidia_driver_deb=next((www / "apt" / "pool").rglob(driver.name)),
        nvidia_driver_package=nvidia_driver_package,
        amdgpu_base_path="radeon", amdgpu_cpuonly_base_path="radeon-cpuonly",
        amdgpu_deb_path=amd_rel["radeon"], amdgpu_cpuonly_deb_path=amd_rel["radeon-cpuonly"],
        amdgpu_sha256=amd_sha["radeon"], amdgpu_cpuonly_sha256=amd_sha["radeon-cpuonly"],
        image=image, image_path="images/webui-standin.tar",
        model=model, model_path="models/standin.safetensors",
        model_checksums_path="models/checksums.sha256",
    )


__all__ = [
    "AptRepo", "GpgKey", "ModelFile", "Request", "Server", "StandIns", "WebuiImage",
    "build_all", "build_amdgpu_install_deb", "build_apt_repo", "build_deb", "build_model",
    "build_nvidia_container_toolkit_deb", "build_nvidia_driver_deb", "build_rootfs_layer",
    "build_webui_image", "build_wrong_key_repo", "deb822_sources", "find_static_busybox",
    "make_gpg_key", "read_safetensors_header", "serve", "sha256_file",
]
