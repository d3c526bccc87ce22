"""
Run a deploy file against pyinfra's ``@fake`` connector and read back its plan.

A ``FakeHost`` describes what a host looks like (distribution, packages, files, services, users);
it turns that into the ``fake_responses`` the connector answers fact commands with. ``plan()``
runs the real ``pyinfra`` command line in dry mode on an inventory of such hosts, exactly as a
user would, and returns which operations would change which host, the remote commands each host
was asked, and what pyinfra printed.

    host = FakeHost("u22").os("ubuntu22")
    result = plan("deploy/docker.py", [host])
    assert "Docker Engine | Docker is enabled and running" in result.changes("u22")

A fact that reads several things in one command (roles.parsers: each part after a ``### NAME``
line, the command opening with ``### FACT``) is answered as a whole, by the fact (``fact()``)
or part by part from what the test said of the host (``composite``), before any answer to a
command containing some text: a production command need not avoid the text of other facts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from roles.parsers import MARKER

REPO = Path(__file__).resolve().parents[2]
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
FIXTURES = REPO / "tests" / "fixtures"
# Stand-in repository keys (tests/fixtures/keys/README.md): a host's keyring holds one, and the
# test pins REPO_KEY_FINGERPRINT.
REPO_KEY = (FIXTURES / "keys" / "repository.asc").read_text()
REPO_KEY_FINGERPRINT = "7158CB9EBA0E992285D16D9535DD210D27320562"
OTHER_KEY = (FIXTURES / "keys" / "other.asc").read_text()

OS_RELEASE = {
    "ubuntu20": {"NAME": "Ubuntu", "ID": "ubuntu", "ID_LIKE": "debian", "VERSION_ID": "20.04",
                 "VERSION_CODENAME": "focal", "UBUNTU_CODENAME": "focal"},
    "ubuntu22": {"NAME": "Ubuntu", "ID": "ubuntu", "ID_LIKE": "debian", "VERSION_ID": "22.04",
                 "VERSION_CODENAME": "jammy", "UBUNTU_CODENAME": "jammy"},
    "debian12": {"NAME": "Debian GNU/Linux", "ID": "debian", "VERSION_ID": "12",
                 "VERSION_CODENAME": "bookworm"},
    "mint21": {"NAME": "Linux Mint", "ID": "linuxmint", "ID_LIKE": "ubuntu debian",
               "VERSION_ID": "21.2", "VERSION_CODENAME": "victoria", "UBUNTU_CODENAME": "jammy"},
}


def _stat_line(path: str, mode: str, size: int) -> str:
    return f"user=root group=root mode={mode} atime=0 mtime=0 ctime=0 size={size} '{path}'"


@dataclass
class FakeHost:
    name: str
    data: dict = field(default_factory=dict)
    _responses: list = field(default_factory=list)
    _packages: dict = field(default_factory=dict)
    _services: dict = field(default_factory=dict)
    _users: dict = field(default_factory=dict)
    _groups: dict = field(default_factory=dict)
    _facts: dict = field(default_factory=dict)

    def os(self, key: str) -> "FakeHost":
        lines = ["/etc/os-release"] + [f'{k}="{v}"' for k, v in OS_RELEASE[key].items()] + ["---"]
        return self.respond("*-release", lines)

    def respond(self, matcher, output) -> "FakeHost":
        """Answer commands containing ``matcher`` (a string, or a compiled regex) with output."""
        self._responses.append((matcher, output))
        return self

    def override(self, matcher, output) -> "FakeHost":
        """Answer ``matcher`` with output, before anything said about it earlier."""
        self._responses.insert(0, (matcher, output))
        return self

    def fact(self, name: str, output) -> "FakeHost":
        """Answer the bundled fact whose command opens with ``### NAME`` (``rocm-state``,
        ``nvidia-state``) with output (``fact_output``), whatever else was said."""
        self._facts[name] = output
        return self

    def set(self, **settings) -> "FakeHost":
        self.data.update(settings)
        return self

    def package(self, *names: str, version: str = "1.0") -> "FakeHost":
        for name in names:
            self._packages[name] = version
        return self

    def dpkg(self, *rows: tuple[str, str, str], lines=()) -> "FakeHost":
        """dpkg's database as ``(status letters, name, version)`` rows (``("iU", "runc",
        "1.1.5")``), before anything said about it earlier; ``lines``: what DpkgPackages'
        command prints after its listing (roles.apt.INTERRUPTED, LOCKED)."""
        for matcher, output in dpkg_answers(rows, lines).items():
            self.override(matcher, output)
        return self

    def keyring(self, path: str, key: str = REPO_KEY, replace: bool = False) -> "FakeHost":
        """An OpenPGP key file at ``path`` (an apt keyring), as roles.shell's ``show_key``
        shows it; ``replace``: it wins over what was said about it before."""
        return (self.override if replace else self.respond)(f"show_key {path}", key)

    def service(self, name: str, running: bool = True, enabled: bool = True) -> "FakeHost":
        self._services[name] = (running, enabled)
        return self

    def user(self, name: str, *groups: str) -> "FakeHost":
        self._users[name] = list(groups)
        for group in groups:
            self._groups.setdefault(group, []).append(name)
        return self

    def group(self, name: str) -> "FakeHost":
        self._groups.setdefault(name, [])
        return self

    def file(self, path: str, content: str | bytes, mode: str = "-rw-r--r--",
             replace: bool = False) -> "FakeHost":
        """A file at ``path``; ``replace``: it wins over what was said about it before."""
        say = self.override if replace else self.respond
        raw = content.encode() if isinstance(content, str) else content
        say(f"test -e {path} ||", _stat_line(path, mode, len(raw)))
        say(f"sha1sum {path} ", f"{hashlib.sha1(raw).hexdigest()}  {path}")
        say(f"sha256sum {path} ", f"{hashlib.sha256(raw).hexdigest()}  {path}")
        say(f"cat {path} ", raw.decode(errors="replace").splitlines())
        octal = format(sum(1 << (8 - i) for i, c in enumerate(mode[1:10]) if c != "-"), "o")
        say(f"stat -c %a -- {path};",  # roles.apt.TextFile
            fact_output("text-file", ("mode", [octal]),
                        ("text", raw.decode(errors="replace").splitlines())))
        return self

    def directory(self, path: str, mode: str = "drwxr-xr-x") -> "FakeHost":
        return self.respond(f"test -e {path} ||", _stat_line(path, mode, 4096))

    def host_data(self) -> dict:
        responses = list(self._responses)
        if self._packages:
            rows = [("ii", name, version) for name, version in self._packages.items()]
            responses += list(dpkg_answers(rows).items())
        if self._services:
            lines = []
            for unit, (running, enabled) in self._services.items():
                lines += [f"Id={unit}.service", f"SubState={'running' if running else 'dead'}",
                          f"UnitFileState={'enabled' if enabled else 'disabled'}", ""]
            responses.append(("systemctl show", lines))
        if self._users or self._groups:
            responses.append(("cat /etc/group", [
                f"{group}:x:{1000 + i}:{','.join(members)}"
                for i, (group, members) in enumerate(self._groups.items())
            ]))
            responses.append(("g=$(id -Gn", self._users_fact_lines()))  # roles.docker.UserGroups
        first = {}
        for matcher, output in responses:
            first.setdefault(matcher, output)
        facts = {opening(name): output for name, output in self._facts.items()}
        responses = {**facts, **composite(first), **first}
        return {**self.data, "fake_delay": 0, "fake_delay_jitter": 0,
                "fake_responses": {**read_ahead(responses), **responses}}

    def _users_fact_lines(self) -> list[str]:
        # The shape of pyinfra's Users fact output: "passwd entry|group|groups|lastlog|password".
        lines = []
        for i, (user, groups) in enumerate(self._users.items()):
            entry = f"{user}:x:{1000 + i}:{1000 + i}::/home/{user}:/bin/bash"
            lines.append(f"{entry}|{user}|{' '.join([user, *groups])}||")
        return lines


def dpkg_answers(rows, lines=()) -> dict:
    """The answers of a dpkg database of ``rows`` (status letters, name, version): to
    roles.apt.DpkgPackages' dpkg-query (its ``LIST``), and to the ``dpkg -l`` of pyinfra's own
    DebPackages fact (its apt.packages operation reads it), in each one's format."""
    from roles.apt import LIST

    return {LIST: [f"{status:<3} {name} {version}" for status, name, version in rows]
            + list(lines),
            "dpkg -l": [f"{status:<3} {name:<14} {version:<15} amd64        stand-in"
                        for status, name, version in rows]}


