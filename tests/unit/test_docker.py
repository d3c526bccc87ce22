"""The docker role's plan on fresh and converged hosts, for each supported distribution."""

import json
import os

import pytest

from roles.apt import deb822
from roles.docker import DOCKER_CE, merged
from roles.docker.settings import DOCKER_KEY_FINGERPRINT, SETTINGS
from roles.settings import read
from tests.unit.fakehost import OTHER_KEY, REPO_KEY_FINGERPRINT, FakeHost, plan

DEFAULT_DAEMON = {s.name: s.default for s in SETTINGS}["docker_daemon_options"]


def converged(name, os_key, source="docker"):
    host = FakeHost(name).os(os_key).set(docker_source=source,
                                         docker_key_fingerprint=REPO_KEY_FINGERPRINT)
    family, suite = {"ubuntu20": ("ubuntu", "focal"), "ubuntu22": ("ubuntu", "jammy"),
                     "debian12": ("debian", "bookworm")}[os_key]
    if source == "docker":
        host.package("ca-certificates", "curl", "gpg", *DOCKER_CE)
        host.keyring("/etc/apt/keyrings/docker.asc")
        base = f"https://download.docker.com/linux/{family}"
        host.directory("/etc/apt/sources.list.d")
        host.file("/etc/apt/sources.list.d/docker.sources",
                  deb822(base, suite, "stable", "/etc/apt/keyrings/docker.asc"))
    else:
        compose = "docker-compose-v2" if os_key == "ubuntu22" else "docker-compose"
        host.package("docker.io", compose)
    host.file("/etc/docker/daemon.json", json.dumps(DEFAULT_DAEMON))
    return host.service("docker")


@pytest.mark.parametrize("os_key,suite", [("ubuntu20", "focal"), ("ubuntu22", "jammy"),
                                          ("debian12", "bookworm")])
def test_fresh_host_gets_docker_ce_from_the_signed_repository(os_key, suite):
    result = plan("deploy/docker.py", [FakeHost("h").os(os_key)])
    assert result.returncode == 0, result.output
    changes = result.changes("h")
    assert "Docker Engine | Signed apt repository | Key of the docker repository" in changes
    assert "Docker Engine | Signed apt repository | Source of the docker repository" in changes
    assert any(c.endswith("Install " + " ".join(DOCKER_CE)) for c in changes)
    assert "Docker Engine | Docker is enabled and running" in changes
    assert "Docker Engine | Merge sdinfra's keys into daemon.json" in changes


@pytest.mark.parametrize("os_key,compose", [("ubuntu22", "docker-compose-v2"),
                                            ("debian12", "docker-compose")])
def test_distro_source_installs_the_distributions_compose(os_key, compose):
    result = plan("deploy/docker.py", [FakeHost("h").os(os_key).set(docker_source="distro")])
    changes = result.changes("h")
    assert f"Docker Engine | Install missing packages | Install docker.io {compose}" in changes
    assert not any("Signed apt repository" in c for c in changes)


@pytest.mark.parametrize("os_key", ["ubuntu20", "ubuntu22", "debian12"])
@pytest.mark.parametrize("source", ["docker", "distro"])
def test_converged_host_gets_no_change(os_key, source):
    result = plan("deploy/docker.py", [converged("h", os_key, source)])
    assert result.returncode == 0, result.output
    assert result.changes("h") == []


def test_key_with_another_fingerprint_is_fetched_and_checked_again():
    host = converged("h", "ubuntu22")
    host.keyring("/etc/apt/keyrings/docker.asc", OTHER_KEY, replace=True)
    result = plan("deploy/docker.py", [host])
    assert result.changes("h") == [
        "Docker Engine | Signed apt repository | Key of the docker repository",
        "Docker Engine | Signed apt repository | Install missing packages | Refresh package lists",
    ]


