"""
roles.docker: Docker Engine and Compose, running and enabled.

By default from Docker's own repository, as Docker documents it (deb822 source with a
``Signed-By`` keyring whose fingerprint is checked, conflicting packages removed first); with
``docker_source: distro`` from the distribution's packages. ``/etc/docker/daemon.json`` is merged
key by key, so the nvidia runtime that ``nvidia-ctk`` writes there survives every run.

.. code:: python

    from roles import docker, hostfacts
    docker.install(hostfacts.learn(host))   # or the preflight's record: preflight.learn()
"""

from __future__ import annotations

import json
import os
import shlex
from io import BytesIO

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, deploy, operation
from pyinfra.api.command import QuoteString, make_formatted_string_command
from pyinfra.operations import server, systemd

from roles import apt, cache, distro, parsers, ssh
from roles.parsers import MARKER
from roles.hostfacts import HostFacts
from roles.summary import fail
from roles.settings import host_error, read
from roles.shell import DOCKERD_RUNNING, SHOW
from roles.docker.settings import DOCKER_REPO, SETTINGS

DAEMON_JSON = "/etc/docker/daemon.json"
INVALID = "##sdinfra:invalid-json"  # the key JsonFile answers with, beside the parser's message
# Restarts within systemd's start limit (docker.service: 3 in 60 s on Debian) make the next
# restart fail with "start request repeated too quickly", this run's and the next run's:
# the unit's failed state and its counter are reset first.
RESTART = ("systemctl reset-failed docker.service docker.socket 2>/dev/null; "
           "systemctl restart docker.service")
START = ("systemctl reset-failed docker.service docker.socket 2>/dev/null; "
         "systemctl enable docker.service && systemctl start docker.service")

# What Docker's install page removes before installing docker-ce.
CONFLICTS = ["docker.io", "docker-compose", "docker-compose-v2", "docker-doc", "podman-docker",
             "containerd", "runc"]
DOCKER_CE = ["docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin",
             "docker-compose-plugin"]


# Ubuntu bases whose Compose is v1 only (docker-compose-v2 arrived with 22.04).
COMPOSE_V1_UBUNTU = ("bionic", "focal")


def distro_packages(dist: distro.Distro) -> list[str]:
    """docker.io plus the distribution's Compose: v2 as a plugin on Ubuntu 22.04+, v1 elsewhere."""
    if dist.family == "ubuntu" and dist.ubuntu_codename not in COMPOSE_V1_UBUNTU:
        return ["docker.io", "docker-compose-v2"]
    return ["docker.io", "docker-compose"]


def compose_command(dist: distro.Distro, values: dict | None = None) -> str:
    """How Compose is called on the current host (of distribution ``dist``) once this role has
    run."""
    values = values or read(host, SETTINGS)
    if values["docker_source"] == "docker" or "docker-compose-v2" in distro_packages(dist):
        return "docker compose"
    return "docker-compose"


class JsonFile(FactBase):
    """
    The parsed content of a JSON file, ``{}`` when it is missing or empty.

    .. code:: python

        {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}
    """

    default = dict

    def command(self, path):
        return make_formatted_string_command("cat {0} 2>/dev/null || true", QuoteString(path))

    def process(self, output):
        text = "\n".join(output).strip()
        if not text:
            return {}
        try:
            return json.loads(text)
        except ValueError as error:
            # A hand-edited file with a trailing comma: say which file and what the parser
            # said (install() fails that host only), not a traceback that stops every host.
            return {INVALID: str(error)}


class ServiceState(FactBase):
    """
    Whether a systemd unit runs and is enabled, in one ``systemctl show`` (pyinfra's own facts
    take one command each, and the ``systemd.service`` operation asks them again when the run
    executes). Nothing is known without systemctl.

    .. code:: python

        {"running": True, "enabled": True}
    """

    @staticmethod
    def default():
        return {"running": False, "enabled": False}

    def command(self, service):
        self.unit = f"{service}.service"
        return ("if command -v systemctl >/dev/null 2>&1; then systemctl show --all --property Id "
                f"--property SubState --property UnitFileState {shlex.quote(self.unit)}; fi; true")

    def process(self, output):
        blocks, block = [], {}
        for line in list(output) + [""]:
            if "=" in line:
                key, _, value = line.strip().partition("=")
                block[key] = value
            elif block:
                blocks.append(block)
                block = {}
        unit = getattr(self, "unit", None)
        fields = next((b for b in blocks if b.get("Id") == unit), blocks[0] if blocks else {})
        # What pyinfra's SystemdStatus and SystemdEnabled count as running and enabled.
        return {"running": fields.get("SubState") in ("running", "waiting", "exited",
                                                      "listening", "mounted"),
                "enabled": fields.get("UnitFileState") in ("enabled", "static")}


