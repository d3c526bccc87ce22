"""roles.apt: a dpkg run that was interrupted is finished before apt installs anything."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from roles.apt import DPKG_UPDATES, FINISH_COMMAND, INTERRUPTED, DpkgPackages
from tests.unit.fakehost import FakeHost, plan

FINISH = "Finish the interrupted dpkg run (dpkg --configure -a)"
HEADER = [
    "Desired=Unknown/Install/Remove/Purge/Hold",
    "| Status=Not/Inst/Conf-files/Unpacked/halF-conf/Half-inst/trig-aWait/Trig-pend",
    "|/ Err?=(none)/Reinst-required (Status,Err: uppercase=bad)",
    "||/ Name           Version         Architecture Description",
    "+++-==============-===============-============-=================================",
]


def dpkg_l(*rows: tuple[str, str, str]) -> list[str]:
    return HEADER + [f"{status}  {name:<14} {version:<15} amd64        stand-in"
                     for status, name, version in rows]


def test_a_clean_host_is_not_interrupted_and_lists_installed_packages_only():
    fact = DpkgPackages().process(dpkg_l(("ii", "curl", "7.88.1-10"), ("hi", "gpg", "2.2.40-1"),
                                         ("rc", "old-tool", "1.0"), ("un", "gone", "<none>")))
    assert fact == {"packages": {"curl": {"7.88.1-10"}, "gpg": {"2.2.40-1"}},
                    "interrupted": False}


def test_a_journal_in_dpkg_updates_means_interrupted():
    fact = DpkgPackages().process(dpkg_l(("ii", "curl", "7.88.1-10")) + [INTERRUPTED])
    assert fact["interrupted"] and fact["packages"] == {"curl": {"7.88.1-10"}}


@pytest.mark.parametrize("status", ["iU", "iF", "iH", "iW", "it", "iHR"])
def test_a_package_left_half_way_means_interrupted_and_is_not_installed(status):
    fact = DpkgPackages().process(dpkg_l(("ii", "curl", "7.88.1-10"), (status, "runc", "1.1.5")))
    assert fact["interrupted"]
    assert "runc" not in fact["packages"]


def test_the_fact_is_one_command_that_starts_with_dpkg_l():
    # fakehost (and the command counts of a converged host) rely on it: one `dpkg -l`, no more.
    command = DpkgPackages().command()
    assert command.startswith("dpkg -l;") and "/var/lib/dpkg/updates" in command
    assert command.count("dpkg ") == 1


@pytest.mark.parametrize("entries,interrupted", [([], False), (["tmp.i"], False),
                                                 (["tmp.i", "0004"], True)])
def test_the_journal_check_run_by_the_shell(tmp_path, entries, interrupted):
    # The fact's own shell, pointed at a journal directory the test fills: apt's numbered
    # entries mean a run did not finish, dpkg's tmp.i alone does not.
    for name in entries:
        (tmp_path / name).write_text("")
    journal = DpkgPackages().command().split("; ", 1)[1].replace(DPKG_UPDATES, str(tmp_path))
    out = subprocess.run(["sh", "-c", journal], capture_output=True, text=True).stdout
    assert DpkgPackages().process(out.splitlines())["interrupted"] is interrupted

@pytest.mark.skipif(not shutil.which("dpkg"), reason="needs dpkg")
def test_real_dpkg_l_output_of_an_unpacked_package_is_read_as_interrupted(tmp_path):
    # dpkg's own column layout, from a database that has one package unpacked (a run killed
    # before it configured it) and one installed.
    (tmp_path / "updates").mkdir()
    (tmp_path / "info").mkdir()
    stanza = ("Package: {name}\nStatus: install ok {state}\nPriority: optional\n"
              "Section: admin\nMaintainer: x <x@example.invalid>\nArchitecture: amd64\n"
              "Version: {version}\nDescription: stand-in\n")
    (tmp_path / "status").write_text(
        stanza.format(name="curl", state="installed", version="7.88.1-10") + "\n"
        + stanza.format(name="runc", state="unpacked", version="1.1.5+ds1-1"))
    out = subprocess.run(["dpkg", f"--admindir={tmp_path}", "-l"], capture_output=True,
                         text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}).stdout
    assert "iU  runc" in out, out
    fact = DpkgPackages().process(out.splitlines())
    assert fact == {"packages": {"curl": {"7.88.1-10"}}, "interrupted": True}
    clean = out.replace("iU  runc", "ii  runc")
    assert DpkgPackages().process(clean.splitlines())["interrupted"] is False


def interrupted(host: FakeHost, *rows: tuple[str, str, str]) -> FakeHost:
    return host.override("dpkg -l", dpkg_l(*rows) + [INTERRUPTED])


def test_install_finishes_the_interrupted_run_before_refreshing_and_installing():
    host = interrupted(FakeHost("h").os("debian12").set(docker_source="distro"),
                       ("iU", "runc", "1.1.5"))
    result = plan("deploy/docker.py", [host])
    assert result.returncode == 0, result.output
    changes = result.changes("h")
    assert changes[:3] == [
        f"Docker Engine | Install missing packages | {FINISH}",
        "Docker Engine | Install missing packages | Refresh package lists",
        "Docker Engine | Install missing packages | Install docker.io docker-compose",
    ]


def test_an_installed_host_left_interrupted_is_finished_too():
    # Killed in the triggers after docker.io was configured: nothing is missing, apt would
    # still refuse the next install anywhere.
    host = interrupted(FakeHost("h").os("debian12").set(docker_source="distro"),
                       ("ii", "docker.io", "20.10.24"), ("ii", "docker-compose", "1.29.2"),
                       ("it", "man-db", "2.11.2"))
    result = plan("deploy/docker.py", [host])
    changes = result.changes("h")
    assert f"Docker Engine | Install missing packages | {FINISH}" in changes
    assert not any("Refresh package lists" in c or "Install docker.io" in c for c in changes)


def test_a_signed_repository_finishes_it_once_before_installing_curl_and_gpg():
    host = interrupted(FakeHost("h").os("ubuntu22"), ("iU", "runc", "1.1.5"))
    result = plan("deploy/docker.py", [host])
    assert result.returncode == 0, result.output
    changes = result.changes("h")
    finish = [c for c in changes if c.endswith(FINISH)]
    assert finish == [f"Docker Engine | Signed apt repository | {FINISH}"]
    tools = next(i for i, c in enumerate(changes) if "(to fetch and check the key)" in c)
    assert changes.index(finish[0]) < tools


def test_a_clean_host_gets_no_finishing_step():
    host = FakeHost("h").os("debian12").set(docker_source="distro")
    result = plan("deploy/docker.py", [host])
    assert not any(c.endswith(FINISH) for c in result.changes("h"))


def test_the_finishing_command_configures_everything_without_prompts():
    assert "dpkg " in FINISH_COMMAND and FINISH_COMMAND.endswith("--configure -a")
    assert "DEBIAN_FRONTEND=noninteractive" in FINISH_COMMAND
    assert "--force-confold" in FINISH_COMMAND  # a changed conffile never waits for an answer
