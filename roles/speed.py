"""
The one place where sdinfra changes pyinfra's own behaviour for speed.

pyinfra 3.10 works out its global arguments with ``typing.get_type_hints(AllArguments)`` anew
for every fact it reads and every operation called: ~0.4 ms each (it evaluates the string
annotations every time), a third of the controller's time per host on a converged run, for the
same answer each time (``AllArguments`` is a TypedDict fixed at import). ``apply()`` makes it
ask once.

The patch is tied to pyinfra's internals, so it is applied only to the releases it was checked
against (``CHECKED``); any other pyinfra runs as it is, only slower.
tests/unit/test_speed.py fails when upstream starts caching the answer itself: then this module
can go.
"""

from __future__ import annotations

import re
from importlib import metadata

# pyinfra releases (major, minor) whose all_global_arguments() was read and found to recompute
# its answer on every call. Add a release here only after reading its source.
CHECKED = ((3, 10),)


def _release(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


def applies(version: str | None = None) -> bool:
    """True when the installed pyinfra (or ``version``) is one the patch was checked against."""
    try:
        version = version or metadata.version("pyinfra")
        return _release(version) in CHECKED
    except (metadata.PackageNotFoundError, AttributeError):
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
