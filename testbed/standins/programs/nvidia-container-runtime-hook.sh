#!/bin/sh
# sdinfra STAND-IN for nvidia-container-runtime-hook (TEST ONLY). dockerd registers its "nvidia"
# device driver (what compose's GPU reservation asks for) only when this hook is on PATH at
# start; the stand-in hook does nothing.
exit 0
