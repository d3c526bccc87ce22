"""Tests of testbed/standins/: the stand-ins must behave the way the e2e tests rely on.

Fast (a few seconds), no fleet.  The tests that chroot into the image's root filesystem, install
with dpkg --root or run apt-get need root (CI runs as root) and are skipped otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

import pytest

from testbed import standins as S

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> S.StandIns:
    return S.build_all(tmp_path_factory.mktemp("standins"))


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


# ------------------------------------------------------------------------------------------
# keys and signatures


def test_keys_are_distinct_and_fingerprints_match_exports(built, tmp_path):
    for key in (built.key, built.wrong_key):
        assert re.fullmatch(r"[0-9A-F]{40}", key.fingerprint)
        env = dict(os.environ, GNUPGHOME=str(tmp_path / key.fingerprint))
        os.makedirs(env["GNUPGHOME"], mode=0o700)
        for f in (key.public_asc, key.public_gpg):
            out = run(["gpg", "--batch", "--with-colons", "--show-keys", f], env=env).stdout
            fprs = [ln.split(":")[9] for ln in out.splitlines() if ln.startswith("fpr:")]
            assert fprs[0] == key.fingerprint
        assert key.public_asc.read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        assert "PRIVATE" not in key.public_asc.read_text()
    assert built.key.fingerprint != built.wrong_key.fingerprint
    # secret keys never land in the served tree
    served = [p for p in built.root.rglob("*") if p.is_file()]
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in served)
    assert (built.root / built.key_path).read_bytes() == built.key.public_asc.read_bytes()
    assert (built.root / built.nvidia_gpgkey_path).read_bytes() == built.key.public_asc.read_bytes()


@pytest.mark.parametrize("repo_attr",
                         ["apt", "apt_flat", "apt_wrong_key", "apt_flat_wrong_key"])
def test_inrelease_and_release_gpg_verify_only_with_the_signing_key(built, repo_attr):
    repo = getattr(built, repo_attr)
    good, bad = ((built.wrong_key, built.key) if repo_attr.endswith("_wrong_key")
                 else (built.key, built.wrong_key))
    inrelease = repo.release_dir / "InRelease"
    release = repo.release_dir / "Release"
    detached = repo.release_dir / "Release.gpg"
    ok = run(["gpgv", "--keyring", good.public_gpg, inrelease])
    assert ok.returncode == 0, ok.stderr
    assert good.fingerprint[-16:] in ok.stderr.replace(" ", "")
    assert run(["gpgv", "--keyring", good.public_gpg, detached, release]).returncode == 0
    assert run(["gpgv", "--keyring", bad.public_gpg, inrelease]).returncode != 0
    assert run(["gpgv", "--keyring", bad.public_gpg, detached, release]).returncode != 0
    # the clearsigned text is the Release file
    assert release.read_text().strip() in inrelease.read_text()


@pytest.mark.parametrize("repo_attr", ["apt", "apt_flat"])
def test_release_hashes_packages_and_packages_hash_the_debs(built, repo_attr):
    repo = getattr(built, repo_attr)
    release = (repo.release_dir / "Release").read_text()
    sha_block = release.split("SHA256:\n", 1)[1].split("SHA512:", 1)[0]
    entries = re.findall(r"^ ([0-9a-f]{64})\s+(\d+) (\S+)$", sha_block, re.M)
    names = {name for _, _, name in entries}
    assert any(n.endswith("Packages") for n in names) and any(n.endswith("Packages.gz") for n in names)
    for digest, size, name in entries:
        f = repo.release_dir / name
        assert S.sha256_file(f) == digest and f.stat().st_size == int(size)
    if repo.layout == "dists":
        assert re.search(r"^Suite: stable$", release, re.M)
        assert re.search(r"^Components: main$", release, re.M)
        packages = (repo.release_dir / "main/binary-amd64/Packages").read_text()
    else:
        packages = (repo.release_dir / "Packages").read_text()
    stanzas = [dict(re.findall(r"^(\S+): (.*)$", s, re.M)) for s in packages.strip().split("\n\n")]
    assert {s["Package"] for s in stanzas} == {"nvidia-container-toolkit", "nvidia-driver-standin"}
    for s in stanzas:
        deb = repo.root / s["Filename"]
        assert deb.is_file() and S.sha256_file(deb) == s["SHA256"]
        assert s["Architecture"] == "all"


def _apt(tmp: Path, sources: str, *args, cwd=None):
    """apt-get with its own state, lists and sources, none of the host's."""
    for sub in ("etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d", "state/lists/partial",
                "cache/archives/partial", "log"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    (tmp / "state/status").touch()
    (tmp / "etc/sources.list.d/standin.sources").write_text(sources)
    conf = tmp / "apt.conf"
    conf.write_text("\n".join([
        f'Dir::Etc "{tmp}/etc";', 'Dir::Etc::sourcelist "/dev/null";',
        'Dir::Etc::trusted "/dev/null";', 'Dir::Etc::trustedparts "/nonexistent";',
        f'Dir::State "{tmp}/state";', f'Dir::State::status "{tmp}/state/status";',
        f'Dir::Cache "{tmp}/cache";', f'Dir::Log "{tmp}/log";', 'APT::Architecture "amd64";',
        'APT::Sandbox::User "root";', 'Debug::NoLocking "true";', 'Acquire::Languages "none";',
        'Acquire::http::Proxy "DIRECT";', ""]))
    env = dict(os.environ, APT_CONFIG=str(conf))
    return run(["apt-get", "-q", *args], env=env, cwd=cwd)


@needs_root
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="no apt-get")
def test_apt_accepts_the_repositories_and_refuses_the_wrong_key(built, tmp_path):
    keyring = str(built.root / built.key_path)  # armored .asc, as apt's Signed-By accepts
    with S.serve(built.root, ["127.0.0.1"]) as srv:
        base = srv.url().rstrip("/")
        for name, kw in (("dists", {}), ("flat", {"flat": True})):
            d = tmp_path / name
            src = built.apt_sources(base, keyring, **kw)
            up = _apt(d, src, "update")
            assert up.returncode == 0, up.stdout + up.stderr
            assert "W:" not in up.stderr and "E:" not in up.stderr, up.stderr
            (d / "dl").mkdir()
            dl = _apt(d, src, "download", "nvidia-container-toolkit", "nvidia-driver-standin",
                      cwd=d / "dl")
            assert dl.returncode == 0, dl.stdout + dl.stderr
            got = sorted(p.name for p in (d / "dl").iterdir())
            assert got == sorted([built.nvidia_toolkit_deb.name, built.nvidia_driver_deb.name])
            assert S.sha256_file(d / "dl" / built.nvidia_toolkit_deb.name) == \
                S.sha256_file(built.nvidia_toolkit_deb)
        # a second update of an unchanged repository downloads no index again
        srv.clear()
        again = _apt(tmp_path / "dists", built.apt_sources(base, keyring), "update")
        assert again.returncode == 0
        assert not [p for p in srv.paths() if p.endswith(("Packages", "Packages.gz"))]
        assert all(r.status in (200, 304) for r in srv.requests)

        wrong = _apt(tmp_path / "wrong", built.apt_sources(base, keyring, wrong_key=True), "update")
        assert wrong.returncode != 0
        assert "NO_PUBKEY" in wrong.stdout + wrong.stderr
        assert built.wrong_key.fingerprint[-16:] in wrong.stdout + wrong.stderr
        assert "/apt-wrongkey/dists/stable/InRelease" in srv.paths()
        flat = _apt(tmp_path / "wrong-flat",
                    built.apt_sources(base, keyring, wrong_key=True, flat=True), "update")
        assert flat.returncode != 0
        assert built.wrong_key.fingerprint[-16:] in flat.stdout + flat.stderr
        assert f"/{built.apt_flat_wrong_key_path}/InRelease" in srv.paths()
        assert built.apt_flat_wrong_key.layout == "flat"


