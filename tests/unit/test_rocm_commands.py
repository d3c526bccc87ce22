"""
The shell the rocm role runs on hosts, run here for real: the verification, the state fact, the
checksums command and the verified download.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import pytest

from roles.rocm import verify_command
from roles.rocm.facts import RocmState, gpu_agents
from tests.unit.fakehost import REPO, plan
from tests.unit.rocm_helpers import (DEPLOY, KFD_ATOMICS, ROCMINFO_CPU, ROCMINFO_GPU, SHA,
                                     rocm_changes, rocm_host)


# --- shell run for real: verification, the state fact ---------------------------------------


def fake_tools(tmp_path: Path, rocminfo: str | None, dmesg: str = "") -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if rocminfo is not None:
        (tmp_path / "rocminfo.out").write_text(rocminfo)
        (bin_dir / "rocminfo").write_text(
            f"#!/bin/sh\nenv > {tmp_path}/rocminfo.env\ncat {tmp_path}/rocminfo.out\n")
    (tmp_path / "dmesg.out").write_text(dmesg)
    (bin_dir / "dmesg").write_text(f"#!/bin/sh\ncat {tmp_path}/dmesg.out\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.skipif(Path("/opt/rocm/bin/rocminfo").exists(), reason="a real ROCm is installed")
def test_verification_passes_with_a_gpu_agent_and_exports_the_environment(tmp_path):
    env = fake_tools(tmp_path, ROCMINFO_GPU)
    done = subprocess.run(["sh", "-c", verify_command({"ROC_ENABLE_PRE_VEGA": "1"})], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ROC_ENABLE_PRE_VEGA=1" in (tmp_path / "rocminfo.env").read_text()


@pytest.mark.skipif(Path("/opt/rocm/bin/rocminfo").exists(), reason="a real ROCm is installed")
def test_verification_fails_with_the_kernels_reason_on_the_seeds_host(tmp_path):
    env = fake_tools(tmp_path, ROCMINFO_CPU, dmesg="[    1.0] other\n" + KFD_ATOMICS)
    done = subprocess.run(["sh", "-c", verify_command({})], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 1
    assert "skipped device 1002:67ef, PCI rejects atomics 730<0" in done.stderr
    assert "PCIe 3.0" in done.stderr and "rocm_verify: false" in done.stderr


@pytest.mark.skipif(Path("/opt/rocm/bin/rocminfo").exists(), reason="a real ROCm is installed")
def test_verification_fails_without_a_gpu_agent_or_without_rocminfo(tmp_path):
    env = fake_tools(tmp_path, ROCMINFO_CPU)
    done = subprocess.run(["sh", "-c", verify_command({})], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 1 and "lists no GPU (gfx) agent" in done.stderr
    assert "Device Type:             CPU" in done.stderr
    other = tmp_path / "other"
    other.mkdir()
    env = fake_tools(other, None)
    env["PATH"] = f"{other}/bin:/usr/bin:/bin"
    done = subprocess.run(["sh", "-c", verify_command({})], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 1 and "rocminfo is not installed" in done.stderr


@pytest.mark.skipif(Path("/opt/rocm/bin/rocminfo").exists(), reason="a real ROCm is installed")
def test_state_fact_command_run_here_reads_what_is_here(tmp_path):
    env = fake_tools(tmp_path, ROCMINFO_GPU, dmesg=KFD_ATOMICS)
    fact = RocmState()
    command = fact.command(users="root nosuchuser", verify=True, env="ROC_ENABLE_PRE_VEGA=1")
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    state = fact.process(done.stdout.splitlines())
    assert state["users"]["root"] and "root" in state["users"]["root"]
    assert state["users"]["nosuchuser"] is None
    assert state["rocminfo_found"] and gpu_agents(state["rocminfo"]) == ["gfx1100", "gfx1030"]
    assert state["kernel"] == [KFD_ATOMICS.strip()]
    assert "ROC_ENABLE_PRE_VEGA=1" in (tmp_path / "rocminfo.env").read_text()
    if Path("/etc/adduser.conf").exists():
        assert state["adduser_exists"]
        assert state["adduser"] == Path("/etc/adduser.conf").read_text()
    assert "video" in state["groups"]


# --- the checksums command, against a local server ---------------------------------------------


def build_deb(directory: Path, name: str, version: str, marker: str) -> Path:
    root = directory / f"{name}-{marker}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: test <t@t>\n"
        f"Description: stand-in built by the tests ({marker})\n")
    (root / "etc").mkdir()
    (root / "etc" / "which").write_text(marker + "\n")
    out = directory / f"{name}-{marker}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(out)], check=True,
                   capture_output=True)
    return out


@pytest.fixture
def local_repo(tmp_path):
    """An HTTP server on 127.0.0.1 laid out like repo.radeon.com/amdgpu-install/."""
    served = tmp_path / "srv"
    digests = {}
    for codename in ("focal", "jammy"):
        deb = build_deb(tmp_path, "amdgpu-install", "5.3.50300-1", codename)
        target = served / "amdgpu-install" / "5.3" / "ubuntu" / codename
        target.mkdir(parents=True)
        shutil.copy(deb, target / "amdgpu-install_5.3.50300-1_all.deb")
        digests[codename] = hashlib.sha256(deb.read_bytes()).hexdigest()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served, digests
    server.shutdown()
    server.server_close()


def checksums_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "roles.rocm", "checksums", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb")
def test_checksums_command_prints_settings_to_paste(local_repo):
    base, _, digests = local_repo
    done = checksums_cli("5.3", "--repo", base)
    assert done.returncode == 0, done.stderr
    namespace = {}
    exec(done.stdout, namespace)  # what users paste into group_data/all.py
    assert namespace["rocm_installer_sha256s"] == {"5.3/focal": digests["focal"],
                                                   "5.3/jammy": digests["jammy"]}
    assert f"{base}/amdgpu-install/5.3/ubuntu/jammy/amdgpu-install_5.3.50300-1_all.deb" \
        in done.stdout
    yaml_done = checksums_cli("5.3", "--repo", base, "--format", "yaml")
    import yaml
    assert yaml.safe_load(yaml_done.stdout) == {"rocm_installer_sha256s": namespace[
        "rocm_installer_sha256s"]}


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb")
def test_checksums_command_fails_on_a_missing_file_or_something_not_a_package(local_repo):
    base, served, _ = local_repo
    done = checksums_cli("5.4", "--repo", base)
    assert done.returncode != 0
    assert f"{base}/amdgpu-install/5.4/ubuntu/focal/amdgpu-install_5.4.50400-1_all.deb" \
        in done.stderr
    (served / "amdgpu-install" / "5.3" / "ubuntu" / "jammy" / "amdgpu-install_5.3.50300-1_all.deb"
     ).write_text("<html>not found</html>")
    done = checksums_cli("5.3", "--repo", base)
    assert done.returncode != 0 and "is not a Debian package" in done.stderr
    assert "rocm_installer_sha256s" not in done.stdout


# --- the verified download (roles/download.py), its command run here --------------------------


def run_fetch(url: str, dest: Path, sha256: str, path: str | None = None):
    from roles.download import fetch_command

    env = {**os.environ, **({"PATH": path} if path else {})}
    return subprocess.run(["sh", "-c", fetch_command(url, str(dest), sha256)], env=env,
                          capture_output=True, text=True, timeout=60)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb")
def test_fetch_keeps_a_download_whose_checksum_matches(local_repo, tmp_path):
    base, _, digests = local_repo
    dest = tmp_path / "cache" / "jammy" / "amdgpu-install_5.3.50300-1_all.deb"
    url = f"{base}/amdgpu-install/5.3/ubuntu/jammy/amdgpu-install_5.3.50300-1_all.deb"
    done = run_fetch(url, dest, digests["jammy"])
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == digests["jammy"]
    assert oct(dest.stat().st_mode & 0o777) == "0o644"
    assert leftovers(dest.parent) == []


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb")
def test_fetch_removes_a_download_whose_checksum_differs(local_repo, tmp_path):
    base, _, digests = local_repo
    url = f"{base}/amdgpu-install/5.3/ubuntu/jammy/amdgpu-install_5.3.50300-1_all.deb"
    dest = tmp_path / "target" / "amdgpu-install.deb"
    done = run_fetch(url, dest, digests["focal"])  # the other codename's file
    assert done.returncode == 1
    assert f"expected sha256 {digests['focal']}, got {digests['jammy']}" in done.stderr
    assert not dest.exists() and leftovers(dest.parent) == []
    # A file already there (a partial download, say) is left as it was, not replaced.
    dest.write_text("partial")
    assert run_fetch(url, dest, digests["focal"]).returncode == 1
    assert dest.read_text() == "partial" and leftovers(dest.parent) == []


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb")
def test_fetch_fails_cleanly_when_the_download_fails(local_repo, tmp_path):
    base, _, digests = local_repo
    target = tmp_path / "target"
    done = run_fetch(f"{base}/no/such.deb", target / "x.deb", digests["jammy"])
    assert done.returncode == 1 and f"download of {base}/no/such.deb failed" in done.stderr
    assert list(target.iterdir()) == []


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb")
def test_fetch_works_with_python3_alone(local_repo, tmp_path):
    """A minimal host (Debian minbase) has neither curl nor wget."""
    base, _, digests = local_repo
    tools = tmp_path / "tools"
    tools.mkdir()
    # coreutils (Essential: on every host) and sh; no curl, no wget.
    for tool in ("sh", "install", "mktemp", "rm", "sha256sum", "cut", "chmod", "mv", "sleep",
                 "stat"):
        (tools / tool).symlink_to(shutil.which(tool))
    (tools / "python3").symlink_to(os.path.realpath(sys.executable))
    dest = tmp_path / "out" / "amdgpu-install.deb"
    url = f"{base}/amdgpu-install/5.3/ubuntu/focal/amdgpu-install_5.3.50300-1_all.deb"
    done = run_fetch(url, dest, digests["focal"], path=str(tools))
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == digests["focal"]


def test_installer_already_downloaded_is_not_fetched_again():
    deb = b"!<arch>\ndebian-binary   stand-in"
    host = rocm_host().set(rocm_installer_sha256=hashlib.sha256(deb).hexdigest())
    host.file("/var/cache/sdinfra/rocm/jammy/amdgpu-install_5.3.50300-1_all.deb", deb)
    changes = rocm_changes(plan(DEPLOY, [host]))
    assert "Install amdgpu-install 5.3.50300-1" in changes
    assert not any(c.startswith("Download") for c in changes)
    # The same file with another pinned checksum is fetched (and checked) again.
    host.set(rocm_installer_sha256=SHA)
    assert "Download amdgpu-install 5.3.50300-1 for jammy" in rocm_changes(plan(DEPLOY, [host]))
