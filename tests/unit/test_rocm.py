"""
The rocm role's plan on fake Ubuntu 20.04/22.04, Debian 12 and Mint hosts: fresh and converged
hosts, an interrupted run, other releases, checksums and distributions, the decisions, and what the
preflight read in the same run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from roles.distro import Distro
from roles.rocm import configfiles, container_env, plan_install, releases
from roles.rocm.facts import RocmState
from tests.unit.fakehost import FakeHost, is_fact, plan
from tests.unit.rocm_helpers import (DEFAULTS, DEPLOY, DPKG_53, JAMMY_URL, KFD_ATOMICS,
                                     ROCMINFO_CPU, ROCMINFO_GPU, SHA, UBUNTU_ADDUSER, converged,
                                     fixture, fresh, rocm_changes, rocm_host, state_output)


# --- plans: fresh hosts ---------------------------------------------------------------------


@pytest.mark.parametrize("os_key,codename", [("ubuntu20", "focal"), ("ubuntu22", "jammy"),
                                             ("mint21", "jammy")])
def test_fresh_ubuntu_host_gets_the_installer_of_its_own_codename(os_key, codename):
    result = plan(DEPLOY, [fresh("h", os_key, rocm_pre_vega=True)])
    assert rocm_changes(result) == [
        "sd joins video and render",
        "New users get video and render (/etc/adduser.conf)",
        "ROC_ENABLE_PRE_VEGA in /etc/environment",
        f"Download amdgpu-install 5.3.50300-1 for {codename}",
        "Install amdgpu-install 5.3.50300-1",
        "amdgpu-install --usecase=rocm",
        "Mark that a reboot is required",
    ]
    # Reboots are not allowed by default: the host is named, during the run and at its end.
    assert "needs a reboot for the amdgpu kernel driver" in result.output
    assert "--> ROCm: reboot @fake/h: the amdgpu kernel driver was installed" in result.output


def test_fresh_host_costs_two_commands_to_plan():
    result = plan(DEPLOY, [fresh()])
    # /etc/os-release, the RocmState fact, then only the facts of operations that will change.
    assert is_fact(result.commands["h"][1], "rocm-state")
    assert len([c for c in result.commands["h"] if is_fact(c, "rocm-state")]) == 1


def test_reboot_allowed_reboots_and_then_verifies():
    result = plan(DEPLOY, [fresh(rocm_allow_reboot=True)])
    changes = rocm_changes(result)
    assert changes[-2:] == ["Reboot for the amdgpu kernel driver", "rocminfo lists a GPU agent"]
    assert "Mark that a reboot is required" not in changes
    assert "--> ROCm: reboot" not in result.output


def test_no_dkms_needs_no_reboot_and_verifies_at_once():
    result = plan(DEPLOY, [fresh(rocm_dkms=False, rocm_usecases=["rocm", "hip"])])
    changes = rocm_changes(result)
    assert "amdgpu-install --usecase=rocm,hip" in changes
    assert changes[-1] == "rocminfo lists a GPU agent"
    assert not any("eboot" in c for c in changes)
    assert "needs a reboot" not in result.output


def test_without_rocm_verify_nothing_is_verified():
    changes = rocm_changes(plan(DEPLOY, [fresh(rocm_dkms=False, rocm_verify=False)]))
    assert "rocminfo lists a GPU agent" not in changes


def test_missing_render_group_is_created_before_users_join_it():
    host = rocm_host(groups=("video:x:44:",)).set(rocm_installer_sha256=SHA)
    changes = rocm_changes(plan(DEPLOY, [host]))
    assert changes.index("The render group") < changes.index("sd joins video and render")


def test_a_user_without_an_account_stops_the_run():
    host = rocm_host(users={"sd": None}).set(rocm_installer_sha256=SHA)
    result = plan(DEPLOY, [host])
    assert result.returncode != 0
    assert "host @fake/h: rocm_users names 'sd', who has no account there" in result.output


# --- plans: converged hosts ------------------------------------------------------------------


@pytest.mark.parametrize("os_key", ["ubuntu20", "ubuntu22", "mint21"])
@pytest.mark.parametrize("pre_vega", [False, True])
def test_converged_host_gets_no_change_for_two_commands(os_key, pre_vega):
    # No checksum is set: a host that has its release needs none.
    result = plan(DEPLOY, [converged("h", os_key, pre_vega=pre_vega)])
    assert result.returncode == 0, result.output
    assert result.changed_hosts() == set()
    assert len(result.commands["h"]) == 2, result.commands["h"]


def test_converged_debian_hosts_get_no_change_with_either_source():
    distro_host = rocm_host("d", "debian12", dpkg=DPKG_53.replace("amdgpu-install", "rocminfo")
                            .replace("rocm-core", "rocm-smi"),
                            adduser=configfiles.adduser_conf(fixture("adduser.conf.debian12")),
                            users={"sd": ["sd", "video", "render"]}, rocminfo=ROCMINFO_GPU)
    distro_host.set(rocm_source="distro")
    override = converged("o", "debian12", rocm_allow_unsupported_distro=True)
    result = plan(DEPLOY, [distro_host, override])
    assert result.returncode == 0, result.output
    assert result.changed_hosts() == set()
    assert len(result.commands["d"]) == len(result.commands["o"]) == 2


def test_installed_by_hand_with_the_same_release_is_left_alone():
    # The seed's host: 5.3 installed by hand (no record of this role), user already in both.
    host = converged()
    host.fact("rocm-state", state_output(
        version="5.3.0-63", dpkg=DPKG_53, adduser=configfiles.adduser_conf(UBUNTU_ADDUSER),
        users={"sd": ["sd", "video", "render"]}, rocminfo=ROCMINFO_GPU))
    assert rocm_changes(plan(DEPLOY, [host])) == []


def test_converged_host_whose_rocminfo_lists_cpus_only_fails_its_verification():
    host = converged()
    host.fact("rocm-state", state_output(
        version="5.3.0-63", dpkg=DPKG_53, adduser=configfiles.adduser_conf(UBUNTU_ADDUSER),
        users={"sd": ["sd", "video", "render"]}, rocminfo=ROCMINFO_CPU, kernel=KFD_ATOMICS))
    assert rocm_changes(plan(DEPLOY, [host])) == ["rocminfo lists a GPU agent"]


def test_changed_use_cases_run_amdgpu_install_again_without_a_download():
    host = converged(rocm_usecases=["rocm", "hip"])
    assert rocm_changes(plan(DEPLOY, [host])) == ["amdgpu-install --usecase=rocm,hip",
                                                  "rocminfo lists a GPU agent"]


# --- a run killed while it installs: dpkg left interrupted ------------------------------------

FINISH = "Finish the interrupted dpkg run (dpkg --configure -a)"


def dpkg_interrupted(host: FakeHost) -> FakeHost:
    """dpkg's state on a host whose last dpkg run was killed: a package unpacked, the journal
    left."""
    from roles.apt import INTERRUPTED

    return host.dpkg(("ii", "curl", "7.88.1-10"), ("iU", "amdgpu-install", "5.3.50300-1"),
                     lines=[INTERRUPTED])


def test_an_interrupted_dpkg_run_is_finished_before_the_installer_is_installed():
    result = plan(DEPLOY, [dpkg_interrupted(fresh(rocm_dkms=False))])
    changes = rocm_changes(result)
    assert changes[changes.index(FINISH) + 1:] == [
        "Download amdgpu-install 5.3.50300-1 for jammy",
        "Install amdgpu-install 5.3.50300-1",
        "amdgpu-install --usecase=rocm",
        "rocminfo lists a GPU agent",
    ]
    assert changes.count(FINISH) == 1


def test_a_killed_amdgpu_install_is_finished_and_run_again():
    # Killed inside amdgpu-install: part of ROCm is there (rocm-core, the version file), the
    # record still says complete=no.
    host = converged()
    host.fact("rocm-state", state_output(
        version="5.3.0-63", dpkg=DPKG_53,
        record="release=5.3\ninstaller=5.3.50300-1\nusecases=rocm\ndkms=yes\ncomplete=no",
        adduser=configfiles.adduser_conf(UBUNTU_ADDUSER),
        users={"sd": ["sd", "video", "render"]}, rocminfo=ROCMINFO_GPU))
    changes = rocm_changes(plan(DEPLOY, [dpkg_interrupted(host)]))
    assert changes == [FINISH, "amdgpu-install --usecase=rocm", "Mark that a reboot is required"]


def test_a_converged_host_is_not_asked_for_dpkg_state():
    # dpkg left interrupted by something else: the rocm role installs nothing, so it asks
    # nothing more (the docker role's apt step finishes it); two commands as ever.
    result = plan(DEPLOY, [dpkg_interrupted(converged())])
    assert result.changed_hosts() == set()
    assert len(result.commands["h"]) == 2, result.commands["h"]


def test_the_install_record_says_complete_no_until_amdgpu_install_succeeded():
    from roles.rocm import installer_command

    command = installer_command({**DEFAULTS, "rocm_release": "5.3"}, dkms=True)
    started = command.index("complete=no")
    assert started < command.index("apt-get update") < command.index("amdgpu-install -y")
    last = command.rindex("printf")
    assert last > command.index("amdgpu-install -y") and "complete" not in command[last:]


def test_pending_reboot_is_told_again_and_done_when_allowed():
    host = converged()
    host.fact("rocm-state", state_output(
        version="5.3.0-63", dpkg=DPKG_53, adduser=configfiles.adduser_conf(UBUNTU_ADDUSER),
        users={"sd": ["sd", "video", "render"]}, reboot_pkgs=["amdgpu-dkms"],
        rocminfo=ROCMINFO_CPU))
    result = plan(DEPLOY, [host])
    assert rocm_changes(result) == []  # CPU agents only, but the driver is not loaded yet
    assert "needs a reboot" in result.output and "--> ROCm: reboot @fake/h" in result.output
    host.set(rocm_allow_reboot=True)
    assert rocm_changes(plan(DEPLOY, [host])) == ["Reboot for the amdgpu kernel driver",
                                                  "rocminfo lists a GPU agent"]


# --- plans: other releases, checksums, distributions -------------------------------------------


@pytest.mark.parametrize("version,rocm_core,word", [
    ("5.2.3-109", "5.2.3.50203-109~22.04", "older"),
    ("5.4.3-121", "5.4.3.50403-121~22.04", "newer"),
])
def test_another_release_is_kept_with_a_warning(version, rocm_core, word):
    dpkg = DPKG_53.replace("5.3.0.50300-63~22.04", rocm_core)
    host = converged()
    host.fact("rocm-state", state_output(
        version=version, dpkg=dpkg, adduser=configfiles.adduser_conf(UBUNTU_ADDUSER),
        users={"sd": ["sd", "video", "render"]}, rocminfo=ROCMINFO_GPU))
    result = plan(DEPLOY, [host])
    assert rocm_changes(result) == []
    release = version.split("-")[0]
    assert f"ROCm {release} is installed, {word} than rocm_release 5.3: left as it is" \
        in result.output
    assert "set rocm_change_release: true" in result.output


def test_another_release_is_replaced_when_asked():
    dpkg = DPKG_53.replace("5.3.50300-1", "5.4.50403-1").replace("5.3.0.50300", "5.4.3.50403")
    host = converged(rocm_change_release=True, rocm_installer_sha256=SHA)
    host.fact("rocm-state", state_output(
        version="5.4.3-121", dpkg=dpkg, adduser=configfiles.adduser_conf(UBUNTU_ADDUSER),
        users={"sd": ["sd", "video", "render"]}, rocminfo=ROCMINFO_GPU))
    assert rocm_changes(plan(DEPLOY, [host])) == [
        "Remove ROCm 5.4.3",
        "Download amdgpu-install 5.3.50300-1 for jammy",
        "Install amdgpu-install 5.3.50300-1",
        "amdgpu-install --usecase=rocm",
        "Mark that a reboot is required",
    ]


def test_missing_checksum_stops_the_run_before_any_change():
    good = fresh("good")
    bad = rocm_host("bad")  # no checksum known for 5.3/jammy
    result = plan(DEPLOY, [good, bad])
    assert result.returncode != 0
    assert result.ops == []
    message = result.output
    assert "host @fake/bad: no sha256 is known for " + JAMMY_URL in message
    assert "rocm_installer_sha256" in message and '"5.3/jammy"' in message
    assert "python -m roles.rocm checksums 5.3" in message
    assert "no host was changed" in message


def test_checksums_table_setting_is_used_per_codename():
    focal = rocm_host("f", "ubuntu20").set(rocm_installer_sha256s={"5.3/focal": SHA})
    jammy = rocm_host("j", "ubuntu22").set(rocm_installer_sha256s={"5.3/focal": SHA})
    assert plan(DEPLOY, [focal]).returncode == 0
    result = plan(DEPLOY, [jammy])
    assert result.returncode != 0 and "no sha256 is known for " + JAMMY_URL in result.output


def test_debian_is_refused_before_any_change():
    result = plan(DEPLOY, [fresh("d", "debian12")])
    assert result.returncode != 0 and result.ops == []
    assert ("host @fake/d: debian 12 (bookworm) is not a distribution amdgpu-install 5.3 "
            "supports (Ubuntu 20.04 (focal) and Ubuntu 22.04 (jammy)") in result.output
    assert "rocm_source: distro" in result.output
    assert "rocm_allow_unsupported_distro: true" in result.output


def test_ubuntu_24_04_is_refused_for_5_3():
    host = fresh("n")
    host.override("*-release", ["/etc/os-release", 'ID="ubuntu"', 'VERSION_ID="24.04"',
                                'VERSION_CODENAME="noble"', 'UBUNTU_CODENAME="noble"', "---"])
    result = plan(DEPLOY, [host])
    assert result.returncode != 0 and "ubuntu 24.04 (noble) is not a distribution" in result.output


def test_debian_with_the_distro_source_gets_debians_packages():
    host = rocm_host("d", "debian12", adduser=fixture("adduser.conf.debian12"))
    host.set(rocm_source="distro")
    changes = rocm_changes(plan(DEPLOY, [host]), "d")
    assert "Install missing packages | Install rocminfo rocm-smi" in changes
    assert not any("amdgpu-install" in c for c in changes)
    assert changes[-1] == "rocminfo lists a GPU agent"


@pytest.mark.parametrize("codename", ["jammy", "focal"])
def test_debian_with_the_override_gets_the_ubuntu_installer_and_a_warning(codename):
    host = fresh("d", "debian12", rocm_allow_unsupported_distro=True, rocm_dkms=False,
                 rocm_ubuntu_codename=codename)
    result = plan(DEPLOY, [host])
    assert f"Download amdgpu-install 5.3.50300-1 for {codename}" in rocm_changes(result, "d")
    assert (f"installing the Ubuntu {codename} amdgpu-install 5.3.50300-1 on debian 12 "
            "(bookworm), which AMD does not support") in result.output


def test_a_converged_debian_host_with_the_override_is_not_warned_again():
    # The warning is about an install to come: a host where it went well hears nothing more.
    result = plan(DEPLOY, [converged("d", "debian12", rocm_allow_unsupported_distro=True)])
    assert rocm_changes(result, "d") == []
    assert "AMD does not support" not in result.output

def test_mirror_rewrites_amds_apt_sources_when_they_name_the_vendor():
    fresh_host = fresh(rocm_repo_url="http://mirror.lan/radeon")
    assert "AMD's apt sources use rocm_repo_url" in rocm_changes(plan(DEPLOY, [fresh_host]))
    vendor = converged(rocm_repo_url="http://mirror.lan/radeon")
    vendor.fact("rocm-state", state_output(
        version="5.3.0-63", dpkg=DPKG_53, adduser=configfiles.adduser_conf(UBUNTU_ADDUSER),
        users={"sd": ["sd", "video", "render"]}, rocminfo=ROCMINFO_GPU,
        apt_uris=["https://repo.radeon.com/amdgpu/5.3/ubuntu"]))
    assert rocm_changes(plan(DEPLOY, [vendor])) == ["AMD's apt sources use rocm_repo_url"]
    mirrored = converged(rocm_repo_url="http://mirror.lan/radeon")
    mirrored.fact("rocm-state", state_output(
        version="5.3.0-63", dpkg=DPKG_53, adduser=configfiles.adduser_conf(UBUNTU_ADDUSER),
        users={"sd": ["sd", "video", "render"]}, rocminfo=ROCMINFO_GPU,
        apt_uris=["http://mirror.lan/radeon/amdgpu/5.3/ubuntu"]))
    assert rocm_changes(plan(DEPLOY, [mirrored])) == []


@pytest.mark.parametrize("settings,expected", [
    ({"rocm_installer_version": "5.4.50400-1"}, "belongs to another release"),
    ({"rocm_installer_url": "{repo}/x/{arch}.deb"}, "only placeholders are"),
    ({"rocm_installer_sha256s": {"jammy": SHA}}, 'keys are "release/codename"'),
    ({"rocm_hsa_override_gfx_version": "gfx1030"}, "a gfx version like 10.3.0"),
    ({"rocm_usecases": ["dkms"], "rocm_dkms": False}, "installs nothing"),
    ({"rocm_relase": "5.4"}, "did you mean rocm_release?"),
])
def test_bad_settings_are_refused_before_any_fact_is_read(settings, expected):
    result = plan(DEPLOY, [fresh().set(**settings)])
    assert result.returncode != 0 and expected in result.output
    assert result.commands["h"] == []


def test_full_rocm_deploy_plans_the_rocm_role_first():
    result = plan("deploy/rocm.py", [converged(accelerator="rocm")])
    assert result.returncode == 0, result.output
    assert rocm_changes(result) == []
    # the rocm role did plan this host: its fact was read (ahead, with the others')
    assert re.search(r"Loaded fact roles\.hostfacts\.Ahead .*roles\.rocm\.facts\.RocmState",
                     result.output)


# --- decisions, releases, container environment -----------------------------------------------


def test_release_numbers_agree_across_amds_three_spellings():
    assert releases.installer_version("5.3") == "5.3.50300-1"
    assert releases.installer_version("5.4.3") == "5.4.50403-1"
    assert releases.release_of_installer("5.3.50300-1") == (5, 3, 0)
    assert releases.release_of_installer("5.7.00.48.50700-1") == (5, 7, 0)
    assert releases.release_of_rocm("5.3.0-63") == (5, 3, 0)
    assert releases.release_of_rocm("5.3.0-50300") == (5, 3, 0)  # the stand-in's
    assert releases.release_of_rocm("5.3.0.50300-63~22.04") == (5, 3, 0)
    assert releases.supported_codenames((5, 3, 0)) == ("focal", "jammy")
    assert releases.supported_codenames((5, 2, 0)) == ("focal",)


def test_decide_installs_nothing_when_the_stand_in_reports_the_release():
    os = Distro("ubuntu", "22.04", "jammy", "jammy", "ubuntu")
    state = RocmState.default() | {"rocm_version": "5.3.0-50300"}
    d = plan_install(DEFAULTS, os, state)
    assert (d.install_installer, d.run_installer, d.kernel_driver) == (False, False, False)


def test_container_env_follows_the_settings():
    assert container_env(DEFAULTS) == {}
    values = DEFAULTS | {"rocm_pre_vega": True, "rocm_hsa_override_gfx_version": "10.3.0"}
    assert container_env(values) == {"ROC_ENABLE_PRE_VEGA": "1",
                                     "HSA_OVERRIDE_GFX_VERSION": "10.3.0"}


# --- what the preflight read in the same run is not read again ----------------------------------

AFTER_PREFLIGHT = "tests/fixtures/rocm/after_preflight.py"


def preflight_answer(rocminfo: str, dmesg: str = "") -> list[str]:
    """The preflight fact's output on an Ubuntu 22.04 host with an AMD card."""
    from tests.unit.fakehost import OS_RELEASE

    sections = {"os-release": "\n".join(f'{k}="{v}"' for k, v in OS_RELEASE["ubuntu22"].items()),
                "rocminfo": rocminfo, "dmesg": dmesg or "[    1.0] kfd kfd: amdgpu: added device"}
    return [line for name, text in sections.items()
            for line in [f"### {name}", *text.splitlines()]]


