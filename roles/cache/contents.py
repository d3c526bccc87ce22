"""
What the cache role writes on the hosts, and the addresses it names: the cache host's firewall
and services' configuration (``firewall_script``, ``registry_config``, ``drop_in``,
``models_unit``) and, on every host with a cache, apt's proxy script and mirror lists
(``proxy_script``, ``mirror_list``). Plain functions of the settings' values; roles.cache
puts them in place.
"""

from __future__ import annotations

import shlex

from roles.cache.settings import PORTS, normalised


PACKAGES = ["docker-registry", "apt-cacher-ng"]
FIREWALL_PACKAGES = ["iptables"]
MODELS_PACKAGES = ["python3"]  # http.server
MODELS_SERVICE = "sdinfra-cache-models"
MODELS_UNIT = f"/etc/systemd/system/{MODELS_SERVICE}.service"
CHAIN = "SDINFRA-CACHE"
FIREWALL_SCRIPT = "/usr/local/sbin/sdinfra-cache-firewall"
FIREWALL_UNIT = "/etc/systemd/system/sdinfra-cache-firewall.service"
REGISTRY_CONFIG = "/etc/sdinfra/registry.yml"
DROP_INS = {"docker-registry": "/etc/systemd/system/docker-registry.service.d/sdinfra.conf",
            "apt-cacher-ng": "/etc/systemd/system/apt-cacher-ng.service.d/sdinfra.conf"}
UNITS = ("sdinfra-cache-firewall", *PACKAGES, MODELS_SERVICE)
APT_CONF = "/etc/apt/apt.conf.d/30sdinfra-cache"
PROXY_SCRIPT = "/usr/local/lib/sdinfra/apt-proxy"
MIRRORS = "/etc/apt/sdinfra-mirrors"  # roles.apt.repository's mirror lists
# How long apt's proxy script waits for the cache to accept a connection before going direct.
CONNECT_SECONDS = 2
FALLBACK = "sdinfra: the apt cache"  # how the proxy script's warning begins


def _address(values: dict, port: str) -> str:
    """``cache_host:PORT`` of the service on the setting ``port``, empty without a cache."""
    return f"{values['cache_host']}:{values[port]}" if values["cache_host"] else ""


def apt_url(values: dict) -> str:
    """The apt cache's URL (``http://10.0.0.5:3142``), empty when the host uses no cache."""
    address = _address(values, "cache_apt_port")
    return f"http://{address}" if address else ""


def models_url(values: dict) -> str:
    """Where the cache host serves the models (``http://10.0.0.5:3143``), empty without a cache."""
    address = _address(values, "cache_models_port")
    return f"http://{address}" if address else ""


def models_dir(values: dict) -> str:
    return f"{values['cache_dir']}/models"


def registry(values: dict) -> str:
    """The registry as Docker names it (``10.0.0.5:5000``), empty when there is no cache."""
    return _address(values, "cache_registry_port")


# --- what the cache host runs -------------------------------------------------------------------


def _ports(values: dict) -> str:
    return ",".join(str(values[port]) for port in PORTS)


def firewall_script(values: dict) -> str:
    """
    The firewall: a chain of its own, filled by one iptables-restore (so it is never seen half
    made: ``--noflush`` leaves the other chains, and a chain declared in the input is flushed
    and refilled at its COMMIT), and one jump from INPUT for the two ports; a jump left by
    other ports (a changed setting) goes.
    """
    ports = _ports(values)
    jump = f"-A INPUT -p tcp -m multiport --dports {ports} -j {CHAIN}"
    rules = "\n".join(f"-A {CHAIN} -s {normalised(cidr)} -j ACCEPT"
                      for cidr in values["cache_allow"])
    return f"""#!/bin/sh
# Managed by sdinfra (roles/cache): changes here are overwritten.
# Only cache_allow reaches the fleet cache's registry, apt cache and models; the rest gets a
# TCP reset.
set -e
iptables -w -N {CHAIN} 2>/dev/null || true
iptables-restore -w --noflush <<'EOF'
*filter
:{CHAIN} - [0:0]
-A {CHAIN} -i lo -j ACCEPT
{rules}
-A {CHAIN} -p tcp -j REJECT --reject-with tcp-reset
COMMIT
EOF
iptables -w -S INPUT | while read -r rule; do
    case "$rule" in
        *" -j {CHAIN}") [ "$rule" = "{jump}" ] || iptables -w -D ${{rule#-A }} ;;
    esac
done
iptables -w -C {jump[3:]} 2>/dev/null || iptables -w -I INPUT 1 {jump[9:]}
"""


