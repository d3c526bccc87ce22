"""
Inventories written in YAML, the way Ansible users keep them.

    all:
      vars: {docker_source: distro}          # every host
      children:
        rocm:                                 # a group
          vars: {accelerator: rocm}
          hosts:
            sd-server: {ssh_hostname: 192.168.1.10, rocm_pre_vega: true}

A pyinfra inventory file turns it into pyinfra's groups with one line,
``globals().update(from_yaml(__file__, "home.yml"))``. Host settings win over group settings,
which win over ``all``; the merged values then pass the same validation as any inventory.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pyinfra.api.exceptions import PyinfraError


class InventoryError(PyinfraError):
    pass


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InventoryError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def from_yaml(beside: str, name: str) -> dict[str, list]:
    """Groups of ``(host, data)`` read from the YAML file ``name`` next to ``beside``."""
    path = Path(beside).resolve().parent / name
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise InventoryError(f"{path}: cannot read the inventory: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise InventoryError(f"{path}: not valid YAML: {error}") from None
    root = _mapping(_mapping(document, str(path)).get("all"), f"{path}: all")
    unknown = set(root) - {"vars", "hosts", "children"}
    if unknown:
        raise InventoryError(f"{path}: all: unknown key(s) {', '.join(sorted(unknown))}; "
                             "allowed are vars, hosts, children")
    common = _mapping(root.get("vars"), f"{path}: all.vars")

    groups: dict[str, list] = {}
    hosts: dict[str, dict] = {}

    def add(group: str | None, members, group_vars: dict, where: str):
        for host, data in _mapping(members, where).items():
            merged = {**common, **group_vars, **_mapping(data, f"{where}.{host}")}
            if host in hosts and hosts[host] != merged:
                raise InventoryError(f"{where}.{host}: host listed twice with other settings")
            hosts[host] = merged
            if group:
                groups.setdefault(group, []).append(host)

    add(None, root.get("hosts"), {}, f"{path}: all.hosts")
    for group, body in _mapping(root.get("children"), f"{path}: all.children").items():
        body = _mapping(body, f"{path}: {group}")
        if not str(group).isidentifier():
            raise InventoryError(f"{path}: group name {group!r} must be a Python identifier")
        add(group, body.get("hosts"), _mapping(body.get("vars"), f"{path}: {group}.vars"),
            f"{path}: {group}.hosts")

    inventory = {group: [(h, hosts[h]) for h in members] for group, members in groups.items()}
    ungrouped = [h for h in hosts if not any(h in members for members in groups.values())]
    if ungrouped:
        inventory["ungrouped"] = [(h, hosts[h]) for h in ungrouped]
    return inventory
