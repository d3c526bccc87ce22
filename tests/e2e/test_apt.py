"""
apt as Ubuntu really is, end to end on a fleet of its own (a-cpu1, a-cpu2), with deploy/docker.py:

1. a fake unattended-upgrades holds dpkg's locks on both hosts when the run starts: a-cpu2's for
   18 s, which the run waits for and then converges; a-cpu1's past its apt_lock_timeout (8 s),
   which fails that host alone, naming the lock and the process;
2. the lock released, a-cpu1 converges on the next run;
3. a-cpu2 followed Docker's older guide: /etc/apt/sources.list.d/docker.list with
   signed-by=/etc/apt/keyrings/docker.gpg for Docker's repository (a stand-in here: Docker's
   cannot be reached). The run switches it to that repository (docker_source: docker): the old
   list goes, docker.sources comes, apt reads one Signed-By, the host converges and the run
   after changes nothing.
"""

from __future__ import annotations

import json
import shlex
import time

import pytest

from testbed import standins
from testbed.hosts import run_pyinfra, ssh, write_settings
from tests.e2e.conftest import booted

NAMES = ["a-cpu1", "a-cpu2"]
DOCKER = "deploy/docker.py"
HELD = 18  # seconds a-cpu2's fake unattended-upgrades holds the locks
TIMEOUT = 8  # a-cpu1's apt_lock_timeout, shorter than its holder's hold

# A stand-in for unattended-upgrades' hold on dpkg's locks (TEST ONLY). The real one is a Python
# script, /usr/bin/unattended-upgrade, so its /proc/PID/comm is the script's name cut to 15
# characters ("unattended-upgr"); it locks through python-apt's apt_pkg.pkgsystem_lock(), which is
# apt's debSystem::Lock(): lock-frontend, then lock, each with fcntl(F_SETLK) and an F_WRLCK on
# the whole file (apt-pkg/deb/debsystem.cc, apt 3.1.12 lines 130-176; apt-pkg/contrib/
# fileutl.cc GetLock(), line 280). Python's fcntl.lockf takes the same lock.
FAKE_UNATTENDED_UPGRADE = """#!/usr/bin/python3
# sdinfra STAND-IN for unattended-upgrades' hold on dpkg's locks (TEST ONLY)
import fcntl, os, sys, time
held = []
for path in ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock"):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o640)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    held.append(fd)
print("held", os.getpid(), flush=True)
time.sleep(float(sys.argv[1]))
"""

# Docker's engine, as far as deploy/docker.py depends on it: the five packages Docker's install
# page names, a docker.service that systemd starts and enables, a dockerd that writes its pid
# to /var/run/docker.pid without a newline (moby cmd/dockerd: pidfile.Write) and keeps running.
# The unit is moby's contrib/init/systemd/docker.service cut down: Type=simple and no socket
# activation (the stand-in speaks no API), WantedBy=multi-user.target as there.
DOCKERD = """#!/bin/sh
# sdinfra STAND-IN for dockerd (TEST ONLY): no containers, no API
printf '%s' $$ > /var/run/docker.pid
while :; do sleep 3600; done
"""
DOCKER_SERVICE = """[Unit]
Description=Docker Application Container Engine (sdinfra stand-in, TEST ONLY)
After=network-online.target

[Service]
Type=simple
ExecStart=/usr/bin/dockerd
ExecReload=/bin/kill -s HUP $MAINPID

[Install]
WantedBy=multi-user.target
"""
# What debhelper puts in docker-ce's postinst for its unit (autoscripts postinst-systemd-enable
# and postinst-systemd-start): enabled and started when the package is configured.
POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
    deb-systemd-helper unmask docker.service >/dev/null || true
    deb-systemd-helper enable docker.service >/dev/null || true
    systemctl --system daemon-reload >/dev/null || true
    deb-systemd-invoke start docker.service >/dev/null || true
