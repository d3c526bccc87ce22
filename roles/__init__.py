"""sdinfra roles: pyinfra packaged deploys, one folder per concern."""

from roles import speed

# Before any role reads a fact: the only change to pyinfra's behaviour (see roles/speed.py).
speed.apply()
