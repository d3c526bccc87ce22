"""
roles.cache: one fleet host keeps what the others would each fetch from the internet.

The cache host (``cache_serve: true``) runs two of Debian's own packages, bound to ``cache_host``
(one of its addresses) and nothing else:

- ``docker-registry`` (the CNCF Distribution registry) on ``cache_registry_port`` (5000), its
  images under ``cache_dir/registry``: an image built once is pushed there and pulled by the
  other hosts;
- ``apt-cacher-ng`` on ``cache_apt_port`` (3142), its packages under ``cache_dir/apt``: each
  package is fetched from the mirror once for the fleet;
- Python's ``http.server`` (``sdinfra-cache-models.service``, as a user of its own with
  nothing writable) on ``cache_models_port`` (3143), serving ``cache_dir/models`` read-only:
  each model with a ``url`` in the ``webui_models`` of a host of the run that uses this cache
  is fetched there once, verified by sha256 (roles.download), and kept under its sha256. The
  other hosts download ``http://CACHE:PORT/SHA256`` first, check the sha256 again on arrival,
  and fall back to the model's own URL when the cache fails or the copy differs
  (roles.download's ``first``).

All three speak plain HTTP without a login: what protects them is that they listen on the LAN
address only and a firewall (an iptables chain, ``SDINFRA-CACHE``, set again at every boot by
``sdinfra-cache-firewall.service`` before any of them starts) lets only ``cache_allow`` in.
The services' own units are left as Debian ships them; a drop-in each gives the address, the
data path and the firewall dependency, written before the packages are installed, so that their
first start already listens where it should.

Every host with ``cache_host`` set (the cache host too) uses it:

- apt asks ``Acquire::http::Proxy-Auto-Detect`` (apt.conf(5)) which proxy to use for each
  server: the script answers the cache when it accepts a connection within 2 s, else ``DIRECT``
  with a warning on apt's stderr and in the journal, so a host whose cache is down still
  installs. The run warns on the controller too, when it runs apt on such a host
  (roles.apt.update). Third-party repositories on https (roles.apt.repository; AMD's, which
  amdgpu-install writes, by ``lists_through_mirrors`` from roles.rocm) are read
  through an apt mirror list: ``http://HTTPS///host/path`` first, which the proxy fetches over
  https and keeps (apt-cacher-ng's documented form), the https URL second, which apt falls back
  to by itself when the cache is down (that name does not resolve); ``Signed-By`` and the
  pinned key are the same either way, and the transport never decided what apt trusts.
- Docker's daemon.json gets ``insecure-registries: ["CACHE:5000"]`` (roles.docker), exactly
  that registry, so that Docker pulls from it over plain HTTP.

A host without ``cache_host`` (the default) is asked nothing more than before.
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host, logger
from pyinfra.api import FactBase, FunctionCommand, StringCommand, deploy
from pyinfra.operations import files, server

from roles import apt, download, parsers, ssh
from roles.cache.settings import SETTINGS
from roles.hostfacts import HostFacts
from roles.parsers import MARKER
from roles.settings import read
from roles.shell import SHOW
from roles.summary import fail
from roles.cache.contents import (  # noqa: F401 - the names the role had before the split
    APT_CONF, CHAIN, CONNECT_SECONDS, DROP_INS, FALLBACK, FIREWALL_PACKAGES, FIREWALL_SCRIPT,
    FIREWALL_UNIT, FIREWALL_UNIT_TEXT, MIRRORS, MODELS_PACKAGES, MODELS_SERVICE, MODELS_UNIT,
    PACKAGES, PROXY_SCRIPT, REGISTRY_CONFIG, UNITS, _ports, apt_conf, apt_url, drop_in,
    firewall_rules, firewall_script, lists_through_mirrors, mirror_list, mirror_path,
    models_dir, models_unit, models_url, proxy_check_command, proxy_script, registry,
    registry_config,
)


def values_of(target=None) -> dict:
    return read(target or host, SETTINGS)


def fleet_models(values: dict, inventory, me: str) -> dict[str, dict]:
    """
    The models the cache host keeps: each one with a ``url`` in the ``webui_models`` of a host
    of ``inventory`` whose cache_host is this cache's (an upload, ``src``, comes from the
    controller anyway), by sha256: ``{sha256: {"name", "url", "sha256"}}``. For a checksum
    listed twice, the cache host's (``me``) own entry (a URL it reaches), else the first host's.
    """
    from roles.webui.settings import SETTINGS as WEBUI

    found = {}
    # sorted() is stable: the cache host first, the others in the inventory's order.
    for other in sorted(inventory, key=lambda each: each.name != me):
        if read(other, SETTINGS)["cache_host"] != values["cache_host"]:
            continue
        for model in read(other, WEBUI)["webui_models"]:
            if "url" in model:
                found.setdefault(model["sha256"].lower(), model)
    return found


def warn_if_down(state, host, values: dict) -> bool:  # noqa: F811 - pyinfra passes the host
    """Run when apt is about to run (roles.apt.update): the warning the controller shows when
    the host's apt goes direct. A FunctionCommand's function: pyinfra passes ``state`` and
    ``host`` only to a function whose arguments have these very names."""
    status, output = host.run_shell_command(StringCommand(proxy_check_command(values)),
                                            print_output=False)
    if "down" in [line.strip() for line in output.stdout_lines]:
        logger.warning(f"{host.print_prefix}the apt cache {apt_url(values)} does not answer: "
                       "apt on this host fetches directly (cache_host; on the cache host see "
                       "that apt-cacher-ng runs and cache_allow lets this host in)")
    return True


def proxy_warning(values: dict | None = None) -> list:
    """The commands roles.apt.update runs before ``apt-get update``: none without a cache."""
    values = values if values is not None else values_of()
    if not values["cache_host"]:
        return []
    return [FunctionCommand(warn_if_down, (values,), {})]


def daemon_options(options: dict, values: dict) -> dict:
    """Docker's daemon.json keys with the cache's registry added to ``insecure-registries``
    (the user's own entries kept): Docker then pulls from it over plain HTTP."""
    name = registry(values)
    if not name:
        return options
    listed = list(options.get("insecure-registries") or [])
    return {**options, "insecure-registries": listed + [name] * (name not in listed)}


# --- the fact -----------------------------------------------------------------------------------


class CacheState(FactBase):
    """
    Everything ``install`` reads, in one command: the files the role writes (each as a
    ``### file`` part whose first line is its path; ``### exec`` PATH when it is executable),
    and on the cache host the packages (apt.DpkgPackages), the four units, the firewall as
    iptables prints it, the host's IPv4 addresses and the sha256 of the models it keeps
    (``models``: roles.download.TRUSTED_SHA256, trusted from their sidecars).

    .. code:: python

        {"files": {"/etc/apt/apt.conf.d/30sdinfra-cache": "..."}, "exec": {"/usr/..."},
         "dpkg": {...}, "units": {"apt-cacher-ng": {"running": True, "enabled": True}},
         "firewall": ["-N SDINFRA-CACHE", ...], "addresses": ["10.0.0.5"],
         "trusted": {"/srv/sdinfra-cache/models/6ce0...": "6ce0..."}, "hashed": {}}
    """

    NAMES = ("cache-state", "file", "exec", "dpkg", "units", "firewall", "addresses", "models")

    @staticmethod
    def default():
        return {"files": {}, "exec": set(), "dpkg": apt.DpkgPackages.default(), "units": {},
                "firewall": [], "addresses": [], "trusted": {}, "hashed": {}}

    def command(self, paths: str, serve: bool = False, models: str = ""):
        # f PATH: the file as a part of its own, and whether it is executable.
        parts = [f"echo '{MARKER}cache-state'", SHOW,
                 f"f() {{ [ -f \"$1\" ] || return 0; echo '{MARKER}file'; echo \"$1\"; "
                 f"show \"$1\"; [ -x \"$1\" ] && {{ echo '{MARKER}exec'; echo \"$1\"; }}; "
                 "return 0; }",
                 *[f"f {shlex.quote(path)}" for path in paths.split()]]
        if serve:
            units = " ".join(f"{unit}.service" for unit in UNITS)
            parts += [
                f"echo '{MARKER}dpkg'", f"{{ {apt.DpkgPackages().command()}; }}",
                f"echo '{MARKER}units'",
                "if command -v systemctl >/dev/null 2>&1; then systemctl show --property Id "
                f"--property SubState --property UnitFileState {units}; fi",
                f"echo '{MARKER}firewall'",
                f"if command -v iptables >/dev/null 2>&1; then iptables -w -S {CHAIN} "
                f"2>/dev/null; iptables -w -S INPUT 2>/dev/null | grep -e ' -j {CHAIN}$'; fi",
                f"echo '{MARKER}addresses'", "ip -o -4 addr show 2>/dev/null",
            ]
        if models:
            parts += [f"echo '{MARKER}models'",
                      f"(set -- {models}; {download.TRUSTED_SHA256})"]
        return "; ".join(parts) + "; true"

    def process(self, output):
        state = self.default()
        for name, lines in parsers.parts(output, self.NAMES):
            if name == "file" and lines:
                state["files"][lines[0].strip()] = "".join(f"{line}\n" for line in lines[1:])
            elif name == "exec" and lines:
                state["exec"].add(lines[0].strip())
            elif name == "dpkg":
                state["dpkg"] = apt.DpkgPackages().process(lines)
            elif name == "units":
                state["units"] = units_of(lines)
            elif name == "firewall":
                state["firewall"] = [line.strip() for line in lines if line.strip()]
            elif name == "addresses":
                # "2: eth0    inet 10.0.0.5/24 brd ..." -> 10.0.0.5
                state["addresses"] = [line.split()[3].split("/")[0] for line in lines
                                      if len(line.split()) > 3 and line.split()[2] == "inet"]
            elif name == "models":
                state["trusted"], state["hashed"] = download.parse_trusted(
                    line.strip() for line in lines)
        return state


def units_of(lines) -> dict:
    """``systemctl show`` blocks (Id, SubState, UnitFileState) by unit name, as
    roles.docker.ServiceState reads one of them."""
    found, block = {}, {}
    for line in list(lines) + [""]:
        if "=" in line:
            key, _, value = line.strip().partition("=")
            block[key] = value
        elif block:
            name = block.get("Id", "").removesuffix(".service")
            found[name] = {"running": block.get("SubState") in ("running", "exited"),
                           "enabled": block.get("UnitFileState") in ("enabled", "static")}
            block = {}
    return found


# --- the deploy ---------------------------------------------------------------------------------


def _put(state: dict, path: str, text: str, executable: bool = False) -> bool:
    """Write ``path`` when its content (or, for a script, its executable bit) is not ``text``;
    whether it changed."""
    if state["files"].get(path) == text and (not executable or path in state["exec"]):
        return False
    # files.put makes a missing directory (/etc/sdinfra, a unit's drop-in directory).
    files.put(name=f"Write {path}", src=StringIO(text), dest=path,
              mode="755" if executable else "644")
    return True


def wanted_files(values: dict) -> dict[str, tuple[str, bool]]:
    """Every file the role writes on this host: path -> (text, executable)."""
    found = {}
    if values["cache_serve"]:
        found[FIREWALL_SCRIPT] = (firewall_script(values), True)
        found[FIREWALL_UNIT] = (FIREWALL_UNIT_TEXT, False)
        found[REGISTRY_CONFIG] = (registry_config(values), False)
        for service, path in DROP_INS.items():
            found[path] = (drop_in(service, values), False)
        found[MODELS_UNIT] = (models_unit(values), False)
    found[APT_CONF] = (apt_conf(), False)
    found[PROXY_SCRIPT] = (proxy_script(values), True)
    return found


@deploy("Fleet cache")
def install(known: HostFacts | None = None):
    """
    The cache host's registry and apt cache (``cache_serve``), and on every host with
    ``cache_host`` apt's use of the cache. Nothing, not even a fact, without ``cache_host``.
    """
    values = values_of()
    if not values["cache_host"]:
        return
    ssh.low_latency()
    wanted = wanted_files(values)
    models = fleet_models(values, host.inventory, host.name) if values["cache_serve"] else {}
    kept = " ".join(shlex.quote(f"{models_dir(values)}/{digest}") for digest in models)
    state = host.get_fact(CacheState, paths=" ".join(wanted), serve=values["cache_serve"],
                          models=kept)
    if values["cache_serve"]:
        if values["cache_host"] not in state["addresses"]:
            fail(f"cache_host = {values['cache_host']} is no address of this host (it has "
                 f"{', '.join(state['addresses']) or 'none'}); cache_serve binds the registry "
                 "and the apt cache to it")
            return
        serve(values, state, wanted, known)
        keep_models(values, state, models)
    for path in (APT_CONF, PROXY_SCRIPT):
        _put(state, path, *wanted[path])


def serve(values: dict, state: dict, wanted: dict, known: HostFacts | None) -> None:
    """The cache host: the firewall first, then the units' drop-ins, then the packages (whose
    first start thus listens on cache_host only, behind the firewall)."""
    dpkg = state["dpkg"]
    missing = apt.missing(FIREWALL_PACKAGES + MODELS_PACKAGES + PACKAGES, dpkg)
    if missing:  # one refresh for both installs
        apt.finish_interrupted(dpkg, known)
        apt.update(name="Refresh package lists")
    firewall_missing = [name for name in missing
                        if name in FIREWALL_PACKAGES + MODELS_PACKAGES]
    if firewall_missing:
        apt.ensure_packages(name=f"Install {' '.join(firewall_missing)}",
                            packages=firewall_missing)
    units = state["units"]
    firewall_changed = _put(state, FIREWALL_SCRIPT, *wanted[FIREWALL_SCRIPT])
    unit_changed = _put(state, FIREWALL_UNIT, *wanted[FIREWALL_UNIT])
    changed = {service: _put(state, DROP_INS[service], *wanted[DROP_INS[service]])
               for service in PACKAGES}
    changed["docker-registry"] |= _put(state, REGISTRY_CONFIG, *wanted[REGISTRY_CONFIG])
    changed[MODELS_SERVICE] = _put(state, MODELS_UNIT, *wanted[MODELS_UNIT])
    if unit_changed or any(changed.values()):
        server.shell(name="Reload systemd's units", commands=["systemctl daemon-reload"])
    firewall = units.get("sdinfra-cache-firewall", {})
    if (firewall_changed or unit_changed or state["firewall"] != firewall_rules(values)
            or not firewall.get("enabled")):
        server.shell(name="Firewall of the fleet cache (only cache_allow)",
                     commands=["systemctl enable sdinfra-cache-firewall.service",
                               "systemctl restart sdinfra-cache-firewall.service"])
    services_missing = [name for name in missing if name in PACKAGES]
    if services_missing:
        apt.ensure_packages(name=f"Install {' '.join(services_missing)}",
                            packages=services_missing)
    for service in (*PACKAGES, MODELS_SERVICE):
        unit = units.get(service, {})
        if changed[service] or not (unit.get("running") and unit.get("enabled")):
            server.shell(name=f"{service} runs on {values['cache_host']}",
                         commands=[f"systemctl enable {service}.service",
                                   f"systemctl reset-failed {service}.service 2>/dev/null; "
                                   f"systemctl restart {service}.service"])


def keep_models(values: dict, state: dict, models: dict) -> None:
    """
    Each model of the fleet (``fleet_models``) in cache_dir/models under its sha256, fetched
    from its URL once and verified (roles.download), its checksum recorded in a sidecar that
    later runs trust (a file whose size or mtime changed is hashed again: other content is
    fetched again). Operations of the cache role, called before the web UI's: pyinfra runs each
    operation on every host before the next, so the cache has a model before any host asks.
    """
    for digest, model in models.items():
        dest = f"{models_dir(values)}/{digest}"
        current = download.in_place(state, dest, digest,
                                    f"Record the checksum of the fleet's {model['name']}")
        if current != digest:
            download.fetch(name=f"Fetch model {model['name']} once for the fleet",
                           url=model["url"], dest=dest, sha256=digest, record=True,
                           current=current)
