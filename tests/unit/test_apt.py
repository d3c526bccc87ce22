"""roles.apt: a dpkg run that was interrupted is finished before apt installs anything."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from roles import parsers
from roles.apt import (DPKG_UPDATES, FINISH_COMMAND, INTERRUPTED, LIST, LOCKED, LOCKS,
                       DpkgPackages, KeyFingerprints, OtherSources, locked, without)
from roles.parsers import MARKER
from tests.unit.fakehost import (PYINFRA, REPO, REPO_KEY_FINGERPRINT, FakeHost, fact_output,
                                 inventory_source, plan)

FINISH = "Finish the interrupted dpkg run (dpkg --configure -a)"


def dpkg_query(*rows: tuple[str, str, str]) -> list[str]:
    """What DpkgPackages' dpkg-query prints (``LIST``): status letters (a third, the error
    flag: space or R), name, version."""
    return [f"{status:<3} {name} {version}" for status, name, version in rows]


def test_a_clean_host_is_not_interrupted_and_lists_installed_packages_only():
    fact = DpkgPackages().process(dpkg_query(("ii", "curl", "7.88.1-10"),
                                             ("hi", "gpg", "2.2.40-1"), ("rc", "old-tool", "1.0")))
    assert fact == {"packages": {"curl": {"7.88.1-10"}, "gpg": {"2.2.40-1"}},
                    "interrupted": False, "running": None}


def test_a_journal_in_dpkg_updates_means_interrupted():
    fact = DpkgPackages().process(dpkg_query(("ii", "curl", "7.88.1-10")) + [INTERRUPTED])
    assert fact["interrupted"] and fact["packages"] == {"curl": {"7.88.1-10"}}


@pytest.mark.parametrize("status", ["iU", "iF", "iH", "iW", "it", "iHR"])
def test_a_package_left_half_way_means_interrupted_and_is_not_installed(status):
    fact = DpkgPackages().process(dpkg_query(("ii", "curl", "7.88.1-10"),
                                             (status, "runc", "1.1.5")))
    assert fact["interrupted"]
    assert "runc" not in fact["packages"]


def test_the_fact_is_one_command_with_one_dpkg_query():
    # fakehost (and the command counts of a converged host) rely on it: one dpkg-query, no
    # dpkg (dpkg -l is dpkg starting dpkg-query: a second process).
    command = DpkgPackages().command()
    assert f"l=$({LIST});" in command and "/var/lib/dpkg/updates" in command
    assert command.count("dpkg-query ") == 1 and "dpkg " not in command


@pytest.mark.parametrize("entries,interrupted", [([], False), (["tmp.i"], False),
                                                 (["tmp.i", "0004"], True)])
def test_the_journal_check_run_by_the_shell(tmp_path, entries, interrupted):
    # The fact's own shell, pointed at a journal directory the test fills: apt's numbered
    # entries mean a run did not finish, dpkg's tmp.i alone does not.
    journal = Path(f"{tmp_path}{DPKG_UPDATES}")
    journal.mkdir(parents=True)
    for name in entries:
        (journal / name).write_text("")
    fact = run_fact(tmp_path, dpkg_query(("ii", "curl", "7.88.1-10")))
    assert fact["interrupted"] is interrupted and fact["running"] is None


# A dpkg database with a package in each state the fact tells apart: installed, held, an
# epoch, a library installed for two architectures, removed with its configuration left, and
# left half way by a killed run (unpacked; half-installed with reinstallation required).
STATES = [("curl", "install ok installed", "7.88.1-10", "amd64", ""),
          ("gpg", "hold ok installed", "2.2.40-1", "amd64", ""),
          ("perl-base", "install ok installed", "1:5.36.0-7", "amd64", ""),
          ("libfoo1", "install ok installed", "2.0-1", "amd64", "same"),
          ("libfoo1", "install ok installed", "2.0-1", "i386", "same"),
          ("old-tool", "deinstall ok config-files", "1.0", "amd64", ""),
          ("runc", "install ok unpacked", "1.1.5+ds1-1", "amd64", ""),
          ("broken", "install reinstreq half-installed", "3.0", "all", "")]


def admindir(path: Path, states=STATES) -> Path:
    (path / "updates").mkdir(parents=True)
    (path / "info").mkdir()
    (path / "arch").write_text("amd64\ni386\n")
    (path / "status").write_text("\n".join(
        f"Package: {name}\nStatus: {status}\nPriority: optional\nSection: admin\n"
        f"Maintainer: x <x@example.invalid>\nArchitecture: {arch}\n"
        + (f"Multi-Arch: {multi}\n" if multi else "")
        + f"Version: {version}\nDescription: stand-in with a long description line\n"
        for name, status, version, arch, multi in states))
    return path


def real_fact(admin: Path) -> tuple[dict, list[str]]:
    """The fact's own command run here on ``admin`` (the journal: the host's, empty)."""
    command = DpkgPackages().command().replace(
        "dpkg-query -W", f"dpkg-query --admindir={admin} -W")
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout.splitlines()
    return DpkgPackages().process(out), out


@pytest.mark.skipif(not shutil.which("dpkg-query"), reason="needs dpkg")
def test_real_dpkg_query_lists_what_pyinfra_reads_from_dpkg_l(tmp_path):
    # The packages as pyinfra's DebPackages reads `dpkg -l` of the same database: the fact
    # reports what it reported when it read dpkg -l.
    from pyinfra.facts.deb import DebPackages

    admin = admindir(tmp_path)
    listing = subprocess.run(["dpkg", f"--admindir={admin}", "-l"], capture_output=True,
                             text=True, check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    fact, out = real_fact(admin)
    assert DebPackages().process(listing.splitlines()) == fact["packages"] == {
        "curl": {"7.88.1-10"}, "gpg": {"2.2.40-1"}, "perl-base": {"1:5.36.0-7"},
        "libfoo1": {"2.0-1"}}
    assert "iU  runc 1.1.5+ds1-1" in out and "iHR broken 3.0" in out, out
    assert "ii  libfoo1:i386 2.0-1" in out, out
    assert fact["interrupted"] is True and fact["running"] is None  # nobody holds the lock
    finished = [state for state in STATES if state[0] not in ("runc", "broken")]
    assert real_fact(admindir(tmp_path / "finished", finished))[0]["interrupted"] is False


@pytest.mark.skipif(not shutil.which("dpkg-query"), reason="needs dpkg")
def test_this_machines_packages_read_as_pyinfra_reads_them_from_dpkg_l():
    from pyinfra.facts.deb import DebPackages

    listing = subprocess.run(["dpkg", "-l"], capture_output=True, text=True, check=True).stdout
    out = subprocess.run(["sh", "-c", DpkgPackages().command()], capture_output=True,
                         text=True, check=True).stdout
    assert DpkgPackages().process(out.splitlines())["packages"] == \
        DebPackages().process(listing.splitlines())


def interrupted(host: FakeHost, *rows: tuple[str, str, str]) -> FakeHost:
    return host.dpkg(*rows, lines=[INTERRUPTED])


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


# --- a run in progress is waited for, an interrupted one finished --------------------------------


@contextlib.contextmanager
def holding(path, seconds: float = 30):
    """A process that holds ``path`` as apt and dpkg hold their locks (fcntl F_SETLK, F_WRLCK
    on the whole file: Python's lockf), for ``seconds`` or until the block ends."""
    script = ("import fcntl, sys, time\n"
              "f = open(sys.argv[1], 'a+')\n"
              "fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
              "print('held', flush=True)\n"
              "time.sleep(float(sys.argv[2]))\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen([sys.executable, "-c", script, str(path), str(seconds)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.kill()
        child.wait()


def on_test_paths(command: str, root) -> str:
    """``command`` with dpkg's and apt's state (journal, locks) under ``root``."""
    for path in (DPKG_UPDATES, *LOCKS):  # not inside a path already moved (lock, lock-frontend)
        command = re.sub(rf"(?<![\w/.-]){re.escape(path)}(?![\w-])", f"{root}{path}", command)
    for path in LOCKS:
        Path(f"{root}{path}").parent.mkdir(parents=True, exist_ok=True)
        Path(f"{root}{path}").touch()
    return command


def run_fact(root, listing: list[str]) -> dict:
    """The DpkgPackages fact's command run by the shell on ``root``'s journal and locks, its
    dpkg-query answered with ``listing``."""
    (root / "dpkg-query.txt").write_text("\n".join(listing) + "\n")
    command = on_test_paths(DpkgPackages().command(), root).replace(
        LIST, f"cat {root / 'dpkg-query.txt'}")
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    return DpkgPackages().process(out.stdout.splitlines())


def test_a_half_way_package_with_dpkgs_lock_held_is_a_run_in_progress_not_interrupted(tmp_path):
    listing = dpkg_query(("ii", "curl", "7.88.1-10"), ("iU", "runc", "1.1.5"))
    assert run_fact(tmp_path, listing)["interrupted"] is True  # nobody holds the lock
    with holding(f"{tmp_path}/var/lib/dpkg/lock-frontend", 30) as holder:
        fact = run_fact(tmp_path, listing)
    assert fact["interrupted"] is False
    assert fact["running"]["lock"] == f"{tmp_path}/var/lib/dpkg/lock-frontend"
    assert fact["running"]["pid"] == str(holder.pid)
    assert fact["running"]["name"].startswith("python"), fact  # /proc/PID/comm
    # A finished run is not looked at: the locks are read only when dpkg's state is unfinished.
    with holding(f"{tmp_path}/var/lib/dpkg/lock", 30) as holder:
        clean = run_fact(tmp_path, dpkg_query(("ii", "curl", "7.88.1-10")))
    assert clean == {"packages": {"curl": {"7.88.1-10"}}, "interrupted": False, "running": None}


def test_the_lists_lock_alone_is_no_dpkg_run_in_progress(tmp_path):
    # apt-daily's `apt-get update` holds only the lists lock: a journal left by a killed dpkg
    # is still an interrupted run to finish.
    (tmp_path / "var/lib/dpkg/updates").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/updates/0001").write_text("")
    on_test_paths("", tmp_path)
    with holding(f"{tmp_path}/var/lib/apt/lists/lock", 30) as holder:
        fact = run_fact(tmp_path, dpkg_query(("ii", "curl", "7.88.1-10")))
    assert fact["interrupted"] is True and fact["running"] is None


def in_progress(host: FakeHost, *rows: tuple[str, str, str]) -> FakeHost:
    """``interrupted``'s state, with the lock held: test_install_finishes_the_interrupted_run_
    before_refreshing_and_installing is the control of the test below."""
    return host.dpkg(*rows, lines=[
        INTERRUPTED, f"{LOCKED} /var/lib/dpkg/lock-frontend 812 unattended-upgr"])


def test_a_run_in_progress_is_not_configured_under_it_and_the_install_waits_for_it():
    host = in_progress(FakeHost("h").os("debian12").set(docker_source="distro"),
                       ("iU", "runc", "1.1.5"))
    result = plan("deploy/docker.py", [host])
    assert result.returncode == 0, result.output
    changes = result.changes("h")
    assert not any(c.endswith(FINISH) for c in changes)
    assert "Docker Engine | Install missing packages | Install docker.io docker-compose" in changes
    assert ("a package run is in progress (process 812 (unattended-upgr) holds "
            "/var/lib/dpkg/lock-frontend): apt waits for it, up to apt_lock_timeout = 600 s"
            ) in result.output


def run_locked(tmp_path, payload: str, timeout: int):
    command = on_test_paths(locked(payload, timeout), tmp_path)
    started = time.monotonic()
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    return done, time.monotonic() - started


@pytest.mark.parametrize("lock", LOCKS)
def test_a_held_lock_is_waited_for_then_the_command_runs_with_the_time_left(tmp_path, lock):
    with holding(f"{tmp_path}{lock}", 2) as holder:
        done, seconds = run_locked(tmp_path, 'echo "ran with $sdinfra_left s left"', 20)
    assert done.returncode == 0, done.stderr
    assert 1.5 <= seconds < 10
    left = int(done.stdout.split()[2])
    assert 20 - seconds - 1 <= left <= 19  # apt's DPkg::Lock::Timeout gets what is left
    assert f"waiting up to 20 s (apt_lock_timeout): process {holder.pid} (python" in done.stderr
    assert f"holds {tmp_path}{lock}" in done.stderr


def test_a_lock_held_past_the_timeout_fails_naming_the_lock_and_its_holder(tmp_path):
    with holding(f"{tmp_path}/var/lib/dpkg/lock-frontend", 30) as holder:
        done, seconds = run_locked(tmp_path, "echo ran", 2)
    assert done.returncode == 1 and "ran" not in done.stdout
    assert 2 <= seconds < 6
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"E: {tmp_path}/var/lib/dpkg/lock-frontend is still held by process "
                           f"{holder.pid} (python")
    assert "after 2 s (apt_lock_timeout)" in last


def test_no_lock_held_costs_no_wait(tmp_path):
    done, seconds = run_locked(tmp_path, 'echo "ran with $sdinfra_left s left"', 600)
    # (599 when the clock's second turns between the two readings of `date +%s`)
    assert done.returncode == 0 and done.stdout.strip() in ("ran with 600 s left",
                                                            "ran with 599 s left")
    assert done.stderr == "" and seconds < 1


def executed(deploy: str, hosts: list[FakeHost]) -> dict[str, list[str]]:
    """The commands a real run (``-y``, not ``--dry``) sends each fake host."""
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "inventory.py"
        inventory.write_text(inventory_source(hosts))
        proc = subprocess.run([PYINFRA, str(inventory), deploy, "-y", "--debug"], cwd=REPO,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYINFRA_PROGRESS": "off"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands: dict[str, list[str]] = {h.name: [] for h in hosts}
    for line in proc.stderr.splitlines():
        found = re.search(r"\[fake\] simulating command on @fake/([^:]+): (.*)$", line)
        if found:
            commands[found.group(1)].append(found.group(2))
    return commands


def test_every_apt_and_dpkg_command_of_a_run_waits_for_the_locks():
    host = interrupted(FakeHost("h").os("ubuntu22").set(apt_lock_timeout=42),
                       ("ii", "docker.io", "20.10.24"), ("iU", "runc", "1.1.5"))
    commands = executed("deploy/docker.py", [host])["h"]
    package_runs = [c for c in commands if "DEBIAN_FRONTEND=noninteractive" in c]
    # The rest are reads (dpkg-query, the keyring, ...): no apt-get, no dpkg that changes.
    assert not [c for c in commands if c not in package_runs
                and re.search(r"apt-get|dpkg (-i|--configure|--unpack)", c)]
    kinds = {kind for c in package_runs
             for kind in ("update", "install", "remove", "--configure -a") if kind in c}
    assert kinds == {"update", "install", "remove", "--configure -a"}, package_runs
    for command in package_runs:
        wait, _, run = command.partition("sdinfra_wait || exit 1; ")
        assert "sdinfra_wait() {" in wait and "-ge 4200 ]" in wait, command  # 42 s
        if "apt-get" in run:
            assert 'apt-get -y' in run or "apt-get -o" in run
            assert '-o DPkg::Lock::Timeout="$sdinfra_left"' in run, run


def test_the_timeout_is_a_checked_setting():
    host = FakeHost("h").os("debian12").set(docker_source="distro", apt_lock_timeout="ten")
    result = plan("deploy/docker.py", [host])
    assert result.returncode != 0
    assert "host @fake/h: apt_lock_timeout = 'ten': allowed is a whole number from 0 to 86400" \
        in result.output


# --- a vendor's older source is replaced, so apt never sees two Signed-By values ----------------

OLD_LIST = ("deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.gpg] "
            "https://download.docker.com/linux/ubuntu jammy stable\n")
UBUNTU_LIST = ("deb http://archive.ubuntu.com/ubuntu jammy main restricted\n"
               "# deb-src http://archive.ubuntu.com/ubuntu jammy main restricted\n")
DOCKER_URIS = ("download.docker.com/linux/ubuntu", "download.docker.com/linux")
DOCKER_SOURCES = "/etc/apt/sources.list.d/docker.sources"


def test_a_list_file_of_docker_only_goes_and_sources_list_keeps_its_other_lines():
    assert without("/etc/apt/sources.list.d/docker.list", OLD_LIST, DOCKER_URIS,
                   DOCKER_SOURCES) is None
    kept = without("/etc/apt/sources.list", UBUNTU_LIST + OLD_LIST, DOCKER_URIS, DOCKER_SOURCES)
    assert kept == UBUNTU_LIST + f"# replaced by {DOCKER_SOURCES} (sdinfra): {OLD_LIST}"
    # Run again on its own output: nothing left to change (the next run plans nothing).
    assert without("/etc/apt/sources.list", kept, DOCKER_URIS, DOCKER_SOURCES) == kept
    # sources.list itself stays, even with nothing else in it; http:// is the same repository.
    plain = OLD_LIST.replace("https://", "http://")
    assert without("/etc/apt/sources.list", plain, DOCKER_URIS, DOCKER_SOURCES) == \
        f"# replaced by {DOCKER_SOURCES} (sdinfra): {plain}"
    # Another repository whose URI only starts alike is not Docker's.
    other = "deb https://download.docker.com/linuxfoo jammy stable\n"
    assert without("/etc/apt/sources.list.d/x.list", other, DOCKER_URIS, DOCKER_SOURCES) == other


def test_a_deb822_file_loses_the_docker_stanza_only():
    ubuntu = ("Types: deb\nURIs: http://archive.ubuntu.com/ubuntu\nSuites: noble\n"
              "Components: main\nSigned-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\n")
    docker = ("Types: deb\nURIs: https://download.docker.com/linux/ubuntu\nSuites: noble\n"
              "Components: stable\nSigned-By: /etc/apt/keyrings/docker.gpg\n")
    assert without("/etc/apt/sources.list.d/mixed.sources", f"{ubuntu}\n{docker}", DOCKER_URIS,
                   DOCKER_SOURCES) == ubuntu
    assert without("/etc/apt/sources.list.d/old-docker.sources", docker, DOCKER_URIS,
                   DOCKER_SOURCES) is None


def test_the_other_sources_are_found_by_the_shell(tmp_path):
    etc = tmp_path / "etc/apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(UBUNTU_LIST + OLD_LIST)
    (etc / "sources.list.d/docker.list").write_text(OLD_LIST.rstrip("\n"))  # no final newline
    (etc / "sources.list.d/other.list").write_text("deb http://example.org/x stable main\n")
    (etc / "sources.list.d/docker.sources").write_text("URIs: https://download.docker.com/x\n")
    fact = OtherSources()
    command = fact.command(DOCKER_SOURCES, " ".join(DOCKER_URIS)).replace(
        "/etc/apt/", f"{etc}/")
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    found = fact.process(out.stdout.splitlines())
    assert found["source"] == {"text": "URIs: https://download.docker.com/x\n", "mode": "644"}
    assert found["others"] == {f"{etc}/sources.list": UBUNTU_LIST + OLD_LIST,
                               f"{etc}/sources.list.d/docker.list": OLD_LIST}
    (etc / "sources.list").write_text(UBUNTU_LIST)
    (etc / "sources.list.d/docker.list").unlink()
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    assert fact.process(out.stdout.splitlines())["others"] == {}


def apt_reads(etc: Path) -> subprocess.CompletedProcess:
    """apt's own parse of the sources under ``etc`` (no network: apt-cache policy)."""
    state = etc.parent / "state"
    (state / "lists/partial").mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["apt-cache", f"-oDir::Etc::SourceList={etc}/sources.list",
         f"-oDir::Etc::SourceParts={etc}/sources.list.d", f"-oDir::State::Lists={state}/lists",
         f"-oDir::Cache={state}", "-oDir::State::status=/dev/null", "policy"],
        capture_output=True, text=True)


@pytest.mark.skipif(not shutil.which("apt-cache"), reason="needs apt")
def test_apt_refuses_both_sources_and_reads_what_replaces_them(tmp_path):
    from roles.apt import deb822

    etc = tmp_path / "etc"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(UBUNTU_LIST + OLD_LIST)
    (etc / "sources.list.d/docker.list").write_text(OLD_LIST)
    (etc / "sources.list.d/docker.sources").write_text(deb822(
        "https://download.docker.com/linux/ubuntu", "jammy", "stable",
        "/etc/apt/keyrings/docker.asc"))
    refused = apt_reads(etc)
    assert refused.returncode != 0
    assert "Conflicting values set for option Signed-By" in refused.stderr
    for name in ("sources.list", "sources.list.d/docker.list"):
        path = f"/etc/apt/{name}"
        kept = without(path, (etc / name).read_text(), DOCKER_URIS, DOCKER_SOURCES)
        if kept is None:
            (etc / name).unlink()
        else:
            (etc / name).write_text(kept)
    read = apt_reads(etc)
    assert read.returncode == 0 and read.stderr == "", read.stderr


def old_sources(host: FakeHost, ours: str | None, **others: str) -> FakeHost:
    """The OtherSources answer: our .sources file (None: absent) and other files by name."""
    source = [("mode", ["644"]), ("text", ours)] if ours is not None else []
    lines = fact_output("text-file", *source, ("other-sources", []),
                        *(("other-source", [path, *text.splitlines()])
                          for path, text in others.items()))
    return host.override(f"echo '{MARKER}other-sources'", lines)


def test_an_old_docker_list_goes_before_any_apt_update_reads_it():
    host = old_sources(FakeHost("h").os("ubuntu22"), None,
                       **{"/etc/apt/sources.list.d/docker.list": OLD_LIST,
                          "/etc/apt/sources.list": UBUNTU_LIST + OLD_LIST})
    result = plan("deploy/docker.py", [host])
    assert result.returncode == 0, result.output
    changes = result.changes("h")
    repo = "Docker Engine | Signed apt repository"
    removed = f"{repo} | Remove /etc/apt/sources.list.d/docker.list (replaced by {DOCKER_SOURCES})"
    edited = (f"{repo} | /etc/apt/sources.list without its docker entries (replaced by "
              f"{DOCKER_SOURCES})")
    assert removed in changes and edited in changes
    first_update = next(i for i, c in enumerate(changes) if c.endswith("Refresh package lists"))
    assert changes.index(removed) < first_update and changes.index(edited) < first_update
    assert f"{repo} | Source of the docker repository" in changes


def converged_docker(host: FakeHost) -> FakeHost:
    from roles.apt import deb822
    from roles.docker import DOCKER_CE
    host.set(docker_key_fingerprint=REPO_KEY_FINGERPRINT)
    host.package("ca-certificates", "curl", "gpg", *DOCKER_CE)
    host.keyring("/etc/apt/keyrings/docker.asc")
    host.file("/etc/docker/daemon.json", '{"log-driver": "json-file", "log-opts": '
              '{"max-size": "10m", "max-file": "3"}}')
    host.service("docker")
    return host, deb822("https://download.docker.com/linux/ubuntu", "jammy", "stable",
                        "/etc/apt/keyrings/docker.asc")


def test_a_converged_host_with_docker_entries_commented_out_plans_nothing():
    host, ours = converged_docker(FakeHost("h").os("ubuntu22"))
    commented = without("/etc/apt/sources.list", UBUNTU_LIST + OLD_LIST, DOCKER_URIS,
                        DOCKER_SOURCES)
    result = plan("deploy/docker.py", [old_sources(host, ours,
                                                   **{"/etc/apt/sources.list": commented})])
    assert result.returncode == 0, result.output
    assert result.changes("h") == []


def test_a_docker_list_added_to_a_converged_host_goes_and_the_lists_are_refreshed():
    host, ours = converged_docker(FakeHost("h").os("ubuntu22"))
    result = plan("deploy/docker.py", [old_sources(
        host, ours, **{"/etc/apt/sources.list.d/docker.list": OLD_LIST})])
    assert result.changes("h") == [
        "Docker Engine | Signed apt repository | Remove /etc/apt/sources.list.d/docker.list "
        f"(replaced by {DOCKER_SOURCES})",
        "Docker Engine | Signed apt repository | Install missing packages | Refresh package lists",
    ]


# --- key fingerprints worked out on the controller, as gpg --show-keys gives them --------------


def gpg(home: Path, *args: str, text: bool = True):
    return subprocess.run(["gpg", "--batch", "--quiet", *args], capture_output=True, text=text,
                          check=True, env={**os.environ, "GNUPGHOME": str(home)}).stdout


def gpg_fingerprints(home: Path, path: Path) -> list[str]:
    """What the fact asked of gpg before: each primary key's fingerprint (the fpr record after
    a pub record), subkeys' left out."""
    records = [line.split(":") for line in gpg(home, "--show-keys", "--with-colons",
                                               str(path)).splitlines()]
    return [fpr[9] for kind, fpr in zip(records, records[1:])
            if kind[0] == "pub" and fpr[0] == "fpr"]


def shown(path: Path) -> list[str]:
    """What KeyFingerprints' command prints of the file at ``path``, run by the shell here."""
    return subprocess.run(["sh", "-c", KeyFingerprints().command(str(path))], capture_output=True,
                          text=True, check=True).stdout.splitlines()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Keys made by gpg: an ed25519 one with a cv25519 subkey (packets short enough for one
    length octet) and an RSA one (two length octets), exported together, armored and binary."""
    if not shutil.which("gpg"):
        pytest.skip("needs gpg")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    for uid, algo in (("ed <ed@example.invalid>", "ed25519"),
                      ("rsa <rsa@example.invalid>", "rsa2048")):
        gpg(home, "--passphrase", "", "--quick-gen-key", uid, algo, "sign", "never")
    first = gpg_fingerprints_of_home(home)[0]
    gpg(home, "--passphrase", "", "--quick-add-key", first, "cv25519", "encr", "never")
    (home / "keys.asc").write_text(gpg(home, "--export", "--armor"))
    (home / "keys.gpg").write_bytes(gpg(home, "--export", text=False))
    yield home
    # gpg started an agent for this home, which outlives the test run unless it is told to go.
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], capture_output=True,
                   env={**os.environ, "GNUPGHOME": str(home)})


def gpg_fingerprints_of_home(home: Path) -> list[str]:
    return [line.split(":")[9] for line in gpg(home, "--with-colons", "--list-keys").splitlines()
            if line.startswith("fpr:")]


@pytest.mark.parametrize("name", ["keys.asc", "keys.gpg"])
def test_key_fingerprints_are_gpgs_for_armored_and_binary_key_files(keys, name):
    expected = gpg_fingerprints(keys, keys / name)
    assert len(expected) == 2  # the two primary keys; not the subkey
    assert KeyFingerprints().process(shown(keys / name)) == expected


def test_an_armored_key_with_crlf_line_ends_is_read_as_gpg_reads_it(keys, tmp_path):
    # Its first line is not all printable: the shell shows it in base64, as a binary one.
    text = (keys / "keys.asc").read_text()
    (tmp_path / "crlf.asc").write_bytes(text.replace("\n", "\r\n").encode())
    expected = gpg_fingerprints(keys, tmp_path / "crlf.asc")
    assert expected == gpg_fingerprints(keys, keys / "keys.asc")
    assert KeyFingerprints().process(shown(tmp_path / "crlf.asc")) == expected


def test_a_stand_in_repository_key_has_the_fingerprint_the_tests_pin(tmp_path):
    from tests.unit.fakehost import FIXTURES, REPO_KEY, REPO_KEY_FINGERPRINT

    assert KeyFingerprints().process(REPO_KEY.splitlines()) == [REPO_KEY_FINGERPRINT]
    if shutil.which("gpg"):
        assert gpg_fingerprints(tmp_path, FIXTURES / "keys" / "repository.asc") == \
            [REPO_KEY_FINGERPRINT]


def new_format(data: bytes, partial: bool = False) -> bytes:
    """``data``'s packets with new-format headers (RFC 4880 4.2.2): one, two or five length
    octets as the length needs, or (``partial``) the body in partial lengths of 32 octets and a
    last one."""
    out = b""
    for tag, body in parsers._packets(data):
        out += bytes([0xC0 | tag])
        while partial and len(body) > 32:
            out, body = out + bytes([224 + 5]) + body[:32], body[32:]
        if len(body) < 192:
            out += bytes([len(body)])
        elif len(body) < 8384:
            out += bytes([((len(body) - 192) >> 8) + 192, (len(body) - 192) & 0xFF])
        else:
            out += b"\xff" + len(body).to_bytes(4, "big")
        out += body
    return out


def old_format_four_octets(data: bytes) -> bytes:
    """``data``'s packets with old-format headers of four length octets."""
    return b"".join(bytes([0x80 | tag << 2 | 2]) + len(body).to_bytes(4, "big") + body
                    for tag, body in parsers._packets(data))


@pytest.mark.parametrize("recode", [new_format, old_format_four_octets])
def test_key_fingerprints_read_every_packet_header_form(keys, tmp_path, recode):
    # gpg writes old-format headers of one or two length octets; other tools write the others.
    data = recode((keys / "keys.gpg").read_bytes())
    assert data != (keys / "keys.gpg").read_bytes()
    (tmp_path / "recoded.gpg").write_bytes(data)
    expected = gpg_fingerprints(keys, keys / "keys.gpg")
    assert gpg_fingerprints(keys, tmp_path / "recoded.gpg") == expected  # gpg reads it so too
    assert KeyFingerprints().process(shown(tmp_path / "recoded.gpg")) == expected


def test_partial_lengths_in_a_key_file_are_refused_as_gpg_refuses_them(keys, tmp_path):
    # Partial body lengths are for data packets (RFC 4880 4.2.2.4): gpg reads no key here.
    (tmp_path / "partial.gpg").write_bytes(new_format((keys / "keys.gpg").read_bytes(), True))
    done = subprocess.run(["gpg", "--batch", "--show-keys", "--with-colons",
                           str(tmp_path / "partial.gpg")], capture_output=True, text=True,
                          env={**os.environ, "GNUPGHOME": str(keys)})
    assert not [line for line in done.stdout.splitlines() if line.startswith("fpr:")]
    assert KeyFingerprints().process(shown(tmp_path / "partial.gpg")) == []


def test_a_damaged_or_missing_key_file_has_no_fingerprint(keys, tmp_path):
    armored = (keys / "keys.asc").read_text().splitlines()
    at = next(i for i, line in enumerate(armored) if line.startswith("="))  # the CRC-24 line
    damaged = armored[:at - 1] + [armored[at - 1][::-1]] + armored[at:]
    assert KeyFingerprints().process(damaged) == []
    truncated = (keys / "keys.gpg").read_bytes()[:-10]
    (tmp_path / "truncated.gpg").write_bytes(truncated)
    assert KeyFingerprints().process(shown(tmp_path / "truncated.gpg")) == []
    assert KeyFingerprints().process(shown(tmp_path / "missing.asc")) == []