def firewall_rules(values: dict) -> list[str]:
    """What ``iptables -S CHAIN`` and the INPUT jump print once the script ran."""
    ports = _ports(values)
    return [f"-N {CHAIN}", f"-A {CHAIN} -i lo -j ACCEPT",
            *[f"-A {CHAIN} -s {normalised(cidr)} -j ACCEPT" for cidr in values["cache_allow"]],
            f"-A {CHAIN} -p tcp -j REJECT --reject-with tcp-reset",
            f"-A INPUT -p tcp -m multiport --dports {ports} -j {CHAIN}"]


FIREWALL_UNIT_TEXT = f"""# Managed by sdinfra (roles/cache): changes here are overwritten.
[Unit]
Description=sdinfra fleet cache firewall: only cache_allow reaches the registry, apt cache, models
Before=docker-registry.service apt-cacher-ng.service sdinfra-cache-models.service
After=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={FIREWALL_SCRIPT}

[Install]
WantedBy=multi-user.target
"""


def registry_config(values: dict) -> str:
    """Debian's /etc/docker/registry/config.yml (docker-registry 2.8.2+ds1-1) with the address
    and the storage of this cache, and without its htpasswd section: that names a directory,
    not a password file; the firewall is what keeps others out."""
    return f"""# Managed by sdinfra (roles/cache): changes here are overwritten.
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: {values['cache_dir']}/registry
  delete:
    enabled: true
http:
  addr: {values['cache_host']}:{values['cache_registry_port']}
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""


def drop_in(service: str, values: dict) -> str:
    """
    The drop-in of a cache service's unit: it never runs without the firewall, its data
    directory is made (owned by its user) before each start, and it listens on cache_host.
    apt-cacher-ng takes ``name=value`` options on its command line over its configuration
    files (apt-cacher-ng(8)), so Debian's acng.conf is left as it is.
    """
    data = f"{values['cache_dir']}/{'registry' if service == 'docker-registry' else 'apt'}"
    if service == "docker-registry":
        start = f"/usr/bin/docker-registry serve {REGISTRY_CONFIG}"
    else:
        start = (f'/usr/sbin/apt-cacher-ng -c "/etc/apt-cacher-ng" ForeGround=1 '
                 f"BindAddress={values['cache_host']} Port={values['cache_apt_port']} "
                 f"CacheDir={data}")
    return f"""# Managed by sdinfra (roles/cache): changes here are overwritten.
[Unit]
Requires=sdinfra-cache-firewall.service
After=sdinfra-cache-firewall.service
RequiresMountsFor={values['cache_dir']}

[Service]
ExecStartPre=+/usr/bin/install -d -m 0755 {values['cache_dir']}
ExecStartPre=+/usr/bin/install -d -o {service} -g {service} -m 0750 {data}
ExecStart=
ExecStart={start}
"""


def models_unit(values: dict) -> str:
    """
    The models' server: Python's http.server on cache_host, serving cache_dir/models, as a
    user made for it at each start (DynamicUser: it can write nothing, so a request can change
    no model). Its address may come up after it at boot: it is started again until it binds.
    """
    start = (f"/usr/bin/python3 -m http.server --bind {values['cache_host']} "
             f"--directory {models_dir(values)} {values['cache_models_port']}")
    return f"""# Managed by sdinfra (roles/cache): changes here are overwritten.
[Unit]
Description=sdinfra fleet cache: the models of webui_models, read-only over HTTP
Requires=sdinfra-cache-firewall.service
After=sdinfra-cache-firewall.service network-online.target
Wants=network-online.target
RequiresMountsFor={values['cache_dir']}

[Service]
ExecStartPre=+/usr/bin/install -d -m 0755 {values['cache_dir']} {models_dir(values)}
ExecStart={start}
DynamicUser=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
NoNewPrivileges=yes
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
"""


# --- what every host with a cache uses ----------------------------------------------------------


def apt_conf() -> str:
    return (f"// Managed by sdinfra (roles/cache): changes here are overwritten.\n"
            f"// Which proxy apt uses for each server: {PROXY_SCRIPT} says (apt.conf(5)).\n"
            f'Acquire::http::Proxy-Auto-Detect "{PROXY_SCRIPT}";\n')


def proxy_script(values: dict) -> str:
    """
    apt's Proxy-Auto-Detect command: called with the URL apt is about to fetch, it prints the
    proxy or DIRECT (apt.conf(5)). The cache's own URLs (the mirror lists' first entries) are
    fetched directly, and so are repositories on a port other than 80: apt-cacher-ng refuses
    them ("403 Prohibited port", its manual's "Target port filter": AllowUserPorts is 80 by
    default), and apt would fail on that answer instead of going direct. bash's /dev/tcp and
    coreutils' timeout are on every Debian and Ubuntu host; apt runs this as its sandbox user.
    """
    cache, port = values["cache_host"], values["cache_apt_port"]
    url = apt_url(values)
    return f"""#!/bin/sh