fi
"""
DOCKER_CE = ["docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin",
             "docker-compose-plugin"]


@pytest.fixture(scope="module")
def docker_repo(tmp_path_factory, stand_ins):
    """A stand-in of Docker's apt repository for Debian (``<base>/debian``, suite bookworm,
    component stable, ``<base>/debian/gpg``), signed with the stand-ins' key."""
    work = tmp_path_factory.mktemp("docker-standin")
    debs = []
    for name in DOCKER_CE:
        files = {}
        if name == "docker-ce":
            files = {"/usr/bin/dockerd": (DOCKERD, 0o755),
                     "/lib/systemd/system/docker.service": (DOCKER_SERVICE, 0o644),
                     "/DEBIAN/postinst": (POSTINST, 0o755)}
        debs.append(standins.build_deb(work / "debs", name, "5:24.0.7-1~debian.12~bookworm",
                                       files, architecture="amd64",
                                       description=f"{name} (sdinfra stand-in, TEST ONLY)\n"
                                                   "Nothing of Docker's in here."))
    www = work / "www"
    standins.build_apt_repo(www / "linux" / "debian", debs, stand_ins.key, suite="bookworm",
                            component="stable")
    (www / "linux" / "debian" / "gpg").write_bytes(stand_ins.key.public_asc.read_bytes())
    return www


@pytest.fixture(scope="module")
def apt_fleet(tmp_path_factory):
    with booted(tmp_path_factory, "apt-fleet", NAMES) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def docker_server(apt_fleet, docker_repo):
    with standins.serve(docker_repo, [h.gateway for h in apt_fleet.hosts]) as srv:
        yield srv


def settings(fleet, **per_host: dict) -> None:
    data = {name: {"docker_source": "distro"} for name in NAMES}
    for name, changes in per_host.items():
        data[name.replace("_", "-")].update(changes)
    write_settings(fleet, data)


def hold_locks(fleet, name: str, seconds: float) -> int:
    """Start the fake unattended-upgrades on ``name``; its pid once it holds the locks."""
    ssh(fleet, name, f"cat > /usr/bin/unattended-upgrade <<'EOF'\n{FAKE_UNATTENDED_UPGRADE}EOF\n"
                     "chmod 755 /usr/bin/unattended-upgrade")
    ssh(fleet, name, f"rm -f /tmp/uu.log; setsid /usr/bin/unattended-upgrade {seconds} "
                     "> /tmp/uu.log 2>&1 < /dev/null &")
    for _ in range(100):
        said = ssh(fleet, name, "cat /tmp/uu.log 2>/dev/null || true").split()
        if said[:1] == ["held"]:
            return int(said[1])
        time.sleep(0.1)
    raise AssertionError(f"{name}: the fake unattended-upgrades did not take the locks")


def installed(fleet, name: str, package: str) -> bool:
    status = ssh(fleet, name, f"dpkg-query -W -f='${{Status}}' {package} 2>/dev/null || true")
    return status.strip() == "install ok installed"


def docker(fleet, *args: str):
    started = time.monotonic()
    result = run_pyinfra(fleet, DOCKER, "-y", "--json", *args, timeout=900)
    result.seconds = time.monotonic() - started
    print(f"{DOCKER}: exit {result.returncode} in {result.seconds:.1f} s")
    return result


def failed_hosts(result) -> list[str]:
    try:
        return json.loads(result.stdout)["results"]["failed_hosts"]
    except (ValueError, KeyError):
        return []


@pytest.fixture(scope="module")
def locked_run(apt_fleet):
    fleet = apt_fleet
    settings(fleet, a_cpu1={"apt_lock_timeout": TIMEOUT})
    long_holder = hold_locks(fleet, "a-cpu1", 600)
    holder = hold_locks(fleet, "a-cpu2", HELD)
    started = time.monotonic()
    result = docker(fleet)
    return result, long_holder, holder, time.monotonic() - started


@pytest.fixture(scope="module")
def released_run(locked_run, apt_fleet):
    _, long_holder, _, _ = locked_run
    ssh(apt_fleet, "a-cpu1", f"kill {long_holder}; sleep 0.5; ! kill -0 {long_holder} 2>/dev/null")
    return docker(apt_fleet)


