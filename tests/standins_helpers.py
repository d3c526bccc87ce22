"""What the stand-in tests share: running a command, unpacking a .deb, its control fields."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run([str(c) for c in cmd], **kw)


def extract_deb(deb: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    assert run(["dpkg-deb", "-x", deb, dest]).returncode == 0
    return dest


def fields(deb: Path) -> dict:
    out = run(["dpkg-deb", "--field", deb]).stdout
    return dict(re.findall(r"^(\S+): (.*)$", out, re.M))
