"""
How many remote commands deploy/site.py sends a converged host: a ceiling per kind of host, so
that a change that makes a no-change run slower (one more fact, a fact read twice, an operation
that reads its facts again when the run executes) fails here, without timing anything.
bench/fleet.py measures the same on real hosts (``commands_per_host``) and times it.

Each host below is what deploy/site.py leaves behind: its hardware from the preflight fixture case
that picks its backend (accelerator: auto), Docker, the backend's role converged, the compose
stack's files exactly as deploy/site.py renders them for it, its service running. The run is a
real one (``-y``, not ``--dry``) on pyinfra's @fake connector, so the commands of both phases
count: the facts read while planning and whatever the operations ask when they execute. It must
change nothing, or the count means nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from roles import preflight, rocm, webui
from roles.apt import deb822
from roles.docker import DOCKER_CE, merged
from roles.docker.settings import SETTINGS as DOCKER_SETTINGS
from roles.preflight.__main__ import load_dir
from roles.rocm import configfiles
from roles.settings import read
from tests.unit.fakehost import (FIXTURES, OS_RELEASE, PYINFRA, REPO, REPO_KEY_FINGERPRINT,
                                 FakeHost, inventory_source)
from tests.unit.test_nvidia import NVIDIA_CTK_JSON
from tests.unit.test_nvidia import state_output as nvidia_state
from tests.unit.rocm_helpers import DPKG_53, ROCMINFO_GPU
from tests.unit.rocm_helpers import state_output as rocm_state
from tests.unit.test_webui import docker_lines, project_lines

DEPLOY = "deploy/site.py"
USER = "alice"
GIDS = {"video": "44", "render": "110"}
IMAGE = "sdinfra/webui-standin:test"
MODEL = {"name": "standin.safetensors", "url": "http://127.0.0.1:9/standin.safetensors",
         "sha256": "5" * 64}
# The preflight fixture case whose hardware picks each backend.
CASES = {"cpu": "debian12-vm-live", "rocm": "rx6700xt-ryzen3700x", "cuda": "rtx3060-nvidia-smi"}
DAEMON = {s.name: s.default for s in DOCKER_SETTINGS}["docker_daemon_options"]

# The hosts: (name, backend, distribution, where Docker comes from). The first three are the
# end-to-end fleet's (Debian 12, the distribution's Docker); the last has Docker's own signed
# repository, the default, whose key and source are checked on every run.
HOSTS = [("cpu1", "cpu", "debian12", "distro"), ("rocm1", "rocm", "debian12", "distro"),
         ("cuda1", "cuda", "debian12", "distro"), ("cpu2", "cpu", "ubuntu22", "docker")]

# Remote commands a converged host is sent today: one. The preflight fact (which also gives
# /etc/os-release, nvidia-smi's answer and the kernel's kfd lines to the other roles) and, in
# the same command, the facts the roles will read (roles.hostfacts read_ahead, roles.targets
# likely): the docker role's (packages, daemon.json, service, users), the stack's state (its
# image is webui_image, whatever the backend), the GPU role's where the host has that GPU's
# device or tool (accelerator: auto). With Docker's repository also its key and its source
# file. Nothing is sent when the run executes. No headroom: a fact that is no longer read ahead
# costs a round trip, and shows here. Never above 40, the target.
CEILING = {"cpu1": 1, "rocm1": 1, "cuda1": 1, "cpu2": 3}


def preflight_output(case: str, os_key: str | None = None) -> list[str]:
    """What the preflight fact's command prints on the host the case was captured from; with
    ``os_key``, that distribution's /etc/os-release (the host's own, as on a real host). The
    live command notes nvidia-smi's exit status after its output."""
    sections = load_dir(FIXTURES / "preflight" / case)
    # What the live command prints whatever the case's source posted (the rocm case has only
    # rocminfo): uname always, dmesg's kfd lines (none matched here) where an AMD GPU may be.
    sections.setdefault("uname", (FIXTURES / "preflight" / CASES["cpu"] / "uname.txt").read_text())
    if "rocminfo" in sections:
        sections.setdefault("dmesg", "")
    if os_key is not None:
        sections["os-release"] = "\n".join(f'{k}="{v}"' for k, v in OS_RELEASE[os_key].items())
    if "nvidia-smi" in sections and "#! " not in sections["nvidia-smi"]:
        sections["nvidia-smi"] += "\n#! exit 0"
    lines = []
    for name, text in sections.items():
        lines.append(f"### {name}")
        lines.extend(text.splitlines())
    return lines


