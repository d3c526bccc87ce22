"""Hardware preflight: print what each host has and which backend it would run. Changes nothing.

    pyinfra inventories/home.py deploy/preflight.py
"""

from roles import preflight, rocm
from roles.settings import validate

validate(preflight.settings)
known = preflight.learn()
preflight.preflight(known, rocm_driver=rocm.driver_line(known) if known.plan.backend == "rocm"
                    else None)