def test_daemon_json_keeps_the_nvidia_runtime_and_adds_only_missing_keys():
    nvidia = {"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}
    result = merged(nvidia, DEFAULT_DAEMON)
    assert result["runtimes"] == nvidia["runtimes"]
    assert result["log-opts"] == {"max-size": "10m", "max-file": "3"}
    # Nested mappings merge key by key too.
    assert merged({"log-opts": {"labels": "x"}}, {"log-opts": {"max-size": "1m"}}) == {
        "log-opts": {"labels": "x", "max-size": "1m"}}

    host = converged("h", "debian12", "distro")
    host.override("cat /etc/docker/daemon.json", json.dumps(merged(nvidia, DEFAULT_DAEMON)))
    assert plan("deploy/docker.py", [host]).changes("h") == []
    host.override("cat /etc/docker/daemon.json", json.dumps(nvidia))
    assert plan("deploy/docker.py", [host]).changes("h") == [
        "Docker Engine | Merge sdinfra's keys into daemon.json",
        "Docker Engine | Restart Docker for daemon.json",
    ]


def test_users_join_the_docker_group_and_unknown_users_stop_the_run():
    host = converged("h", "debian12", "distro").set(docker_users=["alice", "bob"])
    host.user("alice").user("bob", "docker")
    assert plan("deploy/docker.py", [host]).changes("h") == [
        "Docker Engine | alice joins the docker group"]

    host = converged("h", "debian12", "distro").set(docker_users=["carol"])
    result = plan("deploy/docker.py", [host.user("alice")])
    assert result.returncode != 0
    assert "host @fake/h: docker_users names 'carol', who has no account there" in result.output
    assert "Traceback" not in result.output


def test_settings_defaults_are_read_when_unset():
    class Data:
        def get(self, name, default=None):
            return {"docker_source": "distro"}.get(name, default)

    class Host:
        data = Data()

    values = read(Host(), SETTINGS)
    assert values["docker_source"] == "distro"
    assert values["docker_key_fingerprint"] == DOCKER_KEY_FINGERPRINT


# --- one command for what the role reads; operations only for what changes ----------------------


def test_a_converged_host_is_asked_one_command_for_all_the_role_reads():
    for source, count in (("distro", 1), ("docker", 3)):  # + the key and the source file
        host = converged("h", "ubuntu22", source).set(docker_users=["alice"])
        result = plan("deploy/docker.py", [host.user("alice", "docker")])
        assert result.changes("h") == []
        asked = [c for c in result.commands["h"] if "-release" not in c]
        assert len(asked) == count, asked
        assert asked[0].count("dpkg-query -W") == 1 and "systemctl show" in asked[0]
        assert "/etc/docker/daemon.json" in asked[0] and "id -Gn" in asked[0]


def test_the_state_fact_reads_each_part_with_that_facts_parser():
    from roles.docker import DockerState

    mark = DockerState.MARK
    state = DockerState().process([
        f"{mark}dpkg", "ii  docker.io 20.10.24", "iU  runc 1.1.5",
        f"{mark}daemon", '{"log-driver": "json-file"}',
        f"{mark}service", "Id=docker.service", "SubState=running", "UnitFileState=enabled",
        f"{mark}users", "alice:x:1000:1000::/home/alice:/bin/bash|alice|alice docker||",
    ])
    assert state == {
        "dpkg": {"packages": {"docker.io": {"20.10.24"}}, "interrupted": True, "running": None},
        "daemon": {"log-driver": "json-file"},
        "service": {"running": True, "enabled": True},
        "users": {"alice": {"group": "alice", "groups": ["docker"]}},
    }
    assert DockerState().process([]) == DockerState.default()


def test_only_the_conflicting_packages_installed_are_removed():
    host = converged("h", "ubuntu22")
    assert not any("conflict" in c for c in plan("deploy/docker.py", [host]).changes("h"))
    host.package("podman-docker", "docker.io")
    result = plan("deploy/docker.py", [host])
    assert "Docker Engine | Remove packages that conflict with docker-ce" in result.changes("h")


def test_a_source_file_with_another_mode_is_written_again():
    host = converged("h", "debian12")
    base = "https://download.docker.com/linux/debian"
    host.file("/etc/apt/sources.list.d/docker.sources",
              deb822(base, "bookworm", "stable", "/etc/apt/keyrings/docker.asc"),
              mode="-rw-------", replace=True)
    assert plan("deploy/docker.py", [host]).changes("h") == [
        "Docker Engine | Signed apt repository | Source of the docker repository",
        "Docker Engine | Signed apt repository | Install missing packages | Refresh package lists",
    ]


def test_text_file_fact_run_here(tmp_path):
    import subprocess

    from roles.apt import TextFile

    def read(path):
        done = subprocess.run(["sh", "-c", TextFile().command(str(path))], capture_output=True,
                              text=True)
        return TextFile().process(done.stdout.splitlines())

    source = tmp_path / "x.sources"
    source.write_text("Types: deb\nURIs: http://h/")  # no final newline
    source.chmod(0o600)
    assert read(source) == {"text": "Types: deb\nURIs: http://h/\n", "mode": "600"}
    assert read(tmp_path / "missing") is None
    assert read(tmp_path) is None  # a directory
    (tmp_path / "empty").write_text("")
    assert read(tmp_path / "empty")["text"] == ""


def test_state_fact_run_here_reads_a_daemon_json_without_a_final_newline(tmp_path):
    import subprocess

    from roles.docker import DAEMON_JSON, DockerState

    daemon = tmp_path / "daemon.json"
    daemon.write_text('{\n    "runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}\n}')
    command = DockerState().command(users="root sdinfra-no-such-user").replace(
        DAEMON_JSON, str(daemon))
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    state = DockerState().process(done.stdout.splitlines())
    assert state["daemon"] == {"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}
    assert state["users"] == {"root": {"group": "root", "groups": state["users"]["root"]["groups"]}}
    assert "root" not in state["users"]["root"]["groups"]
    assert state["dpkg"]["packages"]  # this machine's packages: dpkg-query ran


def test_docker_running_and_enabled_is_seen_without_systemctl(tmp_path):
    """The service part of the state fact, run here: a live process named dockerd owning the pid
    file and the wants symlink say so; anything else asks systemctl (a stand-in here)."""
    import shutil
    import subprocess

    from roles.docker import DockerState

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(shutil.which("sleep"), bin_dir / "dockerd")
    (bin_dir / "systemctl").write_text("#!/bin/sh\necho Id=docker.service\necho SubState=dead\n"
                                       "echo UnitFileState=disabled\n")
    (bin_dir / "systemctl").chmod(0o755)
    pid_file, wants, etc_unit, run_unit = (tmp_path / "docker.pid", tmp_path / "wants.service",
                                           tmp_path / "etc.service", tmp_path / "run.service")
    command = dict((n, c) for n, _, c in DockerState.parts())["service"]
    for real, here in (("/var/run/docker.pid", pid_file), ("/run/systemd/system/docker.service",
                       run_unit), ("/etc/systemd/system/multi-user.target.wants/docker.service",
                       wants), ("/etc/systemd/system/docker.service", etc_unit)):
        assert real in command
        command = command.replace(real, str(here))
    daemon = subprocess.Popen([str(bin_dir / "dockerd"), "60"])

    def service():
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                              env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
        return DockerState().process([f"{DockerState.MARK}service", *done.stdout.splitlines()])[
            "service"]

    try:
        pid_file.write_text(str(daemon.pid))  # no final newline, as dockerd writes it
        wants.symlink_to("/lib/systemd/system/docker.service")
        assert service() == {"running": True, "enabled": True}
        run_unit.symlink_to("/dev/null")  # masked: systemctl says how things are
        assert service() == {"running": False, "enabled": False}
        run_unit.unlink()
        wants.unlink()  # not enabled
        assert service() == {"running": False, "enabled": False}
        wants.symlink_to("/lib/systemd/system/docker.service")
        pid_file.write_text(str(os.getpid()))  # a live process, but not dockerd
        assert service() == {"running": False, "enabled": False}
    finally:
        daemon.kill()
        daemon.wait()
