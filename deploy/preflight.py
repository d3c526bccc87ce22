"""Hardware preflight: print what each host has and which backend it would run. Changes nothing.

    pyinfra inventories/home.py deploy/preflight.py
"""

from roles import preflight
from roles.settings import validate

validate(preflight.settings)
preflight.preflight()
