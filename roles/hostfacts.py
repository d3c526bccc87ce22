"""
What this run learned about one host, in one record that the deploy passes to each role.

A deploy builds it once per host (``preflight.learn()``: the hardware, the distribution and the
launch plan from the preflight's one command; ``hostfacts.learn()`` without the hardware for
deploy/docker.py) and hands it to the roles (``docker.install(known)``). Each role keeps what
its own fact read in it (``docker``, ``rocm``, ``nvidia``), so that a later step of the same run
asks the host nothing again, and takes what an earlier step learned from it (the nvidia role
reuses the preflight's nvidia-smi answer, the rocm role its rocminfo and kernel lines) without
importing that step's module.

.. code:: python

    from roles import docker, preflight, webui
    known = preflight.learn()              # one remote command
    docker.install(known)                  # known.docker: what the docker role read
    webui.stack(backend=known.plan.backend, known=known)

Once the backend is known, the facts the roles will read are read ahead in one more command
(``read_ahead``): a role then takes its fact from the record (``fact``) instead of asking the
host, so a converged host costs two round trips however many roles run.

.. code:: python

    known.read_ahead(docker.state_ask(), webui.state_ask("cpu", known))
    state = known.fact(*docker.state_ask())   # no remote command: it was read ahead

Where the deploy can tell before the preflight which facts the roles will read (the backend its
``accelerator`` names, the facts' arguments as a converged host gives them), the preflight's own
command reads them too (``preflight.learn(guess=...)``): a converged host then costs one round
trip. A guess that does not come true (the plan asks other arguments) only costs its part's
output: ``read_ahead`` asks what is still missing.

Some of what these commands read is kept on the host between runs (roles.shell ``kept``: the
hardware, dpkg's answers) until the host changes; a run that changes a host makes them stale.
``keep_for_next_run`` ends such a run by asking the same again, its output dropped, so that the
run after it (the user's check that all is well) finds them kept.

.. code:: python

    webui.stack(backend="cpu", known=known)
    known.keep_for_next_run()                 # one more command, only where this run changes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyinfra.api import FactBase
from pyinfra.operations import server

from roles import distro as distros
from roles import shell
from roles.distro import Distro
from roles.parsers import MARKER, parts, split_notes

# The part of read_ahead's command that holds a fact's output opens with "### ahead-NAME", NAME
# the fact's ``ahead`` (roles.parsers' protocol; only these names cut the output, so a fact's own
# "### ..." lines stay its own).
AHEAD = "ahead-"


class Ahead(FactBase):
    """
    Several facts in one remote command: each fact's own command in a subshell of its own (so
    that the variables and functions one sets cannot change another), after a ``### ahead-NAME``
    line; each part read by its fact's own ``process``. ``asks``: ``(FactClass, kwargs)`` pairs
    of facts that have an ``ahead`` name, or ``(FactClass, kwargs, TEST)`` for a fact read only
    where the shell test ``TEST`` holds (a guess: ``[ -e /dev/kfd ]``). Returns
    ``{key(FactClass, kwargs): value}`` for the parts the host printed.
    """

    def command(self, asks):
        self.asks = asks
        found = []
        for cls, kwargs, *test in asks:
            part = f"echo '{MARKER}{AHEAD}{cls.ahead}'; ( {cls().command(**kwargs)} )"
            found.append(f"if {test[0]}; then {part}; fi" if test else part)
        # Printed in one go at the end (a command substitution: a fork, no program): sshd then
        # sends the output in a packet or two, not one per echo and program as they come (~35
        # for a converged host's 20 KB), each of which the controller's paramiko decrypts and
        # checks in Python. On a converged 12-host fleet (two A/B runs of 10 and 12 pairs) it
        # cost the controller 18 and 22 ms less CPU a run, the whole machine 65 and 15 ms less;
        # the runs' times differed by less than their noise. The parts print text (keys in
        # base64), which a substitution keeps as it is but for the trailing newlines it drops:
        # a last part's blank lines are kept by an end marker after it (a part no fact asks
        # for), printf ends the whole with one.
        body = "; ".join([f"echo '{MARKER}ahead'", *found, f"echo '{MARKER}{AHEAD}end'"])
        return f"o=$( {body} ); printf '%s\\n' \"$o\""

    @staticmethod
    def default():
        return {}

    def process(self, output):
        # Cut at every part's line, asked or not: a part a fact did not ask for is not read as
        # the end of the one before it.
        output = list(output)
        printed = dict(parts(output, {line[len(MARKER):] for line in output
                                      if line.startswith(MARKER + AHEAD)}))
        found = {}
        for cls, kwargs, *_ in self.asks:
            lines = printed.get(AHEAD + cls.ahead)
            if lines is not None:
                fact = cls()
                found[key(cls, kwargs)] = fact.process(lines) if lines else fact.default()
        return found


def key(cls, kwargs: dict) -> str:
    """What identifies a fact read ahead: its class and arguments."""
    return f"{cls.__module__}.{cls.__qualname__}{sorted(kwargs.items())!r}"


@dataclass
class HostFacts:
    host: Any  # the pyinfra host
    # The preflight's facts (roles.preflight.facts.parse), with "raw": the sections as printed;
    # None when this deploy did not read the hardware.
    hardware: dict | None = None
    plan: Any = None  # the preflight's Decision for the host: backend, flags, env, torch build
    docker: dict | None = None  # the docker role's DockerState: packages, daemon.json, service
    rocm: dict | None = None  # the rocm role's RocmState: release, packages, groups, users
    nvidia: dict | None = None  # the nvidia role's NvidiaState and what install() did to it
    dpkg_finished: bool = False  # an interrupted dpkg run is finished (or waited for) this run
    _distro: Distro | None = field(default=None, repr=False)
    _ahead: dict = field(default_factory=dict, repr=False)  # read_ahead's answers, by key()
    _asked: dict = field(default_factory=dict, repr=False)  # every fact asked, by key(): its ask

    def read_ahead(self, *asks) -> None:
        """
        Read the facts ``asks`` names (``(FactClass, kwargs)`` pairs; None for a role that
        asks nothing here) in one remote command, for ``fact`` to hand out. Worth it from two
        facts on; with fewer, each is asked when needed. A fact already read ahead with the same
        arguments (a guess of preflight.learn that came true) is not asked again.
        """
        asks = tuple(ask for ask in asks
                     if ask is not None and key(*ask[:2]) not in self._ahead)
        if len(asks) > 1:
            self._asked.update((key(*ask[:2]), ask) for ask in asks)
            self._ahead.update(self.host.get_fact(Ahead, asks=asks))

    def fact(self, cls, kwargs: dict):
        """The fact ``cls`` with ``kwargs`` (a ``state_ask``'s pair): as read ahead in this
        run when it was (once: a second ask reads the host again), else asked of the host
        now."""
        found = self._ahead.pop(key(cls, kwargs), self)
        if found is self:
            self._asked.setdefault(key(cls, kwargs), (cls, kwargs))
            return self.host.get_fact(cls, **kwargs)
        return found

    def keep_for_next_run(self) -> None:
        """
        Where this run changes the host, its last operation asks the host again what the run
        asked it (the facts' own commands, one remote command, output dropped): answers the
        changes made stale (roles.shell ``kept``: dpkg's status changed, a program was
        installed) are worked out and kept now, while the host is already busy, not in the
        next run, which then costs a converged host's single cheap command. Nothing where the
        run changes nothing, where answers are not kept (KEEP_DIR), or where nothing was asked.
        """
        asks = [ask for ask in self._asked.values() if getattr(ask[0], "ahead", None)]
        if shell.KEEP_DIR is None or not asks:
            return
        planned = self.host.state.ops.get(self.host, {}).values()
        if not any(data.operation_meta.will_change for data in planned):
            return
        server.shell(name="Keep what the host answered, for the next run",
                     commands=[f"{{ {Ahead().command(asks)}; }} >/dev/null 2>&1"])

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def distro(self) -> Distro:
        """The distribution: the preflight's /etc/os-release when it read it, else pyinfra's
        LinuxDistribution fact, asked once."""
        if self._distro is None and self.section_state("os-release") == "present":
            self._distro = distros.from_os_release(self.section("os-release"))
        if self._distro is None:
            from pyinfra.facts.server import LinuxDistribution

            self._distro = distros.from_meta(self.host.get_fact(LinuxDistribution)["release_meta"])
        return self._distro

    def section_state(self, name: str) -> str:
        """How the preflight's command fared with a section: ``present``, ``missing`` (the
        tool is not installed), ``unavailable``, or ``absent`` (not read in this run)."""
        if self.hardware is None:
            return "absent"
        return self.hardware["sections"].get(name, "absent")

    def section(self, name: str) -> str | None:
        """A section of the preflight's command as printed, without the command's notes; None
        when this run did not print it."""
        raw = (self.hardware or {}).get("raw", {})
        if name not in raw:
            return None
        return "\n".join(split_notes(raw[name])[0])


def learn(host) -> HostFacts:
    """The record of a deploy that reads no hardware (deploy/docker.py)."""
    return HostFacts(host)
