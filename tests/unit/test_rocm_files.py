"""
The rocm role's parsers against real command outputs (tests/fixtures/rocm/README.md says where
each comes from) and its edits of /etc/adduser.conf and /etc/environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from roles.rocm import configfiles
from roles.rocm.facts import atomics_rejected, dpkg_status, gpu_agents
from roles.shell import DPKG_FIELDS
from tests.unit.fakehost import FIXTURES
from tests.unit.rocm_helpers import (DPKG_53, KFD_ATOMICS, ROCMINFO_CPU, ROCMINFO_GPU,
                                     UBUNTU_ADDUSER, fixture)


# --- parsers on real outputs ----------------------------------------------------------------


def test_gpu_agents_from_real_rocminfo_outputs():
    assert gpu_agents(ROCMINFO_GPU) == ["gfx1100", "gfx1030"]
    assert gpu_agents(ROCMINFO_CPU) == []  # the seed's Xeons: CPU agents only


def test_kernel_reason_from_the_seeds_kfd_line():
    assert atomics_rejected(KFD_ATOMICS) == (
        "[    4.592356] kfd kfd: amdgpu: skipped device 1002:67ef, PCI rejects atomics 730<0")
    assert atomics_rejected("[    3.1] kfd kfd: amdgpu: added device 1002:73bf") is None


def test_dpkg_status_keeps_installed_packages_only():
    assert dpkg_status(DPKG_53) == {"amdgpu-install": "5.3.50300-1",
                                    "rocm-core": "5.3.0.50300-63~22.04"}
    removed = DPKG_53.replace("Status: install ok installed", "Status: deinstall ok config-files")
    assert dpkg_status(removed) == {}


def test_the_fixture_script_prints_what_the_facts_print():
    # The dpkg-query fixtures are printed with the facts' own format (roles.shell.DPKG_FIELDS).
    fields = DPKG_FIELDS.split(" -W ", 1)[1]
    assert fields in (FIXTURES / "make-dpkg-query.sh").read_text()


@pytest.mark.skipif(not shutil.which("dpkg-query"), reason="needs dpkg")
def test_dpkg_fields_read_as_dpkg_s_of_the_same_packages(tmp_path):
    # The rocm and nvidia facts read dpkg-query (DPKG_FIELDS) where they read dpkg -s: the same
    # packages and versions, from a database with one package in each state (installed, held,
    # removed with its configuration left, unpacked by a killed run, unknown).
    (tmp_path / "info").mkdir()
    (tmp_path / "updates").mkdir()
    states = [("rocm-core", "install ok installed", "5.3.0.50300-63~22.04"),
              ("rocminfo", "hold ok installed", "1:1.0.0-1"),
              ("amdgpu-install", "deinstall ok config-files", "5.3.50300-1"),
              ("rocm-smi", "install ok unpacked", "1.0")]
    (tmp_path / "status").write_text("\n".join(
        f"Package: {name}\nStatus: {status}\nPriority: optional\nSection: devel\n"
        f"Maintainer: x <x@example.invalid>\nArchitecture: amd64\nVersion: {version}\n"
        "Description: stand-in\n" for name, status, version in states))
    names = "rocm-core rocminfo amdgpu-install rocm-smi no-such-package"
    env = {"PATH": "/usr/bin:/bin"}
    shown = subprocess.run(["sh", "-c", f"dpkg --admindir={tmp_path} -s {names} 2>/dev/null"],
                           capture_output=True, text=True, env=env).stdout
    fields = subprocess.run(
        ["sh", "-c", DPKG_FIELDS.replace(" -W ", f" --admindir={tmp_path} -W ")
         + f" {names} 2>/dev/null"], capture_output=True, text=True, env=env).stdout
    assert dpkg_status(fields) == dpkg_status(shown) == {
        "rocm-core": "5.3.0.50300-63~22.04", "rocminfo": "1:1.0.0-1"}


# --- /etc/adduser.conf and /etc/environment ----------------------------------------------------


AMD_SNIPPET = "ADD_EXTRA_GROUPS=1\nEXTRA_GROUPS=video\nEXTRA_GROUPS=render\n"


@pytest.mark.parametrize("before,after", [
    # Extra groups off (commented defaults, Ubuntu): new users got none, now video and render.
    (UBUNTU_ADDUSER, UBUNTU_ADDUSER
     .replace('#EXTRA_GROUPS="dialout cdrom floppy audio video plugdev users"\n',
              '#EXTRA_GROUPS="dialout cdrom floppy audio video plugdev users"\n'
              'EXTRA_GROUPS="video render"\n')
     .replace("#ADD_EXTRA_GROUPS=1\n", "#ADD_EXTRA_GROUPS=1\nADD_EXTRA_GROUPS=1\n")),
    # AMD's documented snippet: two lines, of which adduser keeps only the last.
    ("# local\n" + AMD_SNIPPET, '# local\nADD_EXTRA_GROUPS=1\nEXTRA_GROUPS="video render"\n'),
    # An active line keeps its groups, in order, once each.
    ('ADD_EXTRA_GROUPS=1\nEXTRA_GROUPS="users video plugdev"\n',
     'ADD_EXTRA_GROUPS=1\nEXTRA_GROUPS="users video plugdev render"\n'),
    # Extra groups on with adduser's built-in default (stated by the commented line): kept.
    ('#EXTRA_GROUPS="dialout cdrom floppy audio video plugdev users"\nADD_EXTRA_GROUPS=1\n',
     '#EXTRA_GROUPS="dialout cdrom floppy audio video plugdev users"\n'
     'EXTRA_GROUPS="dialout cdrom floppy audio video plugdev users render"\nADD_EXTRA_GROUPS=1\n'),
    # ADD_EXTRA_GROUPS=0 is turned on; lower-case keys count (adduser lower-cases them).
    ("ADD_EXTRA_GROUPS=0\nextra_groups='audio'\n",
     'ADD_EXTRA_GROUPS=1\nEXTRA_GROUPS="audio video render"\n'),
    # Nothing there at all.
    ("", 'ADD_EXTRA_GROUPS=1\nEXTRA_GROUPS="video render"\n'),
    # Already right: unchanged.
    ('ADD_EXTRA_GROUPS=1\nEXTRA_GROUPS="video render"\n',
     'ADD_EXTRA_GROUPS=1\nEXTRA_GROUPS="video render"\n'),
])
def test_adduser_conf_edits(before, after):
    assert configfiles.adduser_conf(before) == after
    assert configfiles.adduser_conf(after) == after  # idempotent


def test_adduser_conf_of_debian_12_keeps_every_other_line():
    before = fixture("adduser.conf.debian12")
    after = configfiles.adduser_conf(before)
    removed = set(before.splitlines()) - set(after.splitlines())
    added = set(after.splitlines()) - set(before.splitlines())
    assert removed == set()
    assert added == {"ADD_EXTRA_GROUPS=1", 'EXTRA_GROUPS="video render"'}
    assert configfiles.extra_groups(after) == ["video", "render"]


def adduser_reads(text: str, tmp_path: Path) -> tuple[str, str]:
    """(add_extra_groups, extra_groups) as adduser's own configuration parser reads ``text``."""
    conf = tmp_path / "adduser.conf"
    conf.write_text(text)
    script = ('use Debian::AdduserCommon; my %c = (extra_groups => "", add_extra_groups => 0); '
              'read_config($ARGV[0], \\%c); print "$c{add_extra_groups}|$c{extra_groups}";')
    out = subprocess.run(["perl", "-e", script, str(conf)], capture_output=True, text=True,
                         check=True).stdout
    return tuple(out.split("|", 1))


