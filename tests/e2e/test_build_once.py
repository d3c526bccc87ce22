"""
Build once for a fleet (roles.webui.fleet), end to end, on a fleet of its own: o-cpu1 is the
fleet's cache host (roles.cache: Debian's docker-registry on its address, port 5000) and a cpu
web UI host like o-cpu2 and o-cpu3; all three have cache_host set and build the web UI image
from the stand-in internet (testbed/standins/image_build.py: its torch wheel is the build's
large download, counted by the stand-in server).

1. the first run: one host builds the image (the wheel is downloaded once) and pushes it to
   the registry, the two others pull it; every host ends healthy on the same image id, known
   by its own name only; the model is downloaded once, by the cache host, and copied from it;
2. the next run changes nothing and downloads nothing;
3. the registry stops answering (its port closed on the cache host, the service still running,
   so the cache role sees nothing to mend) and a run asks for a new image (another k-diffusion
   commit: a new tag): every host fails, the builder on its push, the others on their pull,
   each with the line naming the registry, and their containers keep running; with the port
   open again the next run converges (the builder pushes the image it built, nothing is
   downloaded again), and the run after it changes nothing.
"""

from __future__ import annotations

import subprocess

import pytest

from testbed import standins
from testbed.hosts import prepare, settings_for, ssh, write_settings
from testbed.standins.image_build import build_sources
from tests.e2e.conftest import booted
from tests.e2e.test_faults import changed, report, site, summary

NAMES = ["o-cpu1", "o-cpu2", "o-cpu3"]
CACHE = "o-cpu1"
PORT = 5000
BUILD = "once for the fleet and push it to"
RUNNING = ("docker inspect -f '{{.Config.Image}} {{.Image}}' "
           "$(docker ps -q --filter label=com.docker.compose.service=cpu)")


@pytest.fixture(scope="module")
def once(tmp_path_factory, stand_ins):
    sources = build_sources(stand_ins.root)
    fleet = booted(tmp_path_factory, "build-once-fleet", NAMES)
    fleet.peer_ports = (PORT, 3142, 3143)  # the cache's registry, apt cache, models (roles.cache)
    with fleet:
        addresses = [h.gateway for h in fleet.hosts] + ["127.0.0.1"]
        with standins.serve(stand_ins.root, addresses) as server:
            prepare(fleet, stand_ins, server, NAMES, build=sources)
            cache = fleet.host(CACHE).address
            data = {name: {**settings_for(fleet, stand_ins, server, name, sources),
                           "cache_host": cache} for name in NAMES}
            data[CACHE].update(cache_serve=True,
                               cache_allow=[f"{fleet.host(n).address}/32" for n in NAMES])
            write_settings(fleet, data)
            server.clear()
            yield fleet, server, sources, data


def wheels(server, sources) -> int:
    """Torch wheel downloads the stand-in server completed: one per build."""
    return sum(1 for r in server.requests
               if r.path in sources.wheel_paths() and r.method == "GET" and r.status == 200)


def builders(result) -> list[str]:
    return [host.split("/")[-1] for op in report(result).get("operations", [])
            if BUILD in op["name"] for host in op["success"]]


def running(fleet) -> dict[str, tuple[str, str]]:
    """Per host: the image name and id its web UI container runs."""
    return {name: tuple(ssh(fleet, name, RUNNING).split()) for name in NAMES}


def registry_port(fleet, closed: bool) -> None:
    """Close (or open again) the registry's port on the cache host, in its own namespace: for
    every client, the cache host itself included (its own connections come in on lo)."""
    rule = ["INPUT", "-p", "tcp", "--dport", str(PORT), "-j", "REJECT",
            "--reject-with", "tcp-reset"]
    subprocess.run(["ip", "netns", "exec", fleet.host(CACHE).netns, "iptables", "-w",
                    "-I" if closed else "-D", *rule], check=True)


@pytest.fixture(scope="module")
def first(once, stand_ins):
    fleet, server, sources, _ = once
    result = site(fleet)
    model = "/" + str(stand_ins.model_path).lstrip("/")
    models = [r.client for r in server.requests if r.path == model and r.method == "GET"]
    return result, wheels(server, sources), models


