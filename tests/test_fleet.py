"""
The disposable test fleet (testbed/fleet.py) on this very machine: two real hosts booted with
systemd-nspawn, reached by pyinfra over SSH with host key checking on, isolated from each other,
stopped and started again, and torn down without leaving anything behind.

The end-to-end test needs root and the Debian packages in testbed.fleet.HOST_PACKAGES; the first
run on a machine also builds the root filesystem image (~1.5 min), later runs take ~15 s.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import fleet as fleetmod
from testbed.fleet import Fleet
from testbed.system import _systemd_cgroup_roots

REPO = Path(__file__).resolve().parents[1]
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the test fleet needs root")


def pyinfra_exec(inventory: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYINFRA, str(inventory), "exec", "-y", "--", *command],
                          capture_output=True, text=True, timeout=120)


def tcp_connect(fleet: Fleet, name: str, address: str, port: int) -> str:
    """From host `name`, try a TCP connection: 'open', 'refused' or 'timeout'."""
    script = (
        "import socket, sys\n"
        "s = socket.socket(); s.settimeout(2)\n"
        "try:\n"
        "    s.connect((sys.argv[1], int(sys.argv[2]))); print('open')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except OSError: print('timeout')\n"
    )
    status, out, err = fleet.run(name, f"python3 -c \"{script}\" {address} {port}")
    assert status == 0, err
    return out.strip()


def leftovers(fleet_indices: list[int], workdir: Path) -> list[str]:
    """Anything of these hosts still on the machine."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for i in fleet_indices:
        if re.search(rf"^{fleetmod.PREFIX}-{i}\b", netns, re.M):
            found.append(f"netns {fleetmod.PREFIX}-{i}")
        if re.search(rf"^\d+: {fleetmod.PREFIX}{i}[@:]", links, re.M):
            found.append(f"link {fleetmod.PREFIX}{i}")
        for table in ("filter", "nat"):
            rules = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True,
                                   text=True).stdout
            found += [r for r in rules.splitlines() if f"{fleetmod.TAG}:{fleetmod.PREFIX}{i}:" in r]
        propagate = fleetmod.NSPAWN_RUN / "propagate" / f"{fleetmod.PREFIX}-{i}"
        if propagate.exists():
            found.append(str(propagate))
        found += [str(root / f"{fleetmod.PREFIX}-{i}") for root in _systemd_cgroup_roots()
                  if (root / f"{fleetmod.PREFIX}-{i}").exists()]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "systemd-nspawn" in cmdline and str(workdir) in cmdline:
                found.append(f"process {proc.name}: {cmdline}")
    if (workdir / "roots").exists():
        found.append(f"{workdir / 'roots'}: {os.listdir(workdir / 'roots')}")
    return found


