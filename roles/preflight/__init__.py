"""
Hardware preflight: know a host before installing anything on it.

One custom pyinfra fact (``HardwareFacts``) runs ONE read-only shell command that prints every
section (lspci, /proc/cpuinfo, /proc/meminfo, df, dmesg's kfd lines, rocminfo, nvidia-smi,
/etc/os-release, uname); the controller parses it (``parse``) and decides (``decide``) which
backend the host runs - rocm, cuda, cpu, or none - with the environment, web UI arguments and
CPU threads that follow, each with a one-line reason. ``report`` renders it for people.

    from roles import preflight
    known = preflight.learn()                 # inside a deploy: the facts and the launch plan
    preflight.preflight(known)                # prints the report
    if known.plan.backend != "none":
        webui.stack(backend=known.plan.backend, known=known)

Offline, from captured outputs: ``python -m roles.preflight explain DIR [--json]``.
"""

from __future__ import annotations

from pyinfra import host as current_host
from pyinfra import logger
from pyinfra.api import FactBase, deploy

from roles import ssh
from roles.hostfacts import HostFacts
from roles.settings import read

from . import settings
from .decide import (BACKENDS, DEFAULT_ROCM_RELEASE, Decision, build_without_hardware, decide,
                     identify, load_gpus)
from .facts import (DEFAULT_DOCKER_DIR, DEFAULT_STACK_DIR, SECTIONS, command, parse,
                    split_sections)
from .report import report

__all__ = [
    "BACKENDS", "DEFAULT_ROCM_RELEASE", "Decision", "HardwareFacts", "SECTIONS",
    "build_without_hardware", "decide",
    "decision", "identify", "learn", "load_gpus", "parse", "preflight", "report", "settings",
    "split_sections",
]


class HardwareFacts(FactBase):
    """
    Everything the preflight needs from a host, in one remote command (read-only but for the
    answers it keeps under /run/sdinfra, see command.command; always exits 0; a missing tool
    leaves its facts unknown). Returns the parsed facts (see facts.parse).
    """

    ahead = "hardware"  # its part's name when read with the roles' facts (roles.hostfacts)

    def command(self, stack_dir: str = DEFAULT_STACK_DIR,
                docker_dir: str = DEFAULT_DOCKER_DIR) -> str:
        return command(stack_dir, docker_dir, keep=True)

    def process(self, output):
        sections = split_sections(output)
        found = parse(sections)
        # The sections as printed, for roles that reuse them (roles.hostfacts) instead of asking
        # the host again: the nvidia role's nvidia-smi, the rocm role's kernel lines, os-release.
        found["raw"] = sections
        return found

    @staticmethod
    def default():
        return parse({})


def learn(host=None, stack_dir: str = DEFAULT_STACK_DIR, docker_dir: str = DEFAULT_DOCKER_DIR,
          rocm_release: str = DEFAULT_ROCM_RELEASE, guess=None) -> HostFacts:
    """
    What the deploys pass to the roles for a host (the current one by default): its hardware
    from the HardwareFacts fact (one remote command, which also prints /etc/os-release, so the
    distribution costs nothing more) and the launch plan its settings ask for (``decision``).
    ``guess``: a function of the (still empty) record that names the facts the roles will
    likely read (``(FactClass, kwargs)`` pairs, or None), read in the same command
    (roles.hostfacts ``read_ahead``).
    """
    host = current_host if host is None else host
    ssh.low_latency(host)
    known = HostFacts(host)
    hardware = (HardwareFacts, {"stack_dir": stack_dir, "docker_dir": docker_dir})
    if guess is not None:
        known.read_ahead(hardware, *guess(known))
    known.hardware = known.fact(*hardware)
    known.plan = decision(known, rocm_release=rocm_release)
    return known


def decision(known: HostFacts, requested: str | None = None,
             rocm_release: str = DEFAULT_ROCM_RELEASE) -> Decision:
    """
    The launch plan for ``known``'s host from the hardware this run read and its settings.
    ``requested``: the backend a deploy runs whatever the accelerator setting says (deploy/cpu.py:
    cpu); by default the setting's.
    """
    values = read(known.host, settings.SETTINGS)
    return decide(
        known.hardware,
        requested=requested or values["accelerator"],
        rocm_release=rocm_release,
        min_ram_gb=values["preflight_min_ram_gb"],
        lowvram_below_gb=values["preflight_lowvram_below_gb"],
        medvram_below_gb=values["preflight_medvram_below_gb"],
        min_free_disk_gb=values["preflight_min_free_disk_gb"] or None,
        cuda_build=values["cuda_torch_build"],
    )


@deploy("Hardware preflight")
def preflight(known: HostFacts, rocm_driver: str | None = None) -> Decision:
    """
    Print the report of what ``known`` (``learn()``) says of the current host and return its
    launch plan. Changes nothing on the host. ``rocm_driver``: for a rocm host, the kernel
    driver the rocm role will choose and why (roles.rocm.driver_line).
    """
    made = known.plan
    driver = rocm_driver if made.backend == "rocm" else None
    for line in report(current_host.name, made, known.hardware, driver).splitlines():
        if line.startswith("  ! "):
            logger.warning("%s%s", current_host.print_prefix, line)
        else:
            logger.info("%s%s", current_host.print_prefix, line)
    return made
