"""Inventories: the example ones load, YAML groups and precedence, and the same validation."""

import subprocess

import pytest

from roles.inventory import InventoryError, from_yaml
from tests.unit.fakehost import PYINFRA, REPO


def debug_inventory(inventory):
    proc = subprocess.run([PYINFRA, inventory, "debug-inventory", "--json"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_python_and_yaml_examples_describe_the_same_homelab():
    import json

    python = {h["name"]: h for h in json.loads(debug_inventory("inventories/home.py"))}
    yaml_ = {h["name"]: h for h in json.loads(debug_inventory("inventories/home_yaml.py"))}
    assert set(python) == set(yaml_) == {"sd-server", "laptop", "desktop"}
    for host in python:
        for key in ("accelerator", "ssh_hostname", "webui_vram", "docker_users", "rocm_pre_vega"):
            assert python[host]["data"].get(key) == yaml_[host]["data"].get(key), (host, key)
    assert python["laptop"]["data"]["webui_vram"] == "low"
    assert python["sd-server"]["data"]["accelerator"] == "rocm"


def test_yaml_host_settings_win_over_group_and_all(tmp_path):
    (tmp_path / "inv.yml").write_text(
        "all:\n  vars: {webui_port: 1, webui_vram: low, docker_source: distro}\n"
        "  hosts:\n    lonely: {}\n"
        "  children:\n    gpu:\n      vars: {webui_port: 2, webui_vram: med}\n"
        "      hosts:\n        a: {webui_port: 3}\n        b:\n")
    groups = from_yaml(str(tmp_path / "x.py"), "inv.yml")
    assert groups["gpu"] == [
        ("a", {"webui_port": 3, "webui_vram": "med", "docker_source": "distro"}),
        ("b", {"webui_port": 2, "webui_vram": "med", "docker_source": "distro"}),
    ]
    assert groups["ungrouped"] == [("lonely", {"webui_port": 1, "webui_vram": "low",
                                               "docker_source": "distro"})]


@pytest.mark.parametrize("text,message", [
    ("all: [1, 2]", "all: expected a mapping, got list"),
    ("all:\n  hostz: {}", "unknown key(s) hostz; allowed are vars, hosts, children"),
    ("all:\n  children:\n    gpu:\n      hosts: [a, b]", "gpu.hosts: expected a mapping"),
    ("all: {vars: [", "not valid YAML"),
])
def test_malformed_yaml_is_named_with_its_place(tmp_path, text, message):
    (tmp_path / "inv.yml").write_text(text)
    with pytest.raises(InventoryError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        from_yaml(str(tmp_path / "x.py"), "inv.yml")


def test_yaml_inventory_settings_are_validated_like_any_other(tmp_path):
    (tmp_path / "inv.yml").write_text(
        "all:\n  hosts:\n    '@fake/a': {docker_source: snap, fake_delay: 0}\n")
    (tmp_path / "inv.py").write_text(
        "from roles.inventory import from_yaml\n"
        "globals().update(from_yaml(__file__, 'inv.yml'))\n")
    proc = subprocess.run([PYINFRA, str(tmp_path / "inv.py"), "deploy/docker.py", "--dry"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "host @fake/a: docker_source = 'snap': allowed is one of 'docker', 'distro'" \
        in proc.stderr
