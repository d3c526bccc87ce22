"""
Each backend's deploy acts on its own hosts only (issue 13, items 8 and 9): deploy/rocm.py,
deploy/cuda.py and deploy/cpu.py on a mixed inventory (the README's inventories/home.py: a rocm
group, a cuda laptop, a cpu desktop) plan nothing for the others and list them as skipped; and a
run refused before any change says so in its summary.
"""

from __future__ import annotations

import pytest

from tests.unit.fakehost import FakeHost, plan
from tests.unit.test_command_count import CASES, preflight_output
from tests.unit.rocm_helpers import fresh as fresh_rocm

GROUPS = {"rocm": ["sd-server"], "cuda": ["laptop", "gpu-auto"], "cpu": ["desktop"]}


def home(server=None) -> list[FakeHost]:
    """inventories/home.py's hosts, fresh (nothing installed), plus a host left on auto whose
    hardware (the preflight fixture of an RTX 3060) makes auto choose cuda."""
    return [
        server or fresh_rocm("sd-server").set(accelerator="rocm"),
        FakeHost("laptop").os("ubuntu22").set(accelerator="cuda", webui_vram="low",
                                              nvidia_driver_package="nvidia-driver-535"),
        FakeHost("desktop").os("debian12").set(accelerator="cpu"),
        FakeHost("gpu-auto").os("ubuntu22").respond(
            "sec lspci-nn;", preflight_output(CASES["cuda"], "ubuntu22")),
    ]


def summary(output: str) -> dict[str, str]:
    """The sdinfra summary's status by host."""
    lines = output.split("--> sdinfra summary:\n", 1)[1].splitlines()[1:]
    table = {}
    for line in lines:
        if not line.startswith("    @fake/"):
            break
        name = line.split()[0].split("/", 1)[1]
        table[name] = line.split("  ")[-1].strip()
    return table


def test_the_rocm_deploy_on_the_home_inventory_leaves_the_laptop_and_desktop_alone():
    result = plan("deploy/rocm.py", home(), groups=GROUPS)
    assert result.returncode == 0, result.output[-3000:]
    assert any("amdgpu-install" in op for op in result.changes("sd-server")), \
        result.changes("sd-server")
    for other in ("laptop", "desktop", "gpu-auto"):
        assert result.changes(other) == [], other
    # Explicit accelerators cost no remote command; auto asks the preflight's one fact.
    assert result.commands["laptop"] == [] and result.commands["desktop"] == []
    assert len(result.commands["gpu-auto"]) == 1
    status = summary(result.output)
    assert status["laptop"] == ("skipped: accelerator = 'cuda', not rocm; deploy it with "
                                "deploy/site.py, or deploy/cuda.py --limit cuda")
    assert status["desktop"] == ("skipped: accelerator = 'cpu', not rocm; deploy it with "
                                 "deploy/site.py, or deploy/cpu.py --limit cpu")
    assert status["gpu-auto"].startswith(
        "skipped: accelerator = 'auto' chose cuda from its hardware, not rocm")
    assert status["sd-server"] == "planned (dry run)"


@pytest.mark.parametrize("deploy,backend", [("deploy/cuda.py", "cuda"), ("deploy/cpu.py", "cpu")])
def test_the_cuda_and_cpu_deploys_change_only_their_own_hosts(deploy, backend):
    result = plan(deploy, home(), groups=GROUPS)
    assert result.returncode == 0, result.output[-3000:]
    mine = {"cuda": {"laptop", "gpu-auto"}, "cpu": {"desktop"}}[backend]
    assert result.changed_hosts() == mine
    assert all("amdgpu" not in op for host in mine for op in result.changes(host))
    status = summary(result.output)
    assert status["sd-server"] == (f"skipped: accelerator = 'rocm', not {backend}; deploy it "
                                   "with deploy/site.py, or deploy/rocm.py --limit rocm")


def test_a_host_without_a_group_is_named_for_limit():
    result = plan("deploy/cpu.py", [FakeHost("box").os("debian12").set(accelerator="rocm")])
    assert result.returncode == 0, result.output[-3000:]
    assert result.changes("box") == []
    assert "deploy/rocm.py --limit @fake/box" in summary(result.output)["box"]


def test_a_run_refused_on_one_host_says_no_host_changed_not_planned():
    # The focal host passes the settings check; its refusal comes while planning, after the
    # desktop was planned.
    focal = FakeHost("focal").os("ubuntu20").set(accelerator="cpu", docker_source="distro")
    desktop = FakeHost("desktop").os("debian12").set(accelerator="cpu")
    result = plan("deploy/cpu.py", [desktop, focal])
    assert result.returncode != 0
    status = summary(result.output)
    assert set(status) == {"desktop", "focal"}
    for name in ("desktop", "focal"):
        assert status[name].startswith("not changed: the run was refused before any change "
                                       "(host @fake/focal: docker_source = 'distro' on ubuntu "
                                       "20.04 (focal)"), status[name]
    assert "planned" not in result.output.split("--> sdinfra summary:")[1]


def test_a_run_with_bad_settings_lists_every_host_as_not_changed():
    bad = FakeHost("bad").os("debian12").set(webui_dir="/etc")
    good = FakeHost("good").os("debian12")
    result = plan("deploy/site.py", [good, bad])
    assert result.returncode != 0
    assert summary(result.output) == {
        name: "not changed: the run was refused before any change (bad settings on @fake/bad, "
              "listed above)" for name in ("good", "bad")}
