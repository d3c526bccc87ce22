"""
Disposable test fleet: real Debian 12 hosts booted on this machine with systemd-nspawn.

Each host is a debootstrapped Debian 12 (bookworm) root filesystem running systemd as PID 1 in
its own network namespace, reachable over SSH on its own veth address, with host key checking on.
It looks like a bare server: only the packages of the recipe below are installed; the deploys
install what they need (curl, gpg, docker.io, ...) from the Debian mirror this machine uses.

Command line (as root, from the repository root)::

    python -m testbed.fleet up 3 [--names a,b,c] [--dir .fleet] [--replace] [--timeout 120]
    python -m testbed.fleet status [--dir .fleet]
    python -m testbed.fleet down [--dir .fleet] [--all]

``up`` prints the path of the pyinfra inventory (``DIR/inventory.py``). It refuses when DIR
already holds a fleet, unless ``--replace`` is given (then it tears that fleet down first).
``down`` is harmless to repeat; ``down --all`` also removes every other fleet's network pieces
and processes on this machine (anything named or tagged ``sdinfra``), for cleaning up after a
crash.

Python (for the pytest session fixture)::

    from testbed.fleet import Fleet
    fleet = Fleet(".fleet", ["web1", "web2"])
    try:
        fleet.up()                      # build/unpack, boot, wait until SSH answers
        fleet.hosts                     # [Host(name, address, gateway, ssh_port, ...), ...]
        fleet.inventory_path            # DIR/inventory.py, for `pyinfra DIR/inventory.py ...`
        fleet.host_data("web1")         # pyinfra connection data of one host (a dict)
        fleet.run("web1", "hostname")   # run a command over SSH: (exit status, stdout, stderr)
        fleet.stop("web2"); fleet.start("web2")   # power one host off / boot it again
    finally:
        fleet.down()

``Fleet`` is also a context manager (``with Fleet(dir, names) as fleet:``: up, then down).
A fleet brought up from Python is also torn down at interpreter exit (and SIGTERM then exits
through that), unless ``Fleet(..., down_at_exit=False)``, as the command line's ``up`` does.
``Fleet.load(dir)`` reattaches to a fleet brought up by another process.

Files in DIR: ``fleet.json`` (state: hosts, process ids; lets another process run ``down`` and
``status``), ``inventory.py`` (pyinfra inventory, one group ``fleet``), ``id_ed25519`` (client
key), ``known_hosts`` (written from the host keys generated for each host), ``roots/NAME``
(unpacked root filesystems), ``logs/NAME.log`` (console output of each host; kept after
``down`` to help debugging).

Per-host settings: ``inventory.py`` merges an optional ``DIR/host_data.json`` of the form
``{"NAME": {"setting": value, ...}, ...}`` into each host's data when pyinfra loads it (the
fleet never writes or deletes that file; a name ``"*"`` applies to every host). Each host's data
has ``ssh_hostname``, ``ssh_port``, ``ssh_user`` ('root'), ``ssh_key``, ``ssh_known_hosts_file``,
``ssh_strict_host_key_checking`` ('yes'), ``fleet_gateway`` (the host-side veth address, where
tests serve stand-in apt repositories and files over HTTP) and ``fleet_name``.

Network: host number N (allocated machine-wide, lowest free first) has the namespace
``sdinfra-N`` and the veth pair ``sdinfraN`` (this machine, 10.77.N.1/24) - ``host0`` (the
host, 10.77.N.2/24, default route via 10.77.N.1). iptables rules, each tagged with the comment
``sdinfra-fleet:sdinfraN:FLEETID``, let a host reach only: the Debian mirror's addresses on its
port (through NAT), and TCP ports of the kernel's ephemeral range (``Fleet.gateway_ports``,
32768-60999 by default) on its own gateway address: bind test servers to port 0 (on 0.0.0.0 or
on each host's gateway) and give each host its own gateway's address (``fleet_gateway``).
Everything else from a host is dropped (other hosts, other gateways, this machine's own
services, the internet, DNS); a host resolves the mirror from its /etc/hosts. Tests may send
traffic only to loopback and to these veth addresses. ``net.ipv4.ip_forward`` is set to 1 and
left so.

Each host gets a fresh machine-id, SSH host keys, /etc/hostname and /etc/hosts. In the image:
the mirror's full sources.list (bookworm, -updates, -security), no apt lists (run apt-get update
first, as on a fresh cloud server), apt's daily timers and systemd-networkd-wait-online masked,
and a oneshot unit remounting /sys/fs/cgroup/*/ read-write so Docker (docker.io) works inside.
Docker images cannot be pulled: build them locally (``docker import`` of a small tarball).

Root filesystem: ``debootstrap --variant=minbase`` of bookworm from the mirror in this machine's
apt sources (read at run time), cached as a ``tar --numeric-owner | zstd`` tarball under
``$SDINFRA_CACHE`` (default ``~/.cache/sdinfra``) whose name carries a hash of its recipe.

Needs root and these Debian packages on the machine: see ``HOST_PACKAGES``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import fcntl
import hashlib
import inspect
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

# Debian packages this harness runs on the machine (busybox-static: only for the Docker check's
# tiny image). The CI setup installs these.
HOST_PACKAGES = (
    "debootstrap", "debian-archive-keyring", "systemd-container", "zstd", "tar", "iptables",
    "iproute2", "openssh-client", "busybox-static",
)

SUITE = "bookworm"
VARIANT = "minbase"
# What a host has before any deploy runs: a bare server. Nothing else (no curl, gpg, docker).
INCLUDE = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "sudo", "iproute2",
    "iputils-ping", "ca-certificates", "procps",
)

SUBNET = "10.77"            # host N: 10.77.N.0/24
PREFIX = "sdinfra"          # netns sdinfra-N, machine sdinfra-N, host-side veth sdinfraN
TAG = "sdinfra-fleet"       # iptables comment prefix: host N's rules carry TAG:sdinfraN:FLEETID
RUN_DIR = Path("/run/sdinfra-fleet")    # machine-wide lock for allocating host numbers
NSPAWN_RUN = Path("/run/systemd/nspawn")
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
STATE_VERSION = 1


class FleetError(RuntimeError):
    """Something about the fleet failed; the message names the host where there is one."""


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; on failure raise FleetError saying what we were doing and what it said."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    try:
        return subprocess.run(cmd, check=True, **kwargs)
    except FileNotFoundError as e:
        raise FleetError(f"{what}: {cmd[0]} is not installed (the fleet needs the Debian "
                         f"packages {' '.join(HOST_PACKAGES)})") from e
    except subprocess.CalledProcessError as e:
        output = (e.stderr or e.stdout or "").strip()
        raise FleetError(f"{what}: `{shlex.join(cmd)}` exited {e.returncode}: {output}") from e


def _quiet(cmd: list[str]) -> bool:
    """Run a cleanup command whose failure (thing already gone) is fine; True if it worked."""
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def _write(path: Path, text: str, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)


def _write_atomic(path: Path, text: str) -> None:
    # Another process may read fleet.json at any moment (status, down): never show half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _proc_start_time(pid: int) -> int | None:
    """Start time of a process (clock ticks since boot), None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; the fields after it are fixed.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def _nspawn_pids_using(root: str) -> list[int]:
    """systemd-nspawn processes running a host from this root directory."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                args = (proc / "cmdline").read_bytes().split(b"\0")
                if args and args[0].endswith(b"systemd-nspawn") and root.encode() in args:
                    pids.append(int(proc.name))
    return pids


def _umount_below(path: Path) -> None:
    """Unmount anything still mounted at or below path (e.g. debootstrap's /proc after a crash)."""
    prefix = str(path.resolve())
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].encode().decode("unicode_escape")
            if target == prefix or target.startswith(prefix + "/"):
                mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        _quiet(["umount", "-l", target])


