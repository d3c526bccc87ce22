"""
The one place where sdinfra changes pyinfra's own behaviour for speed: two changes.

pyinfra 3.10 works out its global arguments with ``typing.get_type_hints(AllArguments)`` anew
for every fact it reads and every operation called: ~0.4 ms each (it evaluates the string
annotations every time), a third of the controller's time per host on a converged run, for the
same answer each time (``AllArguments`` is a TypedDict fixed at import). ``apply()`` makes it
ask once.

The patch is tied to pyinfra's internals, so it is applied only to the releases it was checked
against (``CHECKED``); any other pyinfra runs as it is, only slower.
tests/unit/test_speed.py fails when upstream starts caching the answer itself: then this module
can go.

pyinfra's CLI also turns off writing bytecode for its whole process (``sys.dont_write_bytecode``
in pyinfra_cli/main.py ``main()``, so that users' deploy folders get no .pyc). That keeps Python
from caching sdinfra's own modules too: every run compiled all ~60 of them again from source, ~50
ms of the controller's CPU per run (measured on the 12-host bench fleet: 0.61 s against 0.56 s).
``keep_bytecode()`` compiles this package's stale modules once, as pip does for a package it
installs; it writes only into the package's own ``__pycache__`` folders, and obeys a shell that
sets PYTHONDONTWRITEBYTECODE itself.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pyinfra

# pyinfra releases (major, minor) whose all_global_arguments() was read and found to recompute
# its answer on every call. Add a release here only after reading its source.
CHECKED = ((3, 10),)


def _release(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


def applies(version: str | None = None) -> bool:
    """True when the installed pyinfra (or ``version``) is one the patch was checked against."""
    try:
        # pyinfra's own answer, worked out at its import (importlib.metadata scans every
        # installed distribution again, ~5 ms a run); "unknown" where it found none.
        version = version or pyinfra.__version__
        return _release(version) in CHECKED
    except AttributeError:  # not a release number ("unknown")
        return False


def apply() -> bool:
    """Cache pyinfra's global arguments where it is safe; True when the cache is in place."""
    if not applies():
        return False
    from pyinfra.api import arguments, facts

    original = getattr(arguments, "all_global_arguments", None)
    if original is None:
        return False
    if getattr(original, "sdinfra_cached", False):
        return True
    known = tuple(original())

    def all_global_arguments() -> list:
        return list(known)

    all_global_arguments.sdinfra_cached = True
    all_global_arguments.__doc__ = original.__doc__
    all_global_arguments.__wrapped__ = original
    arguments.all_global_arguments = all_global_arguments
    # facts.py imported the name at its own import: replace that reference too.
    if getattr(facts, "all_global_arguments", None) is original:
        facts.all_global_arguments = all_global_arguments
    return True


def keep_bytecode(package: Path = Path(__file__).parent) -> bool:
    """Compile the stale modules of ``package`` (sdinfra's roles), when only pyinfra's CLI keeps
    Python from doing it; True when it compiled (or found current) every module."""
    if not sys.dont_write_bytecode or os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return False
    import compileall

    # quiet=2: a folder that is not writable (a shared install) only makes runs slower.
    return bool(compileall.compile_dir(str(package), quiet=2))
