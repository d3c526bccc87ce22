"""
roles.rocm.driver: amdgpu-install's kernel module (DKMS) only where it can be built and loaded,
the kernel's own amdgpu/KFD (--no-dkms) elsewhere; said in the preflight report, the run's log
and the summary; rocm_dkms forces either.
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from roles.rocm import plan_install
from roles.rocm.driver import choose, secure_boot
from roles.rocm.facts import RocmState
from roles.rocm.settings import SETTINGS
from roles.distro import Distro
from tests.unit.fakehost import plan
from tests.unit.test_apt import executed
from roles.rocm import configfiles
from tests.unit.rocm_helpers import (DEPLOY, DPKG_53, ROCMINFO_GPU, UBUNTU_ADDUSER, converged,
                                     fresh, rocm_changes, state_output)

NEW = "6.8.0-45-generic"  # Ubuntu 22.04's HWE kernel today
OLD = "5.15.0-56-generic"  # Ubuntu 22.04.1's, which AMD validated ROCm 5.3 for
VALIDATED = "AMD validated ROCm 5.3's amdgpu-dkms for 5.15, 5.17 kernels"
IN_TREE = "the kernel's own amdgpu (amdgpu-install --no-dkms)"
MODULE = "amdgpu-dkms (a module DKMS builds)"


@pytest.mark.parametrize("setting,release,kernel,sb,dkms,said", [
    ("auto", "5.3", NEW, "SecureBoot disabled", False,
     f"kernel {NEW} is newer than the kernels {VALIDATED}: the module very likely fails to "
     "build on it; the kernel's own amdgpu/KFD serves the container"),
    ("auto", "5.3", OLD, "SecureBoot disabled", True, f"kernel {OLD}: {VALIDATED}"),
    ("auto", "5.3", "5.17.0-1020-oem", "This system doesn't support Secure Boot", True,
     VALIDATED),
    ("auto", "5.3", OLD, "SecureBoot enabled", False, "Secure Boot is enabled (mokutil "
     "--sb-state): the kernel refuses an amdgpu module that is not signed"),
    ("auto", "5.3", OLD, None, True, "Secure Boot state unknown (no mokutil)"),
    ("auto", "5.3", "5.4.0-150-generic", "SecureBoot disabled", False, "is older than"),
    ("auto", "5.3", None, "SecureBoot disabled", False, "the running kernel is not known"),
    ("auto", "6.0", NEW, "SecureBoot disabled", True, "no kernel statement of AMD for ROCm 6.0"),
    (True, "5.3", NEW, "SecureBoot enabled", True, "rocm_dkms: true; Secure Boot is enabled"),
    (False, "5.3", OLD, "SecureBoot disabled", False, "rocm_dkms: false"),
])
def test_the_driver_follows_the_kernel_secure_boot_and_the_setting(setting, release, kernel, sb,
                                                                   dkms, said):
    chosen = choose(setting, release, kernel, sb)
    assert chosen.dkms is dkms
    assert said in chosen.reason
    assert chosen.line().startswith(MODULE if dkms else IN_TREE)


def test_rocm_from_the_distribution_has_no_module_to_build():
    chosen = choose(True, "5.3", OLD, "SecureBoot disabled", source="distro")
    assert chosen.dkms is False and "rocm_source: distro" in chosen.reason


@pytest.mark.parametrize("printed,enabled", [
    # What mokutil --sb-state prints (src/mokutil.c, and the answers users post).
    ("SecureBoot enabled", True), ("SecureBoot disabled", False),
    ("SecureBoot disabled\nPlatform is in Setup Mode", False),
    ("This system doesn't support Secure Boot", False),
    ("EFI variables are not supported on this system", False),
    (None, None), ("", None), ("mokutil: command failed", None),
])
def test_secure_boot_is_read_from_what_mokutil_prints(printed, enabled):
    assert secure_boot(printed) is enabled


def values(**changes) -> dict:
    return {**{s.name: s.default for s in SETTINGS}, "rocm_installer_sha256": "5" * 64, **changes}


JAMMY = Distro("ubuntu", "22.04", "jammy", "jammy", "ubuntu")


def state(uname=OLD, sb="SecureBoot disabled", record=None, installed=False) -> dict:
    found = RocmState().process(state_output(
        version="5.3.0-63" if installed else "", dpkg=DPKG_53 if installed else "",
        record=record or "", uname=uname, sb_state=sb))
    return found


def test_decide_installs_without_the_module_on_a_new_kernel_and_needs_no_reboot():
    d = plan_install(values(), JAMMY, state(uname=NEW))
    assert d.run_installer and d.driver.dkms is False and d.kernel_driver is False
    d = plan_install(values(), JAMMY, state(uname=OLD))
    assert d.run_installer and d.driver.dkms is True and d.kernel_driver is True


def amdgpu_install(host) -> str:
    commands = executed(DEPLOY, [host])["h"]
    runs = [c for c in commands if "amdgpu-install -y --usecase=" in c]
    assert len(runs) == 1, commands
    return runs[0]


def test_a_6_8_kernel_gets_no_dkms_with_its_reason_and_no_reboot():
    host = fresh(rocm_verify=False).fact("rocm-state", state_output(
        users={"sd": ["sd"]}, uname=NEW))
    result = plan(DEPLOY, [host])
    changes = rocm_changes(result)
    assert "amdgpu-install --usecase=rocm" in changes
    assert "Mark that a reboot is required" not in changes
    assert (f"ROCm kernel driver: {IN_TREE}: kernel {NEW} is newer than the kernels "
            f"{VALIDATED}") in result.output
    command = amdgpu_install(host)
    assert "amdgpu-install -y --usecase=rocm --no-dkms" in command
    assert "dkms=no" in command  # the install record


def test_a_5_15_kernel_without_secure_boot_gets_the_module_and_a_reboot():
    host = fresh(rocm_verify=False)  # the fake host's kernel: 5.15, Secure Boot disabled
    changes = rocm_changes(plan(DEPLOY, [host]))
    assert "Mark that a reboot is required" in changes
    command = amdgpu_install(host)
    assert "--no-dkms" not in command and "dkms=yes" in command


def test_secure_boot_enabled_keeps_the_kernels_own_driver():
    host = fresh(rocm_verify=False).fact("rocm-state", state_output(
        users={"sd": ["sd"]}, sb_state="SecureBoot enabled"))
    result = plan(DEPLOY, [host])
    assert "Mark that a reboot is required" not in rocm_changes(result)
    assert "Secure Boot is enabled (mokutil --sb-state)" in result.output
    assert "--no-dkms" in amdgpu_install(host)


@pytest.mark.parametrize("setting,uname,module", [(True, NEW, True), (False, OLD, False)])
def test_the_setting_forces_either(setting, uname, module):
    host = fresh(rocm_verify=False, rocm_dkms=setting).fact(
        "rocm-state", state_output(users={"sd": ["sd"]}, uname=uname))
    changes = rocm_changes(plan(DEPLOY, [host]))
    assert ("Mark that a reboot is required" in changes) is module
    assert ("--no-dkms" in amdgpu_install(host)) is not module


@pytest.mark.parametrize("recorded,uname", [("yes", NEW), ("no", OLD), ("no", NEW),
                                            ("yes", OLD)])
def test_a_converged_host_plans_nothing_whatever_auto_would_choose_today(recorded, uname):
    host = converged().fact("rocm-state", state_output(
        version="5.3.0-63", dpkg=DPKG_53,
        record=f"release=5.3\ninstaller=5.3.50300-1\nusecases=rocm\ndkms={recorded}",
        users={"sd": ["sd", "video", "render"]}, uname=uname,
        adduser=configfiles.adduser_conf(UBUNTU_ADDUSER),
        environment='PATH="/usr/local/sbin:/usr/bin"\n', rocminfo=ROCMINFO_GPU))
    result = plan(DEPLOY, [host])
    assert rocm_changes(result) == []
    warned = "amdgpu-dkms was installed for an earlier kernel" in result.output
    assert warned is (recorded == "yes" and uname == NEW)


def test_a_forced_setting_that_differs_from_the_install_runs_it_again():
    host = converged(rocm_dkms=False)  # installed with dkms=yes
    assert "amdgpu-install --usecase=rocm" in rocm_changes(plan(DEPLOY, [host]))


def test_the_state_fact_reads_the_kernel_and_mokutil_when_the_preflight_did_not(tmp_path):
    fake = tmp_path / "mokutil"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --sb-state ] && echo 'SecureBoot enabled'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    fact = RocmState()
    command = fact.command(driver=True)
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin"}).stdout
    found = fact.process(out.splitlines())
    assert found["uname"] == os.uname().release and found["sb_state"] == "SecureBoot enabled"
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout
    assert fact.process(out.splitlines())["sb_state"] is None or \
        os.path.exists("/usr/bin/mokutil")
    assert "uname" not in fact.command(driver=False)


def test_deploy_rocm_asks_the_kernel_in_its_one_state_command():
    result = plan(DEPLOY, [converged()])
    asked = [c for c in result.commands["h"] if "-release" not in c]
    assert len(asked) == 1 and "uname -r" in asked[0] and "mokutil --sb-state" in asked[0]


def test_the_preflight_report_and_the_summary_say_which_driver_and_why():
    from tests.unit.test_command_count import converged as site_host
    from tests.unit.test_command_count import preflight_output

    host = site_host("rocm1", "rocm", "debian12", "distro").set(rocm_dkms="auto")
    host.override("sec lspci-nn;", preflight_output("rx6700xt-ryzen3700x", "debian12") + [
        "### uname", f"Linux {NEW} x86_64", "### secureboot", "SecureBoot disabled"])
    result = plan("deploy/site.py", [host])
    assert result.returncode == 0, result.output
    assert result.changes("rocm1") == []  # installed without the module: as auto chooses now
    said = (f"ROCm kernel driver: {IN_TREE}: kernel {NEW} is newer than the kernels "
            f"{VALIDATED}")
    lines = result.output.splitlines()
    backend = lines.index("    [@fake/rocm1] Backend: rocm")
    role = next(i for i, line in enumerate(lines) if "Starting deploy ROCm" in line)
    # In the preflight's report (before the rocm role starts), and in the role's log.
    report = [line for line in lines[backend:role] if line.startswith("    [@fake/rocm1] ")]
    assert any(line.endswith(said + ": the module very likely fails to build on it; the "
                                    "kernel's own amdgpu/KFD serves the container")
               for line in report), "\n".join(report)
    assert f"[@fake/rocm1] {said}" in "\n".join(lines[role:])
    table = result.output.split("--> sdinfra summary:", 1)[1]
    assert f"    @fake/rocm1: {said}" in table
