"""
A download that is verified before it is put in place.

pyinfra's ``files.download`` moves the file into place and then checks its sha256, so a bad
download stays behind looking like a good one. ``fetch`` downloads to a temporary name, checks,
and only then renames; a mismatch removes the temporary file and fails with both checksums.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import operation
from pyinfra.facts.files import Sha256File


@operation()
def fetch(url: str, dest: str, sha256: str):
    """
    Download ``url`` to ``dest`` unless ``dest`` already has this sha256.

    .. code:: python

        fetch(url="https://repo.radeon.com/.../amdgpu-install_5.3.50300-1_all.deb",
              dest="/var/cache/sdinfra/amdgpu-install_5.3.50300-1_all.deb",
              sha256="...")
    """
    if host.get_fact(Sha256File, path=dest) == sha256:
        return
    temp = shlex.quote(f"{dest}.part")
    message = shlex.quote(f"{url} does not have the pinned sha256 {sha256}, got: ")
    yield f"install -d -m 0755 {shlex.quote(dest.rsplit('/', 1)[0] or '/')}"
    yield (
        f"curl -fsSL --retry 2 -o {temp} {shlex.quote(url)} && "
        f"got=$(sha256sum {temp} | cut -d' ' -f1) && "
        f"if [ \"$got\" = {sha256} ]; then mv {temp} {shlex.quote(dest)}; "
        f"else rm -f {temp}; echo {message}\"$got\" >&2; exit 1; fi"
    )
