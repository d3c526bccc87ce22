"""
Which hosts a backend's own deploy acts on.

``deploy/rocm.py``, ``deploy/cuda.py`` and ``deploy/cpu.py`` are run on whole inventories (the
README's ``pyinfra inventories/home.py deploy/rocm.py``): each changes only the hosts whose
backend is its own - the ``accelerator`` setting, or for ``auto`` the preflight's choice from the
host's hardware (the decision deploy/site.py takes, read once per run) - and lists the others in
the summary as skipped, saying which command deploys them.

.. code:: python

    from roles import targets
    if targets.only("rocm"):
        rocm.install()
"""

from __future__ import annotations

from pyinfra import host as current_host

from roles import preflight, summary
from roles.settings import read


def backend_of(host=None) -> tuple[str, str]:
    """(backend, why) for a host: its accelerator, or auto's choice (``none``: no backend)."""
    from roles.rocm.settings import SETTINGS as ROCM
    from roles.webui.settings import SETTINGS as WEBUI

    host = current_host if host is None else host
    accelerator = read(host, preflight.settings.SETTINGS)["accelerator"]
    if accelerator != "auto":
        return accelerator, f"accelerator = {accelerator!r}"
    decision, _ = preflight.decision_for(host, stack_dir=read(host, WEBUI)["webui_dir"],
                                         rocm_release=read(host, ROCM)["rocm_release"])
    return decision.backend, f"accelerator = 'auto' chose {decision.backend} from its hardware"


def only(backend: str) -> bool:
    """
    True when the current host runs ``backend`` (recorded for the summary); else the host is
    recorded as skipped, naming its setting and the command that deploys it, and left alone.
    """
    from roles import webui

    mine, why = backend_of()
    if mine == backend:
        summary.record(backend, url=webui.url(read(current_host, webui.settings.SETTINGS)))
        return True
    if mine not in ("rocm", "cuda", "cpu"):
        summary.skip(f"skipped: {why}, not {backend}; deploy/site.py says why")
        return False
    # --limit takes a group or a host name: the backend's group when the host is in one.
    limit = mine if mine in [str(g) for g in current_host.groups] else current_host.name
    summary.skip(f"skipped: {why}, not {backend}; deploy it with deploy/site.py, "
                 f"or deploy/{mine}.py --limit {limit}")
    return False