def opening(name: str) -> str:
    """The text a bundled fact's command opens with (roles.parsers' marker protocol)."""
    return f"echo '{MARKER}{name}'"


def is_fact(command: str, name: str) -> bool:
    """Whether ``command`` is the bundled fact ``name``'s."""
    return command.startswith(opening(name))


def fact_output(name: str, *parts) -> list[str]:
    """What a bundled fact's command prints: ``### NAME``, then each ``(part, lines)`` after
    its own ``### PART`` line (a part without lines says yes by being there)."""
    lines = [f"{MARKER}{name}"]
    for part, text in parts:
        lines += [f"{MARKER}{part}", *(text.splitlines() if isinstance(text, str) else text)]
    return lines


def answer(responses: dict, command: str) -> list[str]:
    """What the @fake connector answers ``command`` with, given these responses."""
    for matcher, output in responses.items():
        if (matcher.search(command) if isinstance(matcher, re.Pattern) else matcher in command):
            output = output.get("stdout", []) if isinstance(output, dict) else output
            return output.splitlines() if isinstance(output, str) else list(output)
    return []


def composite(responses: dict) -> dict:
    """
    Answers for the facts that read several things in one command (roles.docker.DockerState):
    each part answered as it would be as a fact of its own, so that what a test says about the
    packages, daemon.json, the service or the users (overrides included) holds for them too.
    """
    from roles.docker import DAEMON_JSON, DockerState

    parts = []
    for name, _, command in DockerState.parts("sdinfra-fake-user"):
        if name == "daemon":  # read by the shell's own `show`: answered as `cat` is
            command = f"cat {DAEMON_JSON} "
        parts.append((name, answer(responses, command)))
    return {opening("docker-state"): fact_output("docker-state", *parts)}