def test_deb822_sources_text():
    assert S.deb822_sources("http://10.77.1.1:8080/apt", "/etc/apt/keyrings/s.asc") == (
        "Types: deb\nURIs: http://10.77.1.1:8080/apt\nSuites: stable\nComponents: main\n"
        "Signed-By: /etc/apt/keyrings/s.asc\n")
    flat = S.deb822_sources("http://h/x", "/k.asc", suite="/", component=None)
    assert "Suites: /\n" in flat and "Components" not in flat


# ------------------------------------------------------------------------------------------
# .deb packages


def test_debs_are_valid_and_described_as_standins(built):
    debs = {
        "nvidia-container-toolkit": built.nvidia_toolkit_deb,
        "nvidia-driver-standin": built.nvidia_driver_deb,
        "amdgpu-install": built.root / built.amdgpu_deb_path,
    }
    for pkg, deb in debs.items():
        assert run(["dpkg-deb", "--info", deb]).returncode == 0
        f = fields(deb)
        assert f["Package"] == pkg and f["Architecture"] == "all"
        assert "STAND-IN" in f["Description"]
    assert fields(debs["amdgpu-install"])["Version"] == "5.3.50300-1"
    assert debs["amdgpu-install"].name == "amdgpu-install_5.3.50300-1_all.deb"
    contents = run(["dpkg-deb", "--contents", built.nvidia_toolkit_deb]).stdout
    assert re.search(r"^-rwxr-xr-x root/root .* \./usr/bin/nvidia-ctk$", contents, re.M)
    assert re.search(r"^-rwxr-xr-x root/root .* \./usr/bin/nvidia-container-runtime$",
                     contents, re.M)
    contents = run(["dpkg-deb", "--contents", built.nvidia_driver_deb]).stdout
    assert re.search(r"^-rwxr-xr-x root/root .* \./usr/bin/nvidia-smi$", contents, re.M)


