"""
The roles' import graph: a role reads what another step of the run learned from the host's
record (roles.hostfacts), never by importing that role. Lazy imports inside functions count.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROLES = ("preflight", "rocm", "nvidia", "docker", "webui")
# Sibling imports for a shared helper, not for results: the nvidia role restarts Docker as the
# docker role does (docker.RESTART); the web UI calls Compose as the docker role installed it
# (docker.compose_command) and reads its settings.
HELPERS = {("nvidia", "docker"), ("webui", "docker")}


def module_of(path: Path) -> str:
    """roles/rocm/facts.py: roles.rocm.facts; roles/rocm/__init__.py: roles.rocm.__init__."""
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def imports_of(path: Path, module: str) -> set[str]:
    """The roles.* modules the file of ``module`` imports, at its top or inside a function."""
    base_parts = module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                anchor = base_parts[:len(base_parts) - (node.level - 1)]
                module = ".".join(anchor + ([module] if module else []))
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("roles")}


def role_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROLES else None


def test_no_role_imports_a_sibling_role_for_its_results():
    crossing = []
    for path in sorted((REPO / "roles").rglob("*.py")):
        if "templates" in path.parts:
            continue
        mine = role_of(module_of(path))
        if mine is None:
            continue
        for module in imports_of(path, module_of(path)):
            other = role_of(module)
            if other not in (None, mine) and (mine, other) not in HELPERS:
                crossing.append(f"{path.relative_to(REPO)} -> {module}")
    assert crossing == []


def test_the_check_sees_a_lazy_import_of_the_preflight(tmp_path):
    # What rocm/__init__.py did before the record, and nvidia/facts.py's borrowed reader.
    probe = tmp_path / "probe.py"
    probe.write_text("def state():\n    from roles import preflight\n    return preflight\n\n"
                     "from ..rocm.facts import dpkg_status\n")
    found = imports_of(probe, "roles.nvidia.facts")
    assert {"roles.preflight", "roles.rocm.facts"} <= found
    assert {role_of(m) for m in found} - {None} == {"preflight", "rocm"}
