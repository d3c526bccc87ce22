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
   the run after that starts the cache again;
4. models (deploy/models.py, a model listed on k-cpu1 and k-cpu2, served by a stand-in
   "internet" server): k-cache fetches it once, k-cpu1 copies it from the cache, k-cpu2 (turned
   away) from upstream; the next run changes nothing and asks upstream nothing; a cache copy
   corrupted in place (its size and mtime kept, so the cache's sidecar still vouches for it) is
   refused on arrival at k-cpu1, which fetches the model from upstream.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from roles import cache
from testbed import standins
from testbed.hosts import INTERNET, reach_internet, run_pyinfra, ssh, write_settings
from tests.e2e.conftest import booted

NAMES = ["k-cache", "k-cpu1", "k-cpu2"]
DOCKER = "deploy/docker.py"
REGISTRY, APT, MODELS = 5000, 3142, 3143
WARNING = "the apt cache http://{}:3142 does not answer"


@pytest.fixture(scope="module")
def cache_fleet(tmp_path_factory):
    fleet = booted(tmp_path_factory, "cache-fleet", NAMES)
    fleet.peer_ports = (REGISTRY, APT, MODELS)
    with fleet:
        address = fleet.host("k-cache").address
        data = {name: {"docker_source": "distro", "cache_host": address} for name in NAMES}
        data["k-cache"].update(cache_serve=True,
                               cache_allow=[f"{fleet.host('k-cpu1').address}/32"])
        write_settings(fleet, data)
        yield fleet


def deploy(fleet, *args: str, file: str = DOCKER):
    started = time.monotonic()
    result = run_pyinfra(fleet, file, "-y", "--json", *args, timeout=900)
    print(f"{file} {' '.join(args)}: exit {result.returncode} in "
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
    rules = ssh(fleet, "k-cache", f"iptables -w -S {cache.CHAIN}; iptables -w -S INPUT | "
                                  f"grep -e ' -j {cache.CHAIN}$'").splitlines()
    assert rules == cache.firewall_rules({"cache_registry_port": REGISTRY, "cache_apt_port": APT,
                                          "cache_models_port": MODELS,
                                          "cache_allow": [f"{fleet.host('k-cpu1').address}/32"]})
    for service in (*cache.PACKAGES, cache.MODELS_SERVICE):
        assert ssh(fleet, "k-cache", f"systemctl is-active {service}").strip() == "active"
    # The services started after the firewall, as their drop-ins require.
    order = ssh(fleet, "k-cache", "systemctl show -p ActiveEnterTimestampMonotonic "
                                  "sdinfra-cache-firewall docker-registry apt-cacher-ng "
                                  f"{cache.MODELS_SERVICE}")
    firewall, *services = [int(line.split("=")[1]) for line in order.split()]
    assert all(firewall <= started for started in services), order
    url = f"http://{fleet.host('k-cache').address}:{REGISTRY}/v2/"
    assert get(fleet, "k-cpu1", url) == "200"
    assert get(fleet, "k-cpu2", url) in ("ConnectionResetError", "URLError")
    assert rebooted.returncode == 0, rebooted.stderr[-3000:]
    assert changed(rebooted) == []


# --- models -------------------------------------------------------------------------------------

MODEL = "fleet.safetensors"
HOST_MODEL = f"/opt/stable-diffusion/models/Stable-diffusion/{MODEL}"


def sha256_on(fleet, name: str, path: str) -> str:
    return ssh(fleet, name, f"sha256sum {path} | cut -c 1-64").strip()


@pytest.fixture(scope="module")
def models(rebooted, cache_fleet, tmp_path_factory):
    """Runs of deploy/models.py, each with the stand-in server's GETs of the model by client
    and the bytes it sent: the first, the next (no change), and one after k-cache's copy was
    corrupted in place and k-cpu1's removed; and each host's sha256 of the model after the
    first."""
    fleet = cache_fleet
    directory = tmp_path_factory.mktemp("models")
    data = os.urandom(3 << 20)
    (directory / MODEL).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    runs = []
    with standins.serve(directory, [h.gateway for h in fleet.hosts]) as server:
        # One URL for the fleet, as on a real one: INTERNET is each host's gateway.
        for name in NAMES:
            reach_internet(fleet, name)
        url = f"http://{INTERNET}:{server.port}/{MODEL}"
        settings = json.loads(fleet.host_data_path.read_text())
        for name in ("k-cpu1", "k-cpu2"):
            settings[name]["webui_models"] = [{"name": MODEL, "url": url, "sha256": digest}]
        write_settings(fleet, settings)

        def run():
            server.clear()
            result = deploy(fleet, file="deploy/models.py")
            gets = sorted(r.client for r in server.requests if r.path == f"/{MODEL}")
            runs.append((result, gets, server.bytes_served))

        run()
        cached = f"/srv/sdinfra-cache/models/{digest}"
        sums = {name: sha256_on(fleet, name, path) for name, path in
                [("k-cache", cached), ("k-cpu1", HOST_MODEL), ("k-cpu2", HOST_MODEL)]}
        run()
        # One byte changed, size and mtime kept: the cache's sidecar still vouches for it, so
        # only the check on arrival can tell.
        ssh(fleet, "k-cache", f"m=$(stat -c %Y {cached}) && printf X | dd of={cached} bs=1 "
                              f"count=1 conv=notrunc 2>/dev/null && touch -d @$m {cached}")
        ssh(fleet, "k-cpu1", f"rm -f {HOST_MODEL}")
        run()
    return digest, sums, runs


def test_a_model_is_fetched_once_by_the_cache_and_copied_to_the_allowed_host(models,
                                                                             cache_fleet):
    fleet = cache_fleet
    digest, sums, [(first, gets, sent), _, _] = models
    assert first.returncode == 0, first.stderr[-4000:]
    # Upstream served the cache host and k-cpu2 (the firewall turns it away from the cache),
    # once each; k-cpu1 got its copy from the cache.
    assert gets == sorted([fleet.host("k-cache").address, fleet.host("k-cpu2").address]), gets
    assert sent == 2 * (3 << 20)
    assert sums == {"k-cache": digest, "k-cpu1": digest, "k-cpu2": digest}
    address = fleet.host("k-cache").address
    log = ssh(fleet, "k-cache", f"journalctl -u {cache.MODELS_SERVICE} --no-pager -o cat")
    assert f'{fleet.host("k-cpu1").address} - - ' in log and f"GET /{digest} " in log, log
    output = first.stdout + first.stderr
    assert f"sdinfra: no verified copy from http://{address}:{MODELS}/{digest}" in output


def test_the_next_model_run_changes_nothing_and_asks_upstream_nothing(models):
    _, _, [_, (second, gets, sent), _] = models
    assert second.returncode == 0, second.stderr[-4000:]
    assert changed(second) == [] and gets == [] and sent == 0


def test_a_corrupted_copy_from_the_cache_is_refused_and_fetched_from_upstream(models,
                                                                              cache_fleet):
    fleet = cache_fleet
    digest, _, [_, _, (third, gets, _)] = models
    assert third.returncode == 0, third.stderr[-4000:]
    assert changed(third) == ["Models of the web UI | Download model fleet.safetensors"]
    address = fleet.host("k-cache").address
    output = third.stdout + third.stderr
    assert f"checksum mismatch for http://{address}:{MODELS}/{digest}" in output, output[-3000:]
    assert gets == [fleet.host("k-cpu1").address]
    assert sha256_on(fleet, "k-cpu1", HOST_MODEL) == digest