@pytest.mark.skipif(not Path("/usr/share/perl5/Debian/AdduserCommon.pm").exists(),
                    reason="adduser is not installed here")
def test_adduser_itself_reads_amds_snippet_as_render_only_and_ours_as_both(tmp_path):
    assert adduser_reads(AMD_SNIPPET, tmp_path) == ("1", "render")
    assert adduser_reads(configfiles.adduser_conf(AMD_SNIPPET), tmp_path) == ("1", "video render")
    ubuntu = configfiles.adduser_conf(UBUNTU_ADDUSER)
    assert adduser_reads(ubuntu, tmp_path) == ("1", "video render")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare")
                    or not shutil.which("adduser"), reason="needs root, unshare and adduser")
def test_a_user_made_by_adduser_with_our_file_gets_both_groups(tmp_path):
    """adduser run for real in a private mount namespace: /etc, /home and /var are overlays."""
    conf = tmp_path / "adduser.conf"
    conf.write_text(configfiles.adduser_conf(fixture("adduser.conf.debian12")))
    script = f"""
set -e
for d in etc var; do
  mkdir -p {tmp_path}/$d-up {tmp_path}/$d-work
  mount -t overlay overlay -o lowerdir=/$d,upperdir={tmp_path}/$d-up,workdir={tmp_path}/$d-work /$d
done
mount -t tmpfs tmpfs /home
getent group render >/dev/null || groupadd --system render
adduser --conf {conf} --disabled-password --gecos '' sdinfratest >/dev/null 2>&1
id -Gn sdinfratest
"""
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True)
    if done.returncode != 0 and "mount" in done.stderr:
        pytest.skip(f"no overlay mounts here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert {"video", "render"} <= set(done.stdout.split())
    assert subprocess.run(["getent", "passwd", "sdinfratest"]).returncode != 0  # nothing leaked


@pytest.mark.parametrize("before,wanted,after", [
    ('PATH="/usr/bin"\n', {"ROC_ENABLE_PRE_VEGA": "1"}, 'PATH="/usr/bin"\nROC_ENABLE_PRE_VEGA=1\n'),
    ('ROC_ENABLE_PRE_VEGA="1"\n', {"ROC_ENABLE_PRE_VEGA": "1"}, 'ROC_ENABLE_PRE_VEGA="1"\n'),
    ("HSA_OVERRIDE_GFX_VERSION=9.0.0\nX=1\n", {"HSA_OVERRIDE_GFX_VERSION": "10.3.0"},
     "HSA_OVERRIDE_GFX_VERSION=10.3.0\nX=1\n"),
    ("# ROC_ENABLE_PRE_VEGA=0\n", {"ROC_ENABLE_PRE_VEGA": "1"},
     "# ROC_ENABLE_PRE_VEGA=0\nROC_ENABLE_PRE_VEGA=1\n"),
    ("", {"ROC_ENABLE_PRE_VEGA": "1", "HSA_OVERRIDE_GFX_VERSION": "10.3.0"},
     "ROC_ENABLE_PRE_VEGA=1\nHSA_OVERRIDE_GFX_VERSION=10.3.0\n"),
])
def test_environment_edits(before, wanted, after):
    assert configfiles.environment(before, wanted) == after
    assert configfiles.environment(after, wanted) == after