def settings(backend: str, source: str) -> dict:
    common = {"docker_source": source, "docker_users": [USER], "webui_models": [MODEL],
              "webui_image": IMAGE, "docker_key_fingerprint": REPO_KEY_FINGERPRINT,
              "nvidia_key_fingerprint": REPO_KEY_FINGERPRINT}
    per_backend = {
        "cpu": {},
        "rocm": {"rocm_allow_unsupported_distro": True, "rocm_dkms": False,
                 "rocm_pre_vega": True, "rocm_users": [USER]},
        "cuda": {},
    }
    return {**common, **per_backend[backend]}


def values_of(data: dict, declared) -> dict:
    class Data(dict):
        pass

    class Host:
        pass

    Host.data = Data(data)
    return read(Host(), declared)


def stack_files(backend: str, data: dict) -> dict[str, str]:
    """The stack's files exactly as deploy/site.py renders them for this host."""
    facts = preflight.parse(load_dir(FIXTURES / "preflight" / CASES[backend]))
    decision = preflight.decide(facts)
    assert decision.backend == backend, decision.reasons
    env = {}
    if backend == "rocm":
        env = rocm.container_env(values_of(data, rocm.settings.SETTINGS))
    values = values_of(data, webui.settings.SETTINGS)
    return webui.render_plan(values, decision, env=env, gids=GIDS)


def project_state(backend: str, data: dict) -> list[str]:
    """The ProjectState fact's output on a converged host: every file, the model (trusted from
    its sidecar), the image (webui_image, or the one built, as its compose file names it)."""
    base = "/opt/stable-diffusion"
    rendered = stack_files(backend, data)
    files = {name: (text, "644") for name, text in rendered.items()}
    lines = project_lines(base, files, GIDS)
    model = f"{base}/models/Stable-diffusion/{MODEL['name']}"
    image = yaml.safe_load(rendered["docker-compose.yml"])["services"][backend]["image"]
    assert image == data.get("webui_image", image)
    return lines + [f"trusted={MODEL['sha256']}={model}", f"model={MODEL['name']}"] + \
        docker_lines({backend: image}, images=[image])


def converged(name: str, backend: str, os_key: str, source: str,
              image: str | None = IMAGE) -> FakeHost:
    data = settings(backend, source)
    if image is None:
        del data["webui_image"]
    host = FakeHost(name).os(os_key).set(**data)
    host.respond("sec lspci-nn;", preflight_output(CASES[backend], os_key))
    host.respond("echo '### project-state'", project_state(backend, data))
    if source == "docker":
        family, suite = {"debian12": ("debian", "bookworm"), "ubuntu22": ("ubuntu", "jammy")}[
            os_key]
        base = f"https://download.docker.com/linux/{family}"
        host.package("ca-certificates", "curl", "gpg", *DOCKER_CE)
        host.keyring("/etc/apt/keyrings/docker.asc")
        host.directory("/etc/apt/sources.list.d")
        host.file("/etc/apt/sources.list.d/docker.sources",
                  deb822(base, suite, "stable", "/etc/apt/keyrings/docker.asc"))
    else:
        host.package("docker.io", "docker-compose")
    daemon = merged(DAEMON, NVIDIA_CTK_JSON) if backend == "cuda" else DAEMON
    host.file("/etc/docker/daemon.json", json.dumps(daemon))
    host.service("docker")
    host.user(USER, "docker", *(["video", "render"] if backend == "rocm" else []))
    if backend == "rocm":
        adduser = configfiles.adduser_conf(
            (FIXTURES / "rocm" / "adduser.conf.debian12").read_text())
        host.fact("rocm-state", rocm_state(
            version="5.3.0-63", dpkg=DPKG_53,
            record="release=5.3\ninstaller=5.3.50300-1\nusecases=rocm\ndkms=no",
            adduser=adduser, environment='PATH="/usr/bin"\nROC_ENABLE_PRE_VEGA=1\n',
            groups=tuple(f"{g}:x:{i}:" for g, i in GIDS.items()),
            users={USER: [USER, "video", "render", "docker"]}, rocminfo=ROCMINFO_GPU))
    if backend == "cuda":
        host.fact("nvidia-state", nvidia_state(daemon=daemon))
    return host


