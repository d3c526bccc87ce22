"""
What each host's web UI is doing now; changes nothing. One command per host.

    pyinfra inventories/home.py deploy/status.py

A table on the terminal, the same as JSON in sdinfra-status.json (SDINFRA_STATUS_JSON=PATH
elsewhere): backend, version, image id, container state and health, uptime, restarts, models,
published address, whether torch sees the GPU inside the running container, disk use and free.
"""

from roles import status

status.read_status()