def test_a_lock_held_for_a_while_is_waited_for_not_failed_on(locked_run, apt_fleet):
    result, _, holder, seconds = locked_run
    assert "a-cpu2" not in failed_hosts(result), result.stderr[-4000:]
    assert seconds >= HELD - 3  # the run could not install before the holder let go
    assert installed(apt_fleet, "a-cpu2", "docker.io")
    # The holder ended as it was meant to (it was not killed), after which apt ran.
    assert ssh(apt_fleet, "a-cpu2", f"kill -0 {holder} 2>/dev/null && echo alive || echo gone")\
        .strip() == "gone"
    assert ssh(apt_fleet, "a-cpu2", "systemctl is-active docker").strip() == "active"


def test_a_lock_held_past_the_timeout_fails_only_its_host_naming_the_holder(locked_run,
                                                                              apt_fleet):
    result, long_holder, _, _ = locked_run
    assert result.returncode != 0
    assert failed_hosts(result) == ["a-cpu1"]
    message = (f"E: /var/lib/dpkg/lock-frontend is still held by process {long_holder} "
               f"(unattended-upgr) after {TIMEOUT} s (apt_lock_timeout)")
    assert message in result.stderr, result.stderr[-4000:]
    assert not installed(apt_fleet, "a-cpu1", "docker.io")
    assert ssh(apt_fleet, "a-cpu1", "ls /var/lib/apt/lists | grep -c _Packages || true")\
        .strip() == "0"  # not even apt-get update ran under the lock


def test_once_released_the_host_converges(released_run, apt_fleet):
    assert released_run.returncode == 0, released_run.stderr[-4000:]
    assert installed(apt_fleet, "a-cpu1", "docker.io")


@pytest.fixture(scope="module")
def old_docker_list(released_run, apt_fleet, stand_ins, docker_server):
    """a-cpu2 as Docker's older guide left it, with Docker's (stand-in) repository."""
    fleet = apt_fleet
    base = f"http://{fleet.host('a-cpu2').gateway}:{docker_server.port}/linux"
    keyring = stand_ins.key.public_gpg.read_bytes().hex()
    ssh(fleet, "a-cpu2", "install -d -m 0755 /etc/apt/keyrings && "
                         f"printf '%s' {keyring} | python3 -c 'import sys; sys.stdout.buffer."
                         "write(bytes.fromhex(sys.stdin.read()))' > /etc/apt/keyrings/docker.gpg"
                         " && chmod a+r /etc/apt/keyrings/docker.gpg")
    old = (f"deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.gpg] {base}/debian bookworm "
           "stable")
    ssh(fleet, "a-cpu2", f"echo {shlex.quote(old)} > /etc/apt/sources.list.d/docker.list")
    # The old setup worked on its own: apt reads the repository with that keyring.
    before = ssh(fleet, "a-cpu2", "apt-get update 2>&1 && apt-cache policy docker-ce")
    settings(fleet, a_cpu2={"docker_source": "docker", "docker_repo_url": base,
                            "docker_key_fingerprint": stand_ins.key.fingerprint})
    return before, docker(fleet, "--limit", "a-cpu2"), docker(fleet, "--limit", "a-cpu2")


def test_a_host_with_the_old_docker_list_converges(old_docker_list, apt_fleet):
    before, first, second = old_docker_list
    assert "5:24.0.7-1~debian.12~bookworm" in before
    assert first.returncode == 0, first.stderr[-4000:]
    assert "Conflicting values set for option Signed-By" not in first.stderr
    assert ssh(apt_fleet, "a-cpu2", "ls /etc/apt/sources.list.d").split() == ["docker.sources"]
    for package in DOCKER_CE:
        assert installed(apt_fleet, "a-cpu2", package), package
    assert not installed(apt_fleet, "a-cpu2", "docker.io")
    assert ssh(apt_fleet, "a-cpu2", "apt-get update 2>&1; echo rc=$?").strip().endswith("rc=0")
    assert ssh(apt_fleet, "a-cpu2", "systemctl is-active docker").strip() == "active"
    operations = json.loads(second.stdout)["results"]["operations"]
    assert second.returncode == 0, second.stderr[-3000:]
    assert [(op["name"], op["success"]) for op in operations if op["success"]] == []
