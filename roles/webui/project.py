"""
The project directory on a host made to match what was rendered: directories and files
uploaded only when their sha256 or mode differ (``project_files``), the listed models in place
with their sha256 (``fetch_models``).
"""

from __future__ import annotations

import hashlib
import os
import shlex
from functools import lru_cache
from io import BytesIO

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, operation

from roles.progress import room
from roles.settings import host_error
from roles.webui.render import MODELS
from roles.webui.state import GroupIds


@operation()
def project_files(directories: list[str], wanted: dict, state: dict, regroup=None):
    """
    Make directories and files match, uploading only the files whose sha256 or mode differ.

    ``wanted`` maps a remote path to (content bytes, octal mode); ``state`` is the ProjectState
    fact already read for this run, so checking costs no further round trip. ``regroup``, when
    given, renders ``wanted`` again from the group ids read while executing: the rocm role
    creates the render group in the same run, after this host was planned.

    .. code:: python

        project_files(directories=["/opt/sd"], wanted={"/opt/sd/a.env": (b"X=1\\n", "644")},
                      state=host.get_fact(ProjectState, ...))
    """
    if regroup is not None and host.state.is_executing:
        wanted = regroup(host.get_fact(GroupIds))
    yield from project_commands(directories, wanted, state)


def project_commands(directories: list[str], wanted: dict, state: dict) -> list:
    """The commands ``project_files`` runs on a host in ``state``; empty when all matches."""
    commands: list = []
    for directory in directories:
        if directory not in state["dirs"]:
            commands.append(f"install -d -m 0755 {shlex.quote(directory)}")
    for path, (content, mode) in wanted.items():
        mode_now, digest = state["files"].get(path, (None, None))
        if digest != hashlib.sha256(content).hexdigest():
            # Written with a private mode first, so a secret is never readable, not even briefly.
            temp = f"{path}.sdinfra-new"
            commands.append(f"{room(os.path.dirname(path), len(content), os.path.basename(path))}"
                            f" && install -m 0600 /dev/null {shlex.quote(temp)}")
            commands.append(FileUploadCommand(BytesIO(content), temp))
            commands.append(f"chmod {mode} {shlex.quote(temp)} && mv {shlex.quote(temp)} "
                            f"{shlex.quote(path)}")
        elif mode_now != mode:
            commands.append(f"chmod {mode} {shlex.quote(path)}")
    return commands


@lru_cache(maxsize=None)
def _sha256_of(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def local_sha256(path: str) -> str:
    stat = os.stat(path)
    return _sha256_of(path, stat.st_size, stat.st_mtime)


def fetch_models(values, directory, state):
    """
    Each listed model in place with its sha256. A model is hashed once, when it arrives (its
    sidecar records the checksum with its size and mtime); a later run trusts the sidecar while
    they are unchanged, and the state fact hashes the file again when they changed or there is
    no sidecar: the same content only gets its sidecar (re)written, other content is replaced.
    With ``cache_host``, a model with a ``url`` is copied from the fleet's cache first.
    """
    from roles import cache, download

    cached = cache.models_url(cache.values_of())
    ops = []
    for model in values["webui_models"]:
        dest = f"{directory}/{MODELS}/{model['name']}"
        pinned = model["sha256"].lower()
        current = download.in_place(state, dest, pinned,
                                    f"Record the checksum of model {model['name']}")
        if current == pinned:
            continue
        if "url" in model:
            # With the fleet's cache, its copy first (roles.cache keeps each model there under
            # its sha256), verified on arrival; the model's own URL when it fails.
            first = f"{cached}/{pinned}" if cached else ""
            ops.append(download.fetch(name=f"Download model {model['name']}", url=model["url"],
                                      dest=dest, sha256=pinned, record=True,
                                      current=current, first=first))
        else:
            if local_sha256(model["src"]) != pinned:
                raise host_error(f"webui_models: {model['name']}: {model['src']} does not have "
                                 f"sha256 {model['sha256']}")
            ops.append(download.put(name=f"Upload model {model['name']}", src=model["src"],
                                    dest=dest, sha256=pinned))
    return ops


class ModelSums(FactBase):
    """
    The sha256 of the model files ``paths`` (space-separated, quoted), trusted from their
    sidecars or hashed now (roles.download.TRUSTED_SHA256), as ProjectState reads them for the
    stack: ``{"trusted": {path: sha256}, "hashed": {path: (sha256, "SIZE MTIME")}}``.
    """

    @staticmethod
    def default():
        return {"trusted": {}, "hashed": {}}

    def command(self, paths: str):
        from roles import download

        return f"set -- {paths}; {download.TRUSTED_SHA256}; true"

    def process(self, output):
        from roles import download

        trusted, hashed = download.parse_trusted(line.strip() for line in output)
        return {"trusted": trusted, "hashed": hashed}