@pytest.mark.e2e
@needs_root
def test_fleet_boots_hosts_pyinfra_reaches_them_and_teardown_leaves_nothing(tmp_path):
    workdir = tmp_path / "fleet"
    fleet = Fleet(workdir, ["alpha", "beta"])
    indices: list[int] = []
    try:
        fleet.up()
        indices = [h.index for h in fleet.hosts]
        alpha, beta = fleet.host("alpha"), fleet.host("beta")
        assert alpha.address != beta.address and alpha.ssh_port == 22
        assert fleet.host_data("alpha")["ssh_strict_host_key_checking"] == "yes"
        assert fleet.host_data("beta")["fleet_gateway"] == beta.gateway

        # Both hosts answer pyinfra with their own names, over SSH with host key checking on.
        result = pyinfra_exec(fleet.inventory_path, "hostname")
        assert result.returncode == 0, result.stdout + result.stderr
        output = result.stdout + result.stderr
        assert re.search(r"\[alpha\]\s+alpha\b", output), output
        assert re.search(r"\[beta\]\s+beta\b", output), output

        # Host key checking is really on: beta with a known_hosts that lacks its keys is
        # refused, while alpha still works (this also shows host_data.json is merged in).
        empty = tmp_path / "empty_known_hosts"
        empty.write_text("")
        (workdir / "host_data.json").write_text(
            json.dumps({"beta": {"ssh_known_hosts_file": str(empty)}}))
        result = pyinfra_exec(fleet.inventory_path, "hostname")
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        assert re.search(r"\[alpha\]\s+alpha\b", output), output
        assert not re.search(r"\[beta\]\s+beta\b", output), output
        (workdir / "host_data.json").unlink()

        # A host reaches a test server on its own gateway, but neither the other host nor the
        # other host's gateway (dropped: a timeout, where an open path would be refused).
        low, _ = fleet.gateway_ports
        with socket.socket() as server:
            server.bind((alpha.gateway, 0))
            server.listen()
            port = server.getsockname()[1]      # port 0: the kernel's ephemeral range
            assert port >= low
            assert tcp_connect(fleet, "alpha", alpha.gateway, port) == "open"
        assert tcp_connect(fleet, "alpha", beta.address, 22) == "timeout"
        assert tcp_connect(fleet, "alpha", beta.gateway, port) == "timeout"

        # A stopped host refuses connections; started again it answers with the same keys.
        fleet.stop("beta")
        assert not fleet.host("beta").running()
        with socket.socket() as s:
            s.settimeout(5)
            assert s.connect_ex((beta.address, 22)) != 0
        result = pyinfra_exec(fleet.inventory_path, "hostname")
        assert result.returncode != 0
        assert re.search(r"\[alpha\]\s+alpha\b", result.stdout + result.stderr)
        assert fleet.run("alpha", "systemctl is-system-running")[1].strip() == "running"
        fleet.start("beta")
        assert fleet.run("beta", "hostname")[1].strip() == "beta"

        # Another process sees the fleet through fleet.json.
        status = subprocess.run([sys.executable, "-m", "testbed.fleet", "status", "--dir",
                                 str(workdir)], capture_output=True, text=True, cwd=REPO)
        assert status.returncode == 0, status.stderr
        assert "alpha" in status.stdout and "running" in status.stdout
        # ... and up refuses to start a second fleet in the same directory.
        with pytest.raises(fleetmod.FleetError, match="already up"):
            Fleet(workdir, ["gamma"], down_at_exit=False).up()
    finally:
        fleet.down()

    assert leftovers(indices, workdir) == []
    assert not (workdir / "fleet.json").exists()
    fleet.down()                                    # a second teardown is harmless
    down = subprocess.run([sys.executable, "-m", "testbed.fleet", "down", "--dir", str(workdir)],
                          capture_output=True, text=True, cwd=REPO)
    assert down.returncode == 0, down.stderr


def test_cli_status_and_down_without_a_fleet(tmp_path):
    def cli(*args):
        result = subprocess.run([sys.executable, "-m", "testbed.fleet", *args, "--dir",
                                 str(tmp_path)], capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "no fleet" in cli("status")
    cli("down")
    cli("down")


def test_mirrors_come_from_this_machines_apt_sources():
    if not list(Path("/etc/apt/sources.list.d").glob("*.sources")) and \
            not Path("/etc/apt/sources.list").exists():
        pytest.skip("no apt sources on this machine")
    mirrors = fleetmod.find_mirrors()
    assert mirrors.debian.startswith(("http://", "https://"))
    assert "security" in mirrors.security
    assert mirrors.ports()


def test_the_inotify_limit_is_raised_for_many_hosts_never_lowered(tmp_path):
    from testbed.nspawn import MIN_INOTIFY_INSTANCES, allow_inotify

    limit = tmp_path / "max_user_instances"
    limit.write_text("128\n")
    allow_inotify(limit)
    assert int(limit.read_text()) == MIN_INOTIFY_INSTANCES
    limit.write_text("8192\n")
    allow_inotify(limit)
    assert limit.read_text() == "8192\n"