def run(hosts: list[FakeHost], deploy: str = DEPLOY, keep: str = ""):
    """Run ``deploy`` for real on the fake hosts: (exit status, JSON output, commands by host).
    ``keep``: where the hosts keep answers (SDINFRA_KEEP_DIR; by default nothing is kept)."""
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "inventory.py"
        inventory.write_text(inventory_source(hosts))
        proc = subprocess.run([PYINFRA, str(inventory), deploy, "-y", "--json", "--debug"],
                              cwd=REPO, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYINFRA_PROGRESS": "off",
                                   "SDINFRA_KEEP_DIR": keep})
    commands: dict[str, list[str]] = {h.name: [] for h in hosts}
    for line in proc.stderr.splitlines():
        found = re.search(r"\[fake\] simulating (command|put_file|get_file) on @fake/([^:]+): "
                          r"(.*)$", line)
        if found:
            commands[found.group(2)].append(f"{found.group(1)}: {found.group(3)}")
    output = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else {}
    return proc.returncode, output, commands, proc.stderr


@pytest.fixture(scope="module")
def result():
    return run([converged(*host) for host in HOSTS])


@pytest.fixture(scope="module")
def result_named():
    """The same hosts with ``accelerator`` naming each one's backend (the end-to-end fleet's and
    the bench's settings): the guess has no shell test to pass."""
    return run([converged(*host).set(accelerator=host[1]) for host in HOSTS])


def at_the_ceiling(result) -> dict[str, list[str]]:
    """The commands of a run that changed nothing and cost each host its ceiling, exactly."""
    returncode, output, commands, log = result
    assert returncode == 0, log[-4000:]
    assert [op["name"] for op in output["results"]["operations"]
            if op["success"] or op["error"]] == []
    assert {name: len(asked) for name, asked in commands.items()} == CEILING
    return commands


def test_a_host_whose_accelerator_names_its_backend_costs_the_same(result_named):
    for name, asked in at_the_ceiling(result_named).items():
        assert "then echo '### ahead-" not in asked[0], name  # nothing guarded
        gpu = {"rocm1": "rocm-state", "cuda1": "nvidia-state"}.get(name)
        for part in ("rocm-state", "nvidia-state"):
            assert (f"echo '### ahead-{part}'; (" in asked[0]) == (part == gpu), (name, part)


@pytest.fixture(scope="module")
def result_built():
    """As ``result_named``, with the image each host built (no webui_image): its tag names the
    torch build, which the deploy knows before the hardware for cpu and rocm, and guesses for
    cuda (the first of gpus.yml's builds, unless a GPU there asks its own)."""
    hosts = []
    for name, backend, os_key, source in HOSTS:
        host = converged(name, backend, os_key, source, image=None)
        hosts.append(host.set(accelerator=backend))
    return run(hosts)


def test_a_host_that_builds_its_image_costs_the_same(result_built):
    for name, asked in at_the_ceiling(result_built).items():
        assert "echo '### ahead-project-state'; (" in asked[0], name
        assert "sdinfra/webui:" in asked[0], name  # the built tag is what it asks for


KEEP = "/run/sdinfra"  # roles.shell.KEEP_DIR's default
KEEPING = "Keep what the host answered, for the next run"


