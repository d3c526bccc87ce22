"""sdinfra roles: pyinfra packaged deploys, one folder per concern."""

from roles import speed

# Before any role reads a fact: the only changes to pyinfra's behaviour (see roles/speed.py).
speed.apply()
# Before the deploy imports the roles' modules, so that they load compiled.
speed.keep_bytecode()
