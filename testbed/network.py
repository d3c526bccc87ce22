"""
A fleet host and its network: host number N (allocated machine-wide, lowest free first) has the
namespace ``sdinfra-N`` and the veth pair ``sdinfraN`` (this machine, 10.77.N.1/24) - ``host0``
(the host, 10.77.N.2/24, default route via 10.77.N.1). iptables rules, each tagged with the
comment ``sdinfra-fleet:sdinfraN:FLEETID``, let a host reach only: the Debian mirror's addresses
on its port (through NAT), and TCP ports of the kernel's ephemeral range
(``Fleet.gateway_ports``, 32768-60999 by default) on its own gateway address: bind test servers
to port 0 (on 0.0.0.0 or on each host's gateway) and give each host its own gateway's address
(``fleet_gateway``); with ``peer_ports`` (``Fleet(..., peer_ports=(5000, 3142))``), those TCP
ports of the fleet's other hosts (``allow_peers``: a fleet cache). Everything else from a host
is dropped (other hosts, other gateways, this machine's own services, the internet, DNS); a
host resolves the mirror from its /etc/hosts.
Tests may send traffic only to loopback and to these veth addresses. ``net.ipv4.ip_forward`` is
set to 1 and left so.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
from pathlib import Path

from testbed.system import _proc_start_time, _quiet, _run, _systemd_cgroup_roots

SUBNET = "10.77"            # host N: 10.77.N.0/24
PREFIX = "sdinfra"          # netns sdinfra-N, machine sdinfra-N, host-side veth sdinfraN
TAG = "sdinfra-fleet"       # iptables comment prefix: host N's rules carry TAG:sdinfraN:FLEETID


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


def make_network(host: Host, mirror_ips: list[str], mirror_ports: list[int],
                 gateway_ports: tuple[int, int]) -> None:
    """The host's namespace, veth pair, addresses, default route and iptables rules."""
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
    rules = _iptables_rules(host, mirror_ips, mirror_ports, gateway_ports)
    for table, chain, *args in reversed(rules):
        _run(["iptables", "-w", "-t", table, "-I", chain, "1", *args], what)


def allow_peers(hosts: list[Host], ports: tuple[int, ...]) -> None:
    """Let each of ``hosts`` reach the others' TCP ``ports`` (a fleet cache's registry and apt
    cache, roles.cache), and nothing else of theirs. Each rule carries its source host's tag,
    so that host's teardown removes it; inserted above the hosts' DROP rules."""
    if not ports:
        return
    dports = ",".join(str(p) for p in ports)
    for source in hosts:
        for target in hosts:
            if target is source:
                continue
            _run(["iptables", "-w", "-t", "filter", "-I", "FORWARD", "1", "-m", "comment",
                  "--comment", source.tag, "-i", source.veth, "-o", target.veth, "-d",
                  target.address, "-p", "tcp", "-m", "multiport", "--dports", dports,
                  "-j", "ACCEPT"], f"{source.name}: reaching {target.name}'s ports {dports}")


def enable_forwarding() -> None:
    # Needed for NAT to the mirror. Left on at teardown: other fleets may still need it.
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
