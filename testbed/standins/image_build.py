"""What a web UI image build reads from the internet, stood in: the build on a host then costs
what a real one costs in kind (a large download during the build), so that a fleet that builds
once shows it in the bytes the stand-in "internet" server sent.

roles/webui/templates/Dockerfile.j2 builds ``FROM python:3.10-slim-bookworm``, runs apt-get,
fetches the web UI with git, installs torch with pip from PyTorch's index and the CLIP files
with transformers. Stood in (served from ``www``, see serve.py)::

    v2/library/python/...           the stand-in python:3.10-slim-bookworm in the registry
                                    layout serve.py answers (a host's dockerd pulls it as its
                                    Docker Hub mirror, daemon.json registry-mirrors): Debian's
                                    python3 and busybox (as the web UI stand-in image), the
                                    stand-in torch module, and stand-ins of apt-get, git, pip and
                                    transformers (programs/apt-get.sh, git.sh, pip-main.py,
                                    transformers.py: each says what it does)
    git/stable-diffusion-webui.git/standin-archive/v1.10.1.tar
                                    the stand-in web UI's tree, what the stand-in git fetches
                                    (webui_repo_url = BASE/git/stable-diffusion-webui.git)
    whl/torch-standin.whl           TORCH_WHEEL_BYTES of deterministic noise (not compressible,
                                    generated here, never committed), and its .sha256;
    whl/BUILD/torch-2.1.2.whl       symlinks to it for each torch build's index (cpu, rocm5.6,
                                    cu121, cu118): webui_torch_command's --extra-index-url
                                    BASE/whl/BUILD (``torch_command``)

A build on a host downloads the wheel once; an image pulled from a registry downloads nothing
from here. Each build records a random id in the image (pip-main.py), so two builds of the same
Dockerfile give two image ids, and a pulled image keeps its builder's.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import random
import tarfile
import time
from pathlib import Path

from testbed.standins.common import EPOCH, STANDIN_MAINTAINER, program
from testbed.standins.webui_image import (_python_runtime, _standin_tree, _tar_add,
                                          build_rootfs_layer)

BASE_REPOSITORY = "library/python"      # docker.io/library/python, as FROM python:... names it
BASE_TAG = "3.10-slim-bookworm"
WEBUI_REPO_PATH = "git/stable-diffusion-webui.git"
WHEEL_INDEX_PATH = "whl"
TORCH_VERSION = "2.1.2"
# A few hundred MB: PyTorch's wheels are 0.2 (cpu) to 2.5 GB (cu121), the rest of a real build
# (requirements, git clones) hundreds of MB more.
TORCH_WHEEL_BYTES = 256 << 20
TORCH_BUILDS = ("cpu", "rocm5.6", "cu121", "cu118")
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


@dataclasses.dataclass(frozen=True)
class BuildSources:
    base_image: str          # "python:3.10-slim-bookworm"
    base_manifest_digest: str
    webui_repo_path: str     # relative to the served root
    webui_version: str
    wheel_index_path: str
    wheel_bytes: int
    wheel_sha256: str

    def webui_repo_url(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.webui_repo_path}"

    def torch_command(self, base: str, build: str) -> str:
        """roles/webui's torch command for ``build`` with PyTorch's index replaced by the
        stand-in's (a valid webui_torch_command)."""
        index = f"{base.rstrip('/')}/{self.wheel_index_path}/{build}"
        return (f"pip install torch=={TORCH_VERSION}+{build} torchvision==0.16.2+{build} "
                f"--extra-index-url {index}")

    def wheel_paths(self) -> list[str]:
        return [f"/{self.wheel_index_path}/{b}/torch-{TORCH_VERSION}.whl" for b in TORCH_BUILDS]


