"""
The test hosts' root filesystem, and the Debian mirror it comes from.

Each host gets (``host_files``) a fresh machine-id, SSH host keys, /etc/hostname and /etc/hosts.
In the image: the mirror's full sources.list (bookworm, -updates, -security), no apt lists (run
apt-get update first, as on a fresh cloud server), apt's daily timers and
systemd-networkd-wait-online masked, and a oneshot unit remounting /sys/fs/cgroup/*/ read-write
so Docker (docker.io) works inside. Docker images cannot be pulled: build them locally (``docker
import`` of a small tarball).

Root filesystem: ``debootstrap --variant=minbase`` of bookworm from the mirror in this machine's
apt sources (read at run time), cached as a ``tar --numeric-owner | zstd`` tarball under
``$SDINFRA_CACHE`` (default ``~/.cache/sdinfra``) whose name carries a hash of its recipe.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import inspect
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from testbed.network import Host
from testbed.system import FleetError, _remove_tree, _run, _write

SUITE = "bookworm"
VARIANT = "minbase"
# What a host has before any deploy runs: a bare server. Nothing else (no curl, gpg, docker).
INCLUDE = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "sudo", "iproute2",
    "iputils-ping", "ca-certificates", "procps",
)


# --------------------------------------------------------------------------------------------
# The Debian mirror this machine uses
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Mirrors:
    debian: str       # e.g. http://deb.debian.org/debian
    security: str     # e.g. http://deb.debian.org/debian-security

    def hostnames(self) -> list[str]:
        return sorted({urlsplit(u).hostname for u in (self.debian, self.security)})

    def ports(self) -> list[int]:
        return sorted({urlsplit(u).port or (443 if urlsplit(u).scheme == "https" else 80)
                       for u in (self.debian, self.security)})


def _deb_sources() -> list[tuple[str, list[str]]]:
    """(URI, suites) of every `deb` source of this machine's apt, deb822 files first."""
    found = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = {}
            for line in stanza.splitlines():
                m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
                if m and not line.startswith("#"):
                    fields[m.group(1).lower()] = m.group(2).split()
            if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"]) != ["no"]:
                for uri in fields.get("uris", []):
                    found.append((uri.rstrip("/"), fields.get("suites", [])))
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if len(words) >= 3 and words[0] == "deb":
                found.append((words[1].rstrip("/"), [words[2]]))
    return found


def find_mirrors() -> Mirrors:
    """The Debian mirror (and security mirror) this machine's apt already uses."""
    sources = [(u, s) for u, s in _deb_sources() if u.startswith(("http://", "https://"))]
    security = [u for u, suites in sources if any(s.endswith("-security") for s in suites)]
    debian = [u for u, suites in sources
              if any(not s.endswith("-security") for s in suites) and "security" not in u]
    if not debian:
        raise FleetError("no Debian mirror found in /etc/apt/sources.list.d/*.sources "
                         "(a `URIs:` line with an http(s) URI)")
    if not security:
        # Same mirror host, the usual path for the security archive.
        security = [debian[0].rsplit("/", 1)[0] + "/debian-security"]
    return Mirrors(debian=debian[0], security=security[0])


def resolve_ipv4(hostname: str) -> list[str]:
    out = _run(["getent", "ahostsv4", hostname], f"resolving the mirror {hostname}").stdout
    addresses = []
    for line in out.splitlines():
        address = line.split()[0]
        if address not in addresses:
            addresses.append(address)
    return addresses


# --------------------------------------------------------------------------------------------
# Root filesystem image
# --------------------------------------------------------------------------------------------

CGROUP_UNIT = """\
[Unit]
Description=Make the cgroup v1 hierarchies writable (test host under systemd-nspawn)
# Docker creates its own cgroups (mkdir /sys/fs/cgroup/cpuset/docker ...); nspawn mounts these
# read-only, so Docker fails with "read-only file system" without this.
DefaultDependencies=no
Before=containerd.service docker.service
After=local-fs.target
ConditionVirtualization=container

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for d in /sys/fs/cgroup/*/; do mount -o remount,bind,rw "$d" || true; done'

[Install]
WantedBy=multi-user.target
"""


