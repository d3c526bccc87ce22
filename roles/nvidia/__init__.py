"""
roles.nvidia: the NVIDIA driver and Container Toolkit, so that Docker containers get the GPU.

``install()``, before the docker role:

1. The driver must answer (``nvidia-smi``). When it does not, the package named by
   ``nvidia_driver_package`` is installed and the host rebooted (``nvidia_allow_reboot``) or
   named at the end of the run as needing a reboot; without that setting the run stops before
   any change, naming the host and the setting.
2. The NVIDIA Container Toolkit from NVIDIA's signed flat repository (deb822 source with a
   ``Signed-By`` keyring whose fingerprint is checked; ``$(ARCH)`` resolved for the host).
   The ``.list`` files of NVIDIA's own guide for the same repository are removed: apt refuses a
   second Signed-By for one URI.

``configure_docker()``, after the docker role:

3. ``nvidia-ctk runtime configure --runtime=docker`` only while daemon.json has no ``nvidia``
   runtime, and Docker restarted only then (or when the running Docker has not loaded it yet).
   nvidia-ctk merges into daemon.json and the docker role merges its keys too, so both survive
   any order of runs. Within one run the docker role must come before this step: its merge is
   computed while planning, before nvidia-ctk writes.
4. After a change, a container started with ``--gpus all`` must list the GPU (``nvidia-smi -L``)
   or the host fails saying what is missing. A converged host is checked from the same fact
   instead: the driver answers, the toolkit is installed, Docker has the runtime loaded.

.. code:: python

    from roles import docker, nvidia, preflight
    known = preflight.learn()   # roles.hostfacts: what this run learned about the host
    nvidia.install(known)
    docker.install(known)
    nvidia.configure_docker(known)

A converged host costs one remote command for both (the ``NvidiaState`` fact, read once and kept
in ``known.nvidia``), which runs neither nvidia-smi when the preflight ran in the same run (its
answer is reused) nor ``docker info`` when Docker was started after daemon.json was last
written.
"""

from __future__ import annotations

import shlex

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.operations import server

from roles import apt, docker, ssh, summary
from roles.hostfacts import HostFacts
from roles.summary import fail
from roles.nvidia.facts import KEYRING, REBOOT_MARKER, NvidiaState
from roles.nvidia.settings import SETTINGS
from roles.settings import host_error, read

REPO = "nvidia-container-toolkit"
TOOLKIT = ["nvidia-container-toolkit"]


def repo_uris(values: dict, arch: str) -> str:
    return values["nvidia_repo_url"].replace("$(ARCH)", arch or "amd64")


def verify_command(image: str) -> str:
    """
    Fails (exit 1, reason on stderr) unless a container started with ``--gpus all`` lists a GPU.
    """
    hints = [
        ("*'could not select device driver'*",
         "Docker has no GPU device driver: the NVIDIA Container Toolkit is missing, or Docker "
         "was not restarted after nvidia-ctk runtime configure"),
        ("*'unknown runtime'*", "Docker does not know the nvidia runtime: restart Docker"),
        ("*'version mismatch'*",
         "the driver was upgraded but the old kernel module is still loaded: reboot"),
        ("*'NVML'*|*'couldn'*\"'\"*'t communicate'*",
         "the driver does not answer inside the container: is it loaded (nvidia-smi on the "
         "host)?"),
        ("*'executable file not found'*|*'not found'*",
         "nvidia-smi was not mounted into the container: check nvidia-container-cli info"),
        ("*'pull'*|*'manifest'*|*'No such image'*",
         "the check's image could not be had: set nvidia_verify_image to an image present or "
         "pullable here"),
    ]
    cases = "".join(f"  {pattern}) hint={shlex.quote(text)} ;;\n" for pattern, text in hints)
    return (
        f"out=$(timeout 600 docker run --rm --gpus all {shlex.quote(image)} nvidia-smi -L 2>&1)\n"
        "rc=$?\n"
        "if [ $rc -eq 0 ] && printf '%s\\n' \"$out\" | grep -q '^GPU [0-9]'; then exit 0; fi\n"
        "hint='see what Docker said'\n"
        'case "$out" in\n'
        f"{cases}"
        "esac\n"
        "echo \"a container started with --gpus all does not see the GPU: $hint. "
        "docker run said: $out\" >&2\n"
        "exit 1"
    )


REBOOT_MARK = (
    "echo '*** System restart required ***' > {marker} && "
    "{{ grep -qx {pkg} {marker}.pkgs 2>/dev/null || echo {pkg} >> {marker}.pkgs; }}"
)

def _smi_of_preflight(known: HostFacts) -> dict | None:
    """What nvidia-smi said in this run's preflight fact, in NvidiaState's terms; None when the
    preflight did not run on this host or did not note nvidia-smi's answer."""
    section = known.section("nvidia-smi")
    if section is None:
        return None
    smi = known.hardware["nvidia_smi"]
    if smi["present"] and smi["exit"] is None:
        return None
    return {"smi_found": smi["present"], "smi_rc": smi["exit"] if smi["present"] else None,
            "smi": section.splitlines() if smi["present"] else [], "driver": smi["driver"]}


