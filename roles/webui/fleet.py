"""
Build once for a fleet: with ``cache_host`` set (roles.cache: a registry on the fleet's cache
host), each image the role builds is built by one host of the run and pulled by the others.

The image's tag already names everything that went into it (render.image_of: the release, the
sha256 of the Dockerfile and constraints.txt), so hosts whose builds would be the same ask for
the same tag. The first host of the run that asks for a tag builds it and pushes it to the
registry as ``CACHE:PORT/sdinfra/webui:TAG``, in an operation before the one that starts the
service; pyinfra runs each operation on every host before the next, so the image is in the
registry when the others pull it. pyinfra plans the hosts concurrently (one greenlet each,
pyinfra_cli/util.py _parallel_load_hosts), so which host is first is not the inventory's
order; the claim itself (``builder_of``) never yields, so there is exactly one per tag. A host
that has the tag does neither; the builder asks the registry whether it has the tag in its one
state read, and pushes again when it does not. When the builder fails before its push, the
others' pulls fail, naming it; the next run builds again.
"""

from __future__ import annotations

import weakref

from pyinfra import host

# Per run (pyinfra's State): the host that builds each tag.
_BUILDERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def remote_name(registry: str, image: str) -> str:
    """The fleet registry's name of ``image``: ``10.0.0.5:5000/sdinfra/webui:cpu-v1.10.1-...``."""
    return f"{registry}/{image}"


def builder_of(image: str) -> str:
    """The name of the host that builds ``image`` in this run: the first host to ask."""
    claims = _BUILDERS.setdefault(host.state, {})
    return claims.setdefault(image, host.name)