def test_amdgpu_sha256s_match_the_served_files(built):
    for rel, digest in ((built.amdgpu_deb_path, built.amdgpu_sha256),
                        (built.amdgpu_cpuonly_deb_path, built.amdgpu_cpuonly_sha256)):
        f = built.root / rel
        assert hashlib.sha256(f.read_bytes()).hexdigest() == digest
        focal = Path(str(f).replace("/jammy/", "/focal/"))
        assert S.sha256_file(focal) == digest
    assert built.amdgpu_sha256 != built.amdgpu_cpuonly_sha256
    # same URL path below each base, like repo.radeon.com's
    assert built.amdgpu_deb_path.split("/", 1)[1] == built.amdgpu_cpuonly_deb_path.split("/", 1)[1]
    assert built.amdgpu_deb_path.endswith(
        "amdgpu-install/5.3/ubuntu/jammy/amdgpu-install_5.3.50300-1_all.deb")


def test_builds_are_reproducible(tmp_path):
    a = S.build_amdgpu_install_deb(tmp_path / "a")
    b = S.build_amdgpu_install_deb(tmp_path / "b")
    assert S.sha256_file(a) == S.sha256_file(b)
    i1 = S.build_webui_image(tmp_path / "i1.tar")
    i2 = S.build_webui_image(tmp_path / "i2.tar")
    assert i1.sha256 == i2.sha256 and i1.image_id == i2.image_id
    assert S.build_model(tmp_path / "m1").sha256 == S.build_model(tmp_path / "m2").sha256


@needs_root
def test_debs_install_with_dpkg_into_a_temporary_root(built, tmp_path):
    root = tmp_path / "root"
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"):
        (root / d).mkdir(parents=True)
    for f in ("status", "available"):
        (root / "var/lib/dpkg" / f).touch()
    r = run(["dpkg", f"--root={root}", "--force-depends", "-i", built.nvidia_toolkit_deb,
             built.nvidia_driver_deb, built.root / built.amdgpu_deb_path])
    assert r.returncode == 0, r.stdout + r.stderr
    listed = run(["dpkg", f"--root={root}", "-l"]).stdout
    for pkg in ("nvidia-container-toolkit", "nvidia-driver-standin", "amdgpu-install"):
        assert re.search(rf"^ii\s+{pkg}\s", listed, re.M), listed
    assert os.access(root / "usr/bin/nvidia-ctk", os.X_OK)
    assert os.access(root / "usr/bin/amdgpu-install", os.X_OK)


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


# ------------------------------------------------------------------------------------------
# web UI image


def read_image(path: Path):
    with tarfile.open(path) as tf:
        files = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    return files


