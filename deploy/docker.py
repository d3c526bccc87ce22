"""Docker Engine and Compose only: `pyinfra inventories/home.py deploy/docker.py`."""

from pyinfra import host

from roles import apt, docker, hostfacts
from roles.settings import validate

validate(apt, docker.settings)
docker.install(hostfacts.learn(host))
