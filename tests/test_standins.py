"""Tests of testbed/standins/: the stand-ins must behave the way the e2e tests rely on.

Fast (a few seconds), no fleet.  The tests that chroot into the image's root filesystem, install
with dpkg --root or run apt-get need root (CI runs as root) and are skipped otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from testbed import standins as S
from testbed.standins.webui_image import _python_runtime
from tests.standins_helpers import fields, needs_root, run


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
    # Each build works out the image's python3 runtime on its own, not from the other's cache.
    _python_runtime.cache_clear()
    i1 = S.build_webui_image(tmp_path / "i1.tar")
    _python_runtime.cache_clear()
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


def test_server_counts_the_body_bytes_it_sent(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 300_000)
    (tmp_path / "small").write_bytes(b"12345")
    with S.serve(tmp_path, ["127.0.0.1"]) as srv:
        assert _get(srv.url(path="big"))[0] == 200
        assert _get(srv.url(path="small"))[0] == 200
        assert _get(srv.url(path="missing"))[0] == 404  # an error page is not "the internet"
        head = urllib.request.Request(srv.url(path="big"), method="HEAD")
        with _no_proxy.open(head, timeout=5) as r:
            assert r.status == 200 and r.read() == b""
        assert srv.bytes_served == 300_005
        srv.clear()
        assert srv.bytes_served == 0


def test_server_answers_a_registry_pull(tmp_path):
    manifest = json.dumps({"schemaVersion": 2, "mediaType":
                           "application/vnd.docker.distribution.manifest.v2+json"}).encode()
    (tmp_path / "v2/library/python/manifests").mkdir(parents=True)
    (tmp_path / "v2/library/python/blobs").mkdir(parents=True)
    (tmp_path / "v2/library/python/manifests/3.10-slim").write_bytes(manifest)
    (tmp_path / "v2/library/python/blobs/sha256:ab").write_bytes(b"blob")
    with S.serve(tmp_path, ["127.0.0.1"]) as srv:
        def get(path):
            try:
                with _no_proxy.open(srv.url(path=path), timeout=5) as r:
                    return r.status, r.headers, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.headers, e.read()
        status, headers, body = get("v2/")
        assert (status, body) == (200, b"{}")
        assert headers["Docker-Distribution-API-Version"] == "registry/2.0"
        status, headers, body = get("v2/library/python/manifests/3.10-slim")
        assert (status, body) == (200, manifest)
        assert headers["Content-Type"] == "application/vnd.docker.distribution.manifest.v2+json"
        assert headers["Docker-Content-Digest"] == "sha256:" + hashlib.sha256(manifest).hexdigest()
        assert get("v2/library/python/blobs/sha256:ab")[::2] == (200, b"blob")
        status, _, body = get("v2/library/python/manifests/latest")
        assert status == 404 and json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        status, _, body = get("v2/library/python/blobs/sha256:cd")
        assert status == 404 and json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"
        assert srv.bytes_served == len(b"{}") + len(manifest) + len(b"blob")


def test_server_refuses_wildcard_addresses(tmp_path):
    for bad in (["0.0.0.0"], ["127.0.0.1", "::"], [], ["localhost"]):
        with pytest.raises(ValueError):
            S.serve(tmp_path, bad)
    with pytest.raises(ValueError):
        S.serve(tmp_path / "absent", ["127.0.0.1"])
