"""What every stand-in builder shares: reproducible timestamps, the maintainer they name,
running build tools, and the stand-in programs in ``programs/`` (real files, each linted by
tests/test_standin_programs.py and runnable alone) as they are installed."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

#: Fixed timestamp for every file put into a package or an image (2023-11-14 22:13:20 UTC), so
#: that two builds of the same stand-in give byte-identical .debs and image archives.
EPOCH = 1_700_000_000

STANDIN_MAINTAINER = "sdinfra test stand-ins <standins@sdinfra.invalid>"
PROGRAMS = Path(__file__).with_name("programs")


def program(name: str, **values) -> str:
    """The text of ``programs/NAME`` as a package installs it: each line ``KEY = ...`` named in
    ``values`` set to ``KEY = repr(value)``; the file's own values stand otherwise."""
    text = (PROGRAMS / name).read_text()
    for key, value in values.items():
        text, count = re.subn(rf"^{key} = .*$", lambda _: f"{key} = {value!r}", text, flags=re.M)
        if count != 1:
            raise ValueError(f"{PROGRAMS / name}: {count} lines '{key} = ...', want 1")
    return text


def sha256_file(path: os.PathLike | str) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run(cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    try:
        return subprocess.run(list(cmd), **kw)
    except subprocess.CalledProcessError as e:  # make failures readable in test output
        raise RuntimeError(
            f"command failed ({e.returncode}): {' '.join(cmd)}\nstdout:\n{e.stdout}\nstderr:\n{e.stderr}"
        ) from None


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} not found: install the Debian package {package}")
    return path

