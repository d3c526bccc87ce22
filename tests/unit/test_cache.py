"""roles.cache: the fleet cache host's registry and apt cache, and every host's use of them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid

import pytest

from roles import cache
from roles.apt import deb822
from roles.cache.settings import SETTINGS
from roles.docker.settings import SETTINGS as DOCKER_SETTINGS
from tests.unit.fakehost import FakeHost, fact_output, plan
from tests.unit.test_apt import apt_reads

DEPLOY = "deploy/docker.py"
CACHE = "10.0.0.5"
SERVE = {"cache_host": CACHE, "cache_serve": True, "cache_allow": ["10.0.0.0/24"]}
VALUES = {**{s.name: s.default for s in SETTINGS}, **SERVE}
ADDRESSES = ["1: lo    inet 127.0.0.1/8 scope host lo",
             f"2: eth0    inet {CACHE}/24 brd 10.0.0.255 scope global eth0"]
SERVED = ["iptables", *cache.MODELS_PACKAGES, *cache.PACKAGES]  # a cache host's packages
DAEMON = {s.name: s.default for s in DOCKER_SETTINGS}["docker_daemon_options"]
UNITS = [line for unit in cache.UNITS for line in
         (f"Id={unit}.service", f"SubState={'exited' if 'firewall' in unit else 'running'}",
          "UnitFileState=enabled", "")]


def state(values: dict, files: dict | None = None, packages=(), units=UNITS, firewall=None,
          addresses=ADDRESSES, models=()) -> list[str]:
    """What CacheState prints on a host: ``files`` (path -> (text, executable)) default to
    every file the role writes, as it writes them."""
    files = cache.wanted_files(values) if files is None else files
    parts = []
    for path, (text, executable) in files.items():
        parts.append(("file", [path, *text.splitlines()]))
        if executable:
            parts.append(("exec", [path]))
    if values["cache_serve"]:
        parts += [("dpkg", [f"ii  {name}  1.0  amd64  stand-in" for name in packages]),
                  ("units", units),
                  ("firewall", cache.firewall_rules(values) if firewall is None else firewall),
                  ("addresses", addresses), ("models", list(models))]
    return fact_output("cache-state", *parts)


def converged_docker(host: FakeHost, daemon: dict) -> FakeHost:
    host.package("docker.io", "docker-compose", "iptables", *cache.MODELS_PACKAGES,
                 *cache.PACKAGES)
    host.file("/etc/docker/daemon.json", json.dumps(daemon))
    return host.service("docker")


def cache_host(**changes) -> FakeHost:
    data = {**SERVE, "docker_source": "distro", **changes}
    return FakeHost("c").os("debian12").set(**data)


def client(**changes) -> FakeHost:
    return FakeHost("h").os("debian12").set(**{"docker_source": "distro", "cache_host": CACHE,
                                               **changes})


def values(**changes) -> dict:
    return {**VALUES, **changes}


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize("settings,line", [
    ({"cache_host": "10.0.0.300"}, "host @fake/h: cache_host = '10.0.0.300': allowed is an IPv4 address"),
    ({"cache_host": "cache.lan"}, "host @fake/h: cache_host = 'cache.lan': allowed is an IPv4 address"),
    ({"cache_host": "0.0.0.0"}, "host @fake/h: cache_host = '0.0.0.0': allowed is an IPv4 address of "
                                "the cache host that the other hosts reach"),
    ({"cache_host": "127.0.0.1"}, "host @fake/h: cache_host = '127.0.0.1': allowed is an IPv4 address "
                                  "of the cache host"),
    ({"cache_host": CACHE, "cache_serve": True},
     "host @fake/h: cache_serve = True needs cache_allow"),
    ({"cache_serve": True, "cache_allow": ["10.0.0.0/24"]},
     "host @fake/h: cache_serve = True needs cache_host"),
    ({"cache_host": CACHE, "cache_allow": ["0.0.0.0/0"]},
     "host @fake/h: cache_allow = ['0.0.0.0/0']: allowed is a list of IPv4 networks; entry 1 "
     "('0.0.0.0/0') is not a network of /8 or longer"),
    ({"cache_host": CACHE, "cache_allow": ["10.0.0.0/33"]},
     "host @fake/h: cache_allow = ['10.0.0.0/33']: allowed is a list of IPv4 networks; entry 1"),
    ({"cache_host": CACHE, "cache_allow": "10.0.0.0/24"},
     "host @fake/h: cache_allow = '10.0.0.0/24': allowed is a list of IPv4 networks"),
    ({"cache_host": CACHE, "cache_apt_port": 5000},
     "host @fake/h: cache_registry_port and cache_apt_port are both 5000"),
    ({"cache_host": CACHE, "cache_models_port": 3142},
     "host @fake/h: cache_apt_port and cache_models_port are both 3142"),
    ({"cache_dir": "/var"}, "host @fake/h: cache_dir = '/var': allowed is an absolute, normalised path"),
    ({"cache_serve": "yes"}, "host @fake/h: cache_serve = 'yes': allowed is true or false"),
    ({"cache_hots": CACHE}, "host @fake/h: cache_hots: no such setting (did you mean cache_host?)"),
])
def test_bad_settings_are_refused_naming_host_and_setting(settings, line):
    result = plan(DEPLOY, [FakeHost("h").os("debian12").set(**settings),
                           FakeHost("ok").os("debian12").set(cache_host=CACHE)])
    assert result.returncode != 0
    assert "bad settings, no host was changed" in result.output
    assert line in result.output, result.output[-3000:]
    assert "host @fake/ok:" not in result.output


def test_without_cache_host_nothing_is_asked_or_written():
    result = plan(DEPLOY, [FakeHost("h").os("debian12").set(docker_source="distro")])
    assert result.returncode == 0, result.output
    assert not [c for c in result.changes("h") if "cache" in c.lower()]
    assert not [c for c in result.commands["h"] if "cache-state" in c]
    assert cache.daemon_options(DAEMON, values(cache_host="")) == DAEMON


# --- the cache host -----------------------------------------------------------------------------


def test_a_fresh_cache_host_gets_its_firewall_and_config_before_the_services_are_installed():
    host = cache_host().fact("cache-state", state(values(), files={}, units=[]))
    result = plan(DEPLOY, [host])
    assert result.returncode == 0, result.output
    changes = [c.removeprefix("Fleet cache | ") for c in result.changes("c")
               if c.startswith("Fleet cache")]
    install = changes.index("Install docker-registry apt-cacher-ng")
    before = changes[:install]
    assert before[:2] == ["Refresh package lists", "Install iptables python3"]
    for step in [f"Write {cache.FIREWALL_SCRIPT}", f"Write {cache.FIREWALL_UNIT}",
                 f"Write {cache.REGISTRY_CONFIG}", "Reload systemd's units",
                 "Firewall of the fleet cache (only cache_allow)",
                 f"Write {cache.MODELS_UNIT}",
                 *[f"Write {path}" for path in cache.DROP_INS.values()]]:
        assert step in before, step
    assert changes[install + 1:] == [
        f"docker-registry runs on {CACHE}", f"apt-cacher-ng runs on {CACHE}",
        f"sdinfra-cache-models runs on {CACHE}", f"Write {cache.APT_CONF}",
        f"Write {cache.PROXY_SCRIPT}"]
    assert changes.count("Refresh package lists") == 1


def test_a_converged_cache_host_and_client_change_nothing_for_one_command_each():
    daemon = cache.daemon_options(DAEMON, VALUES)
    assert daemon["insecure-registries"] == [f"{CACHE}:5000"]
    served = converged_docker(cache_host(), daemon).fact(
        "cache-state", state(values(), packages=SERVED))
    used = converged_docker(client(), daemon).fact(
        "cache-state", state(values(cache_serve=False, cache_allow=[])))
    result = plan(DEPLOY, [served, used])
    assert result.returncode == 0, result.output
    assert result.changes("c") == [] and result.changes("h") == []
    for name in ("c", "h"):
        assert len([c for c in result.commands[name] if "cache-state" in c]) == 1


@pytest.mark.parametrize("what,changed", [
    ("firewall", ["Firewall of the fleet cache (only cache_allow)"]),
    ("units", ["apt-cacher-ng runs on 10.0.0.5"]),
    ("registry", [f"Write {cache.REGISTRY_CONFIG}", "Reload systemd's units",
                  "docker-registry runs on 10.0.0.5"]),
])
def test_what_drifted_on_the_cache_host_is_put_back_alone(what, changed):
    daemon = cache.daemon_options(DAEMON, VALUES)
    kwargs = {"packages": SERVED}
    if what == "firewall":  # someone flushed the chain
        kwargs["firewall"] = [f"-N {cache.CHAIN}"]
    elif what == "units":
        failed = UNITS.index("Id=apt-cacher-ng.service") + 1
        kwargs["units"] = [*UNITS[:failed], "SubState=failed", *UNITS[failed + 1:]]
    else:
        files = cache.wanted_files(values())
        files[cache.REGISTRY_CONFIG] = ("version: 0.1\n", False)
        kwargs["files"] = files
    host = converged_docker(cache_host(), daemon).fact("cache-state", state(values(), **kwargs))
    result = plan(DEPLOY, [host])
    assert result.returncode == 0, result.output
    assert [c.removeprefix("Fleet cache | ") for c in result.changes("c")] == changed


def test_a_cache_host_whose_address_is_not_cache_host_fails_saying_so():
    host = cache_host().fact("cache-state", state(values(), files={}, addresses=ADDRESSES[:1]))
    result = plan(DEPLOY, [host])
    assert result.changes("c")[0] == "Fleet cache | Stop this host"
    assert not [c for c in result.changes("c") if "Install docker-registry" in c]


def test_the_services_listen_on_cache_host_only_with_their_data_under_cache_dir():
    mine = values(cache_dir="/data/cache", cache_registry_port=5001, cache_apt_port=3143)
    registry = cache.registry_config(mine)
    assert "  addr: 10.0.0.5:5001\n" in registry
    assert "    rootdirectory: /data/cache/registry\n" in registry
    assert "htpasswd" not in registry
    acng = cache.drop_in("apt-cacher-ng", mine)
    assert ("ExecStart=\nExecStart=/usr/sbin/apt-cacher-ng -c \"/etc/apt-cacher-ng\" "
            "ForeGround=1 BindAddress=10.0.0.5 Port=3143 CacheDir=/data/cache/apt\n") in acng
    for service in cache.PACKAGES:
        text = cache.drop_in(service, mine)
        # Never started without the firewall; its data directory is its own user's.
        assert "Requires=sdinfra-cache-firewall.service\n" in text
        assert "After=sdinfra-cache-firewall.service\n" in text
        assert f"-o {service} -g {service} -m 0750 /data/cache/" in text


needs_netns = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("iptables")
                                 or not shutil.which("ip"), reason="needs root and iptables")


@needs_netns
def test_the_firewall_script_sets_exactly_the_rules_the_fact_expects_and_can_repeat(tmp_path):
    # In a network namespace of its own: iptables there is empty and changes nothing else.
    mine = values(cache_allow=["10.77.1.2", "10.77.3.7/24"])
    script = tmp_path / "firewall"
    script.write_text(cache.firewall_script(mine))
    netns = f"sdinfra-test-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        def run(command):
            return subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", command],
                                  capture_output=True, text=True, check=True).stdout
        show = (f"iptables -w -S {cache.CHAIN}; iptables -w -S INPUT | "
                f"grep -e ' -j {cache.CHAIN}$'")
        run(f"sh {script}")
        assert run(show).splitlines() == cache.firewall_rules(mine)
        # Again, after the ports changed once (a stale jump) and with someone's rule in the chain.
        run(f"iptables -w -I INPUT 1 -p tcp -m multiport --dports 5001,3142 -j {cache.CHAIN}; "
            f"iptables -w -A {cache.CHAIN} -j ACCEPT; sh {script}; sh {script}")
        assert run(show).splitlines() == cache.firewall_rules(mine)
        assert "-s 10.77.3.0/24" in run(show)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


# --- every host with a cache --------------------------------------------------------------------


def proxy_answer(tmp_path, mine: dict, url: str) -> subprocess.CompletedProcess:
    script = tmp_path / "apt-proxy"
    script.write_text(cache.proxy_script(mine))
    return subprocess.run(["sh", str(script), url], capture_output=True, text=True, timeout=10)


def test_apts_proxy_is_the_cache_while_it_answers_else_direct_with_a_warning(tmp_path):
    # The script is shell; cache_host may not be 127.0.0.1 in a setting, but here it listens.
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        mine = values(cache_host="127.0.0.1", cache_apt_port=port)
        up = proxy_answer(tmp_path, mine, "http://deb.debian.org/debian/dists/bookworm/InRelease")
        assert up.stdout == f"http://127.0.0.1:{port}\n" and up.stderr == ""
        # The cache's own URLs (a mirror list's first entry) are fetched from it directly.
        own = proxy_answer(tmp_path, mine, f"http://127.0.0.1:{port}/HTTPS///x/dists/y")
        assert own.stdout == "DIRECT\n"
        # A repository on another port than 80 is fetched directly: apt-cacher-ng would answer
        # 403 (AllowUserPorts: 80), and apt fails on a proxy's 403.
        for other in ("http://10.0.0.9:8080/nvidia/dists/x/InRelease", "http://[fe80::1]:81/d/x"):
            answer = proxy_answer(tmp_path, mine, other)
            assert answer.stdout == "DIRECT\n" and answer.stderr == "", other
        for same in ("http://deb.debian.org:80/debian/dists/y", "http://[fe80::1]/debian/dists/y"):
            assert proxy_answer(tmp_path, mine, same).stdout == f"http://127.0.0.1:{port}\n"
    down = proxy_answer(tmp_path, mine, "http://deb.debian.org/debian/dists/bookworm/InRelease")
    assert down.returncode == 0 and down.stdout == "DIRECT\n"
    assert down.stderr == (f"W: sdinfra: the apt cache http://127.0.0.1:{port} does not answer: "
                           "fetching http://deb.debian.org/debian directly\n")


def test_apt_conf_names_the_script_as_apt_reads_it(tmp_path):
    conf = tmp_path / "30sdinfra-cache"
    conf.write_text(cache.apt_conf())
    found = subprocess.run(["apt-config", "-c", str(conf), "dump", "Acquire::http"],
                           capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip("needs apt-config")
    assert f'Acquire::http::Proxy-Auto-Detect "{cache.PROXY_SCRIPT}";' in found.stdout


def test_https_repositories_go_through_a_mirror_list_with_the_same_signed_by():
    host = client(docker_source="docker").fact("cache-state", state(values(cache_serve=False)))
    result = plan(DEPLOY, [host])
    assert result.returncode == 0, result.output
    changes = result.changes("h")
    repo = "Docker Engine | Signed apt repository | "
    mirror = changes.index(f"{repo}Mirror list of the docker repository (the fleet cache first)")
    assert mirror < changes.index(f"{repo}Source of the docker repository")
    listed = cache.mirror_list(values(), "https://download.docker.com/linux/debian")
    # In this order, always: a mirror without a priority is picked at random.
    assert listed.splitlines()[1:] == [
        "http://HTTPS///download.docker.com/linux/debian\tpriority:1",
        "https://download.docker.com/linux/debian\tpriority:2"]
    # Plain http repositories need none: the proxy takes them; nor does a host without cache.
    assert cache.mirror_list(values(), "http://deb.debian.org/debian") is None
    assert cache.mirror_list(values(cache_host=""), "https://x.org/debian") is None


@pytest.mark.skipif(not shutil.which("apt-cache"), reason="needs apt")
def test_apt_reads_a_source_through_the_mirror_list(tmp_path):
    etc = tmp_path / "etc"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text("")
    mirrors = tmp_path / "docker.list"
    mirrors.write_text(cache.mirror_list(values(), "https://download.docker.com/linux/debian"))
    (etc / "sources.list.d/docker.sources").write_text(deb822(
        f"mirror+file:{mirrors}", "bookworm", "stable", "/etc/apt/keyrings/docker.asc"))
    read = apt_reads(etc)
    assert read.returncode == 0 and read.stderr == "", read.stderr


def test_docker_lists_exactly_the_cache_registry_as_insecure_keeping_the_users_entries():
    mine = values(cache_registry_port=5001)
    options = {**DAEMON, "insecure-registries": ["registry.lan:5000"]}
    assert cache.daemon_options(options, mine)["insecure-registries"] == [
        "registry.lan:5000", f"{CACHE}:5001"]
    once = cache.daemon_options(DAEMON, mine)
    assert cache.daemon_options(once, mine) == once
    result = plan(DEPLOY, [converged_docker(client(), DAEMON).fact(
        "cache-state", state(values(cache_serve=False)))])
    assert result.changes("h") == ["Docker Engine | Merge sdinfra's keys into daemon.json",
                                   "Docker Engine | Restart Docker for daemon.json"]


def test_a_run_that_runs_apt_warns_on_the_controller_when_the_cache_does_not_answer():
    # A real run (-y) on the fake connector: the check runs when apt-get update does.
    from tests.unit.test_command_count import run

    quiet = client().fact("cache-state", state(values(cache_serve=False)))
    down = client().fact("cache-state", state(values(cache_serve=False)))
    down.name = "d"
    down.respond("exec 3<>/dev/tcp/", ["down"])
    quiet.respond("exec 3<>/dev/tcp/", ["up"])
    returncode, _, commands, log = run([quiet, down], deploy=DEPLOY)
    assert returncode == 0, log[-3000:]
    warned = [line for line in log.splitlines() if "does not answer" in line]
    assert warned == [f"    [@fake/d] the apt cache http://{CACHE}:3142 does not answer: apt on "
                      "this host fetches directly (cache_host; on the cache host see that "
                      "apt-cacher-ng runs and cache_allow lets this host in)"], warned
    check = [c for c in commands["h"] if "exec 3<>/dev/tcp/" in c]
    assert len(check) == 1 and check[0].startswith(f"command: [ -f {cache.APT_CONF} ] || exit 0")


def test_without_the_cache_again_the_repository_is_read_from_its_own_url():
    from tests.unit.test_docker import converged as docker_converged

    host = docker_converged("h", "debian12")
    host.file("/etc/apt/sources.list.d/docker.sources", deb822(
        f"mirror+file:{cache.mirror_path('docker')}", "bookworm", "stable",
        "/etc/apt/keyrings/docker.asc"), replace=True)
    result = plan(DEPLOY, [host])
    assert result.returncode == 0, result.output
    assert result.changes("h") == [
        "Docker Engine | Signed apt repository | Source of the docker repository",
        "Docker Engine | Signed apt repository | Install missing packages | Refresh package lists"]


@pytest.mark.skipif(not (shutil.which("apt-get") and shutil.which("apt-ftparchive")),
                    reason="needs apt-get and apt-ftparchive")
def test_apt_asks_the_cache_first_and_the_repository_when_the_cache_is_down(tmp_path):
    # apt itself, offline, with the proxy script: two loopback servers stand for the cache
    # (a proxy serving http://HTTPS///example.org/debian as apt-cacher-ng does) and the
    # repository.
    import functools
    import http.server
    import threading
    import urllib.parse

    repo = tmp_path / "repo"
    (repo / "dists/stable/main/binary-amd64").mkdir(parents=True)
    (repo / "dists/stable/main/binary-amd64/Packages").write_text("")
    release = subprocess.run(["apt-ftparchive", "-o", "APT::FTPArchive::Release::Suite=stable",
                              "release", str(repo / "dists/stable")], capture_output=True,
                             text=True, check=True).stdout
    (repo / "dists/stable/Release").write_text(release)
    # As a proxy the cache is asked for http://HTTPS///example.org/debian/...: the path
    # SimpleHTTPRequestHandler serves of it is example.org/debian/...
    (tmp_path / "cache/example.org").mkdir(parents=True)
    (tmp_path / "cache/example.org/debian").symlink_to(repo)
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor/debian").symlink_to(repo)

    def serve(directory, address):
        asked = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def translate_path(self, path):  # a proxy's request names the whole URL
                return super().translate_path(urllib.parse.urlsplit(path).path)

            def log_request(self, code="-", size="-"):
                asked.append((self.path.split("/dists/", 1)[-1], int(code)))

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(directory))
        server = http.server.ThreadingHTTPServer((address, 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, asked

    # Two addresses, as a cache and a vendor have (apt's http method keeps its connection
    # state per host).
    cache_server, cache_asked = serve(tmp_path / "cache", "127.0.0.1")
    vendor_server, vendor_asked = serve(tmp_path / "vendor", "127.0.0.2")
    port = cache_server.server_address[1]
    listed = cache.mirror_list(values(cache_host="127.0.0.1", cache_apt_port=port),
                               "https://example.org/debian").replace(
        "https://example.org/debian", f"http://127.0.0.2:{vendor_server.server_address[1]}/debian")
    (tmp_path / "mirrors.list").write_text(listed)
    proxy = tmp_path / "apt-proxy"
    proxy.write_text(cache.proxy_script(values(cache_host="127.0.0.1", cache_apt_port=port)))
    proxy.chmod(0o755)
    (tmp_path / "sources.list").write_text(
        f"deb [trusted=yes] mirror+file:{tmp_path}/mirrors.list stable main\n")
    state = tmp_path / "state"
    (state / "lists/partial").mkdir(parents=True)

    def update():
        subprocess.run(["rm", "-rf", str(state / "lists"), str(state / "cache")])
        (state / "lists/partial").mkdir(parents=True)
        return subprocess.run(
            ["apt-get", "update", "-o", f"Dir::Etc::SourceList={tmp_path}/sources.list",
             "-o", f"Dir::Etc::SourceParts={tmp_path}/none",
             "-o", f"Dir::State::Lists={state}/lists",
             "-o", f"Dir::Cache={state}/cache", "-o", "Dir::State::status=/dev/null",
             "-o", "APT::Sandbox::User=root", "-o", f"Acquire::http::Proxy-Auto-Detect={proxy}",
             # The repository stands in for one on https, which apt's http proxy never takes.
             "-o", "Acquire::http::Proxy::127.0.0.2=DIRECT",
             # apt retries a failed fetch (here: the name HTTPS that does not resolve) before
             # the next mirror, waiting 1, 2, 4 s: about 20 s for this update; not here.
             "-o", "Debug::NoLocking=1", "-o", "Acquire::Retries=0"],
            capture_output=True, text=True, timeout=60)

    try:
        for _ in range(3):  # were the order random, three runs would show it
            first = update()
            assert first.returncode == 0, first.stdout + first.stderr
        served = {path for path, code in cache_asked if code == 200}
        assert "stable/Release" in served, cache_asked
        # The repository is asked only what the cache did not have (no InRelease here).
        assert vendor_asked and not served & {path for path, _ in vendor_asked}, vendor_asked
        cache_server.shutdown()
        cache_server.server_close()
        vendor_asked.clear()
        down = update()
        assert down.returncode == 0 and "E:" not in down.stderr, down.stdout + down.stderr
        assert ("stable/Release", 200) in vendor_asked, down.stdout + down.stderr
    finally:
        vendor_server.shutdown()


# --- AMD's sources, which amdgpu-install writes itself ------------------------------------------

AMD_LISTS = {
    "amdgpu.list": "deb [arch=amd64 signed-by=/etc/apt/keyrings/rocm.gpg] "
                   "https://repo.radeon.com/amdgpu/5.3/ubuntu jammy main\n"
                   "#deb-src [arch=amd64 signed-by=/etc/apt/keyrings/rocm.gpg] "
                   "https://repo.radeon.com/amdgpu/5.3/ubuntu jammy main\n",
    "rocm.list": "deb [arch=amd64 signed-by=/etc/apt/keyrings/rocm.gpg] "
                 "https://repo.radeon.com/rocm/apt/5.3 jammy main\n",
}


def test_amds_sources_go_through_mirror_lists_keeping_their_signed_by(tmp_path):
    etc = tmp_path / "etc"
    parts, mirrors = etc / "sources.list.d", tmp_path / "mirrors"
    parts.mkdir(parents=True)
    (etc / "sources.list").write_text("")
    for name, text in AMD_LISTS.items():
        (parts / name).write_text(text)
    command = cache.lists_through_mirrors(values(), "/etc/apt/sources.list.d/amdgpu*.list "
                                          "/etc/apt/sources.list.d/rocm*.list")
    command = command.replace(cache.MIRRORS, str(mirrors)).replace("/etc/apt/", f"{etc}/")
    from roles.rocm.facts import APT_URIS

    def uris():  # what the rocm role's fact reads of them: active deb lines only
        return subprocess.run(["sh", "-c", APT_URIS.replace("/etc/apt/", f"{etc}/")],
                              capture_output=True, text=True).stdout.split()

    assert uris() == ["https://repo.radeon.com/amdgpu/5.3/ubuntu",
                      "https://repo.radeon.com/rocm/apt/5.3"]
    for _ in range(2):  # the second run finds no https URL left and changes nothing
        subprocess.run(["sh", "-c", command], check=True)
        assert (parts / "amdgpu.list").read_text() == (
            "deb [arch=amd64 signed-by=/etc/apt/keyrings/rocm.gpg] "
            f"mirror+file:{mirrors}/amdgpu-1.list jammy main\n"
            + AMD_LISTS["amdgpu.list"].splitlines(keepends=True)[1])
        assert (parts / "rocm.list").read_text() == (
            "deb [arch=amd64 signed-by=/etc/apt/keyrings/rocm.gpg] "
            f"mirror+file:{mirrors}/rocm-1.list jammy main\n")
    assert (mirrors / "rocm-1.list").read_text() == cache.mirror_list(
        values(), "https://repo.radeon.com/rocm/apt/5.3")
    assert sorted(p.name for p in mirrors.iterdir()) == ["amdgpu-1.list", "rocm-1.list"]
    assert uris() == []  # so the next run leaves them alone
    if shutil.which("apt-cache"):
        read = apt_reads(etc)
        assert read.returncode == 0 and read.stderr == "", read.stderr
    assert cache.lists_through_mirrors(values(cache_host=""), "/x/*.list") == ""


def test_the_rocm_role_sends_amds_https_sources_through_the_cache_once():
    from roles.rocm import configfiles
    from tests.unit.rocm_helpers import (DEPLOY as ROCM_DEPLOY, DPKG_53, ROCMINFO_GPU,
                                         UBUNTU_ADDUSER, converged, fresh, rocm_changes,
                                         state_output)

    step = "AMD's apt sources go through the fleet cache"
    assert step in rocm_changes(plan(ROCM_DEPLOY, [fresh(cache_host=CACHE)]))
    for uris, expected in ((["https://repo.radeon.com/amdgpu/5.3/ubuntu"], [step]),
                           ([f"mirror+file:{cache.MIRRORS}/amdgpu-1.list"], [])):
        host = converged(cache_host=CACHE)
        host.fact("rocm-state", state_output(
            version="5.3.0-63", dpkg=DPKG_53, adduser=configfiles.adduser_conf(UBUNTU_ADDUSER),
            users={"sd": ["sd", "video", "render"]}, rocminfo=ROCMINFO_GPU, apt_uris=uris))
        assert rocm_changes(plan(ROCM_DEPLOY, [host])) == expected


# --- models -------------------------------------------------------------------------------------

MODELS_DEPLOY = "deploy/models.py"
SHA = "a" * 64
MODEL = {"name": "m.safetensors", "url": "https://example.org/m.safetensors", "sha256": SHA}
KEPT = f"/srv/sdinfra-cache/models/{SHA}"


def served_models(models=()) -> FakeHost:
    daemon = cache.daemon_options(DAEMON, VALUES)
    return converged_docker(cache_host(), daemon).fact(
        "cache-state", state(values(), packages=SERVED, models=models))


def test_the_cache_host_fetches_each_model_of_its_fleet_once_before_any_host_downloads():
    other = {**MODEL, "name": "o.safetensors", "sha256": "b" * 64}
    hosts = [served_models(), client(webui_models=[MODEL]),
             FakeHost("h2").os("debian12").set(cache_host=CACHE, webui_models=[MODEL]),
             # Another fleet's host (another cache): its models are not this cache's.
             FakeHost("x").os("debian12").set(cache_host="10.0.0.6", webui_models=[other])]
    result = plan(MODELS_DEPLOY, hosts)
    assert result.returncode == 0, result.output
    assert result.changes("c") == ["Fleet cache | Fetch model m.safetensors once for the fleet"]
    fetched = [c for c in result.commands["c"] if "### models" in c]
    assert len(fetched) == 1 and f"set -- {KEPT};" in fetched[0]
    assert "b" * 64 not in fetched[0]
    # One operation per call site, whatever each host names it (pyinfra's op_hash).
    names = [set(op["names"]) for op in result.ops]
    place = {name: number for number, found in enumerate(names) for name in found}
    assert (place["Fleet cache | Fetch model m.safetensors once for the fleet"]
            < place["Models of the web UI | Download model m.safetensors"])
    download = result.ops[place["Models of the web UI | Download model m.safetensors"]]
    assert {"@fake/h", "@fake/h2", "@fake/x"} == set(download["hosts_with_change"])


@pytest.mark.parametrize("models,changes", [
    ([f"trusted={SHA}={KEPT}"], []),
    ([f"hashed={SHA}=12 1700000000={KEPT}"],
     ["Fleet cache | Record the checksum of the fleet's m.safetensors"]),
    ([f"hashed={'c' * 64}=12 1700000000={KEPT}"],
     ["Fleet cache | Fetch model m.safetensors once for the fleet"]),
])
def test_a_kept_model_is_trusted_recorded_or_fetched_again(models, changes):
    result = plan(MODELS_DEPLOY, [served_models(models), client(webui_models=[MODEL])])
    assert result.returncode == 0, result.output
    assert result.changes("c") == changes
    assert len([c for c in result.commands["c"] if "cache-state" in c]) == 1


def test_the_models_are_served_read_only_on_cache_host_behind_the_firewall():
    mine = values(cache_dir="/data/cache", cache_models_port=8001)
    unit = cache.models_unit(mine)
    assert ("ExecStart=/usr/bin/python3 -m http.server --bind 10.0.0.5 --directory "
            "/data/cache/models 8001\n") in unit
    for line in ("DynamicUser=yes", "ProtectSystem=strict", "Requires=sdinfra-cache-firewall",
                 "After=sdinfra-cache-firewall.service"):
        assert line in unit, line
    assert "--dports 5000,3142,8001 -j SDINFRA-CACHE" in cache.firewall_script(mine)
    assert cache.models_url(mine) == "http://10.0.0.5:8001"


def test_a_model_listed_twice_is_fetched_from_the_url_the_cache_host_lists():
    """On a fleet whose hosts name a model by different URLs (a mirror each), the cache host
    fetches from its own: another host's may be one only that host reaches."""
    from types import SimpleNamespace

    def listed(name, url, cache_host=CACHE):
        return SimpleNamespace(name=name, data={"cache_host": cache_host, "webui_models": [
            {**MODEL, "url": url}]})

    inventory = [listed("h1", "http://mirror-1/m"), listed("c", "http://mirror-c/m"),
                 listed("x", "http://mirror-x/x", cache_host="10.0.0.6")]
    assert cache.fleet_models(values(), inventory, "c") == {
        SHA: {**MODEL, "url": "http://mirror-c/m"}}
    assert cache.fleet_models(values(), inventory[:1] + inventory[2:], "c") == {
        SHA: {**MODEL, "url": "http://mirror-1/m"}}
