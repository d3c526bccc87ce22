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

Where the rest is: a host's number, addresses, namespace and iptables rules (and what a host
may reach) in testbed/network.py; the root filesystem image and each host's own files in
testbed/rootfs.py; starting and powering off a host's systemd-nspawn in testbed/nspawn.py;
commands, files, processes and cgroups on this machine in testbed/system.py.

Needs root and these Debian packages on the machine: see ``HOST_PACKAGES``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testbed.network import (PREFIX, SUBNET, TAG, Host, _delete_tagged_rules, _used_indices,
                             allow_peers, enable_forwarding, gateway_port_range, make_network)
from testbed.nspawn import NSPAWN_RUN, allow_inotify, boot, log_tail, poweroff
from testbed.rootfs import ensure_image, find_mirrors, host_files, resolve_ipv4, unpack_image
# HOST_PACKAGES and FleetError are the fleet's to name (its users import them from here).
from testbed.system import (HOST_PACKAGES, FleetError, _nspawn_pids_using, _proc_start_time,
                            _quiet, _remove_tree, _run, _write, _write_atomic)

RUN_DIR = Path("/run/sdinfra-fleet")    # machine-wide: host numbers lock, last one given
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
STATE_VERSION = 1
# The inventory.py written for each fleet: this file with the hosts filled in.
INVENTORY_TEMPLATE = Path(__file__).with_name("inventory_template.py")

# --------------------------------------------------------------------------------------------
# The fleet
# --------------------------------------------------------------------------------------------

class Fleet:
    """N disposable hosts and everything made for them; see the module docstring.

    workdir: where state, inventory, keys, roots and logs go. names: host names (default
    host1..hostCOUNT). down_at_exit: tear down at interpreter exit if still up. gateway_ports:
    (low, high) TCP ports the hosts may reach on their gateway (default: the ephemeral range).
    log: a function taking one line of progress (default: print to stderr). peer_ports: TCP
    ports each host may reach on the fleet's other hosts (a fleet cache's: (5000, 3142)).
    """

    def __init__(self, workdir: str | os.PathLike = ".fleet", names: list[str] | None = None,
                 count: int | None = None, down_at_exit: bool = True,
                 gateway_ports: tuple[int, int] | None = None, log=None,
                 peer_ports: tuple[int, ...] = ()):
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
        self.peer_ports = tuple(peer_ports)
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
        _write(self.inventory_path, INVENTORY_TEMPLATE.read_text().replace(
            "_HOSTS = [\n]", f"_HOSTS = [\n{body},\n]", 1))

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
            # The numbers after the last one handed out come first, so that a number a fleet
            # just gave back is not at once another's: fleets up at the same time (make test
            # runs two test files at a time) would see the other's host under the number
            # they freed (tests/test_fleet.py checks that a torn-down fleet left nothing).
            last_path = RUN_DIR / "last"
            try:
                last = int(last_path.read_text())
            except (OSError, ValueError):
                last = 0
            free = sorted((i for i in range(1, 255) if i not in used),
                          key=lambda i: (i <= last, i))
            if len(free) < len(self.names):
                raise FleetError(f"not enough free {SUBNET}.N.0/24 subnets for "
                                 f"{len(self.names)} hosts")
            fleet_id = uuid.uuid4().hex[:8]
            for name, index in zip(self.names, free):
                self.hosts.append(Host(name=name, index=index, fleet_id=fleet_id,
                                       root=str(self.workdir / "roots" / name)))
            last_path.write_text(f"{self.hosts[-1].index}\n")
            self._save()    # from here on `down` (from any process) knows what to remove
            for host in self.hosts:
                make_network(host, self.mirror_ips, self.mirror_ports, self.gateway_ports)
            allow_peers(self.hosts, self.peer_ports)
        enable_forwarding()
        allow_inotify()

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
        host_files(root, host, mirror_hosts)
        _write(root / "root/.ssh/authorized_keys", pubkey, 0o600)

    def _boot(self, host: Host) -> None:
        proc = boot(host, self._console_log(host))
        self._procs[host.name] = proc
        host.pid = proc.pid
        host.pid_start = _proc_start_time(proc.pid)

    def _console_log(self, host: Host) -> Path:
        return self.workdir / "logs" / f"{host.name}.log"

    def _wait_ssh(self, hosts: list[Host], timeout: float) -> None:
        errors: dict[str, str] = {}

        def wait(host: Host) -> None:
            deadline = time.monotonic() + timeout
            last = "no answer yet"
            while time.monotonic() < deadline:
                if not host.running():
                    errors[host.name] = (f"{host.name}: systemd-nspawn exited before SSH "
                                         f"answered{log_tail(self._console_log(host))}")
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
                                 f"{timeout:.0f} s; last error: {last}"
                                 f"{log_tail(self._console_log(host))}")

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
                elif channel.exit_status_ready() and (channel.eof_received or channel.closed):
                    # Both, and nothing left to read: sshd may send the exit status before the
                    # last of the output (the child exited before its pipe was drained), which
                    # once cut `apt-cache policy docker-ce` after its first line.
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
        poweroff(hosts, self._procs, self._log, timeout)

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
        poweroff([host], {}, log)
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