# Managed by sdinfra (roles/cache): changes here are overwritten.
# apt's proxy for the URL in $1: the fleet's apt cache while it answers, else DIRECT.
case "$1" in
    {url}/*) echo DIRECT; exit 0 ;;
esac
# The port, if the URL names one (after an IPv6 address's brackets): the cache takes 80 only.
server=${{1#*://}}; server=${{server%%/*}}; server=${{server##*]}}
case "$server" in
    *:80) ;;
    *:*) echo DIRECT; exit 0 ;;
esac
if timeout {CONNECT_SECONDS} bash -c 'exec 3<>/dev/tcp/{cache}/{port}' 2>/dev/null; then
    echo {url}
else
    message="{FALLBACK} {url} does not answer: fetching ${{1%%/dists/*}} directly"
    echo "W: $message" >&2
    logger -t sdinfra-apt-proxy -- "$message" 2>/dev/null || true
    echo DIRECT
fi
"""


def mirror_list(values: dict, uris: str) -> str | None:
    """
    An apt mirror list (apt-transport-mirror(1)) for a repository on https:
    ``http://HTTPS///host/path`` first, which apt asks its proxy, the cache, for, and which
    apt-cacher-ng fetches over https and keeps (its manual, "8.2 SSL/TLS", doc/html/howtos.html
    of 3.7.4: the "tell-me-what-you-need method"); the repository itself second, which apt tries
    when that fails: with the cache down the proxy script says DIRECT and the name HTTPS does
    not resolve, so apt moves on after its retries (1, 2 and 4 s by default) instead of
    waiting for a cache host that does not answer. None when the host has no cache or the
    repository is on plain http (the proxy takes that).
    """
    url = apt_url(values)
    if not url or not uris.startswith("https://"):
        return None
    # Without a priority apt picks a mirror at random (apt-transport-mirror(1), "Fallback
    # order for mirrors"): the lowest number is tried first. Metadata needs apt >= 1.6.
    return ("# Managed by sdinfra (roles/cache): the fleet's apt cache first, the repository "
            f"itself when the cache fails.\nhttp://HTTPS///{uris[len('https://'):]}\tpriority:1\n"
            f"{uris}\tpriority:2\n")


def lists_through_mirrors(values: dict, lists: str) -> str:
    """
    Shell: each https URL of a ``deb`` line in the one-line apt source files ``lists`` (a
    glob; AMD's, which amdgpu-install's package writes itself) replaced by a mirror list as
    ``mirror_list`` writes it, ``MIRRORS/FILE-N.list``; the line's options (its
    ``signed-by``) stay. Empty without a cache. A file without such URLs is left as it is.
    """
    if not apt_url(values):
        return ""
    header = mirror_list(values, "https://x").splitlines()[0]
    program = (
        '/^[[:space:]]*deb(-src)?[[:space:]]/ { for (i = 2; i <= NF; i++) '
        'if ($i ~ /^https:\\/\\//) { n++; m = dir "/" base "-" n ".list"; h = $i; '
        'sub(/^https:\\/\\//, "", h); '
        'printf "%s\\nhttp://HTTPS///%s\\tpriority:1\\n%s\\tpriority:2\\n", head, h, $i > m; '
        'close(m); $i = "mirror+file:" m; break } } { print }')
    return (f"install -d -m 0755 {MIRRORS} && for f in {lists}; do [ -f \"$f\" ] || continue; "
            "grep -q 'https://' \"$f\" || continue; b=${f##*/}; "
            f"awk -v dir={MIRRORS} -v base=\"${{b%.list}}\" -v head={shlex.quote(header)} "
            f"{shlex.quote(program)} \"$f\" > \"$f.sdinfra-new\" && chmod 644 \"$f.sdinfra-new\" "
            "&& mv \"$f.sdinfra-new\" \"$f\" || exit 1; done")


def mirror_path(repo: str) -> str:
    return f"{MIRRORS}/{repo}.list"


def proxy_check_command(values: dict) -> str:
    """Shell: ``up`` when the apt cache accepts a connection, else ``down``; nothing before
    this host's apt uses the cache (the cache host's own first apt-get update)."""
    return (f"[ -f {APT_CONF} ] || exit 0; if timeout {CONNECT_SECONDS} bash -c "
            f"'exec 3<>/dev/tcp/{values['cache_host']}/{values['cache_apt_port']}' 2>/dev/null; "
            "then echo up; else echo down; fi")