def after_preflight(rocminfo: str, dmesg: str = "", **settings) -> FakeHost:
    # The state fact's own rocminfo and kernel parts (were they asked) say the opposite.
    host = converged(**settings).set(accelerator="rocm")
    host.fact("rocm-state", state_output(
        version="5.3.0-63", dpkg=DPKG_53,
        record="release=5.3\ninstaller=5.3.50300-1\nusecases=rocm\ndkms=yes",
        adduser=configfiles.adduser_conf(UBUNTU_ADDUSER),
        environment='PATH="/usr/local/sbin:/usr/bin"\n'
        + ("ROC_ENABLE_PRE_VEGA=1\n" if settings.get("pre_vega") else ""),
        users={"sd": ["sd", "video", "render"]},
        rocminfo=ROCMINFO_CPU if rocminfo == ROCMINFO_GPU else ROCMINFO_GPU))
    return host.respond("sec lspci-nn;", preflight_answer(rocminfo, dmesg))


def test_rocminfo_and_the_kernel_lines_of_the_preflight_are_used():
    result = plan(AFTER_PREFLIGHT, [after_preflight(ROCMINFO_GPU)])
    assert rocm_changes(result) == []
    state = next(c for c in result.commands["h"] if is_fact(c, "rocm-state"))
    assert "dmesg" not in state and "timeout 120" not in state  # neither is run again
    # A CPU-only answer in the preflight fails the verification, with the kernel's reason.
    result = plan(AFTER_PREFLIGHT, [after_preflight(ROCMINFO_CPU, KFD_ATOMICS)])
    assert rocm_changes(result) == ["rocminfo lists a GPU agent"]
    assert "PCI rejects atomics" in result.output