class UserGroups(FactBase):
    """
    The groups of the named users, for those who have an account: their primary group and the
    others (as pyinfra's ``Users`` fact gives them, without reading every account, its last
    login and its password hash: that fact costs a few processes per account on the host).

    .. code:: python

        {"alice": {"group": "alice", "groups": ["sudo", "docker"]}}
    """

    default = dict

    def command(self, users):
        names = " ".join(shlex.quote(u) for u in users.split())
        # Lines as pyinfra's Users fact prints them: "passwd entry|group|groups|lastlog|password"
        # (the entry's name only), from one `id` per user: its first group is the primary one.
        return (f"for u in {names}; do g=$(id -Gn \"$u\" 2>/dev/null) && "
                'echo "$u|${g%% *}|$g||"; done; true')

    def process(self, output):
        found = {}
        for line in output:
            if line.count("|") < 4:
                continue
            entry, group, groups = line.rsplit("|", 4)[:3]
            name = entry.split(":", 1)[0]
            if name:
                found[name] = {"group": group,
                               "groups": [g for g in groups.split() if g and g != group]}
        return found


# Docker runs and is enabled, seen without systemctl (a heavy process for the host): a live
# dockerd owns the pid file, and the unit is wanted by multi-user.target and not masked. When any
# of it is not so, `systemctl show` says how things are.
DOCKER_UP = (
    f"{DOCKERD_RUNNING} "
    "&& [ -L /etc/systemd/system/multi-user.target.wants/docker.service ] "
    "&& ! [ /etc/systemd/system/docker.service -ef /dev/null ] "
    "&& ! [ /run/systemd/system/docker.service -ef /dev/null ]"
)


class DockerState(FactBase):
    """
    Everything ``install`` reads, in one command: the packages and whether a dpkg run was left
    interrupted (``DpkgPackages``), daemon.json (``JsonFile``), the docker service
    (``ServiceState``) and the users' groups (``UserGroups``), each part printed after a
    ``### NAME`` line (roles.parsers) and read by that fact's own parser. Four facts for one
    round trip.

    .. code:: python

        {"dpkg": {"packages": {...}, "interrupted": False}, "daemon": {...},
         "service": {"running": True, "enabled": True}, "users": {"alice": {...}}}
    """

    MARK = MARKER  # what opens each part's lines: "### dpkg"
    ahead = "docker-state"  # its part's name when read ahead (roles.hostfacts)

    @staticmethod
    def parts(users: str = "") -> list[tuple[str, FactBase, str]]:
        """(name, fact, its command) of each part; tests answer each part as its own fact."""
        dpkg, daemon, service, groups = apt.DpkgPackages(), JsonFile(), ServiceState(), \
            UserGroups()
        # As JsonFile reads it, by the shell itself, ending in the newline nvidia-ctk's
        # daemon.json lacks: the next part's marker must start a line of its own.
        read_daemon = f"{SHOW}; show {shlex.quote(DAEMON_JSON)}"
        return [("dpkg", dpkg, dpkg.command()), ("daemon", daemon, read_daemon),
                ("service", service, f"if {DOCKER_UP}; then printf '%s\\n' Id=docker.service "
                 "SubState=running UnitFileState=enabled; else "
                 f"{service.command('docker')}; fi"),
                ("users", groups, groups.command(users) if users.split() else "true")]

    def command(self, users: str = ""):
        return "; ".join([f"echo '{MARKER}docker-state'"] + [
            f"echo '{MARKER}{name}'; {{ {command}; }}" for name, _, command in self.parts(users)
        ]) + "; true"

    @staticmethod
    def default():
        return {"dpkg": apt.DpkgPackages.default(), "daemon": {},
                "service": ServiceState.default(), "users": {}}

    def process(self, output):
        sections = parsers.sections(output, ("docker-state", *(n for n, _, _ in self.parts())))
        state = self.default()
        for name, fact, _ in self.parts():
            if name in sections:
                state[name] = fact.process(sections[name])
        return state


