"""
NVIDIA hosts: the driver check and Container Toolkit, Docker, and the web UI's cuda service.

    pyinfra inventories/home.py deploy/cuda.py

Every host's settings are checked before anything changes. The nvidia runtime is configured
after the docker role: the docker role merges its daemon.json keys as planned, then nvidia-ctk
adds the nvidia runtime to that file and Docker is restarted, so both sets of keys are there
after the run.
"""

from roles import apt, cache, docker, nvidia, preflight, targets, webui
from roles.settings import validate

validate(apt, preflight.settings, docker.settings, nvidia.settings, webui.settings,
         cache.settings)
# The fleet cache first: pyinfra runs each operation on every host before the next, so the
# cache host serves before any host's apt runs (roles.cache).
cache.install()
known = targets.only("cuda")  # the other hosts are listed as skipped
if known is not None:
    known.read_ahead(nvidia.state_ask(known), docker.state_ask(), webui.state_ask("cuda", known))
    nvidia.install(known)
    docker.install(known)
    nvidia.configure_docker(known)
    webui.stack(backend="cuda", known=known)
    known.keep_for_next_run()  # where this run changed the host