def _remove_tree(path: Path) -> None:
    if not path.exists() and not path.is_symlink():
        return
    _umount_below(path)
    # --one-file-system: should anything still be mounted below, never delete through it.
    _run(["rm", "-rf", "--one-file-system", str(path)], f"removing {path}")


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


# --------------------------------------------------------------------------------------------
# Hosts
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Host:
    name: str
    index: int                 # N: 10.77.N.0/24
    root: str                  # unpacked root filesystem
    pid: int | None = None     # systemd-nspawn process, while the host runs
    pid_start: int | None = None
    ssh_port: int = 22
    fleet_id: str = ""         # random, per fleet: marks its veth (alias) and iptables rules

    @property
    def address(self) -> str:          # the host's (guest side) veth address
        return f"{SUBNET}.{self.index}.2"

    @property
    def gateway(self) -> str:          # this machine's side of the host's veth pair
        return f"{SUBNET}.{self.index}.1"

    @property
    def netns(self) -> str:
        return f"{PREFIX}-{self.index}"

    @property
    def machine(self) -> str:          # nspawn's machine name, unique on this machine
        return f"{PREFIX}-{self.index}"

    @property
    def veth(self) -> str:
        return f"{PREFIX}{self.index}"

    @property
    def tag(self) -> str:
        return f"{TAG}:{self.veth}:{self.fleet_id}"

    def owns_network(self) -> bool:
        """Are the veth/netns of number N (still) this host's? Another fleet may have taken the
        number after a `down --all`: then its network is not ours to remove."""
        try:
            alias = Path(f"/sys/class/net/{self.veth}/ifalias").read_text().strip()
        except OSError:
            return True      # no link: at most our half-made namespace is left
        return alias == self.tag

    @property
    def cgroups(self) -> list[Path]:
        """The host's own cgroups. Without them every nspawn host would share one `payload`
        cgroup tree, and hosts starting and stopping same-named units at the same moment fail
        with "Failed to attach to cgroup ...: No such file or directory"."""
        return [root / self.machine for root in _systemd_cgroup_roots()]

    def running(self) -> bool:
        """Is this host's systemd-nspawn (the very process we started) still running?"""
        return self.pid is not None and _proc_start_time(self.pid) == self.pid_start


