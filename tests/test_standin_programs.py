"""The stand-in programs are real files (testbed/standins/programs/, testbed/standin_webui/):
each one parses, so a broken one fails here in a second rather than on a booted host, and the
values a package sets in one are set where the file says."""

from __future__ import annotations

import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.standins.common import PROGRAMS, program

WEBUI = PROGRAMS.parents[1] / "standin_webui"
SHELL = sorted(PROGRAMS.glob("*.sh"))
# With the fleet's inventory template, the one other program the test bed writes out.
PYTHON = (sorted(PROGRAMS.glob("*.py")) + sorted(WEBUI.rglob("*.py"))
          + [PROGRAMS.parents[1] / "inventory_template.py"])


def test_every_program_file_is_linted_here():
    assert {p.suffix for p in PROGRAMS.iterdir()} == {".sh", ".py"}
    assert {p.name for p in SHELL} >= {"amdgpu-install.sh", "lspci.sh",
                                        "nvidia-container-runtime.sh"}
    assert {p.name for p in PYTHON} >= {"nvidia-ctk.py", "nvidia-smi.py", "stdlib-zip.py",
                                         "webui.py", "launch.py"}


@pytest.mark.parametrize("path", SHELL, ids=lambda p: p.name)
def test_shell_program_parses(path):
    result = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("path", PYTHON, ids=lambda p: str(p.relative_to(PROGRAMS.parents[1])))
def test_python_program_compiles(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)


def test_a_broken_program_fails_the_lint(tmp_path):
    broken = tmp_path / "broken.sh"
    broken.write_text("#!/bin/sh\nif true; then\n  echo unterminated\n")
    assert subprocess.run(["sh", "-n", str(broken)], capture_output=True).returncode != 0
    broken = tmp_path / "broken.py"
    broken.write_text("GPU = {\n")
    with pytest.raises(py_compile.PyCompileError):
        py_compile.compile(str(broken), cfile=str(tmp_path / "out.pyc"), doraise=True)


def test_program_sets_the_named_values_and_runs_alone(tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(program("nvidia-smi.py", NAME="NVIDIA GeForce RTX 3060", MEMORY_MIB=12288))
    out = subprocess.run([sys.executable, str(smi), "--query-gpu=name,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True, check=True)
    assert out.stdout == "NVIDIA GeForce RTX 3060, 12288 MiB\n"
    # The file alone: its own values.
    out = subprocess.run([sys.executable, str(PROGRAMS / "nvidia-smi.py"), "-L"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith("GPU 0: NVIDIA GeForce GTX 950M (UUID: GPU-")


def test_program_refuses_a_value_the_file_does_not_declare():
    with pytest.raises(ValueError, match="0 lines 'VRAM = ...'"):
        program("nvidia-smi.py", VRAM=1)
