"""
Hardware preflight: know a host before installing anything on it.

One custom pyinfra fact (``HardwareFacts``) runs ONE read-only shell command that prints every
section (lspci, /proc/cpuinfo, /proc/meminfo, df, dmesg's kfd lines, rocminfo, nvidia-smi,
/etc/os-release, uname); the controller parses it (``parse``) and decides (``decide``) which
backend the host runs - rocm, cuda, cpu, or none - with the environment, web UI arguments and
CPU threads that follow, each with a one-line reason. ``report`` renders it for people.

    from roles import preflight
    decision = preflight.preflight()          # inside a deploy: prints the report, returns it
    if decision.backend != "none":
        webui.stack(backend=decision.backend)

Offline, from captured outputs: ``python -m roles.preflight explain DIR [--json]``.
"""

from __future__ import annotations

from pyinfra import host as current_host
from pyinfra import logger
from pyinfra.api import FactBase, deploy

from roles import distro, ssh
from roles.settings import read

from . import settings
from .decide import BACKENDS, DEFAULT_ROCM_RELEASE, Decision, decide, identify, load_gpus
from .facts import (DEFAULT_DOCKER_DIR, DEFAULT_STACK_DIR, SECTIONS, command, parse,
                    split_sections)
from .report import report

__all__ = [
    "BACKENDS", "DEFAULT_ROCM_RELEASE", "Decision", "HardwareFacts", "SECTIONS", "decide",
    "decision_for", "gathered", "identify", "load_gpus", "parse", "preflight", "report", "settings",
    "split_sections",
]


class HardwareFacts(FactBase):
    """
    Everything the preflight needs from a host, in one remote command (read-only, always exits
    0; a missing tool leaves its facts unknown). Returns the parsed facts (see facts.parse).
    """

    def command(self, stack_dir: str = DEFAULT_STACK_DIR,
                docker_dir: str = DEFAULT_DOCKER_DIR) -> str:
        return command(stack_dir, docker_dir)

    def process(self, output):
        sections = split_sections(output)
        found = parse(sections)
        # The sections as printed, for roles that reuse them (gathered()) instead of asking the
        # host again: the nvidia role's nvidia-smi, the rocm role's kernel lines, /etc/os-release.
        found["raw"] = sections
        return found

    @staticmethod
    def default():
        return parse({})


_decisions: dict = {}


def decision_for(host=None, stack_dir: str = DEFAULT_STACK_DIR,
                 docker_dir: str = DEFAULT_DOCKER_DIR,
                 rocm_release: str = DEFAULT_ROCM_RELEASE,
                 requested: str | None = None) -> tuple[Decision, dict]:
    """
    (decision, facts) for a host (the current one by default), from its settings and the
    HardwareFacts fact. Gathered once per host and run: later calls reuse it, so wiring the
    decision into several roles costs no extra remote command. ``requested``: the backend a
    deploy runs whatever the accelerator setting says (deploy/cpu.py: cpu).
    """
    from pyinfra import state

    if host is None:
        host = current_host
    values = read(host, settings.SETTINGS)
    requested = requested or values["accelerator"]
    key = (id(state), host.name, stack_dir, docker_dir, str(rocm_release), requested)
    if key not in _decisions:
        gathered_before = _gathered.get((id(state), host.name))
        found = gathered_before or host.get_fact(HardwareFacts, stack_dir=stack_dir,
                                                 docker_dir=docker_dir)
        made = decide(
            found,
            requested=requested,
            rocm_release=rocm_release,
            min_ram_gb=values["preflight_min_ram_gb"],
            lowvram_below_gb=values["preflight_lowvram_below_gb"],
            medvram_below_gb=values["preflight_medvram_below_gb"],
            min_free_disk_gb=values["preflight_min_free_disk_gb"] or None,
            cuda_build=values["cuda_torch_build"],
        )
        _decisions[key] = (made, found)
        _gathered[(id(state), host.name)] = found
        release = found.get("raw", {}).get("os-release")
        if release is not None and found["sections"].get("os-release") == "present":
            distro.remember(host, release)
    return _decisions[key]


_gathered: dict = {}


def gathered(host=None) -> dict | None:
    """
    The HardwareFacts of a host (the current one by default) when this run read them already
    (the preflight ran first), else None: other roles take what they need from it rather than
    running the same tools again (``raw``: the sections as printed).
    """
    from pyinfra import state

    host = current_host if host is None else host
    return _gathered.get((id(state), host.name))


@deploy("Hardware preflight")
def preflight(stack_dir: str = DEFAULT_STACK_DIR, docker_dir: str = DEFAULT_DOCKER_DIR,
              rocm_release: str = DEFAULT_ROCM_RELEASE) -> Decision:
    """Gather the facts, print the report, return the decision. Changes nothing on the host."""
    ssh.low_latency()
    made, found = decision_for(current_host, stack_dir, docker_dir, rocm_release)
    for line in report(current_host.name, made, found, _rocm_driver(made, found)).splitlines():
        if line.startswith("  ! "):
            logger.warning("%s%s", current_host.print_prefix, line)
        else:
            logger.info("%s%s", current_host.print_prefix, line)
    return made


def _rocm_driver(made: Decision, found: dict) -> str | None:
    """For a rocm host, the kernel driver the rocm role will choose and why (its rocm_*
    settings, the running kernel, Secure Boot): roles.rocm.driver."""
    if made.backend != "rocm":
        return None
    from roles.rocm import driver
    from roles.rocm.settings import SETTINGS as ROCM

    values = read(current_host, ROCM)
    secure = "\n".join(line for line in found.get("raw", {}).get("secureboot", "").splitlines()
                       if not line.startswith("#! "))
    setting = values["rocm_dkms"] if isinstance(values["rocm_dkms"], bool) else "auto"
    return driver.choose(setting, str(values["rocm_release"]), found["os"].get("kernel"),
                         secure or None, values["rocm_source"]).line()
