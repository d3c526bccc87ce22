"""
The fleet cache end to end (roles.cache), on a fleet of its own with deploy/docker.py: k-cache
serves Debian's docker-registry and apt-cacher-ng to k-cpu1 (in cache_allow); k-cpu2 also has
cache_host set but is not allowed in, so the firewall turns it away and its apt goes direct.

1. one run: every host converges; k-cpu1's packages come through the cache (its log and its
   cache hold them), k-cpu2 installs directly and the run warns about it; the registry answers
   k-cpu1 only (not k-cpu2, not this machine), listens on cache_host alone, and an image pushed
   from k-cpu1 is pulled on k-cache (Docker's insecure-registries);
2. the next run changes nothing;
3. apt-cacher-ng stopped: a run that installs on k-cpu1 goes direct, warns and succeeds, and
   the run after that starts the cache again.
"""

from __future__ import annotations

import json
import time

import pytest

from testbed.hosts import run_pyinfra, ssh, write_settings
from tests.e2e.conftest import booted

NAMES = ["k-cache", "k-cpu1", "k-cpu2"]
DOCKER = "deploy/docker.py"
REGISTRY, APT = 5000, 3142
WARNING = "the apt cache http://{}:3142 does not answer"


@pytest.fixture(scope="module")
def cache_fleet(tmp_path_factory):
    fleet = booted(tmp_path_factory, "cache-fleet", NAMES)
    fleet.peer_ports = (REGISTRY, APT)
    with fleet:
        address = fleet.host("k-cache").address
        data = {name: {"docker_source": "distro", "cache_host": address} for name in NAMES}
        data["k-cache"].update(cache_serve=True,
                               cache_allow=[f"{fleet.host('k-cpu1').address}/32"])
        write_settings(fleet, data)
        yield fleet


def deploy(fleet, *args: str):
    started = time.monotonic()
    result = run_pyinfra(fleet, DOCKER, "-y", "--json", *args, timeout=900)
    print(f"{DOCKER} {' '.join(args)}: exit {result.returncode} in "
          f"{time.monotonic() - started:.1f} s")
    return result


def changed(result) -> list[str]:
    return [op["name"] for op in json.loads(result.stdout)["results"]["operations"]
            if op["success"]]


def get(fleet, name: str, url: str) -> str:
    """What ``name`` gets from ``url``: the status, or the error's name."""
    return ssh(fleet, name, "python3 -c 'import sys, urllib.request\ntry:\n"
                            "    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)\n"
                            "except Exception as e:\n    print(type(e).__name__)' " + url).strip()


@pytest.fixture(scope="module")
def first(cache_fleet):
    return deploy(cache_fleet)


@pytest.fixture(scope="module")
def second(first, cache_fleet):
    return deploy(cache_fleet)


def test_one_run_converges_every_host(first, cache_fleet):
    assert first.returncode == 0, first.stderr[-4000:]
    for name in NAMES:
        assert ssh(cache_fleet, name, "systemctl is-active docker").strip() == "active"


def test_the_allowed_hosts_apt_goes_through_the_cache(first, cache_fleet):
    fleet = cache_fleet
    cached = ssh(fleet, "k-cache", "find /srv/sdinfra-cache/apt -name 'docker.io_*.deb'")
    assert "docker.io_" in cached, ssh(fleet, "k-cache", "ls -R /srv/sdinfra-cache | head -50")
    # apt-cacher-ng's transfer log names each client: k-cpu1 fetched through it, k-cpu2 did not.
    log = ssh(fleet, "k-cache", "cat /var/log/apt-cacher-ng/apt-cacher.log")
    assert fleet.host("k-cpu1").address in log and "docker.io_" in log
    assert fleet.host("k-cpu2").address not in log
    address = fleet.host("k-cache").address
    warned = [line for line in first.stderr.splitlines() if WARNING.format(address) in line]
    assert warned and all("k-cpu2" in line for line in warned), first.stderr[-3000:]


def test_the_registry_answers_the_allowed_hosts_only_and_on_cache_host_alone(first, cache_fleet):
    fleet = cache_fleet
    address = fleet.host("k-cache").address
    url = f"http://{address}:{REGISTRY}/v2/"
    assert get(fleet, "k-cpu1", url) == "200"
    assert get(fleet, "k-cache", url) == "200"  # the host itself (lo)
    assert get(fleet, "k-cpu2", url) in ("ConnectionResetError", "URLError")
    import urllib.request

    with pytest.raises(OSError):  # this machine (the gateway's address) is not in cache_allow
        urllib.request.urlopen(url, timeout=5)
    listening = ssh(fleet, "k-cache", "ss -Hltn")
    bound = {line.split()[3] for line in listening.splitlines()
             if line.split()[3].endswith((f":{REGISTRY}", f":{APT}"))}
    assert bound == {f"{address}:{REGISTRY}", f"{address}:{APT}"}, listening