def merged(current: dict, wanted: dict) -> dict:
    """``current`` with ``wanted`` laid over it, nested mappings merged key by key."""
    result = dict(current)
    for key, value in wanted.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


@operation()
def json_merged(path: str, values: dict, current: dict | None = None):
    """
    Merge keys into a JSON file, keeping every key that is already there.

    ``current``: the file's content as the ``JsonFile`` fact read it while planning, so that
    executing the operation does not read it once more (pyinfra caches no fact). The merge is
    computed from what the file held when the run was planned either way.

    .. code:: python

        json_merged(path="/etc/docker/daemon.json", values={"log-driver": "json-file"})
    """
    if current is None:
        current = host.get_fact(JsonFile, path=path)
    wanted = merged(current, values)
    if wanted != current:
        content = json.dumps(wanted, indent=4, sort_keys=True) + "\n"
        yield f"install -d -m 0755 {shlex.quote(os.path.dirname(path))}"
        yield FileUploadCommand(BytesIO(content.encode()), path)
        yield f"chmod 0644 {shlex.quote(path)}"


def state_ask(values: dict | None = None) -> tuple:
    """The fact install() reads, with its arguments, for the current host (read_ahead)."""
    values = read(host, SETTINGS) if values is None else values
    return DockerState, {"users": " ".join(values["docker_users"])}


@deploy("Docker Engine")
def install(known: HostFacts):
    """Docker Engine and Compose on ``known``'s host (the current one), as its docker_* settings
    say; what the host had is kept in ``known.docker``."""
    ssh.low_latency()
    values = read(host, SETTINGS)
    dist = known.distro

    # One command reads everything below, while planning, and an operation is called only when
    # it changes something: a converged host costs this command (and, with Docker's repository,
    # its key and source), none when the run executes, and no operation (calling one costs the
    # controller a walk of the call stack).
    state = known.docker = known.fact(*state_ask(values))
    if values["docker_source"] == "docker":
        conflicting = [p for p in CONFLICTS if p in state["dpkg"]["packages"]]
        if conflicting:
            apt.finish_interrupted(state["dpkg"], known)
            apt.ensure_packages(name="Remove packages that conflict with docker-ce",
                                packages=conflicting, present=False)
        base = f"{values['docker_repo_url'].rstrip('/')}/{dist.family}"
        suite = dist.ubuntu_codename if dist.family == "ubuntu" else dist.codename
        # Docker's older guide wrote /etc/apt/sources.list.d/docker.list with
        # signed-by=/etc/apt/keyrings/docker.gpg: apt would see it beside docker.sources.
        apt.repository(repo="docker", key_url=f"{base}/gpg",
                       fingerprint=values["docker_key_fingerprint"], uris=base, suites=suite,
                       components="stable", packages=DOCKER_CE, dpkg=state["dpkg"],
                       replaces=(DOCKER_REPO.split("://", 1)[1],
                                 values["docker_repo_url"].rstrip("/").split("://", 1)[-1]),
                       known=known)
    else:
        apt.install(distro_packages(dist), dpkg=state["dpkg"], known=known)

    daemon = state["daemon"]
    if INVALID in daemon:
        fail(f"{DAEMON_JSON} is not valid JSON: {daemon[INVALID]}; fix or remove it")
        return
    # With a fleet cache, its registry is one of Docker's insecure registries (roles.cache).
    options = cache.daemon_options(values["docker_daemon_options"], cache.values_of())
    daemon_changes = merged(daemon, options) != daemon
    if daemon_changes:
        json_merged(name="Merge sdinfra's keys into daemon.json", path=DAEMON_JSON,
                    values=options, current=daemon)
    service = state["service"]
    if not (service["running"] and service["enabled"]):
        server.shell(name="Docker is enabled and running", commands=[START])
    if daemon_changes:
        server.shell(name="Restart Docker for daemon.json", commands=[RESTART])

    users = state["users"]
    for user in values["docker_users"]:
        if user not in users:
            raise host_error(f"docker_users names {user!r}, who has no account there")
        if "docker" not in users[user].get("groups", []):
            server.user(name=f"{user} joins the docker group", user=user, groups=["docker"],
                        append=True)
