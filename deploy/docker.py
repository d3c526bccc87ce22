"""Docker Engine and Compose only: `pyinfra inventories/home.py deploy/docker.py`."""

from roles import docker
from roles.settings import validate

validate(docker.settings)
docker.install()
