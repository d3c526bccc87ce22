"""Settings of the cache role: each one a user may set, with its default and what it does."""

import ipaddress

from roles.settings import Setting, boolean, integer, project_dir


def cache_address(value):
    """An IPv4 address other hosts can reach (or empty: no cache). A name is refused: the
    services bind to this address, and Docker's insecure-registries names it exactly."""
    if value in (None, ""):
        return None
    try:
        address = ipaddress.IPv4Address(value)
    except (ValueError, TypeError):
        return "an IPv4 address like 192.168.1.10 (or empty: no cache)"
    if address.is_unspecified or address.is_loopback or address.is_multicast:
        return ("an IPv4 address of the cache host that the other hosts reach (not 0.0.0.0, "
                "127.x or multicast), or empty")
    return None


# A network shorter than /8 is most of the internet: never what a LAN's fleet is.
SHORTEST_PREFIX = 8


def network(value):
    """An IPv4 network (``192.168.1.0/24``, or one address: /32), as ipaddress reads it."""
    try:
        found = ipaddress.IPv4Network(value, strict=False) if isinstance(value, str) else None
    except ValueError:
        found = None
    if found is None:
        return "an IPv4 network like 192.168.1.0/24 or one address like 192.168.1.10"
    if found.prefixlen < SHORTEST_PREFIX:
        return f"a network of /{SHORTEST_PREFIX} or longer (not a large part of the internet)"
    return None


def networks(value):
    if not isinstance(value, (list, tuple)):
        return "a list of IPv4 networks like ['192.168.1.0/24']"
    for number, entry in enumerate(value, 1):
        reason = network(entry)
        if reason:
            return f"a list of IPv4 networks; entry {number} ({entry!r}) is not {reason}"
    return None


def normalised(value: str) -> str:
    """A cache_allow entry as iptables prints it: ``10.77.1.2/32``, host bits cleared."""
    return str(ipaddress.IPv4Network(value, strict=False))


SETTINGS = [
    Setting("cache_host", "", cache_address,
            "IPv4 address of the fleet's cache host, as the other hosts reach it; empty: no "
            "cache (every host fetches for itself)"),
    Setting("cache_serve", False, boolean,
            "this host is the cache host: it runs the registry, the apt cache and the models on "
            "cache_host (one of its own addresses)"),
    Setting("cache_dir", "/srv/sdinfra-cache", project_dir,
            "on the cache host, where the registry's images (`registry/`), the apt cache "
            "(`apt/`) and the fleet's models (`models/`, named by sha256) are kept"),
    Setting("cache_allow", [], networks,
            "on the cache host, the IPv4 networks or addresses allowed to reach the registry, "
            "the apt cache and the models (the fleet's); every other address is refused by the "
            "firewall"),
    Setting("cache_registry_port", 5000, integer(1, 65535),
            "port of the registry (Debian's docker-registry) on cache_host"),
    Setting("cache_apt_port", 3142, integer(1, 65535),
            "port of the apt cache (apt-cacher-ng) on cache_host"),
    Setting("cache_models_port", 3143, integer(1, 65535),
            "port on cache_host where the cache host serves the models of webui_models "
            "(read-only HTTP, `/SHA256`) to the other hosts"),
]

# The settings of the cache's services' ports: the registry, the apt cache, the models.
PORTS = ("cache_registry_port", "cache_apt_port", "cache_models_port")
DEFAULT_PORTS = tuple(s.default for name in PORTS for s in SETTINGS if s.name == name)


def check(host, values) -> list[str]:
    found = []
    if values["cache_serve"]:
        if not values["cache_host"]:
            found.append("cache_serve = True needs cache_host: the address of this host the "
                         "others reach (the services bind to it)")
        if not values["cache_allow"]:
            found.append("cache_serve = True needs cache_allow: the networks of the fleet's "
                         "hosts (nothing else may reach the registry and the apt cache)")
    for number, first in enumerate(PORTS):
        for second in PORTS[number + 1:]:
            if values[first] == values[second]:
                found.append(f"{first} and {second} are both {values[second]}: give each its "
                             "own port")
    return found
