"""
The whole fleet in one run: each host gets the backend its ``accelerator`` setting names.

    pyinfra inventories/home.py deploy/site.py

``accelerator: auto`` (the default) takes the preflight's choice from the host's hardware;
``rocm``, ``cuda`` or ``cpu`` win over it, with a warning when the hardware says they will not
work. A host that can run nothing (no usable GPU, a CPU without AVX) is reported, not deployed.
Every host's settings are checked before anything changes on any host; after that, a host that
fails does not stop the others, and the run ends with a summary per host.
"""

from pyinfra import host

from roles import apt, cache, docker, nvidia, preflight, rocm, summary, targets, webui
from roles.settings import read, validate

validate(apt, preflight.settings, docker.settings, rocm.settings, nvidia.settings, webui.settings,
         cache.settings)
# The fleet cache first: pyinfra runs each operation on every host before the next, so the
# cache host serves before any host's apt runs (roles.cache).
cache.install()

values = read(host, webui.settings.SETTINGS)
accelerator = read(host, preflight.settings.SETTINGS)["accelerator"]
# What this run learns about the host, built once and passed to every role below: the
# preflight's one command, which also reads the facts the roles will likely read (a converged
# host whose accelerator names its backend costs one).
known = targets.learn(backend=None if accelerator == "auto" else accelerator)
decision = preflight.preflight(known, rocm_driver=rocm.driver_line(known)
                               if known.plan.backend == "rocm" else None)
backend = decision.backend

if backend == "none":
    summary.record("none", note="; ".join(decision.reasons))
else:
    summary.record(backend, url=webui.url(values))
    env = {}  # the settings' own environment; the decision's comes with it as the plan
    # What the roles below read of the host that the guess missed, in one command.
    known.read_ahead(rocm.state_ask(known) if backend == "rocm" else
                     nvidia.state_ask(known) if backend == "cuda" else None,
                     docker.state_ask(),
                     webui.state_ask(backend, known))
    if backend == "rocm":
        rocm.install(known)
        env = rocm.container_env()
    elif backend == "cuda":
        nvidia.install(known)
    docker.install(known)
    if backend == "cuda":
        nvidia.configure_docker(known)
    webui.stack(backend=backend, known=known, env=env)
    known.keep_for_next_run()  # where this run changed the host
