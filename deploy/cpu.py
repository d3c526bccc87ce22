"""CPU hosts: Docker and the web UI's cpu service. `pyinfra inventories/home.py deploy/cpu.py`

Only hosts whose backend is cpu (``accelerator``, or auto's choice) are changed; the others are
listed as skipped in the summary."""

from roles import apt, cache, docker, preflight, targets, webui
from roles.settings import validate

validate(apt, preflight.settings, docker.settings, webui.settings, cache.settings)
# The fleet cache first: pyinfra runs each operation on every host before the next, so the
# cache host serves before any host's apt runs (roles.cache).
cache.install()
known = targets.only("cpu")  # hosts whose accelerator is another are listed as skipped
if known is not None:
    known.read_ahead(docker.state_ask(), webui.state_ask("cpu", known))
    docker.install(known)
    webui.stack(backend="cpu", known=known)
    known.keep_for_next_run()  # where this run changed the host