def test_one_host_builds_the_others_pull_and_all_run_the_same_image(once, first):
    fleet, server, sources, _ = once
    result, downloads, models = first
    assert result.returncode == 0, result.stderr[-4000:]
    assert {n: row[2] for n, row in summary(result).items()} == {n: "healthy" for n in NAMES}
    built = builders(result)
    assert len(built) == 1, built
    assert downloads == 1  # the build's large download, once for the fleet
    # The model, once for the fleet too: the others copied it from the cache host (roles.cache).
    assert models == [fleet.host(CACHE).address], models
    images = running(fleet)
    assert len(set(images.values())) == 1, images  # one name, one id: pulled, not rebuilt
    name, _ = images[CACHE]
    assert name.startswith("sdinfra/webui:cpu-v1.10.1-")
    registry = f"{fleet.host(CACHE).address}:{PORT}"
    for host in NAMES:  # the registry's name was removed again after the push or pull
        assert registry not in ssh(fleet, host, "docker image ls --format '{{.Repository}}'")
    tags = ssh(fleet, "o-cpu2", "python3 -c 'import sys, urllib.request; print(urllib.request."
                                f"urlopen(sys.argv[1]).read().decode())' http://{registry}/v2/"
                                "sdinfra/webui/tags/list")
    assert name.split(":", 1)[1] in tags


@pytest.fixture(scope="module")
def second(once, first):
    fleet, server, sources, _ = once
    server.clear()
    return site(fleet), wheels(server, sources), server.bytes_served


def test_the_next_run_changes_nothing_and_downloads_nothing(once, second):
    result, downloads, sent = second
    assert result.returncode == 0, result.stderr[-4000:]
    assert {n: changed(result, n) for n in NAMES} == {n: [] for n in NAMES}
    assert (downloads, sent) == (0, 0)


@pytest.fixture(scope="module")
def registry_down(once, second):
    fleet, server, sources, data = once
    before = running(fleet)
    for name in NAMES:  # a new image: another commit of k-diffusion in the Dockerfile
        data[name]["webui_k_diffusion_commit"] = "0" * 40
    write_settings(fleet, data)
    server.clear()
    registry_port(fleet, closed=True)
    try:
        failed = site(fleet)
        after_failure = running(fleet)
    finally:
        registry_port(fleet, closed=False)
    again = site(fleet)
    converged = site(fleet)
    return before, failed, after_failure, again, converged, wheels(server, sources)


def test_a_registry_down_fails_each_host_with_the_reason_and_a_rerun_converges(once,
                                                                            registry_down):
    fleet = once[0]
    before, failed, after_failure, again, converged, downloads = registry_down
    registry = f"{fleet.host(CACHE).address}:{PORT}"
    assert failed.returncode != 0
    built = builders(failed)
    assert built == []  # the build ran but its push failed
    out = failed.stderr
    pushed = [n for n in NAMES if f"[{n}] E: " in out and f"could not be pushed to the fleet's "
              f"registry ({registry}, cache_host)" in out.split(f"[{n}] E: ", 1)[1][:400]]
    assert len(pushed) == 1, out[-4000:]  # the builder, on its push
    for name in NAMES:
        if name not in pushed:  # the others, on their pull, naming the builder
            assert (f"[{name}] E: " in out and f"could not be pulled from the fleet's registry "
                    f"({registry}, cache_host): the registry is down or does not have it "
                    f"({pushed[0]} builds and pushes it" in out.split(f"[{name}] E: ", 1)[1]
                    .splitlines()[0]), out[-4000:]
    statuses = {n: row[2] for n, row in summary(failed).items()}
    assert not [n for n, s in statuses.items() if s == "healthy"], statuses
    assert after_failure == before  # every host still runs the image it ran
    assert again.returncode == 0, again.stderr[-4000:]
    assert {n: row[2] for n, row in summary(again).items()} == {n: "healthy" for n in NAMES}
    images = running(fleet)
    assert len(set(images.values())) == 1 and images[CACHE] != before[CACHE], images
    # Built in the failed run, whose builder then untagged what the registry never got; the
    # re-run's builder is the first host to ask (roles.webui.fleet): the same one builds again
    # from Docker's build cache, another downloads again. Either way one image for the fleet.
    assert downloads in (1, 2), downloads
    assert converged.returncode == 0, converged.stderr[-4000:]
    assert {n: changed(converged, n) for n in NAMES} == {n: [] for n in NAMES}
