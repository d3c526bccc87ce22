"""Tests of the NVIDIA and AMD stand-ins of testbed/standins/ (nvidia-ctk, nvidia-smi,
amdgpu-install, rocminfo): they must behave the way the e2e tests rely on. See test_standins.py.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from testbed import standins as S
from tests.standins_helpers import extract_deb, fields, run


# ------------------------------------------------------------------------------------------
# nvidia-ctk, nvidia-container-runtime, nvidia-smi


@pytest.fixture(scope="module")
def nvidia_root(built, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nvroot")
    extract_deb(built.nvidia_toolkit_deb, root)
    extract_deb(built.nvidia_driver_deb, root)
    return root


def ctk(root: Path, *args):
    return run(["python3", root / "usr/bin/nvidia-ctk", *args])


def test_nvidia_ctk_merges_into_existing_daemon_json_and_is_idempotent(nvidia_root, tmp_path):
    cfg = tmp_path / "etc/docker/daemon.json"
    cfg.parent.mkdir(parents=True)
    original = {"log-driver": "json-file", "log-opts": {"max-size": "10m"},
                "default-runtime": "runc", "runtimes": {"crun": {"path": "/usr/bin/crun"}},
                "storage-driver": "overlay2"}
    cfg.write_text(json.dumps(original))
    r = ctk(nvidia_root, "runtime", "configure", "--runtime=docker", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert "Wrote updated config" in r.stderr
    merged = json.loads(cfg.read_text())
    assert merged["runtimes"]["nvidia"] == {"args": [], "path": "nvidia-container-runtime"}
    assert merged["runtimes"]["crun"] == {"path": "/usr/bin/crun"}
    for k in ("log-driver", "log-opts", "default-runtime", "storage-driver"):
        assert merged[k] == original[k]
    first = cfg.read_bytes()
    # Go's json.MarshalIndent(cfg, "", "    "): sorted keys, 4 spaces, no trailing newline
    assert first == json.dumps(merged, indent=4, sort_keys=True).encode()
    assert b'\n    "default-runtime": "runc",\n' in first and not first.endswith(b"\n")
    r = ctk(nvidia_root, "runtime", "configure", "--runtime=docker", f"--config={cfg}")
    assert r.returncode == 0 and cfg.read_bytes() == first


def test_nvidia_ctk_creates_missing_file_and_options(nvidia_root, tmp_path):
    cfg = tmp_path / "new/dir/daemon.json"
    assert ctk(nvidia_root, "runtime", "configure", "--runtime=docker",
               "--config", cfg).returncode == 0
    assert json.loads(cfg.read_text()) == {
        "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}
    assert ctk(nvidia_root, "runtime", "configure", "--runtime=docker", "--config", cfg,
               "--set-as-default").returncode == 0
    assert json.loads(cfg.read_text())["default-runtime"] == "nvidia"
    before = cfg.read_bytes()
    dry = ctk(nvidia_root, "runtime", "configure", "--runtime=docker", "--config", cfg,
              "--dry-run")
    assert dry.returncode == 0 and json.loads(dry.stdout)["default-runtime"] == "nvidia"
    assert cfg.read_bytes() == before
    bad = ctk(nvidia_root, "runtime", "configure", "--runtime=containerd", "--config", cfg)
    assert bad.returncode != 0 and cfg.read_bytes() == before
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert ctk(nvidia_root, "runtime", "configure", "--config", broken).returncode != 0
    assert broken.read_text() == "{not json"
    v = ctk(nvidia_root, "--version")
    assert v.returncode == 0 and v.stdout.startswith("NVIDIA Container Toolkit CLI version 1.")


def test_nvidia_container_runtime_stub_hands_arguments_to_runc(nvidia_root, tmp_path):
    stub = nvidia_root / "usr/bin/nvidia-container-runtime"
    assert stub.read_text().startswith("#!/bin/sh\n")
    if any(os.access(p, os.X_OK) for p in ("/usr/sbin/runc", "/usr/bin/runc",
                                            "/usr/local/sbin/runc", "/usr/local/bin/runc")):
        pytest.skip("a real runc is installed; the stub would exec it")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "runc").write_text('#!/bin/sh\necho "runc:$*"\n')
    (fake / "runc").chmod(0o755)
    r = run(["sh", stub, "--root", "/run/x", "create", "--bundle", "/b", "id1"],
            env=dict(os.environ, PATH=f"{fake}:/usr/bin:/bin"))
    assert r.stdout == "runc:--root /run/x create --bundle /b id1\n"


def test_nvidia_smi_reports_a_gtx_950m(nvidia_root):
    smi = nvidia_root / "usr/bin/nvidia-smi"
    q = run(["python3", smi, "--query-gpu=name,memory.total,driver_version",
             "--format=csv,noheader"])
    assert q.returncode == 0
    assert q.stdout == f"NVIDIA GeForce GTX 950M, 2048 MiB, {S.NVIDIA_DRIVER_VERSION}\n"
    h = run(["python3", smi, "--query-gpu=name,memory.total", "--format=csv,nounits"])
    assert h.stdout == "name, memory.total\nNVIDIA GeForce GTX 950M, 2048\n"
    bad = run(["python3", smi, "--query-gpu=bogus", "--format=csv"])
    assert bad.returncode != 0 and 'Field "bogus"' in bad.stdout
    t = run(["python3", smi])
    assert t.returncode == 0
    lines = t.stdout.splitlines()
    table = [ln for ln in lines[1:] if ln.strip()]
    assert {len(ln) for ln in table} == {79}, [ln for ln in table if len(ln) != 79]
    assert f"Driver Version: {S.NVIDIA_DRIVER_VERSION}" in t.stdout
    assert "2048MiB" in t.stdout and "NVIDIA GeForce ..." in t.stdout
    listed = run(["python3", smi, "-L"]).stdout
    assert listed.startswith("GPU 0: NVIDIA GeForce GTX 950M (UUID: GPU-")


def test_broken_nvidia_driver_standin(tmp_path):
    deb = S.build_nvidia_driver_deb(tmp_path, broken=True)
    root = extract_deb(deb, tmp_path / "root")
    r = run(["python3", root / "usr/bin/nvidia-smi"])
    assert r.returncode == 9 and "couldn't communicate with the NVIDIA driver" in r.stdout
    other = S.build_nvidia_driver_deb(tmp_path / "o", package="nvidia-driver-525",
                                      gpu_name="NVIDIA GeForce GTX 1650", memory_mib=4096)
    assert fields(other)["Package"] == "nvidia-driver-525"
    root = extract_deb(other, tmp_path / "oroot")
    q = run(["python3", root / "usr/bin/nvidia-smi", "--query-gpu=name,memory.total",
             "--format=csv,noheader"])
    assert q.stdout == "NVIDIA GeForce GTX 1650, 4096 MiB\n"


# ------------------------------------------------------------------------------------------
# amdgpu-install, rocminfo


def amdgpu(root: Path, *args):
    return run(["sh", root / "usr/bin/amdgpu-install", *args],
               env=dict(os.environ, SDINFRA_STANDIN_ROOT=str(root)))


@pytest.mark.parametrize("gpu", [True, False])
def test_amdgpu_install_records_arguments_and_installs_rocm_tools(built, tmp_path, gpu):
    rel = built.amdgpu_deb_path if gpu else built.amdgpu_cpuonly_deb_path
    root = extract_deb(built.root / rel, tmp_path)
    assert not (root / "opt").exists()
    r = amdgpu(root, "-y", "--usecase=rocm", "--no-dkms")
    assert r.returncode == 0, r.stderr
    assert (root / "var/log/amdgpu-install.args").read_text() == "-y --usecase=rocm --no-dkms\n"
    assert os.readlink(root / "opt/rocm") == "rocm-5.3.0"
    assert (root / "opt/rocm/.info/version").read_text().strip() == "5.3.0-50300"
    state = (root / "var/lib/amdgpu-install-standin/state").read_text()
    assert "usecases=rocm\n" in state and "dkms=no\n" in state
    info = run(["sh", root / "opt/rocm/bin/rocminfo"])
    assert info.returncode == 0
    agents = re.findall(r"^  Name:\s+(\S+)", info.stdout, re.M)
    types = re.findall(r"^  Device Type:\s+(\S+)", info.stdout, re.M)
    if gpu:
        assert "gfx803" in agents and types == ["CPU", "GPU"]
        assert "26607(0x67ef)" in info.stdout
    else:
        assert not any(a.startswith("gfx") for a in agents) and types == ["CPU"]
    assert info.stdout.rstrip().endswith("*** Done ***")
    smi = run(["sh", root / "opt/rocm/bin/rocm-smi"]).stdout
    assert "ROCm System Management Interface" in smi
    assert ("No AMD GPUs" in smi) != gpu
    # a second run appends one more line: "the installer ran twice" is visible
    assert amdgpu(root, "--usecase=rocm", "-y").returncode == 0
    assert (root / "var/log/amdgpu-install.args").read_text().splitlines() == [
        "-y --usecase=rocm --no-dkms", "--usecase=rocm -y"]
    assert "dkms=yes\n" in (root / "var/lib/amdgpu-install-standin/state").read_text()


def test_amdgpu_install_usecases(built, tmp_path):
    root = extract_deb(built.root / built.amdgpu_deb_path, tmp_path)
    assert amdgpu(root, "--usecase=dkms", "-y").returncode == 0
    assert not (root / "opt/rocm").exists()
    bad = amdgpu(root, "--usecase=rocm,bogus")
    assert bad.returncode != 0 and "bogus" in bad.stderr
    assert not (root / "opt/rocm").exists()
    assert amdgpu(root, "--usecase", "rocm").returncode != 0
    listing = amdgpu(root, "--list-usecase")
    assert listing.returncode == 0 and "- rocm" in listing.stdout
    assert not (root / "opt/rocm").exists()
    assert amdgpu(root, "--usecase=hip,opencl").returncode == 0
    assert (root / "opt/rocm/bin/rocminfo").exists()
    assert amdgpu(root, "--uninstall").returncode == 0
    assert not (root / "opt/rocm").exists() and not (root / "opt/rocm-5.3.0").exists()
    assert len((root / "var/log/amdgpu-install.args").read_text().splitlines()) == 6
