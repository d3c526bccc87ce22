"""
Which hosts a backend's own deploy acts on.

``deploy/rocm.py``, ``deploy/cuda.py`` and ``deploy/cpu.py`` are run on whole inventories (the
README's ``pyinfra inventories/home.py deploy/rocm.py``): each changes only the hosts whose
backend is its own - the ``accelerator`` setting, or for ``auto`` the preflight's choice from the
host's hardware (the decision deploy/site.py takes) - and lists the others in the summary as
skipped, saying which command deploys them. A host whose accelerator names another backend is
asked nothing.

.. code:: python

    from roles import targets
    known = targets.only("rocm")     # what this run learned about the host, or None
    if known is not None:
        rocm.install(known)
"""

from __future__ import annotations

from pyinfra import host as current_host

from roles import docker, nvidia, preflight, rocm, summary, webui
from roles.hostfacts import HostFacts
from roles.rocm.settings import SETTINGS as ROCM
from roles.settings import read

# Where a host that lets the preflight choose (accelerator: auto) likely runs a GPU backend: its
# role's facts are read with the preflight's only there (a shell test, no process).
LIKELY = {"rocm": "[ -e /dev/kfd ]", "cuda": "command -v nvidia-smi >/dev/null 2>&1"}


def likely(backend: str | None):
    """
    For preflight.learn's ``guess``: the facts the roles will read on a host that runs
    ``backend`` (None: the preflight will choose), with the arguments a converged host gives
    them, so that the preflight's own command reads them and such a host costs one round trip.
    """
    def guess(known: HostFacts) -> list:
        build, certain = preflight.build_without_hardware(
            backend, read(known.host, preflight.settings.SETTINGS)["cuda_torch_build"])
        found = [docker.state_ask(), webui.state_guess(backend, known, build, certain)]
        for mine, state_ask in (("rocm", rocm.state_ask), ("cuda", nvidia.state_ask)):
            if backend in (None, mine):
                ask = state_ask(known, guess=True)
                found.append(ask if backend or ask is None else (*ask, LIKELY[mine]))
        return found

    return guess


def learn(host=None, backend: str | None = None) -> HostFacts:
    """The host's record (preflight.learn) for its stack directory and ROCm release, reading
    with it what the roles will read for ``backend`` (``likely``)."""
    host = current_host if host is None else host
    return preflight.learn(host, stack_dir=read(host, webui.settings.SETTINGS)["webui_dir"],
                           rocm_release=read(host, ROCM)["rocm_release"],
                           guess=likely(backend))


def only(backend: str) -> HostFacts | None:
    """
    What this run learned about the current host (``learn``, with the launch plan for
    ``backend``) when it runs ``backend``, recorded for the summary; else None: the host is
    recorded as skipped, naming its setting and the command that deploys it, and left alone.
    """
    host = current_host
    accelerator = read(host, preflight.settings.SETTINGS)["accelerator"]
    known = None
    if accelerator != "auto":
        mine, why = accelerator, f"accelerator = {accelerator!r}"
    else:
        known = learn(host)
        mine = known.plan.backend
        why = f"accelerator = 'auto' chose {mine} from its hardware"
    if mine == backend:
        known = known or learn(host, backend)
        # The plan of the backend this deploy runs (for auto, the one it chose).
        known.plan = preflight.decision(known, requested=backend,
                                        rocm_release=read(host, ROCM)["rocm_release"])
        summary.record(backend, url=webui.url(read(host, webui.settings.SETTINGS)))
        return known
    if mine not in ("rocm", "cuda", "cpu"):
        summary.skip(f"skipped: {why}, not {backend}; deploy/site.py says why")
        return None
    # --limit takes a group or a host name: the backend's group when the host is in one.
    limit = mine if mine in [str(g) for g in host.groups] else host.name
    summary.skip(f"skipped: {why}, not {backend}; deploy it with deploy/site.py, "
                 f"or deploy/{mine}.py --limit {limit}")
    return None