def state_ask(known: HostFacts, values: dict | None = None, guess: bool = False) -> tuple | None:
    """The NvidiaState fact install() reads, with its arguments, for ``known``'s host; None
    when it was read in this run already. nvidia-smi runs once per host and run: the
    preflight's answer when it ran (``guess``: asked before the preflight ran, which will)."""
    if known.nvidia is not None:
        return None
    values = read(host, SETTINGS) if values is None else values
    return NvidiaState, {"driver_package": values["nvidia_driver_package"],
                         "smi": not guess and _smi_of_preflight(known) is None}


def _state(values: dict, known: HostFacts) -> dict:
    """What install() found and did on the host, for configure_docker(): the fact is read once
    per host and run, and kept in ``known.nvidia``."""
    if known.nvidia is None:
        smi = _smi_of_preflight(known)
        state = known.fact(*state_ask(known, values))
        if smi is not None:
            state = {**state, **smi}
        known.nvidia = {"state": state, "changing": False, "pending": False}
    return known.nvidia


@deploy("NVIDIA driver and Container Toolkit")
def install(known: HostFacts):
    """The driver (checked, or installed from the setting) and the toolkit on ``known``'s host
    (the current one)."""
    ssh.low_latency()
    values = read(host, SETTINGS)
    package = values["nvidia_driver_package"]
    planned = _state(values, known)
    state = planned["state"]
    if not state["daemon_valid"]:
        # This host only: the others go on.
        fail(f"/etc/docker/daemon.json is not valid JSON: {state.get('daemon_error', '')}; fix "
             "or remove it (nvidia-ctk and Docker would both fail on it)")
        return
    answers = state["smi_rc"] == 0 and state["driver"] is not None

    driver_installed, pending = False, False
    if not answers:
        said = next((line.strip() for line in state["smi"] if line.strip()), "")
        reason = f"nvidia-smi says: {said}" if said else "nvidia-smi is not installed"
        if not package:
            raise host_error(
                f"the NVIDIA driver does not answer ({reason}); install it, or set "
                "nvidia_driver_package (e.g. nvidia-driver-535 on Ubuntu) to have it installed "
                "(a reboot follows)"
            )
        pending = True
        if package not in state["packages"]:
            apt.install([package], known=known)
            driver_installed = True
        elif package not in state["reboot_pkgs"]:
            logger.warning(f"{host.print_prefix}{package} is installed but the driver does not "
                           f"answer ({reason}): a reboot may load it")

    for path in state["legacy"]:
        server.shell(name=f"Remove {path} (replaced by {REPO}.sources)",
                     commands=[f"rm -f {shlex.quote(path)}"])
    uris = repo_uris(values, state["arch"])
    expected = apt.deb822(uris, "/", "", KEYRING)
    repo_changes = (values["nvidia_key_fingerprint"] not in state["key_fprs"]
                    or state["sources"] != expected
                    or any(p not in state["packages"] for p in TOOLKIT))
    if repo_changes:
        apt.repository(repo=REPO, key_url=values["nvidia_key_url"],
                       fingerprint=values["nvidia_key_fingerprint"], uris=uris, suites="/",
                       components="", packages=TOOLKIT, known=known)

    rebooted = False
    if pending and values["nvidia_allow_reboot"]:
        server.reboot(name="Reboot for the NVIDIA driver", delay=15, reboot_timeout=900)
        pending, rebooted = False, True
    elif pending:
        if driver_installed:
            server.shell(name="Mark that a reboot is required",
                         commands=[REBOOT_MARK.format(marker=REBOOT_MARKER,
                                                      pkg=shlex.quote(package))])
        logger.warning(f"{host.print_prefix}needs a reboot for the NVIDIA driver "
                       "(nvidia_allow_reboot is false); the GPU is verified on the run after it")
        summary.reboot("NVIDIA", "the driver was installed and nvidia_allow_reboot is false. Run "
                       "the deploy again after the reboot to verify the GPU.")
    planned["changing"] = driver_installed or repo_changes or rebooted
    planned["pending"] = pending


@deploy("NVIDIA runtime for Docker")
def configure_docker(known: HostFacts):
    """The nvidia runtime in daemon.json and the running Docker; then the GPU check."""
    values = read(host, SETTINGS)
    planned = _state(values, known)
    state = planned["state"]
    configured = "nvidia" in (state["daemon"].get("runtimes") or {})
    # Docker started after daemon.json was last written has loaded what it says; else what
    # `docker info` listed (unknown, when Docker did not answer: not restarted for that).
    loaded = (state["runtimes_current"] or state["runtimes"] is None
              or "nvidia" in state["runtimes"])
    runtime_changes = not configured or not loaded
    if not configured:
        server.shell(name="Docker gets the nvidia runtime (nvidia-ctk runtime configure)",
                     commands=["nvidia-ctk runtime configure --runtime=docker"])
    if runtime_changes:
        server.shell(name="Restart Docker for the nvidia runtime",
                     commands=[docker.RESTART])
    changing = planned["changing"] or runtime_changes
    if values["nvidia_verify"] and changing and not planned["pending"]:
        server.shell(name="A container with --gpus all sees the GPU",
                     commands=[verify_command(values["nvidia_verify_image"])])