def _base_files() -> dict[str, tuple[bytes, int]]:
    """The stand-in base image's files: the web UI stand-in image's without the web UI's tree
    (the build fetches it), with the programs the Dockerfile's RUN lines call."""
    files = {path: value for path, value in {**_python_runtime(), **_standin_tree("")}.items()
             if not path.startswith("webui/")}
    files["usr/bin/apt-get"] = (program("apt-get.sh").encode(), 0o755)
    files["usr/bin/git"] = (program("git.sh").encode(), 0o755)
    files["usr/lib/python3/dist-packages/pip/__init__.py"] = (b"", 0o644)
    files["usr/lib/python3/dist-packages/pip/__main__.py"] = (program("pip-main.py").encode(),
                                                              0o644)
    files["usr/lib/python3/dist-packages/transformers/__init__.py"] = (
        program("transformers.py").encode(), 0o644)
    return files


def _webui_archive(version: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path, (data, mode) in sorted(_standin_tree(version).items()):
            if path.startswith("webui/"):
                _tar_add(tf, path[len("webui/"):], data=data, mode=mode)
    return buf.getvalue()


def _write_base_image(www: Path, layer: bytes) -> str:
    """The base image in the registry layout serve.py answers; returns the manifest's digest."""
    blob = gzip.compress(layer, mtime=0)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": created, "author": STANDIN_MAINTAINER,
        "config": {"Env": ["PATH=/usr/bin:/bin", "PYTHONHOME=/usr", "PYTHONUNBUFFERED=1",
                           "PYTHONDONTWRITEBYTECODE=1"],
                   "Cmd": ["python3"],
                   "Labels": {"org.opencontainers.image.title":
                              "sdinfra stand-in of python:3.10-slim-bookworm (TEST ONLY)"}},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        "history": [{"created": created, "created_by": "sdinfra testbed/standins/image_build.py"}],
    }, sort_keys=True, separators=(",", ":")).encode()
    blobs = {hashlib.sha256(b).hexdigest(): b for b in (config, blob)}
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config), "digest": "sha256:" + hashlib.sha256(config).hexdigest()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(blob), "digest": "sha256:" + hashlib.sha256(blob).hexdigest()}],
    }, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    repo = www / "v2" / BASE_REPOSITORY
    (repo / "manifests").mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for ref in (BASE_TAG, digest):
        (repo / "manifests" / ref).write_bytes(manifest)
    for hexdigest, data in blobs.items():
        (repo / "blobs" / f"sha256:{hexdigest}").write_bytes(data)
    return digest


def _write_wheel(www: Path, size: int) -> str:
    """``size`` bytes of seeded noise (the same on every machine), its sha256 beside it, and a
    link per torch build's index."""
    index = www / WHEEL_INDEX_PATH
    index.mkdir(parents=True, exist_ok=True)
    wheel = index / "torch-standin.whl"
    noise, digest, left = random.Random("sdinfra torch stand-in"), hashlib.sha256(), size
    with open(wheel, "wb") as f:
        while left:
            chunk = noise.randbytes(min(left, 1 << 20))
            f.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    (index / "torch-standin.whl.sha256").write_text(digest.hexdigest() + "\n")
    for build in TORCH_BUILDS:
        (index / build).mkdir(exist_ok=True)
        for suffix in ("", ".sha256"):
            os.symlink(f"../torch-standin.whl{suffix}",
                       index / build / f"torch-{TORCH_VERSION}.whl{suffix}")
    return digest.hexdigest()


def build_sources(www: os.PathLike | str, *, version: str = "v1.10.1",
                  wheel_bytes: int = TORCH_WHEEL_BYTES) -> BuildSources:
    """Everything a stand-in build reads, into ``www`` (the served root)."""
    www = Path(www)
    digest = _write_base_image(www, build_rootfs_layer(files=_base_files()))
    archive = www / WEBUI_REPO_PATH / "standin-archive" / f"{version}.tar"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(_webui_archive(version))
    return BuildSources(
        base_image=f"python:{BASE_TAG}", base_manifest_digest=digest,
        webui_repo_path=WEBUI_REPO_PATH, webui_version=version,
        wheel_index_path=WHEEL_INDEX_PATH, wheel_bytes=wheel_bytes,
        wheel_sha256=_write_wheel(www, wheel_bytes))