def test_an_image_pushed_from_one_host_is_pulled_on_another(first, cache_fleet):
    fleet = cache_fleet
    image = f"{fleet.host('k-cache').address}:{REGISTRY}/sdinfra/cache-test:1"
    ssh(fleet, "k-cpu1", "mkdir -p /tmp/img && echo hello > /tmp/img/hello && "
                         f"tar -C /tmp/img -c . | docker import - {image} >/dev/null && "
                         f"docker push -q {image}")
    ssh(fleet, "k-cache", f"docker pull -q {image}")
    assert "hello" in ssh(fleet, "k-cache", f"docker image inspect {image} >/dev/null && echo hello")


def test_the_next_run_changes_nothing(second):
    assert second.returncode == 0, second.stderr[-4000:]
    assert changed(second) == []


@pytest.fixture(scope="module")
def cache_down(second, cache_fleet):
    fleet = cache_fleet
    ssh(fleet, "k-cache", "systemctl stop apt-cacher-ng")
    ssh(fleet, "k-cpu1", "dpkg -r docker-compose >/dev/null")
    down = deploy(fleet, "--limit", "k-cpu1")
    return down, deploy(fleet), deploy(fleet)


def test_with_the_cache_down_apt_goes_direct_with_a_warning(cache_down, cache_fleet):
    down, _, _ = cache_down
    assert down.returncode == 0, down.stderr[-4000:]
    address = cache_fleet.host("k-cache").address
    assert any("k-cpu1" in line and WARNING.format(address) in line
               for line in down.stderr.splitlines()), down.stderr[-3000:]
    assert ssh(cache_fleet, "k-cpu1", "dpkg-query -W -f='${Status}' docker-compose") \
        == "install ok installed"


def test_the_next_run_starts_the_cache_again_and_the_one_after_changes_nothing(cache_down,
                                                                                cache_fleet):
    _, again, after = cache_down
    assert again.returncode == 0 and after.returncode == 0, again.stderr[-3000:]
    address = cache_fleet.host("k-cache").address
    assert changed(again) == [f"Fleet cache | apt-cacher-ng runs on {address}"]
    assert ssh(cache_fleet, "k-cache", "systemctl is-active apt-cacher-ng").strip() == "active"
    assert changed(after) == []


@pytest.fixture(scope="module")
def rebooted(cache_down, cache_fleet):
    """k-cache powered off and booted again: nothing of the cache is set up by a run."""
    cache_fleet.stop("k-cache")
    cache_fleet.start("k-cache")
    return deploy(cache_fleet)


def test_after_a_reboot_the_firewall_is_back_before_the_services_and_nothing_changes(
        rebooted, cache_fleet):
    fleet = cache_fleet
    from roles import cache

    rules = ssh(fleet, "k-cache", f"iptables -w -S {cache.CHAIN}; iptables -w -S INPUT | "
                                  f"grep -e ' -j {cache.CHAIN}$'").splitlines()
    assert rules == cache.firewall_rules({"cache_registry_port": REGISTRY, "cache_apt_port": APT,
                                          "cache_allow": [f"{fleet.host('k-cpu1').address}/32"]})
    for service in cache.PACKAGES:
        assert ssh(fleet, "k-cache", f"systemctl is-active {service}").strip() == "active"
    # The services started after the firewall, as their drop-ins require.
    order = ssh(fleet, "k-cache", "systemctl show -p ActiveEnterTimestampMonotonic "
                                  "sdinfra-cache-firewall docker-registry apt-cacher-ng")
    firewall, *services = [int(line.split("=")[1]) for line in order.split()]
    assert all(firewall <= started for started in services), order
    url = f"http://{fleet.host('k-cache').address}:{REGISTRY}/v2/"
    assert get(fleet, "k-cpu1", url) == "200"
    assert get(fleet, "k-cpu2", url) in ("ConnectionResetError", "URLError")
    assert rebooted.returncode == 0, rebooted.stderr[-3000:]
    assert changed(rebooted) == []