def _systemd_cgroup_roots() -> list[Path]:
    """Where systemd-nspawn --keep-unit puts a container's cgroups: the hierarchies systemd
    tracks processes in (name=systemd and the unified one on a cgroup v1 "hybrid" machine, the
    unified one alone on a cgroup v2 machine), each at this process's own cgroup."""
    mine = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        mine[controllers] = path
    roots = []
    for mount, key in ((Path("/sys/fs/cgroup/systemd"), "name=systemd"),
                       (Path("/sys/fs/cgroup/unified"), ""),
                       (Path("/sys/fs/cgroup"), "")):
        if (mount / "cgroup.procs").exists() and key in mine:
            if mount == Path("/sys/fs/cgroup") and not (mount / "cgroup.controllers").exists():
                continue     # the tmpfs holding v1 hierarchies, not a cgroup v2 root
            roots.append(mount / mine[key].lstrip("/"))
    return roots


def _remove_cgroup(path: Path) -> None:
    """Remove a cgroup directory and the empty cgroups below it (cgroupfs only allows rmdir)."""
    if not path.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def _used_indices() -> set[int]:
    """Host numbers in use on this machine by any fleet (or anything else on 10.77.N.0/24)."""
    used = set()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    used |= {int(m) for m in re.findall(rf"^\d+: {PREFIX}(\d+)[@:]", links, re.M)}
    addrs = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True,
                           text=True).stdout
    used |= {int(m) for m in re.findall(rf"inet {re.escape(SUBNET)}\.(\d+)\.", addrs)}
    if Path("/run/netns").is_dir():
        for ns in Path("/run/netns").iterdir():
            m = re.fullmatch(rf"{PREFIX}-(\d+)", ns.name)
            if m:
                used.add(int(m.group(1)))
    return used


def gateway_port_range() -> tuple[int, int]:
    """The ports a test server bound to port 0 gets (the kernel's ephemeral range)."""
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def _iptables_rules(host: Host, mirror_ips: list[str], ports: list[int],
                    gateway_ports: tuple[int, int]) -> list[list[str]]:
    """The host's rules, top first: [table, chain, match/target args...]."""
    v, tag = host.veth, ["-m", "comment", "--comment", host.tag]
    # Test servers on the gateway: only the ports a server bound to port 0 gets, so that the
    # hosts cannot reach this machine's own services (which listen on fixed, lower ports).
    low, high = gateway_ports
    rules = [["filter", "FORWARD", "-o", v, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
              "-j", "ACCEPT"]]
    for ip in mirror_ips:
        for port in ports:
            rules.append(["filter", "FORWARD", "-i", v, "-d", ip, "-p", "tcp", "--dport",
                          str(port), "-j", "ACCEPT"])
    rules += [
        ["filter", "FORWARD", "-i", v, "-j", "DROP"],
        ["filter", "FORWARD", "-o", v, "-j", "DROP"],
        # Replies to our SSH connections, and the test servers on the host's own gateway.
        ["filter", "INPUT", "-i", v, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
         "-j", "ACCEPT"],
        ["filter", "INPUT", "-i", v, "-d", host.gateway, "-p", "tcp", "--dport",
         f"{low}:{high}", "-j", "ACCEPT"],
        ["filter", "INPUT", "-i", v, "-j", "DROP"],
        ["nat", "POSTROUTING", "-s", f"{SUBNET}.{host.index}.0/24", "!", "-d", f"{SUBNET}.0.0/16",
         "-j", "MASQUERADE"],
    ]
    return [r[:2] + tag + r[2:] for r in rules]