def _customize_root(root: Path, mirrors: Mirrors) -> None:
    """Turn a fresh debootstrap into the cached image. Its source is part of the cache key."""
    _write(root / "etc/apt/sources.list",
           f"deb {mirrors.debian} {SUITE} main\n"
           f"deb {mirrors.debian} {SUITE}-updates main\n"
           f"deb {mirrors.security} {SUITE}-security main\n")
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    (root / "root/.ssh").chmod(0o700)
    units = root / "etc/systemd/system"
    # Nothing configures networking through networkd here (the fleet sets the address from
    # outside), so waiting for it only delays boot. apt's daily timers would grab the dpkg lock
    # in the middle of a test run: off too.
    for unit in ("systemd-networkd-wait-online.service", "apt-daily.timer",
                 "apt-daily-upgrade.timer"):
        (units / unit).unlink(missing_ok=True)
        (units / unit).symlink_to("/dev/null")
    _write(units / "sdinfra-cgroup-rw.service", CGROUP_UNIT)
    wants = units / "multi-user.target.wants"
    wants.mkdir(exist_ok=True)
    (wants / "sdinfra-cgroup-rw.service").unlink(missing_ok=True)
    (wants / "sdinfra-cgroup-rw.service").symlink_to("../sdinfra-cgroup-rw.service")
    # No DNS server is reachable from a host: fail lookups at once instead of timing out.
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    _write(root / "etc/resolv.conf", "nameserver 127.0.0.1\n")
    # Per host later: machine-id, hostname, /etc/hosts, SSH host keys. Drop the shared ones.
    _write(root / "etc/machine-id", "")
    dbus_id = root / "var/lib/dbus/machine-id"     # a copy of the build's id: follow /etc's
    dbus_id.unlink(missing_ok=True)
    dbus_id.symlink_to("/etc/machine-id")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Like a cloud image: no package lists, no cached .debs (the deploys run apt-get update).
    for cached in (root / "var/cache/apt").rglob("*"):
        if cached.is_file() and (cached.suffix in (".deb", ".bin")):
            cached.unlink()
    for lst in (root / "var/lib/apt/lists").iterdir():
        if lst.is_file():
            lst.unlink()


def image_recipe(mirrors: Mirrors) -> dict:
    return {
        "suite": SUITE,
        "variant": VARIANT,
        "include": list(INCLUDE),
        "mirror": mirrors.debian,
        "security": mirrors.security,
        "setup": inspect.getsource(_customize_root) + CGROUP_UNIT,
    }


def cache_dir() -> Path:
    return Path(os.environ.get("SDINFRA_CACHE") or Path.home() / ".cache/sdinfra")


def ensure_image(mirrors: Mirrors | None = None, log=print) -> Path:
    """Path of the root filesystem tarball for the recipe; builds it (~1-2 min) if not cached."""
    mirrors = mirrors or find_mirrors()
    recipe = image_recipe(mirrors)
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"rootfs-debian-{SUITE}-{key}.tar.zst"
    if tarball.exists():
        return tarball
    # One build at a time on this machine; a second process waits, then finds the tarball.
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        started = time.monotonic()
        log(f"fleet: building the {SUITE} root filesystem from {mirrors.debian} (once per recipe)")
        build = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
        try:
            root = build / "root"
            try:
                _run(["debootstrap", f"--variant={VARIANT}", f"--include={','.join(INCLUDE)}",
                      SUITE, str(root), mirrors.debian], "debootstrap of the test host image")
            except FleetError as e:
                log_path = root / "debootstrap/debootstrap.log"
                tail = log_path.read_text(errors="replace").splitlines()[-20:] \
                    if log_path.exists() else []
                raise FleetError("\n".join([str(e), *tail])) from e
            _customize_root(root, mirrors)
            tmp = build / "rootfs.tar.zst"
            with open(tmp, "wb") as out:
                tar = subprocess.Popen(["tar", "--numeric-owner", "--xattrs", "-C", str(root),
                                        "-cf", "-", "."], stdout=subprocess.PIPE)
                # Level 3: 0.8 s and 77 MB; -19 would save 17 MB for 55 s more on 2 cores.
                zstd = subprocess.run(["zstd", "-q", "-T0", "-3"], stdin=tar.stdout, stdout=out)
                tar.stdout.close()
                if tar.wait() != 0 or zstd.returncode != 0:
                    raise FleetError("packing the test host image failed (tar | zstd)")
            os.replace(tmp, tarball)
        finally:
            _remove_tree(build)
        log(f"fleet: image {tarball.name} built in {time.monotonic() - started:.0f} s")
    return tarball


def unpack_image(tarball: Path, root: Path) -> None:
    root.mkdir(parents=True)
    zstd = subprocess.Popen(["zstd", "-dcq", str(tarball)], stdout=subprocess.PIPE)
    tar = subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C",
                          str(root), "-xf", "-"], stdin=zstd.stdout, stderr=subprocess.PIPE,
                         text=True)
    zstd.stdout.close()
    if zstd.wait() != 0 or tar.returncode != 0:
        raise FleetError(f"unpacking {tarball} into {root} failed: {tar.stderr.strip()}")


def host_files(root: Path, host: Host, mirror_hosts: dict[str, str]) -> None:
    """Per-host files: identity, name resolution, fresh SSH host keys."""
    _write(root / "etc/machine-id", uuid.uuid4().hex + "\n")
    _write(root / "etc/hostname", host.name + "\n")
    lines = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{host.name}",
             "::1\tlocalhost ip6-localhost ip6-loopback", "ff02::1\tip6-allnodes",
             "ff02::2\tip6-allrouters"]
    # No DNS inside: the mirror's name comes from here.
    lines += [f"{ip}\t{name}" for name, ip in mirror_hosts.items()]
    _write(root / "etc/hosts", "\n".join(lines) + "\n")
    _run(["ssh-keygen", "-A", "-f", str(root)], f"{host.name}: generating SSH host keys")