def test_a_run_that_changes_a_host_ends_by_keeping_its_answers_and_a_converged_one_does_not():
    # roles.hostfacts keep_for_next_run: the changes made the kept answers stale, so the host is
    # asked again at the end of the run, and the next run (the user's check) costs one command.
    fresh = FakeHost("fresh").os("debian12").set(**settings("cpu", "distro"), accelerator="cpu")
    fresh.user(USER)
    returncode, output, commands, log = run([fresh, converged(*HOSTS[0])], keep=KEEP)
    assert returncode == 0, log[-4000:]
    done = {op["name"]: op["success"] for op in output["results"]["operations"]
            if op["success"] or op["error"]}
    assert done.pop(KEEPING) == ["@fake/fresh"]
    assert done and all(hosts == ["@fake/fresh"] for hosts in done.values())
    first, last = commands["fresh"][0], commands["fresh"][-1]
    assert f"{KEEP}/preflight" in first and f"{KEEP}/dpkg-list" in first
    asked = first.removeprefix("command: ")
    assert last == f"command: {{ {asked}; }} >/dev/null 2>&1"  # the same asks, output dropped
    assert len(commands["cpu1"]) == CEILING["cpu1"] and f"{KEEP}/preflight" in commands["cpu1"][0]


def test_converged_hosts_change_nothing(result):
    returncode, output, _, log = result
    assert returncode == 0, log[-4000:]
    planned = [(op["name"], op["hosts_with_change"]) for op in output["plan"]
               if op["hosts_with_change"]]
    assert planned == []
    done = output["results"]["operations"]
    assert [(op["name"], op["success"]) for op in done if op["success"]] == []
    assert [(op["name"], op["error"]) for op in done if op["error"]] == []
    assert output["results"]["failed_hosts"] == []


@pytest.mark.parametrize("name", list(CEILING))
def test_remote_commands_of_a_no_change_run_stay_under_the_ceiling(result, name):
    returncode, _, commands, log = result
    assert returncode == 0, log[-4000:]
    assert CEILING[name] <= 40
    asked = commands[name]
    assert asked and len(asked) <= CEILING[name], \
        f"{len(asked)} commands:\n" + "\n".join(c[:140] for c in asked)
    assert not [c for c in asked if not c.startswith("command: ")], "files were transferred"


def test_what_the_preflight_read_is_not_asked_again(result):
    # /etc/os-release comes with the preflight's fact (no LinuxDistribution fact), and nvidia-smi
    # runs once per host and run: in that fact, whose answer the nvidia role reuses.
    _, _, commands, _ = result
    for name, asked in commands.items():
        assert not [c for c in asked if "*-release" in c], name
        assert len([c for c in asked if "nvidia-smi" in c]) == 1, name
        assert "nvidia-smi" in asked[0] and "sec lspci-nn;" in asked[0]


def test_the_roles_facts_are_read_ahead_in_one_command(result):
    _, _, commands, _ = result
    for name, asked in commands.items():
        ahead = [c for c in asked if c.startswith("command: o=$( echo '### ahead';")]
        assert len(ahead) == 1 and asked[0] == ahead[0], name
        parts = [p for p in ("hardware", "docker-state", "project-state")
                 if f"echo '### ahead-{p}'; (" in ahead[0]]
        assert parts == ["hardware", "docker-state", "project-state"], name
        # accelerator: auto - each GPU role's facts where the host has that GPU's device or tool
        assert "if [ -e /dev/kfd ]; then echo '### ahead-rocm-state'; (" in ahead[0], name
        assert ("if command -v nvidia-smi >/dev/null 2>&1; then echo '### ahead-nvidia-state'; ("
                in ahead[0]), name
        # each fact's own command is asked no more
        assert not [c for c in asked if c.startswith(("command: echo '### docker-state'",
                                                       "command: echo '### project-state'"))], name


# --- what makes the count and the time small ----------------------------------------------------


