"""Debian packages and signed apt repositories, built from scratch: throwaway gpg keys,
reproducible .debs (``dpkg-deb``), repositories in the dists or the flat layout
(``apt-ftparchive``), signed as a vendor signs theirs."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path
from typing import Iterable, Mapping

from testbed.standins.common import EPOCH, STANDIN_MAINTAINER, _need, _run


# --------------------------------------------------------------------------------------------
# GPG keys


@dataclasses.dataclass(frozen=True)
class GpgKey:
    """A throwaway signing key, exported into files."""

    fingerprint: str  # 40 upper-case hex digits
    uid: str
    public_asc: Path  # armored public key (what a vendor publishes; usable as apt Signed-By)
    public_gpg: Path  # binary keyring (what `gpg --dearmor` makes; usable with gpgv --keyring)
    secret_asc: Path  # armored secret key, no passphrase (keep out of the served tree)


@contextlib.contextmanager
def _gnupg_home():
    """A fresh GNUPGHOME with a short path (gpg-agent's socket path has a length limit)."""
    home = tempfile.mkdtemp(prefix="sdgpg-")
    os.chmod(home, 0o700)
    env = dict(os.environ, GNUPGHOME=home)
    try:
        yield home, env
    finally:
        subprocess.run(
            ["gpgconf", "--homedir", home, "--kill", "all"],
            env=env, capture_output=True, check=False,
        )
        shutil.rmtree(home, ignore_errors=True)


def make_gpg_key(dest_dir: os.PathLike | str, name: str = "sdinfra-standin",
                 uid: str = "sdinfra stand-in repository (TEST ONLY) <standins@sdinfra.invalid>",
                 private_dir: os.PathLike | str | None = None) -> GpgKey:
    """Generate an ed25519 signing key without passphrase and export it.

    Public files go to ``dest_dir/NAME.asc`` and ``NAME.gpg``; the secret key to
    ``private_dir/NAME.secret.asc`` (default: ``dest_dir``).
    """
    _need("gpg", "gnupg")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    priv = Path(private_dir) if private_dir is not None else dest
    priv.mkdir(parents=True, exist_ok=True)
    params = textwrap.dedent(f"""\
        %no-protection
        Key-Type: eddsa
        Key-Curve: ed25519
        Key-Usage: sign
        Name-Real: {uid.split(' <')[0]}
        Name-Email: {uid.split('<')[1].rstrip('>') if '<' in uid else 'standins@sdinfra.invalid'}
        Expire-Date: 0
        %commit
        """)
    with _gnupg_home() as (home, env):
        _run(["gpg", "--batch", "--gen-key"], input=params, env=env)
        out = _run(["gpg", "--batch", "--with-colons", "--list-secret-keys"], env=env).stdout
        fprs = [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]
        if not fprs:
            raise RuntimeError("gpg made no key:\n" + out)
        fpr = fprs[0].upper()
        pub_asc = dest / f"{name}.asc"
        pub_gpg = dest / f"{name}.gpg"
        sec_asc = priv / f"{name}.secret.asc"
        pub_asc.write_text(_run(["gpg", "--batch", "--armor", "--export", fpr], env=env).stdout)
        pub_gpg.write_bytes(_run(["gpg", "--batch", "--export", fpr], env=env, text=False).stdout)
        sec_asc.write_text(
            _run(["gpg", "--batch", "--armor", "--export-secret-keys", fpr], env=env).stdout)
        os.chmod(sec_asc, 0o600)
        real_uid = [line.split(":")[9] for line in out.splitlines() if line.startswith("uid:")][0]
    return GpgKey(fingerprint=fpr, uid=real_uid, public_asc=pub_asc, public_gpg=pub_gpg,
                  secret_asc=sec_asc)


def _sign_release(release: Path, key: GpgKey) -> tuple[Path, Path]:
    """Write InRelease (clearsigned) and Release.gpg (armored detached) next to ``release``."""
    inrelease = release.with_name("InRelease")
    detached = release.with_name("Release.gpg")
    with _gnupg_home() as (home, env):
        _run(["gpg", "--batch", "--import", str(key.secret_asc)], env=env)
        base = ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "",
                "--local-user", key.fingerprint, "--digest-algo", "SHA512"]
        _run(base + ["--clearsign", "--output", str(inrelease), str(release)], env=env)
        _run(base + ["--armor", "--detach-sign", "--output", str(detached), str(release)], env=env)
    return inrelease, detached


