"""Docker Engine and Compose only: `pyinfra inventories/home.py deploy/docker.py`."""

from pyinfra import host

from roles import apt, cache, docker, hostfacts
from roles.settings import validate

validate(apt, docker.settings, cache.settings)
# The fleet cache first: pyinfra runs each operation on every host before the next, so the
# cache host serves before any host's apt runs (roles.cache).
cache.install()
docker.install(hostfacts.learn(host))