def test_low_latency_turns_nagle_off_on_the_ssh_socket():
    import socket
    from types import SimpleNamespace

    from roles.ssh import low_latency

    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname()) as sock:
        keepalives = []
        transport = SimpleNamespace(sock=sock, set_keepalive=keepalives.append)
        host = SimpleNamespace(connector=SimpleNamespace(
            client=SimpleNamespace(get_transport=lambda: transport)))
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        assert low_latency(host) is True
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        # A host that stops answering is given up: unacknowledged data waits DEAD_AFTER s.
        from roles.ssh import DEAD_AFTER
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == DEAD_AFTER * 1000
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        assert keepalives == [10]
    # Other connectors (no paramiko client) and sockets other than TCP are left alone.
    assert low_latency(SimpleNamespace(connector=SimpleNamespace())) is False
    left, right = socket.socketpair()
    with left, right:
        unix = SimpleNamespace(sock=left)
        host = SimpleNamespace(connector=SimpleNamespace(
            client=SimpleNamespace(get_transport=lambda: unix)))
        assert low_latency(host) is False


def test_project_state_reads_every_path_in_one_pass(tmp_path):
    # The ProjectState command, run here for real: one stat and one sha256sum for all paths,
    # following symbolic links as `test -d`/`test -f` do, names with spaces and "=" kept whole.
    from roles.webui import ProjectState

    (tmp_path / "d=1").mkdir()
    (tmp_path / "empty").write_text("")
    (tmp_path / "a b=c").write_text("x=1\n")
    (tmp_path / "a b=c").chmod(0o600)
    (tmp_path / "link").symlink_to("a b=c")
    (tmp_path / "dlink").symlink_to("d=1")
    names = ["d=1", "empty", "a b=c", "link", "dlink", "missing"]
    paths = [str(tmp_path)] + [str(tmp_path / n) for n in names]
    fact = ProjectState()
    command = fact.command(str(tmp_path), paths, [])
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"})
    state = fact.process(proc.stdout.splitlines())
    digest = hashlib.sha256(b"x=1\n").hexdigest()
    assert state["dirs"] == {str(tmp_path): format(tmp_path.stat().st_mode & 0o777, "o"),
                             str(tmp_path / "d=1"): "755", str(tmp_path / "dlink"): "755"}
    assert state["files"] == {
        str(tmp_path / "empty"): ("644", hashlib.sha256(b"").hexdigest()),
        str(tmp_path / "a b=c"): ("600", digest),
        str(tmp_path / "link"): ("600", digest),
    }


def test_service_state_and_user_groups_read_what_systemctl_and_id_print():
    from roles.docker import ServiceState, UserGroups

    fact = ServiceState()
    assert "docker.service" in fact.command("docker")
    assert fact.process(["Id=docker.service", "SubState=running", "UnitFileState=enabled"]) \
        == {"running": True, "enabled": True}
    assert fact.process(["Id=docker.service", "SubState=dead", "UnitFileState=disabled"]) \
        == {"running": False, "enabled": False}
    assert fact.process([]) == {"running": False, "enabled": False}
    users = UserGroups().process([
        "alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash|alice|alice sudo docker||",
        "bob:x:1001:1001::/home/bob:/bin/sh|bob|bob||",
    ])
    assert users == {"alice": {"group": "alice", "groups": ["sudo", "docker"]},
                     "bob": {"group": "bob", "groups": []}}


def test_a_guess_that_may_be_wrong_claims_no_fleet_build():
    # With the fleet's registry, the first host to ask for a tag builds it for the others
    # (roles.webui.fleet): a cuda host's tag is a guess before its GPU is known (a GPU in
    # gpus.yml may ask its own build), so its state is read once the plan is; cpu's and rocm's
    # builds are known, so theirs are read with the preflight.
    hosts = [converged(name, backend, os_key, source, image=None).set(
        accelerator=backend, cache_host="10.99.0.1") for name, backend, os_key, source in HOSTS[:3]]
    _, _, commands, log = run(hosts)
    for name, asked in commands.items():
        first = next(c for c in asked if "echo '### ahead-hardware'" in c)
        assert ("echo '### ahead-project-state'" in first) == (name != "cuda1"), (name, log[-2000:])
        # read once, for the tag the plan names (cuda1's alone: one fact is not worth a bundle)
        assert len([c for c in asked if "echo '### project-state'" in c]) == 1, name
