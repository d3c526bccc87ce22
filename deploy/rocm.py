"""
AMD ROCm hosts: ROCm, Docker and the web UI's rocm service.

    pyinfra inventories/home.py deploy/rocm.py

Every host's settings are checked before anything changes; then, on the hosts whose backend is
rocm (``accelerator``, or auto's choice; the others are listed as skipped), ROCm (roles.rocm),
Docker (roles.docker) and the compose stack's rocm service (roles.webui), which runs the
preflight's launch plan for the host plus the environment its settings add
(rocm.container_env(): HSA_OVERRIDE_GFX_VERSION; ROC_ENABLE_PRE_VEGA, which only OpenCL reads).
What the run learns about a host (roles.hostfacts) is built once, by the preflight, and passed to
each role.
"""

from roles import apt, cache, docker, preflight, rocm, targets, webui
from roles.settings import validate

validate(apt, preflight.settings, docker.settings, rocm.settings, webui.settings,
         cache.settings)
# The fleet cache first: pyinfra runs each operation on every host before the next, so the
# cache host serves before any host's apt runs (roles.cache).
cache.install()
known = targets.only("rocm")
if known is not None:
    known.read_ahead(rocm.state_ask(known), docker.state_ask(), webui.state_ask("rocm", known))
    rocm.install(known)
    docker.install(known)
    webui.stack(backend="rocm", known=known, env=rocm.container_env())
    known.keep_for_next_run()  # where this run changed the host