# What opens each fact's own command, for read_ahead: the bundled facts' ``### NAME`` line, the
# preflight's first section.
AHEAD_OPENINGS = {"hardware": "sec lspci-nn;",
                  "rocm-state": opening("rocm-state"), "nvidia-state": opening("nvidia-state"),
                  "docker-state": opening("docker-state"), "project-state": opening("project-state")}


def read_ahead(responses: dict) -> dict:
    """
    The answer to roles.hostfacts' read-ahead command (``### ahead``, then each fact's part
    after ``### ahead-NAME``): each fact answered as it would be on its own. A fact this host's
    answers say nothing of is left out, as a host that printed no part: the role then asks it
    on its own, and a test that answers it by other words still holds.
    """
    lines = [f"{MARKER}ahead"]
    for name, command in AHEAD_OPENINGS.items():
        found = answer(responses, command)
        if found:
            lines += [f"{MARKER}ahead-{name}", *found]
    return {opening("ahead"): lines}


@dataclass
class Plan:
    returncode: int
    ops: list  # [{"name":..., "hosts_with_change": [...]}]
    commands: dict  # host name -> remote commands asked during the run
    output: str  # what pyinfra printed on stderr

    def changes(self, host: str) -> list[str]:
        return [op["name"] for op in self.ops if f"@fake/{host}" in op["hosts_with_change"]]

    def changed_hosts(self) -> set[str]:
        return {h.split("/", 1)[1] for op in self.ops for h in op["hosts_with_change"]}


def inventory_source(hosts: list[FakeHost], groups: dict[str, list[str]] | None = None) -> str:
    """A pyinfra inventory file: the hosts in one list, or in ``groups`` (group -> host names)."""
    def entries(members):
        return ",\n".join(f"    ({('@fake/' + h.name)!r}, {h.host_data()!r})" for h in members)

    if groups is None:
        return f"import re\n\nhosts = [\n{entries(hosts)},\n]\n"
    return "import re\n\n" + "".join(
        f"{group} = [\n{entries([h for h in hosts if h.name in names])},\n]\n"
        for group, names in groups.items())


def plan(deploy: str, hosts: list[FakeHost], extra_env: dict | None = None,
         groups: dict[str, list[str]] | None = None) -> Plan:
    """Run ``pyinfra INVENTORY DEPLOY --dry --json`` on fake hosts and parse what it planned."""
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "inventory.py"
        inventory.write_text(inventory_source(hosts, groups))
        env = {**os.environ, **(extra_env or {})}
        proc = subprocess.run(
            [PYINFRA, str(inventory), deploy, "--dry", "--json", "--debug"],
            cwd=REPO, capture_output=True, text=True, env=env, timeout=120,
        )
    commands: dict[str, list[str]] = {h.name: [] for h in hosts}
    for line in proc.stderr.splitlines():
        found = re.search(r"\[fake\] simulating command on @fake/([^:]+): (.*)$", line)
        if found:
            commands[found.group(1)].append(found.group(2))
    ops = []
    if proc.returncode == 0 and proc.stdout.strip():
        ops = json.loads(proc.stdout)["plan"]
    return Plan(proc.returncode, ops, commands, proc.stderr)
