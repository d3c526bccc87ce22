"""CPU hosts: Docker and the web UI's cpu service. `pyinfra inventories/home.py deploy/cpu.py`"""

from roles import apt, docker, webui
from roles.settings import validate

validate(apt, docker.settings, webui.settings)
docker.install()
webui.stack(backend="cpu")