def rocm_state_command(result) -> str:
    return next(c for c in result.commands["h"] if is_fact(c, "rocm-state"))


def test_the_preflights_rocminfo_stands_for_a_pre_vega_container():
    # ROC_ENABLE_PRE_VEGA is OpenCL's (ROCclr): ROCr lists the same agents with or without it,
    # so the preflight runs rocminfo bare and its answer is not asked again.
    result = plan(AFTER_PREFLIGHT, [after_preflight(ROCMINFO_GPU, pre_vega=True)])
    preflight_command = next(c for c in result.commands["h"] if c.startswith("sec() {"))
    assert "ROC_ENABLE_PRE_VEGA" not in preflight_command
    assert "timeout 120" not in rocm_state_command(result)
    assert rocm_changes(result) == []


def test_with_another_container_environment_rocminfo_is_run_with_it():
    # HSA_OVERRIDE_GFX_VERSION renames the agents: the state fact runs rocminfo again, with the
    # container's environment; the kernel lines still come from the preflight.
    result = plan(AFTER_PREFLIGHT, [after_preflight(
        ROCMINFO_GPU, pre_vega=True, rocm_hsa_override_gfx_version="10.3.0")])
    state = rocm_state_command(result)
    assert "ROC_ENABLE_PRE_VEGA=1 HSA_OVERRIDE_GFX_VERSION=10.3.0 timeout 120" in state
    assert "dmesg" not in state
    # Its own rocminfo (CPU agents only here) is what counts.
    assert rocm_changes(result)[-1] == "rocminfo lists a GPU agent"


def test_a_gfx8_card_is_verified_from_the_preflights_rocminfo():
    # The RX 580's agent as the preflight's rocminfo listed it: the container's rocminfo would
    # list the same (no environment changes ROCr's list but HSA_OVERRIDE_GFX_VERSION).
    gfx803 = (Path(__file__).parents[1] / "fixtures/preflight/rx580-gfx803-rocminfo"
              / "rocminfo.txt").read_text()
    for pre_vega in (False, True):
        result = plan(AFTER_PREFLIGHT, [after_preflight(gfx803, pre_vega=pre_vega)])
        assert "timeout 120" not in rocm_state_command(result)