def test_image_archive_is_consistent(built):
    img = built.image
    assert img.path == built.root / built.image_path
    # Loaded on every test host: busybox, Debian's python3 and a zip of the modules it needs.
    assert img.path.stat().st_size < 16 * 1024 * 1024
    assert S.sha256_file(img.path) == img.sha256
    files = read_image(img.path)
    manifest = json.loads(files["manifest.json"])
    assert len(manifest) == 1
    m = manifest[0]
    assert m["RepoTags"] == ["sdinfra/webui-standin:test"]
    config_bytes = files[m["Config"]]
    assert m["Config"] == hashlib.sha256(config_bytes).hexdigest() + ".json"
    assert img.image_id == "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    config = json.loads(config_bytes)
    layers = [files[name] for name in m["Layers"]]
    assert config["rootfs"] == {
        "type": "layers",
        "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]}
    assert config["rootfs"]["diff_ids"] == [img.layer_diff_id]
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    c = config["config"]
    # As the real image's Dockerfile: WORKDIR /webui, ENTRYPOINT ["/bin/sh", "/sdinfra/start.sh"].
    assert c["Entrypoint"] == ["/bin/sh", "/sdinfra/start.sh"] and c["WorkingDir"] == "/webui"
    assert c["ExposedPorts"] == {"7860/tcp": {}}
    assert json.loads(files["repositories"]) == {
        "sdinfra/webui-standin": {"test": m["Layers"][0].split("/")[0]}}


def test_image_rootfs_contents(built, tmp_path):
    files = read_image(built.image.path)
    m = json.loads(files["manifest.json"])[0]
    (tmp_path / "layer.tar").write_bytes(files[m["Layers"][0]])
    with tarfile.open(tmp_path / "layer.tar") as layer:
        members = {mm.name: mm for mm in layer.getmembers()}
        busybox = layer.extractfile(members["bin/busybox"]).read()
        group = layer.extractfile(members["etc/group"]).read().decode()
        start = layer.extractfile(members["sdinfra/start.sh"]).read()
        launch = layer.extractfile(members["sdinfra/launch.py"]).read()
    assert members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    for applet in ("wget", "grep", "paste", "cp"):  # the healthcheck's and start.sh's
        assert members[f"bin/{applet}"].linkname == "busybox", applet
    assert members["tmp"].mode == 0o1777
    assert members["usr/bin/python"].issym() and members["usr/bin/python3"].issym()
    assert "webui/launch.py" in members and "webui/modules/cmd_args.py" in members
    assert "usr/lib/python3/dist-packages/torch/__init__.py" in members
    # The deploy's own start.sh and launch.py, where the compose file mounts them.
    assert start == S.START_SH.read_bytes() and launch == S.LAUNCH_PY.read_bytes()
    assert "video:x:44:" in group and "render" not in group
    (tmp_path / "busybox").write_bytes(busybox)
    assert not S._elf_has_interp(tmp_path / "busybox")  # static: runs in an empty rootfs
    assert S._elf_has_interp(Path(shutil.which("dpkg-deb")).resolve())  # the check works


@pytest.fixture(scope="module")
def image_root(built, tmp_path_factory) -> Path:
    """The image's root filesystem, unpacked (with the /dev/null docker would provide)."""
    root = tmp_path_factory.mktemp("imgroot")
    files = read_image(built.image.path)
    m = json.loads(files["manifest.json"])[0]
    layer_tar = root.parent / (root.name + ".layer.tar")
    layer_tar.write_bytes(files[m["Layers"][0]])
    run(["tar", "-x", "-f", layer_tar, "-C", root], check=True)
    if IS_ROOT:
        os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(root / "dev/null", 0o666)
    return root


# Run inside the image by its own python: the requests of a test, one after the other, with
# the cookie of a gradio login kept. Each step: [name, method, path, basic-login, body,
# form-login]; results {name: [status, body]}.
CLIENT = r"""
import base64, json, sys, urllib.error, urllib.parse, urllib.request
steps, port, cookie, out = json.load(open("/tmp/t/steps.json")), int(sys.argv[1]), "", {}
for name, method, path, basic, body, form in steps:
    data = None
    if form is not None:
        user, _, password = form.partition(":")
        data = urllib.parse.urlencode({"username": user, "password": password}).encode()
    elif body is not None:
        data = json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if basic:
        request.add_header("Authorization", "Basic " + base64.b64encode(basic.encode()).decode())
    if cookie and name.startswith("in-"):
        request.add_header("Cookie", cookie)
    try:
        response = urllib.request.urlopen(request, timeout=5)
        code, text = response.status, response.read().decode()
        cookie = response.headers.get("set-cookie", cookie).split(";")[0]
    except urllib.error.HTTPError as error:
        code, text = error.code, error.read().decode()
    out[name] = [code, text]
json.dump(out, open("/tmp/t/out.json", "w"))
"""


def run_image(root: Path, env: dict, steps=(), *, auth_file: str | None = None,
              port: int = 7860, knobs: dict | None = None, data: str = "/data",
              devices: Sequence[str] = (), keep_data: bool = False, wait: float = 15,
              linger: float = 0):
    """Start the image's /sdinfra/start.sh in a chroot of the image (own network namespace, cwd
    /webui), wait for gradio's "Running on local URL" line, run ``steps`` from inside, stop it. Returns (exit status
    or None while it still ran ``linger`` seconds after the steps, log, {step: (status,
    body)})."""
    work = root / "tmp/t"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    if not keep_data and (root / data.lstrip("/")).exists():
        shutil.rmtree(root / data.lstrip("/"))
    (root / data.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for node in ("dev/kfd", "dev/dri", "dev/nvidiactl", "dev/nvidia0"):
        path = root / node
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for node in devices:
        (root / node).parent.mkdir(parents=True, exist_ok=True)
        (root / node).write_text("")
    if knobs is not None:
        (root / data.lstrip("/") / "sdinfra-standin.json").write_text(json.dumps(knobs))
    (work / "steps.json").write_text(json.dumps([list(s) + [None] * (6 - len(s)) for s in steps]))
    (work / "client.py").write_text(CLIENT)
    if auth_file is not None:
        (work / "auth").write_text(auth_file)
    tries = int(wait / 0.1)
    (work / "run.sh").write_text(f"""
ip link set lo up
cd /webui
/bin/sh /sdinfra/start.sh > /tmp/t/log 2>&1 &
ep=$!
i=0
until grep -q "^Running on local URL" /tmp/t/log 2>/dev/null; do
    i=$((i+1))
    [ $i -gt {tries} ] && kill $ep
    if ! kill -0 $ep 2>/dev/null; then
        wait $ep; echo $? > /tmp/t/exit; exit 0
    fi
    sleep 0.1
done
echo $i > /tmp/t/tries
python3 /tmp/t/client.py {port}
sleep {linger}
if kill -0 $ep 2>/dev/null; then kill $ep; wait $ep; else wait $ep; echo $? > /tmp/t/exit; fi
exit 0
""")
    full_env = {"PATH": "/usr/bin:/bin", "PYTHONHOME": "/usr", **env}
    r = run([shutil.which("unshare"), "-n", shutil.which("chroot"), root, "/bin/sh",
             "/tmp/t/run.sh"], env=full_env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    exit_file = work / "exit"
    status = int(exit_file.read_text()) if exit_file.exists() else None
    out = work / "out.json"
    responses = {k: tuple(v) for k, v in json.loads(out.read_text()).items()} if out.exists() else {}
    return status, (work / "log").read_text(), responses


image_test = pytest.mark.skipif(
    not IS_ROOT or shutil.which("unshare") is None or shutil.which("chroot") is None,
    reason="needs root, unshare and chroot")

CPU = {"SDINFRA_BACKEND": "cpu"}


@image_test
@pytest.mark.parametrize("form", ["space", "equals"])
def test_image_gradio_login_ping_and_launch_line(image_root, form):
    opt = ("--gradio-auth-path /tmp/t/auth" if form == "space"
           else "--gradio-auth-path=/tmp/t/auth")
    status, log, resp = run_image(
        image_root,
        {"COMMANDLINE_ARGS": f"--listen {opt} --lowvram --skip-torch-cuda-test",
         "SDINFRA_BACKEND": "rocm", "HSA_OVERRIDE_GFX_VERSION": "10.3.0"},
        [("ping", "GET", "/internal/ping"), ("anon", "GET", "/"),
         ("anon-json", "GET", "/standin.json"),
         ("basic", "GET", "/standin.json", "alice:s3cret-1"),
         ("wrong", "POST", "/login", None, None, "alice:nope"),
         ("bob", "POST", "/login", None, None, "bob:pw"),
         ("login", "POST", "/login", None, None, "alice:s3cret-1"),
         ("in-page", "GET", "/"), ("in-json", "GET", "/standin.json"),
         ("in-api", "GET", "/sdapi/v1/options")],
        auth_file="alice:s3cret-1\n  bob:pw , \n\n",
    )
    assert status is None, log
    assert resp["ping"] == (200, "{}")
    # gradio 3.41: the login page, not the app; its API answers 401 without the cookie; HTTP
    # Basic is not gradio's login.
    assert resp["anon"][0] == 200 and "log in" in resp["anon"][1]
    assert resp["anon-json"][0] == 401 and resp["basic"][0] == 401
    assert resp["wrong"][0] == 400 and resp["bob"][0] == 200  # "bob:pw" from "bob:pw , "
    assert resp["login"][0] == 200
    assert resp["in-page"][0] == 200 and '<code id="backend">rocm</code>' in resp["in-page"][1]
    info = json.loads(resp["in-json"][1])
    assert info["backend"] == "rocm" and info["auth"] == "on" and info["listen"] == "yes"
    assert resp["in-api"][0] == 404  # no --api
    assert "HSA_OVERRIDE_GFX_VERSION=10.3.0" in resp["in-page"][1]
    assert f"Launching Web UI with arguments: --listen {opt} --lowvram --skip-torch-cuda-test\n" \
        in log
    assert "Running on local URL:  http://0.0.0.0:7860" in log
    assert "s3cret-1" not in log + "".join(b for _, b in resp.values())


@image_test
def test_image_prints_every_argument_as_the_launcher_does(image_root):
    """The upstream launcher's line shows --api-auth's value: why the deploy keeps it out."""
    status, log, resp = run_image(
        image_root, {"COMMANDLINE_ARGS": "--api --api-auth 'api:apis ecret' --skip-torch-cuda-test",
                     **CPU},
        [("anon", "GET", "/sdapi/v1/options"), ("ok", "GET", "/sdapi/v1/options", "api:apis ecret"),
         ("bad", "GET", "/sdapi/v1/options", "api:nope")])
    assert status is None, log
    # shlex.split of COMMANDLINE_ARGS: the quoted word stays one argument.
    assert "with arguments: --api --api-auth api:apis ecret --skip-torch-cuda-test" in log
    assert resp["anon"][0] == 401 and resp["bad"][0] == 401 and resp["ok"][0] == 200
    # Without --listen gradio binds 127.0.0.1.
    assert "Running on local URL:  http://127.0.0.1:7860" in log


@image_test
@pytest.mark.parametrize("args,message", [
    ("--listen --bogus", "launch.py: error: unrecognized arguments: --bogus"),
    ("--listen --port", "launch.py: error: argument --port: expected one argument"),
    ("--port seven", "launch.py: error: argument --port: invalid int value: 'seven'"),
])
def test_image_refuses_what_cmd_args_refuses(image_root, args, message):
    status, log, resp = run_image(image_root, {"COMMANDLINE_ARGS": f"{args} --skip-torch-cuda-test",
                                               **CPU})
    assert status == 2 and message in log and "usage: launch.py [-h]" in log, log
    assert resp == {}


@image_test
def test_image_abbreviated_flag_is_the_flag(image_root):
    status, log, _ = run_image(image_root, {"COMMANDLINE_ARGS": "--liste --skip-torch-cuda-test",
                                            **CPU})
    assert status is None and "http://0.0.0.0:7860" in log, log


@image_test
@pytest.mark.parametrize("login,error", [
    ("api:pass:word", "ValueError: too many values to unpack (expected 2)"),
    ("api", "ValueError: not enough values to unpack (expected 2, got 1)"),
])
def test_image_api_login_split_as_api_py_does(image_root, login, error):
    status, log, _ = run_image(
        image_root, {"COMMANDLINE_ARGS": f"--api --api-auth {login} --skip-torch-cuda-test", **CPU},
        linger=1.5)
    assert status == 1 and error in log, log


@image_test
def test_image_api_login_comma_makes_two(image_root):
    status, log, resp = run_image(
        image_root, {"COMMANDLINE_ARGS": "--api --api-auth a:x,y:z --skip-torch-cuda-test", **CPU},
        [("a", "GET", "/sdapi/v1/options", "a:x"), ("y", "GET", "/sdapi/v1/options", "y:z"),
         ("whole", "GET", "/sdapi/v1/options", "a:x,y:z")])
    assert status is None, log
    assert resp["a"][0] == 200 and resp["y"][0] == 200 and resp["whole"][0] == 401


@image_test
def test_image_gradio_login_without_colon_stops_the_start(image_root):
    status, log, _ = run_image(
        image_root, {"COMMANDLINE_ARGS": "--gradio-auth-path /tmp/t/auth --skip-torch-cuda-test",
                     **CPU}, auth_file="no-colon-here\n")
    assert status == 1 and "IndexError" in log, log
    assert "no-colon-here" not in log


@image_test
@pytest.mark.parametrize("backend,devices,ok", [
    ("rocm", [], False), ("rocm", ["dev/kfd"], False), ("rocm", ["dev/kfd", "dev/dri/renderD128"], True),
    ("cuda", [], False), ("cuda", ["dev/nvidiactl", "dev/nvidia0"], True), ("cpu", [], False),
])
def test_image_gpu_test_as_the_launcher_runs_it(image_root, backend, devices, ok):
    """launch_utils.py: torch.cuda.is_available() false stops the start unless
    --skip-torch-cuda-test; the stand-in torch answers from the devices there."""
    status, log, resp = run_image(image_root, {"COMMANDLINE_ARGS": "--listen",
                                               "SDINFRA_BACKEND": backend},
                                  [("page", "GET", "/")], devices=devices)
    if ok:
        assert status is None and '<code id="gpu">True</code>' in resp["page"][1], log
    else:
        assert status == 1, log
        assert "RuntimeError: Torch is not able to use GPU; add --skip-torch-cuda-test" in log
        assert "Launching Web UI" not in log
    status, log, _ = run_image(image_root, {"COMMANDLINE_ARGS": "--skip-torch-cuda-test",
                                            "SDINFRA_BACKEND": backend}, devices=devices)
    assert status is None, log


@needs_root
def test_image_torch_answers_as_status_tooling_asks(image_root):
    ask = ("import torch; print(torch.cuda.is_available(), torch.version.hip is not None, "
           "torch.version.cuda)")
    (image_root / "dev/kfd").write_text("")
    (image_root / "dev/dri").mkdir(exist_ok=True)
    (image_root / "dev/dri/renderD128").write_text("")
    try:
        r = run([shutil.which("chroot"), image_root, "python3", "-c", ask],
                env={"PATH": "/usr/bin:/bin", "PYTHONHOME": "/usr", "SDINFRA_BACKEND": "rocm"})
        assert r.returncode == 0 and r.stdout == "True True None\n", r.stderr
        (image_root / "dev/kfd").unlink()
        r = run([shutil.which("chroot"), image_root, "python3", "-c", ask],
                env={"PATH": "/usr/bin:/bin", "PYTHONHOME": "/usr", "SDINFRA_BACKEND": "rocm"})
        assert r.stdout == "False True None\n" and r.stderr == ""
    finally:
        shutil.rmtree(image_root / "dev/dri")
        if (image_root / "dev/kfd").exists():
            (image_root / "dev/kfd").unlink()


@image_test
def test_image_settings_in_the_data_dir_through_the_options_api(image_root):
    args = {"COMMANDLINE_ARGS": "--api --data-dir /srv/data --skip-torch-cuda-test", **CPU}
    status, log, resp = run_image(
        image_root, args, [("set", "POST", "/sdapi/v1/options", None, {"jpeg_quality": 61}),
                           ("get", "GET", "/sdapi/v1/options")], data="/srv/data")
    assert status is None, log
    assert resp["set"] == (200, "null") and json.loads(resp["get"][1])["jpeg_quality"] == 61
    saved = json.loads((image_root / "srv/data/config.json").read_text())
    assert saved == {"jpeg_quality": 61}
    assert (image_root / "srv/data/ui-config.json").exists()
    # A new start reads it back (modules/shared_init.py: opts.load).
    status, log, resp = run_image(image_root, args, [("get", "GET", "/sdapi/v1/options")],
                                  data="/srv/data", keep_data=True)
    assert json.loads(resp["get"][1]) == {"jpeg_quality": 61}


@image_test
def test_image_knobs_exit_at_start_per_version(image_root):
    knobs = {"versions": {"v1.10.1": {"exit": {"code": 3, "log": "stand-in: bad release"}},
                          "v9.9.9": {"start_delay": 0}}}
    args = "--data-dir /data --skip-torch-cuda-test"
    status, log, _ = run_image(image_root, {"COMMANDLINE_ARGS": args, **CPU}, knobs=knobs)
    assert status == 3 and "stand-in: bad release" in log
    assert f"Launching Web UI with arguments: {args}" in log
    status, log, _ = run_image(image_root, {"COMMANDLINE_ARGS": args,
                                            "SDINFRA_STANDIN_VERSION": "v9.9.9", **CPU}, knobs=knobs)
    assert status is None and "Version: v9.9.9" in log, log


@image_test
def test_image_knobs_start_delay_and_unhealthy_after(image_root):
    status, log, resp = run_image(
        image_root, {"COMMANDLINE_ARGS": "--data-dir /data --skip-torch-cuda-test", **CPU},
        [("ping", "GET", "/internal/ping")], knobs={"start_delay": 3, "unhealthy_after": 0})
    assert status is None, log
    assert int((image_root / "tmp/t/tries").read_text()) > 10  # polled, refused, for a while
    assert float(re.search(r"Startup time: ([0-9.]+)s", log).group(1)) >= 3
    assert resp["ping"][0] == 503 and "turned unhealthy" in log


@image_test
def test_the_deploys_start_files_keep_the_api_login_out_of_sight(image_root, tmp_path):
    """roles/webui's start.sh and launch.py, mounted as the compose file mounts them, with the
    stand-in: the API wants the login, and neither the launch line, the process arguments
    nor its environment hold it."""
    from roles.webui import render
    from tests.unit.test_webui import values

    rendered = render(values(webui_api=True), "cpu", auth=True,
                      extra_args=["--skip-torch-cuda-test"])
    (image_root / "sdinfra").mkdir(exist_ok=True)
    for name in ("start.sh", "launch.py"):
        (image_root / "sdinfra" / name).write_text(rendered[name])
    (image_root / "run/secrets").mkdir(parents=True, exist_ok=True)
    (image_root / "run/secrets/webui-auth").write_text("ada:pass word-7\nbob:x\n")
    env = dict(line.split("=", 1) for line in rendered["webui.env"].splitlines()
               if line and not line.startswith("#"))
    env = {key: value.strip("'") for key, value in env.items()}
    shutil.rmtree(image_root / "data", ignore_errors=True)
    (image_root / "data/models").mkdir(parents=True)  # the compose file's mount
    status, log, resp = run_image(image_root, {**env, "SDINFRA_BACKEND": "cpu"}, [
        ("anon", "GET", "/sdapi/v1/options"), ("ada", "GET", "/sdapi/v1/options",
                                               "ada:pass word-7"),
        ("bob", "GET", "/sdapi/v1/options", "bob:x")], keep_data=True)
    assert status is None, log
    assert resp["anon"][0] == 401 and resp["ada"][0] == 200 and resp["bob"][0] == 200
    launch = next(line for line in log.splitlines() if line.startswith("Launching Web UI"))
    assert launch == "Launching Web UI with arguments: " + env["COMMANDLINE_ARGS"]
    assert "--api-auth" not in log and "pass word" not in log
    # What the image carries under models/ is in the data directory's models/.
    assert (image_root / "data/models/VAE-approx/model.pt").exists()


# ------------------------------------------------------------------------------------------
# model


def test_model_file(built):
    m = built.model
    assert m.path == built.root / built.model_path
    assert 1024 < m.path.stat().st_size < 16384
    header = S.read_safetensors_header(m.path)
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert tensors == {"standin.weight": {"dtype": "F32", "shape": [32, 32],
                                          "data_offsets": [0, 4096]}}
    (hlen,) = __import__("struct").unpack_from("<Q", m.path.read_bytes(), 0)
    assert hlen % 8 == 0
    assert S.sha256_file(m.path) == m.sha256
    assert (built.root / built.model_checksums_path).read_text() == \
        f"{m.sha256}  standin.safetensors\n"
    # a sha256sum -c against the served checksums file passes
    r = run(["sha256sum", "-c", "checksums.sha256"], cwd=m.path.parent)
    assert r.returncode == 0 and "standin.safetensors: OK" in r.stdout


# ------------------------------------------------------------------------------------------
# HTTP server


_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str):
    try:
        with _no_proxy.open(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_server_serves_files_and_records_requests(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/file.txt").write_bytes(b"hello stand-in\n")
    with S.serve(tmp_path, ["127.0.0.1", "127.0.0.2"]) as srv:
        assert srv.port > 0
        assert srv.urls == [f"http://127.0.0.1:{srv.port}/", f"http://127.0.0.2:{srv.port}/"]
        assert _get(srv.url(path="sub/file.txt")) == (200, b"hello stand-in\n")
        assert _get(srv.url("127.0.0.2", "sub/file%2Etxt?x=1")) == (200, b"hello stand-in\n")
        assert _get(srv.url(path="missing"))[0] == 404
        assert _get(srv.url(path="sub/"))[0] == 404  # no directory listings
        got = [(r.server, r.method, r.path, r.status) for r in srv.requests]
        assert got == [
            (f"127.0.0.1:{srv.port}", "GET", "/sub/file.txt", 200),
            (f"127.0.0.2:{srv.port}", "GET", "/sub/file.txt", 200),
            (f"127.0.0.1:{srv.port}", "GET", "/missing", 404),
            (f"127.0.0.1:{srv.port}", "GET", "/sub/", 404),
        ]
        assert srv.requests[0].client == "127.0.0.1"
        srv.clear()
        assert srv.paths() == []
        port = srv.port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_server_refuses_wildcard_addresses(tmp_path):
    for bad in (["0.0.0.0"], ["127.0.0.1", "::"], [], ["localhost"]):
        with pytest.raises(ValueError):
            S.serve(tmp_path, bad)
    with pytest.raises(ValueError):
        S.serve(tmp_path / "absent", ["127.0.0.1"])