# --------------------------------------------------------------------------------------------
# Debian packages


def _installed_size_kib(root: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath).relative_to(root).parts[:1] == ("DEBIAN",):
            continue
        total += len(dirnames)
        for fn in filenames:
            p = Path(dirpath, fn)
            total += 1 if p.is_symlink() else max(1, -(-p.stat().st_size // 1024))
    return total


def build_deb(dest_dir: os.PathLike | str, package: str, version: str,
              files: Mapping[str, tuple[bytes | str, int]], *, description: str,
              architecture: str = "all", depends: str | None = None,
              section: str = "misc", extra_control: Mapping[str, str] | None = None,
              filename: str | None = None) -> Path:
    """Build a .deb with ``dpkg-deb --build`` from ``{"/abs/path": (content, mode)}``.

    Owners are root:root, every mtime is :data:`EPOCH`: the result is byte-for-byte reproducible.
    ``description`` is "synopsis\\nlong text"; the long text is folded into control format.
    """
    _need("dpkg-deb", "dpkg")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sddeb-", dir=dest) as tmp:
        root = Path(tmp, "root")
        (root / "DEBIAN").mkdir(parents=True)
        for path, (content, mode) in sorted(files.items()):
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            data = content.encode() if isinstance(content, str) else content
            target.write_bytes(data)
            os.chmod(target, mode)
        synopsis, _, long = description.partition("\n")
        long_lines = [(" " + ln) if ln.strip() else " ." for ln in long.strip("\n").splitlines()]
        control = {
            "Package": package,
            "Version": version,
            "Architecture": architecture,
            "Maintainer": STANDIN_MAINTAINER,
            "Installed-Size": str(_installed_size_kib(root)),
        }
        if depends:
            control["Depends"] = depends
        control.update({"Section": section, "Priority": "optional"})
        control.update(extra_control or {})
        text = "".join(f"{k}: {v}\n" for k, v in control.items())
        text += f"Description: {synopsis}\n" + "".join(ln + "\n" for ln in long_lines)
        (root / "DEBIAN" / "control").write_text(text)
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                os.utime(Path(dirpath, n), (EPOCH, EPOCH), follow_symlinks=False)
            os.chmod(dirpath, 0o755)
        os.utime(root, (EPOCH, EPOCH))
        out = dest / (filename or f"{package}_{version}_{architecture}.deb")
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
        _run(["dpkg-deb", "--root-owner-group", "-Zxz", "-z6", "--build", str(root), str(out)],
             env=env)
    return out


# --------------------------------------------------------------------------------------------
# apt repositories


@dataclasses.dataclass(frozen=True)
class AptRepo:
    root: Path          # directory to serve; the URI of a sources entry points here
    layout: str         # "dists" or "flat"
    suite: str          # "stable" (dists) or "/" (flat)
    component: str | None
    key: GpgKey         # the key it is signed with
    packages: dict      # name -> version
    release_dir: Path   # where Release/InRelease/Release.gpg are

    def sources(self, uri: str, signed_by: str) -> str:
        """deb822 ``.sources`` text for this repository at ``uri``."""
        return deb822_sources(uri, signed_by, suite=self.suite, component=self.component)


def deb822_sources(uri: str, signed_by: str, *, suite: str = "stable",
                   component: str | None = "main") -> str:
    """A deb822 sources entry (``/etc/apt/sources.list.d/NAME.sources``)."""
    lines = ["Types: deb", f"URIs: {uri}", f"Suites: {suite}"]
    if component:
        lines.append(f"Components: {component}")
    lines.append(f"Signed-By: {signed_by}")
    return "\n".join(lines) + "\n"


def _deb_field(deb: Path, field: str) -> str:
    return _run(["dpkg-deb", "--field", str(deb), field]).stdout.strip()


def build_apt_repo(dest: os.PathLike | str, debs: Iterable[os.PathLike | str], key: GpgKey, *,
                   layout: str = "dists", suite: str = "stable", component: str = "main",
                   architectures: str = "amd64", origin: str = "sdinfra-standin",
                   label: str = "sdinfra stand-in repository (TEST ONLY)") -> AptRepo:
    """Build a signed apt repository at ``dest`` (replaced if it exists).

    ``layout="dists"``: ``dists/SUITE/COMPONENT/binary-ARCH/Packages`` + ``pool/COMPONENT/``;
    sources entry ``Suites: SUITE``, ``Components: COMPONENT``.
    ``layout="flat"``: Packages, Release and the .debs in one directory; sources entry
    ``Suites: /`` and no Components (NVIDIA's own repository has this layout).
    """
    _need("apt-ftparchive", "apt-utils")
    if layout not in ("dists", "flat"):
        raise ValueError("layout must be 'dists' or 'flat'")
    root = Path(dest)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    debs = [Path(d) for d in debs]
    pool = root / "pool" / component if layout == "dists" else root
    pool.mkdir(parents=True, exist_ok=True)
    packages = {}
    for d in debs:
        shutil.copy2(d, pool / d.name)
        packages[_deb_field(d, "Package")] = _deb_field(d, "Version")
    arch = architectures.split()[0]
    if layout == "dists":
        release_dir = root / "dists" / suite
        index_dir = release_dir / component / f"binary-{arch}"
        pool_rel = f"pool/{component}"
    else:
        release_dir = index_dir = root
        pool_rel = "."
    index_dir.mkdir(parents=True, exist_ok=True)
    pkgs = _run(["apt-ftparchive", "packages", pool_rel], cwd=root).stdout
    if layout == "flat":  # apt-ftparchive writes "./name.deb"; apt wants paths relative to root
        pkgs = pkgs.replace("Filename: ./", "Filename: ")
    (index_dir / "Packages").write_text(pkgs)
    with gzip.GzipFile(index_dir / "Packages.gz", "wb", mtime=EPOCH) as gz:
        gz.write(pkgs.encode())
    opts = [f"-oAPT::FTPArchive::Release::Origin={origin}",
            f"-oAPT::FTPArchive::Release::Label={label}",
            f"-oAPT::FTPArchive::Release::Architectures={architectures}",
            "-oAPT::FTPArchive::Release::Description=sdinfra test stand-ins; not vendor software"]
    if layout == "dists":
        opts += [f"-oAPT::FTPArchive::Release::Suite={suite}",
                 f"-oAPT::FTPArchive::Release::Codename={suite}",
                 f"-oAPT::FTPArchive::Release::Components={component}"]
        release_text = _run(["apt-ftparchive", *opts, "release", "."], cwd=release_dir).stdout
    else:
        # only the indices, not the .debs, belong in a flat Release
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            for n in ("Packages", "Packages.gz"):
                shutil.copy2(root / n, Path(tmp, n))
            release_text = _run(["apt-ftparchive", *opts, "release", "."], cwd=tmp).stdout
    release = release_dir / "Release"
    release.write_text(release_text)
    _sign_release(release, key)
    return AptRepo(root=root, layout=layout, suite=suite if layout == "dists" else "/",
                   component=component if layout == "dists" else None, key=key,
                   packages=packages, release_dir=release_dir)


def build_wrong_key_repo(dest: os.PathLike | str, like: AptRepo, wrong_key: GpgKey) -> AptRepo:
    """The same packages and layout as ``like``, signed with ``wrong_key`` (fault tests)."""
    debs = sorted((like.root / "pool").rglob("*.deb")) if like.layout == "dists" \
        else sorted(like.root.glob("*.deb"))
    with tempfile.TemporaryDirectory() as tmp:
        copies = [Path(shutil.copy2(d, tmp)) for d in debs]
        return build_apt_repo(dest, copies, wrong_key, layout=like.layout,
                              suite=like.suite if like.layout == "dists" else "stable",
                              component=like.component or "main")