def _delete_tagged_rules(prefix: str) -> None:
    """Delete every iptables rule whose comment is `prefix` or starts with `prefix`."""
    for table in ("filter", "nat"):
        listing = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True,
                                 text=True).stdout
        for line in listing.splitlines():
            args = shlex.split(line)
            if args[:1] != ["-A"] or "--comment" not in args:
                continue
            comment = args[args.index("--comment") + 1]
            if comment == prefix or comment.startswith(prefix):
                _quiet(["iptables", "-w", "-t", table, "-D", *args[1:]])


def _host_files(root: Path, host: Host, mirror_hosts: dict[str, str]) -> None:
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


# --------------------------------------------------------------------------------------------
# The fleet
# --------------------------------------------------------------------------------------------

class Fleet:
    """N disposable hosts and everything made for them; see the module docstring.

    workdir: where state, inventory, keys, roots and logs go. names: host names (default
    host1..hostCOUNT). down_at_exit: tear down at interpreter exit if still up. gateway_ports:
    (low, high) TCP ports the hosts may reach on their gateway (default: the ephemeral range).
    log: a function taking one line of progress (default: print to stderr).
    """

    def __init__(self, workdir: str | os.PathLike = ".fleet", names: list[str] | None = None,
                 count: int | None = None, down_at_exit: bool = True,
                 gateway_ports: tuple[int, int] | None = None, log=None):
        self.workdir = Path(workdir).resolve()
        if names is None:
            names = [f"host{i}" for i in range(1, (count or 1) + 1)]
        bad = [n for n in names if not NAME_RE.match(n)]
        if bad or len(set(names)) != len(names):
            raise FleetError(f"host names must be unique lowercase hostnames: {names}")
        self.names = list(names)
        self.hosts: list[Host] = []
        self.mirror_ips: list[str] = []
        self.mirror_ports: list[int] = []
        self.down_at_exit = down_at_exit
        self.gateway_ports = gateway_ports or gateway_port_range()
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._procs: dict[str, subprocess.Popen] = {}
        self._atexit_registered = False

    # Files ---------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.workdir / "fleet.json"

    @property
    def inventory_path(self) -> Path:
        return self.workdir / "inventory.py"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "known_hosts"

    @property
    def ssh_key(self) -> Path:
        return self.workdir / "id_ed25519"

    @property
    def host_data_path(self) -> Path:
        return self.workdir / "host_data.json"

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise FleetError(f"no host {name!r} in the fleet ({', '.join(h.name for h in self.hosts)})")

    def host_data(self, name: str) -> dict:
        """pyinfra connection data of one host (inventory.py's, before host_data.json)."""
        host = self.host(name)
        return {
            "ssh_hostname": host.address,
            "ssh_port": host.ssh_port,
            "ssh_user": "root",
            "ssh_key": str(self.ssh_key),
            "ssh_known_hosts_file": str(self.known_hosts),
            "ssh_strict_host_key_checking": "yes",
            "fleet_gateway": host.gateway,
            "fleet_name": host.name,
        }

    # State -----------------------------------------------------------------------------------
    def _save(self) -> None:
        state = {"version": STATE_VERSION, "mirror_ips": self.mirror_ips,
                 "hosts": [dataclasses.asdict(h) for h in self.hosts]}
        _write_atomic(self.state_path, json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, workdir: str | os.PathLike = ".fleet", **kwargs) -> "Fleet":
        """The fleet recorded in workdir (by any process); an empty fleet if there is none."""
        fleet = cls(workdir, names=[], down_at_exit=False, **kwargs)
        if fleet.state_path.exists():
            state = json.loads(fleet.state_path.read_text())
            fleet.hosts = [Host(**h) for h in state["hosts"]]
            fleet.names = [h.name for h in fleet.hosts]
            fleet.mirror_ips = state.get("mirror_ips", [])
        return fleet

    def _write_inventory(self) -> None:
        hosts = [(h.name, self.host_data(h.name)) for h in self.hosts]
        body = ",\n".join(f"    ({name!r}, {json.dumps(data)})" for name, data in hosts)
        _write(self.inventory_path, f'''\
"""pyinfra inventory of the disposable test fleet, written by testbed/fleet.py; do not edit.

Per-host settings: put {{"HOST": {{"setting": value}}}} (or "*" for every host) in
host_data.json beside this file; they are merged into each host's data on load.
"""
import json as _json
import os as _os

_HOSTS = [
{body},
]

_extra_path = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "host_data.json")
_extra = {{}}
if _os.path.exists(_extra_path):
    with open(_extra_path) as _f:
        _extra = _json.load(_f)

fleet = [(_name, {{**_data, **_extra.get("*", {{}}), **_extra.get(_name, {{}})}})
         for _name, _data in _HOSTS]
''')

    def _write_known_hosts(self) -> None:
        lines = []
        for host in self.hosts:
            for pub in sorted(Path(host.root, "etc/ssh").glob("ssh_host_*_key.pub")):
                keytype, key = pub.read_text().split()[:2]
                lines.append(f"{host.address} {keytype} {key}")
        _write(self.known_hosts, "\n".join(lines) + "\n", 0o644)

    # Up --------------------------------------------------------------------------------------
    def up(self, timeout: float = 120, replace: bool = False) -> "Fleet":
        """Boot the hosts and wait until each answers over SSH. On any failure or interrupt,
        everything made so far is torn down before the exception goes on."""
        if os.geteuid() != 0:
            raise FleetError("the test fleet needs root (network namespaces, nspawn, iptables)")
        existing = Fleet.load(self.workdir, log=self._log)
        if existing.hosts:
            if not replace:
                raise FleetError(
                    f"a fleet is already up in {self.workdir} "
                    f"({', '.join(h.name for h in existing.hosts)}): run "
                    f"`python -m testbed.fleet down --dir {self.workdir}` first (or up --replace)")
            existing.down()
        if not self.names:
            raise FleetError("no hosts to bring up")
        self._register_atexit()
        try:
            self._up(timeout)
        except BaseException:
            self._log("fleet: up failed, tearing down what was made")
            self.down()
            raise
        return self

    def _up(self, timeout: float) -> None:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        mirrors = find_mirrors()
        self.mirror_ports = mirrors.ports()
        mirror_hosts = {}
        for hostname in mirrors.hostnames():
            ips = resolve_ipv4(hostname)
            if not ips:
                raise FleetError(f"the mirror {hostname} has no IPv4 address")
            mirror_hosts[hostname] = ips[0]
            self.mirror_ips += [ip for ip in ips if ip not in self.mirror_ips]
        tarball = ensure_image(mirrors, log=self._log)

        # Client key, fresh for each fleet.
        for path in (self.ssh_key, self.ssh_key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sdinfra-fleet",
              "-f", str(self.ssh_key)], "generating the fleet's SSH client key")
        pubkey = self.ssh_key.with_suffix(".pub").read_text()

        # Claim host numbers and create the network namespaces under a machine-wide lock, so
        # two fleets (say a developer's and a test run) never get the same addresses.
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        with open(RUN_DIR / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = _used_indices()
            free = [i for i in range(1, 255) if i not in used]
            if len(free) < len(self.names):
                raise FleetError(f"not enough free {SUBNET}.N.0/24 subnets for "
                                 f"{len(self.names)} hosts")
            fleet_id = uuid.uuid4().hex[:8]
            for name, index in zip(self.names, free):
                self.hosts.append(Host(name=name, index=index, fleet_id=fleet_id,
                                       root=str(self.workdir / "roots" / name)))
            self._save()    # from here on `down` (from any process) knows what to remove
            for host in self.hosts:
                self._make_network(host)
        self._enable_forwarding()

        # Unpack the roots in parallel (I/O bound; zstd and tar are separate processes).
        for host in self.hosts:
            if Path(host.root).exists():     # left by a crashed run under this name
                if _nspawn_pids_using(host.root):
                    raise FleetError(f"{host.name}: {host.root} is still in use by a running "
                                     f"systemd-nspawn; try `python -m testbed.fleet down --all`")
                _remove_tree(Path(host.root))
        with ThreadPoolExecutor(max_workers=min(4, len(self.hosts))) as pool:
            list(pool.map(lambda h: self._prepare_root(h, tarball, pubkey, mirror_hosts),
                          self.hosts))
        self._write_known_hosts()
        self._write_inventory()
        unpacked = time.monotonic()

        for host in self.hosts:
            self._boot(host)
        self._save()
        self._wait_ssh(self.hosts, timeout)
        self._log(f"fleet: {len(self.hosts)} host(s) up in {time.monotonic() - started:.1f} s "
                  f"(boot to SSH {time.monotonic() - unpacked:.1f} s); inventory "
                  f"{self.inventory_path}")

    def _prepare_root(self, host: Host, tarball: Path, pubkey: str,
                      mirror_hosts: dict[str, str]) -> None:
        root = Path(host.root)
        unpack_image(tarball, root)
        _host_files(root, host, mirror_hosts)
        _write(root / "root/.ssh/authorized_keys", pubkey, 0o600)

    def _make_network(self, host: Host) -> None:
        ns, v = host.netns, host.veth
        what = f"{host.name}: network setup"
        _run(["ip", "netns", "add", ns], what)
        _run(["ip", "link", "add", v, "type", "veth", "peer", "name", "host0", "netns", ns], what)
        _run(["ip", "link", "set", v, "alias", host.tag], what)
        _run(["ip", "-n", ns, "addr", "add", f"{host.address}/24", "dev", "host0"], what)
        _run(["ip", "-n", ns, "link", "set", "lo", "up"], what)
        _run(["ip", "-n", ns, "link", "set", "host0", "up"], what)
        _run(["ip", "-n", ns, "route", "add", "default", "via", host.gateway], what)
        _run(["ip", "addr", "add", f"{host.gateway}/24", "dev", v], what)
        _run(["ip", "link", "set", v, "up"], what)
        # Insert in reverse at the top so the list's order holds and rules of this machine's
        # own (e.g. a FORWARD policy) come after ours.
        rules = _iptables_rules(host, self.mirror_ips, self.mirror_ports, self.gateway_ports)
        for table, chain, *args in reversed(rules):
            _run(["iptables", "-w", "-t", table, "-I", chain, "1", *args], what)

    def _enable_forwarding(self) -> None:
        # Needed for NAT to the mirror. Left on at teardown: other fleets may still need it.
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")

    def _boot(self, host: Host) -> None:
        env = dict(os.environ, SYSTEMD_SECCOMP="0", SYSTEMD_NSPAWN_API_VFS_WRITABLE="network")
        cmd = ["systemd-nspawn", "-D", host.root, "-b",
               f"--network-namespace-path=/run/netns/{host.netns}", "--register=no",
               "--keep-unit", f"--machine={host.machine}", "--console=passive",
               "--capability=all", "--resolv-conf=off"]
        log_path = self.workdir / "logs" / f"{host.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"\n=== {time.ctime()}: {shlex.join(cmd)}\n".encode())
            log.flush()
            # Own session: a Ctrl-C in the terminal reaches us, and we power the hosts off
            # cleanly, instead of reaching every nspawn at once.
            cgroups = host.cgroups
            for cgroup in cgroups:
                _remove_cgroup(cgroup)        # leftovers of a previous boot
                cgroup.mkdir(exist_ok=True)

            def join_cgroups() -> None:       # runs in the child, before exec
                for cgroup in cgroups:
                    (cgroup / "cgroup.procs").write_text("0")

            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=join_cgroups)
        self._procs[host.name] = proc
        host.pid = proc.pid
        host.pid_start = _proc_start_time(proc.pid)

    def _log_tail(self, host: Host, lines: int = 15) -> str:
        path = self.workdir / "logs" / f"{host.name}.log"
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- last lines of {path}:\n" + "\n".join(tail)

    def _wait_ssh(self, hosts: list[Host], timeout: float) -> None:
        errors: dict[str, str] = {}

        def wait(host: Host) -> None:
            deadline = time.monotonic() + timeout
            last = "no answer yet"
            while time.monotonic() < deadline:
                if not host.running():
                    errors[host.name] = (f"{host.name}: systemd-nspawn exited before SSH "
                                         f"answered{self._log_tail(host)}")
                    return
                try:
                    # SSH answers before boot has finished; wait for that too, so a test never
                    # races systemd (`--wait` returns when boot is done: running or degraded).
                    status, out, _ = self.run(
                        host.name, "cat /etc/hostname; systemctl is-system-running --wait",
                        timeout=max(1, deadline - time.monotonic()))
                    answer = out.split()
                    if answer[:1] == [host.name]:
                        if answer[1:] != ["running"]:
                            self._log(f"fleet: warning: {host.name} booted {answer[1:]}; see "
                                      f"`systemctl --failed` on it")
                        return
                    last = f"unexpected answer {out.strip()!r} (exit {status})"
                except Exception as e:   # refused, reset, timeout, not yet authorized...
                    last = f"{type(e).__name__}: {e}"
                time.sleep(0.3)
            errors[host.name] = (f"{host.name} ({host.address}): SSH did not answer within "
                                 f"{timeout:.0f} s; last error: {last}{self._log_tail(host)}")

        threads = [threading.Thread(target=wait, args=(h,), daemon=True) for h in hosts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise FleetError("\n".join(errors.values()))

    # Using hosts ----------------------------------------------------------------------------
    def ssh_client(self, name: str, timeout: float = 10):
        """A connected paramiko SSHClient to one host, verifying its host key."""
        import paramiko

        host = self.host(name)
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(host.address, port=host.ssh_port, username="root",
                           key_filename=str(self.ssh_key), timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout,
                           allow_agent=False, look_for_keys=False)
        except BaseException:
            client.close()
            raise
        return client

    def run(self, name: str, command: str, timeout: float = 300) -> tuple[int, str, str]:
        """Run a shell command on one host as root over SSH: (exit status, stdout, stderr)."""
        client = self.ssh_client(name, timeout=min(timeout, 10))
        try:
            channel = client.get_transport().open_session(timeout=min(timeout, 10))
            channel.exec_command(command)
            # Read both streams as they come: reading one to its end first could block the
            # command once the other one's window is full.
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            while True:
                if channel.recv_ready():
                    out += channel.recv(65536)
                elif channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                elif channel.exit_status_ready():
                    break
                elif time.monotonic() > deadline:
                    raise FleetError(f"{name}: `{command}` did not finish within {timeout:.0f} s")
                else:
                    time.sleep(0.01)
            return (channel.recv_exit_status(), out.decode(errors="replace"),
                    err.decode(errors="replace"))
        finally:
            client.close()

    # Stopping and starting one host ------------------------------------------------------------
    def stop(self, name: str, timeout: float = 30) -> None:
        """Power one host off (its network stays: connections are refused, as by a down host)."""
        host = self.host(name)
        self._poweroff([host], timeout)
        self._save()

    def start(self, name: str, timeout: float = 120) -> None:
        """Boot a stopped host again (same root filesystem and keys) and wait for SSH."""
        host = self.host(name)
        if host.running():
            return
        self._boot(host)
        self._save()
        self._wait_ssh([host], timeout)

    def _poweroff(self, hosts: list[Host], timeout: float = 30) -> None:
        """Power hosts off together (no threads: this also runs from atexit, at shutdown)."""
        running = [h for h in hosts if h.running()]
        for host in running:
            # SIGTERM to nspawn = a clean poweroff of the host (~1.5 s).
            os.kill(host.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for host in running:
            if not self._wait_exit(host, max(0.0, deadline - time.monotonic())):
                self._log(f"fleet: {host.name} did not power off in {timeout:.0f} s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(host.pid, signal.SIGKILL)
                self._wait_exit(host, 10)
        for host in hosts:
            # Anything still in the host's network namespace (its init, should nspawn have
            # died without taking it along) goes too; killing its init ends its PID namespace.
            for _ in range(50 if host.owns_network() else 0):
                pids = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True,
                                      text=True).stdout.split()
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                time.sleep(0.1)
            for sub in ("propagate", "unix-export", "incoming"):
                with contextlib.suppress(OSError):
                    _remove_tree(NSPAWN_RUN / sub / host.machine)
            if host.owns_network():
                for cgroup in host.cgroups:
                    _remove_cgroup(cgroup)
            host.pid = host.pid_start = None
            self._procs.pop(host.name, None)

    def _wait_exit(self, host: Host, timeout: float) -> bool:
        proc = self._procs.get(host.name)
        if proc is not None:      # our child: reap it
            try:
                proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while host.running():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    # Down ------------------------------------------------------------------------------------
    def down(self) -> None:
        """Tear everything down: hosts, network, rules, roots. Harmless to repeat: once down,
        this object has no hosts and touches nothing (not even a newer fleet in its directory)."""
        if not self.hosts:
            return
        started = time.monotonic()
        self._poweroff(self.hosts)
        for host in self.hosts:
            _delete_tagged_rules(host.tag)
            if host.owns_network():
                _quiet(["ip", "link", "del", host.veth])
                _quiet(["ip", "netns", "del", host.netns])
            else:
                self._log(f"fleet: {host.veth} now belongs to another fleet; left alone")
            _remove_tree(Path(host.root))
        with contextlib.suppress(OSError):
            (self.workdir / "roots").rmdir()
        for path in (self.inventory_path, self.known_hosts, self.ssh_key,
                     self.ssh_key.with_suffix(".pub"), self.state_path):
            path.unlink(missing_ok=True)
        self._log(f"fleet: {len(self.hosts)} host(s) down in {time.monotonic() - started:.1f} s")
        self.hosts = []

    def _register_atexit(self) -> None:
        if not self.down_at_exit or self._atexit_registered:
            return
        atexit.register(self.down)
        self._atexit_registered = True
        # SIGTERM normally ends Python without running atexit: make it exit through it.
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
            signal.signal(signal.SIGTERM, _exit_on_signal)

    def __enter__(self) -> "Fleet":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # Status ----------------------------------------------------------------------------------
    def status(self) -> list[dict]:
        rows = []
        for host in self.hosts:
            with socket.socket() as s:
                s.settimeout(1)
                ssh = s.connect_ex((host.address, host.ssh_port)) == 0
            rows.append({"name": host.name, "address": host.address, "gateway": host.gateway,
                         "pid": host.pid, "running": host.running(), "ssh": ssh})
        return rows


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def down_all(log=print) -> None:
    """Remove every fleet's processes, namespaces, links, rules and nspawn leftovers on this
    machine (whatever is named sdinfra-N / sdinfraN or tagged sdinfra-fleet). Roots stay."""
    indices = set()
    if Path("/run/netns").is_dir():
        indices |= {int(m.group(1)) for ns in Path("/run/netns").iterdir()
                    if (m := re.fullmatch(rf"{PREFIX}-(\d+)", ns.name))}
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    indices |= {int(m) for m in re.findall(rf"^\d+: {PREFIX}(\d+)[@:]", links, re.M)}
    fleet = Fleet(tempfile.gettempdir(), names=[], down_at_exit=False, log=log)
    for index in sorted(indices):
        host = Host(name=f"orphan{index}", index=index, root="")
        with contextlib.suppress(OSError):     # take the fleet's id from its veth's alias
            host.fleet_id = Path(f"/sys/class/net/{host.veth}/ifalias").read_text().strip() \
                .rsplit(":", 1)[-1]
        # Its nspawn is the parent of the init in its namespace.
        for pid in subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True,
                                  text=True).stdout.split():
            with contextlib.suppress(OSError, ValueError):
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                if "systemd-nspawn" in Path(f"/proc/{ppid}/cmdline").read_text():
                    host.pid, host.pid_start = ppid, _proc_start_time(ppid)
        fleet._poweroff([host])
        _quiet(["ip", "link", "del", host.veth])
        _quiet(["ip", "netns", "del", host.netns])
        log(f"fleet: removed {host.netns}")
    _delete_tagged_rules(TAG)
    for sub in ("propagate", "unix-export", "incoming"):
        for path in (NSPAWN_RUN / sub).glob(f"{PREFIX}-*"):
            _remove_tree(path)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.fleet",
                                     description="Disposable Debian 12 test hosts "
                                                 "(systemd-nspawn).")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="boot N hosts and write DIR/inventory.py")
    p_up.add_argument("count", type=int, help="number of hosts")
    p_up.add_argument("--names", help="comma-separated host names (default host1..hostN)")
    p_up.add_argument("--replace", action="store_true", help="tear down a fleet already in DIR")
    p_up.add_argument("--timeout", type=float, default=120, help="seconds to wait for SSH")
    p_down = sub.add_parser("down", help="tear the fleet down (harmless to repeat)")
    p_down.add_argument("--all", action="store_true",
                        help="also remove every other fleet on this machine (even running ones: "
                             "namespaces, links, rules, processes; not their roots)")
    sub.add_parser("status", help="show the fleet's hosts")
    for p in sub.choices.values():
        p.add_argument("--dir", default=".fleet", help="fleet directory (default .fleet)")
    args = parser.parse_args(argv)

    # Interrupted (Ctrl-C, SIGTERM, SIGHUP) during up: Fleet.up tears down what it made.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    try:
        if args.command == "up":
            names = args.names.split(",") if args.names else None
            if names and len(names) != args.count:
                parser.error(f"--names lists {len(names)} names for {args.count} hosts")
            fleet = Fleet(args.dir, names=names, count=args.count, down_at_exit=False)
            fleet.up(timeout=args.timeout, replace=args.replace)
            for host in fleet.hosts:
                print(f"{host.name}\t{host.address}\tgateway {host.gateway}")
            print(f"inventory: {fleet.inventory_path}")
        elif args.command == "down":
            Fleet.load(args.dir).down()
            if args.all:
                down_all()
        elif args.command == "status":
            fleet = Fleet.load(args.dir)
            if not fleet.hosts:
                print(f"no fleet in {fleet.workdir}")
                return 0
            for row in fleet.status():
                state = "running" if row["running"] else "stopped"
                ssh = "ssh open" if row["ssh"] else "ssh closed"
                print(f"{row['name']}\t{row['address']}\tgateway {row['gateway']}\t"
                      f"{state} (pid {row['pid']})\t{ssh}")
            print(f"inventory: {fleet.inventory_path}")
    except FleetError as e:
        print(f"fleet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
