"""Docker Engine and Compose only: `pyinfra inventories/home.py deploy/docker.py`."""

from roles import apt, docker
from roles.settings import validate

validate(apt, docker.settings)
docker.install()
