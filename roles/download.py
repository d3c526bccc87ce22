"""
Verified downloads: a file is kept only when its sha256 is the pinned one.

pyinfra's ``files.download`` moves the downloaded file into place and checks it afterwards, so a
file with the wrong content can be left behind looking like a good one. ``fetch`` downloads to a
temporary name in the destination's directory, checks the sha256 there and only then renames it
into place (same file system: the rename is atomic). A mismatch removes the temporary file,
leaves ``dest`` as it was and fails the operation, saying what was expected and what arrived.

The download uses curl, else wget, else python3, whichever the host has, so a minimal host needs
no package installed first. ``file://`` URLs work with curl and python3.

.. code:: python

    from roles import download

    download.fetch(
        name="Download the model",
        url="https://example.org/models/v1-5-pruned-emaonly.safetensors",
        dest="/srv/sd/models/Stable-diffusion/v1-5-pruned-emaonly.safetensors",
        sha256="6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
    )
"""

from __future__ import annotations

import posixpath
import shlex

from pyinfra import host
from pyinfra.api import operation
from pyinfra.facts.files import Sha256File

# Downloads with python3 when neither curl nor wget is there (Debian's minbase has neither).
_PYTHON_GET = (
    "import shutil, sys, urllib.request; "
    "r = urllib.request.urlopen(sys.argv[1], timeout=60); "
    "shutil.copyfileobj(r, open(sys.argv[2], 'wb'))"
)


def fetch_command(url: str, dest: str, sha256: str, mode: str = "644") -> str:
    """
    The shell command that downloads ``url`` to ``dest`` only if its sha256 is ``sha256``.

    Exits non-zero, with the reason on stderr and no file left behind, when the download fails or
    the checksum differs. Exposed (not only used by ``fetch``) so that it can be tested by running
    it.
    """
    directory = posixpath.dirname(dest) or "/"
    base = posixpath.basename(dest)
    q_url, q_dest, q_dir = shlex.quote(url), shlex.quote(dest), shlex.quote(directory)
    q_template = shlex.quote(f"{directory.rstrip('/')}/.{base}.XXXXXX")
    failed = shlex.quote(f"download of {url} failed; {dest} was not changed")
    mismatch = shlex.quote(
        f"checksum mismatch for {url}: expected sha256 {sha256}, got "
    )
    kept = shlex.quote(f"; the download was removed and {dest} was not changed")
    return "\n".join([
        f"install -d -m 0755 {q_dir} && t=$(mktemp {q_template}) || exit 1",
        "if command -v curl >/dev/null 2>&1; then",
        f"  curl -fsSL --retry 3 -o \"$t\" {q_url}",
        "elif command -v wget >/dev/null 2>&1; then",
        f"  wget -q -O \"$t\" {q_url}",
        "else",
        f"  python3 -c {shlex.quote(_PYTHON_GET)} {q_url} \"$t\"",
        f"fi || {{ rm -f \"$t\"; echo {failed} >&2; exit 1; }}",
        "got=$(sha256sum \"$t\" | cut -d ' ' -f 1)",
        f"if [ \"$got\" != {shlex.quote(sha256)} ]; then",
        f"  rm -f \"$t\"; echo {mismatch}\"$got\"{kept} >&2; exit 1",
        "fi",
        f"chmod {shlex.quote(str(mode))} \"$t\" && mv -f \"$t\" {q_dest}",
    ])


@operation()
def fetch(url: str, dest: str, sha256: str, mode: str = "644"):
    """
    Download ``url`` to ``dest`` and keep it only if its sha256 is ``sha256``.

    Nothing is downloaded when ``dest`` already has that checksum (one ``sha256sum`` on the host).
    A download whose checksum differs is removed and the operation fails; ``dest`` is never a
    file with another checksum because of this operation.

    + url: http(s):// or file:// URL
    + dest: absolute path on the host; its directory is created when missing
    + sha256: the 64 hex digits the file must have
    + mode: permissions of the kept file

    .. code:: python

        download.fetch(
            name="Download amdgpu-install",
            url="https://repo.radeon.com/amdgpu-install/5.3/ubuntu/jammy/"
                "amdgpu-install_5.3.50300-1_all.deb",
            dest="/var/cache/sdinfra/rocm/jammy/amdgpu-install_5.3.50300-1_all.deb",
            sha256="<the sha256 you checked>",
        )
    """
    sha256 = sha256.lower()
    if host.get_fact(Sha256File, path=dest) == sha256:
        return
    yield fetch_command(url, dest, sha256, mode)
