"""
The nvidia role: its plan on fake Ubuntu 20.04/22.04 and Debian 12 hosts, daemon.json shared with
the docker role in either order of runs, the parsers against real outputs
(tests/fixtures/nvidia/README.md), and its verification command run here against a stand-in
``docker``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from roles.apt import deb822
from roles.docker import DOCKER_CE, merged
from roles.docker.settings import SETTINGS as DOCKER_SETTINGS
from roles.nvidia import repo_uris, verify_command
from roles.nvidia.facts import KEYRING, NvidiaState, driver_version
from roles.nvidia.settings import SETTINGS
from roles.parsers import MARKER
from tests.unit.fakehost import (FIXTURES, OTHER_KEY, REPO, REPO_KEY, REPO_KEY_FINGERPRINT,
                                 FakeHost, fact_output, is_fact, plan)

NVIDIA = FIXTURES / "nvidia"
DEPLOY = "tests/fixtures/nvidia/nvidia_only.py"
BOTH = "tests/fixtures/nvidia/cuda_without_webui.py"
DEFAULTS = {s.name: s.default for s in SETTINGS}
DOCKER_DAEMON = {s.name: s.default for s in DOCKER_SETTINGS}["docker_daemon_options"]
SOURCE = deb822("https://nvidia.github.io/libnvidia-container/stable/deb/amd64", "/", "", KEYRING)
PREFIXES = ("NVIDIA driver and Container Toolkit | ", "NVIDIA runtime for Docker | ")


def fixture(name: str) -> str:
    return (NVIDIA / name).read_text()


SMI = fixture("nvidia-smi.txt")
SMI_FAILED = fixture("nvidia-smi-failed.txt")
NVIDIA_CTK_JSON = json.loads(fixture("daemon-nvidia-ctk.json"))
RUNTIMES_NVIDIA = fixture("docker-info-runtimes-nvidia.json")
RUNTIMES_PLAIN = fixture("docker-info-runtimes-plain.json")
# The state fact's dpkg-query: dpkg's own stanza (the architecture), then the toolkit's.
DPKG_ITSELF, TOOLKIT_DPKG = (f"{stanza}\n\n" for stanza in
                             fixture("dpkg-query-toolkit.txt").strip().split("\n\n"))


def state_output(smi: str | None = SMI, smi_rc=0, arch="amd64", dpkg=TOOLKIT_DPKG,
                 key=REPO_KEY, sources=SOURCE, legacy=(), daemon=None,
                 runtimes=RUNTIMES_NVIDIA, reboot_pkgs=None) -> list[str]:
    """What the NvidiaState fact's command prints on a host in the given state (``key``: the
    keyring file; nvidia_host pins its fingerprint)."""
    smi_part = (["#! missing nvidia-smi"] if smi is None
                else [*smi.splitlines(), f"#! exit {smi_rc}"])
    itself = DPKG_ITSELF.replace("Architecture: amd64", f"Architecture: {arch}") if arch else ""
    parts = [("smi", smi_part), ("dpkg", itself + dpkg), ("key", key),
             ("sources", sources), ("legacy", legacy),
             ("daemon", json.dumps(daemon, indent=4) if daemon is not None else []),
             ("runtimes", [runtimes.strip()] if runtimes else [])]
    if reboot_pkgs is not None:
        parts.append(("reboot-required", []))
    parts += [("reboot", reboot_pkgs or []), ("end", [])]
    return fact_output("nvidia-state", *parts)


def nvidia_host(name="h", os_key="ubuntu22", **state) -> FakeHost:
    state.setdefault("daemon", merged(DOCKER_DAEMON, NVIDIA_CTK_JSON))
    return FakeHost(name).os(os_key).set(nvidia_key_fingerprint=REPO_KEY_FINGERPRINT).fact(
        "nvidia-state", state_output(**state))


def changes(result, host="h") -> list[str]:
    assert result.returncode == 0, result.output
    found = []
    for change in result.changes(host):
        for prefix in PREFIXES:
            if change.startswith(prefix):
                found.append(change.removeprefix(prefix))
    return found


# --- plans ------------------------------------------------------------------------------------


@pytest.mark.parametrize("os_key", ["ubuntu20", "ubuntu22", "debian12"])
def test_fresh_host_with_a_driver_gets_the_toolkit_runtime_and_a_check(os_key):
    host = nvidia_host("h", os_key, dpkg="", key="", sources="", daemon=DOCKER_DAEMON,
                       runtimes=RUNTIMES_PLAIN)
    assert changes(plan(DEPLOY, [host])) == [
        "Signed apt repository | Refresh package lists",
        "Signed apt repository | Install ca-certificates curl gpg (to fetch and check the key)",
        "Signed apt repository | Key of the nvidia-container-toolkit repository",
        "Signed apt repository | Source of the nvidia-container-toolkit repository",
        "Signed apt repository | Install missing packages | Refresh package lists",
        "Signed apt repository | Install missing packages | Install nvidia-container-toolkit",
        "Docker gets the nvidia runtime (nvidia-ctk runtime configure)",
        "Restart Docker for the nvidia runtime",
        "A container with --gpus all sees the GPU",
    ]


@pytest.mark.parametrize("os_key", ["ubuntu20", "ubuntu22", "debian12"])
def test_converged_host_gets_no_change_for_one_command(os_key):
    result = plan(DEPLOY, [nvidia_host("h", os_key)])
    assert result.returncode == 0, result.output
    assert result.changed_hosts() == set()
    assert result.commands["h"] == [c for c in result.commands["h"] if "nvidia-state" in c]
    assert len(result.commands["h"]) == 1


def test_without_nvidia_verify_nothing_is_verified():
    host = nvidia_host(dpkg="", daemon=DOCKER_DAEMON).set(nvidia_verify=False)
    assert "A container with --gpus all sees the GPU" not in changes(plan(DEPLOY, [host]))


@pytest.mark.parametrize("smi,rc", [(None, None), (SMI_FAILED, 9)])
def test_missing_driver_without_a_package_stops_the_run_before_any_change(smi, rc):
    other = nvidia_host("ok")
    broken = nvidia_host("broken", smi=smi, smi_rc=rc)
    result = plan(DEPLOY, [other, broken])
    assert result.returncode != 0 and result.ops == []
    assert "host @fake/broken: the NVIDIA driver does not answer" in result.output
    assert "set nvidia_driver_package (e.g. nvidia-driver-535 on Ubuntu)" in result.output
    said = "nvidia-smi is not installed" if smi is None else \
        "nvidia-smi says: NVIDIA-SMI has failed because it couldn't communicate"
    assert said in result.output
    assert "no host was changed" in result.output


def test_missing_driver_is_installed_from_the_setting_and_waits_for_a_reboot():
    host = nvidia_host(smi=None).set(nvidia_driver_package="nvidia-driver-535")
    result = plan(DEPLOY, [host])
    assert changes(result) == ["Install missing packages | Refresh package lists",
                               "Install missing packages | Install nvidia-driver-535",
                               "Mark that a reboot is required"]
    assert "needs a reboot for the NVIDIA driver" in result.output
    assert "--> NVIDIA: reboot @fake/h" in result.output
    host.set(nvidia_allow_reboot=True)
    assert changes(plan(DEPLOY, [host]))[-2:] == ["Reboot for the NVIDIA driver",
                                                  "A container with --gpus all sees the GPU"]


def test_installed_driver_waiting_for_its_reboot_changes_nothing_more():
    host = nvidia_host(smi=SMI_FAILED, smi_rc=9, reboot_pkgs=["nvidia-driver-535"],
                       dpkg=TOOLKIT_DPKG + "Package: nvidia-driver-535\nStatus: install ok "
                       "installed\nArchitecture: amd64\nVersion: 535.183.01-0ubuntu0.22.04.1\n")
    host.set(nvidia_driver_package="nvidia-driver-535")
    result = plan(DEPLOY, [host])
    assert changes(result) == []
    assert "--> NVIDIA: reboot @fake/h" in result.output


def test_daemon_json_with_other_keys_gets_the_runtime_and_one_restart():
    host = nvidia_host(daemon={"log-driver": "json-file", "data-root": "/srv/docker"},
                       runtimes=RUNTIMES_PLAIN)
    assert changes(plan(DEPLOY, [host])) == [
        "Docker gets the nvidia runtime (nvidia-ctk runtime configure)",
        "Restart Docker for the nvidia runtime",
        "A container with --gpus all sees the GPU",
    ]


def test_runtime_configured_but_not_loaded_restarts_docker_only():
    host = nvidia_host(runtimes=RUNTIMES_PLAIN)
    assert changes(plan(DEPLOY, [host])) == ["Restart Docker for the nvidia runtime",
                                             "A container with --gpus all sees the GPU"]


def test_docker_not_running_is_not_restarted_for_a_configured_runtime():
    assert changes(plan(DEPLOY, [nvidia_host(runtimes=None)])) == []


def test_the_guides_list_file_is_replaced_by_the_signed_source():
    legacy = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
    host = nvidia_host(legacy=[legacy])
    assert changes(plan(DEPLOY, [host])) == [
        f"Remove {legacy} (replaced by nvidia-container-toolkit.sources)"]


def test_key_with_another_fingerprint_is_fetched_and_checked_again():
    host = nvidia_host(key=OTHER_KEY)
    # What apt.repository's own facts see: the source and the package are there already.
    host.directory("/etc/apt/sources.list.d")
    host.file("/etc/apt/sources.list.d/nvidia-container-toolkit.sources", SOURCE)
    host.package("nvidia-container-toolkit", "ca-certificates", "curl", "gpg")
    assert changes(plan(DEPLOY, [host])) == [
        "Signed apt repository | Key of the nvidia-container-toolkit repository",
        "Signed apt repository | Install missing packages | Refresh package lists",
        "A container with --gpus all sees the GPU",
    ]


def test_invalid_daemon_json_stops_that_host_only():
    lines = state_output(daemon=None)
    lines.insert(lines.index(f"{MARKER}daemon") + 1, '{"runtimes": {')
    host = FakeHost("h").os("ubuntu22").set(nvidia_key_fingerprint=REPO_KEY_FINGERPRINT).fact(
        "nvidia-state", lines)
    result = plan(DEPLOY, [host])
    # Planned as an operation that fails this host (the others would go on), nothing before it.
    assert result.returncode == 0, result.output
    assert changes(result)[0] == "Stop this host", changes(result)


def test_arm64_host_gets_the_arm64_repository():
    assert repo_uris(DEFAULTS, "arm64") == \
        "https://nvidia.github.io/libnvidia-container/stable/deb/arm64"
    arm_source = deb822(repo_uris(DEFAULTS, "arm64"), "/", "", KEYRING)
    assert changes(plan(DEPLOY, [nvidia_host(arch="arm64", sources=arm_source)])) == []
    amd_on_arm = changes(plan(DEPLOY, [nvidia_host(arch="arm64", sources=SOURCE)]))
    assert "Signed apt repository | Source of the nvidia-container-toolkit repository" in amd_on_arm


@pytest.mark.parametrize("settings,expected", [
    ({"nvidia_key_fingerprint": "c95b321b"}, "40-digit upper-case hex"),
    ({"nvidia_repo_url": "nvidia.github.io"}, "http(s)://"),
    ({"nvidia_drivr_package": "x"}, "did you mean nvidia_driver_package?"),
])
def test_bad_settings_are_refused_before_any_fact_is_read(settings, expected):
    result = plan(DEPLOY, [nvidia_host().set(**settings)])
    assert result.returncode != 0 and expected in result.output
    assert result.commands["h"] == []


# --- daemon.json shared with the docker role, in any order of runs ----------------------------


def docker_converged(host: FakeHost, os_key: str, daemon: dict) -> FakeHost:
    """The docker role's converged state (Docker's repository) with ``daemon`` in daemon.json."""
    family, suite = {"ubuntu20": ("ubuntu", "focal"), "ubuntu22": ("ubuntu", "jammy"),
                     "debian12": ("debian", "bookworm")}[os_key]
    base = f"https://download.docker.com/linux/{family}"
    host.package("ca-certificates", "curl", "gpg", *DOCKER_CE)
    host.set(docker_key_fingerprint=REPO_KEY_FINGERPRINT).keyring("/etc/apt/keyrings/docker.asc")
    host.directory("/etc/apt/sources.list.d")
    host.file("/etc/apt/sources.list.d/docker.sources",
              deb822(base, suite, "stable", "/etc/apt/keyrings/docker.asc"))
    host.file("/etc/docker/daemon.json", json.dumps(daemon))
    return host.service("docker")


@pytest.mark.parametrize("os_key", ["ubuntu20", "ubuntu22", "debian12"])
def test_docker_role_then_nvidia_role(os_key):
    # The docker role ran: daemon.json holds its keys. The nvidia role adds its runtime.
    host = docker_converged(nvidia_host("h", os_key, daemon=DOCKER_DAEMON,
                                        runtimes=RUNTIMES_PLAIN), os_key, DOCKER_DAEMON)
    result = plan(BOTH, [host])
    assert result.returncode == 0, result.output
    assert not any(c.startswith("Docker Engine") for c in result.changes("h"))
    assert changes(result) == ["Docker gets the nvidia runtime (nvidia-ctk runtime configure)",
                               "Restart Docker for the nvidia runtime",
                               "A container with --gpus all sees the GPU"]
    # nvidia-ctk merges its runtime into the file it finds: the next run changes nothing.
    after = merged(DOCKER_DAEMON, NVIDIA_CTK_JSON)
    again = docker_converged(nvidia_host("h", os_key, daemon=after), os_key, after)
    assert plan(BOTH, [again]).changed_hosts() == set()


@pytest.mark.parametrize("os_key", ["ubuntu22", "debian12"])
def test_nvidia_role_then_docker_role(os_key):
    # nvidia-ctk wrote daemon.json alone: the docker role merges its keys and keeps the runtime.
    host = docker_converged(nvidia_host("h", os_key, daemon=NVIDIA_CTK_JSON), os_key,
                            NVIDIA_CTK_JSON)
    result = plan("deploy/docker.py", [host])
    assert "Docker Engine | Merge sdinfra's keys into daemon.json" in result.changes("h")
    after = merged(NVIDIA_CTK_JSON, DOCKER_DAEMON)  # what that operation writes
    assert after["runtimes"] == NVIDIA_CTK_JSON["runtimes"]
    assert {k: after[k] for k in DOCKER_DAEMON} == DOCKER_DAEMON
    again = docker_converged(nvidia_host("h", os_key, daemon=after), os_key, after)
    assert plan(BOTH, [again]).changed_hosts() == set()


def test_full_cuda_deploy_runs_docker_before_the_toolkit():
    source = (REPO / "deploy" / "cuda.py").read_text()
    assert source.index("nvidia.install(") < source.index("docker.install(") < \
        source.index("nvidia.configure_docker(")
    after = merged(DOCKER_DAEMON, NVIDIA_CTK_JSON)
    host = docker_converged(nvidia_host("h", "ubuntu22", daemon=after), "ubuntu22", after)
    result = plan("deploy/cuda.py", [host])
    assert result.returncode == 0, result.output
    assert not any(c.startswith(("Docker Engine", *PREFIXES)) for c in result.changes("h"))


# --- flat repository source ------------------------------------------------------------------


def test_flat_repository_source_has_no_components():
    assert SOURCE.splitlines()[1:] == [
        "Types: deb",
        "URIs: https://nvidia.github.io/libnvidia-container/stable/deb/amd64",
        "Suites: /",
        "Signed-By: /etc/apt/keyrings/nvidia-container-toolkit.asc",
    ]
    assert "Components: stable" in deb822("https://x", "jammy", "stable", "/k.asc")
    with pytest.raises(ValueError):
        deb822("https://x", "/", "main", "/k.asc")
    with pytest.raises(ValueError):
        deb822("https://x", "jammy", "", "/k.asc")


# --- parsers and shell, run here ----------------------------------------------------------------


def test_driver_version_from_real_nvidia_smi_outputs():
    assert driver_version(SMI) == "550.54.14"
    assert driver_version(SMI_FAILED) is None


def fake_docker(tmp_path: Path, stdout: str, rc: int) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "docker.out").write_text(stdout)
    (bin_dir / "docker").write_text(
        f"#!/bin/sh\necho \"$@\" > {tmp_path}/docker.args\ncat {tmp_path}/docker.out\nexit {rc}\n")
    (bin_dir / "docker").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_verification_passes_when_the_container_lists_a_gpu(tmp_path):
    env = fake_docker(tmp_path, fixture("nvidia-smi-L.txt"), 0)
    done = subprocess.run(["sh", "-c", verify_command("ubuntu:22.04")], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "docker.args").read_text().split() == [
        "run", "--rm", "--gpus", "all", "ubuntu:22.04", "nvidia-smi", "-L"]


def test_verification_without_the_toolkit_says_what_is_missing(tmp_path):
    env = fake_docker(tmp_path, fixture("docker-run-no-toolkit.txt"), 125)
    done = subprocess.run(["sh", "-c", verify_command("ubuntu:22.04")], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "the NVIDIA Container Toolkit is missing" in done.stderr
    assert 'could not select device driver "" with capabilities: [[gpu]]' in done.stderr


def test_verification_fails_when_the_container_sees_no_gpu(tmp_path):
    env = fake_docker(tmp_path, SMI_FAILED, 0)
    done = subprocess.run(["sh", "-c", verify_command("ubuntu:22.04")], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "does not see the GPU: the driver does not answer inside the container" in done.stderr


def test_state_fact_command_run_here_reads_what_is_here(tmp_path):
    fact = NvidiaState()
    env = {**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    done = subprocess.run(["sh", "-c", fact.command(driver_package="nvidia-driver-535")],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    state = fact.process(done.stdout.splitlines())
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                          text=True).stdout.strip()
    assert state["arch"] == arch  # dpkg's own Architecture field
    assert "dpkg" not in state["packages"]
    if not any(Path(p, "nvidia-smi").exists() for p in env["PATH"].split(":")):
        assert state["smi_found"] is False and state["smi_rc"] is None
    assert state["packages"].get("nvidia-container-toolkit") is None or \
        Path("/usr/bin/nvidia-ctk").exists()


# --- nvidia-smi once per run: the preflight's answer is reused ----------------------------------

AFTER_PREFLIGHT = "tests/fixtures/nvidia/after_preflight.py"


def preflight_answer(smi: str | None, rc: int | None = 0) -> list[str]:
    """The preflight fact's output on an NVIDIA host: its nvidia-smi section as the live command
    prints it (the query's output, then its exit status), the rest from the rtx3060 case."""
    from roles.preflight.__main__ import load_dir
    from tests.unit.fakehost import OS_RELEASE

    sections = load_dir(FIXTURES / "preflight" / "rtx3060-nvidia-smi")
    sections["os-release"] = "\n".join(f'{k}="{v}"' for k, v in OS_RELEASE["ubuntu22"].items())
    sections["nvidia-smi"] = ("#! missing nvidia-smi" if smi is None
                              else f"{smi.rstrip()}\n#! exit {rc}")
    return [line for name, text in sections.items()
            for line in [f"### {name}", *text.splitlines()]]


QUERY = ("index, name, memory.total [MiB], driver_version, pci.bus_id\n"
         "0, NVIDIA GeForce RTX 3060, 12288 MiB, 550.54.14, 00000000:01:00.0")


def test_with_the_preflight_nvidia_smi_runs_once_and_its_answer_is_used():
    # The NvidiaState answer's own nvidia-smi section says "failed": it must not be what counts.
    host = nvidia_host(smi=SMI_FAILED, smi_rc=9).set(accelerator="cuda")
    host.respond("sec lspci-nn;", preflight_answer(QUERY, 0))
    result = plan(AFTER_PREFLIGHT, [host])
    assert changes(result) == []
    asked = result.commands["h"]
    assert [c for c in asked if "nvidia-smi" in c] == [asked[0]]  # the preflight's only
    state = next(c for c in asked if is_fact(c, "nvidia-state"))
    assert "smi-skipped" in state


@pytest.mark.parametrize("smi,rc,said", [
    (None, None, "nvidia-smi is not installed"),
    (SMI_FAILED, 9, "nvidia-smi says: NVIDIA-SMI has failed because it couldn't communicate"),
])
def test_a_driver_that_does_not_answer_in_the_preflight_stops_the_host(smi, rc, said):
    host = nvidia_host().set(accelerator="cuda")  # its own nvidia-smi section would answer
    host.respond("sec lspci-nn;", preflight_answer(smi, rc))
    result = plan(AFTER_PREFLIGHT, [host])
    assert result.returncode != 0
    assert f"the NVIDIA driver does not answer ({said}" in result.output


def test_without_the_preflight_the_state_fact_runs_nvidia_smi_itself():
    result = plan(DEPLOY, [nvidia_host()])
    assert "timeout 60 nvidia-smi" in result.commands["h"][0]


# --- has the running Docker loaded daemon.json? (the state fact's check, run here) -------------


@pytest.fixture
def docker_files(tmp_path):
    """A stand-in dockerd (a live process named dockerd), its pid file, daemon.json, and a
    docker command that logs its calls; the state fact's command pointed at them."""
    from roles.nvidia.facts import DAEMON_JSON, DOCKER_PID

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(shutil.which("sleep"), bin_dir / "dockerd")
    daemon = subprocess.Popen([str(bin_dir / "dockerd"), "60"])
    (bin_dir / "docker").write_text(
        f"#!/bin/sh\necho \"$@\" >> {tmp_path}/docker.calls\necho '{RUNTIMES_NVIDIA.strip()}'\n")
    (bin_dir / "docker").chmod(0o755)
    daemon_json, pid_file = tmp_path / "daemon.json", tmp_path / "docker.pid"
    daemon_json.write_text(json.dumps(NVIDIA_CTK_JSON))
    command = NvidiaState().command(smi=False).replace(DOCKER_PID, str(pid_file)) \
        .replace(DAEMON_JSON, str(daemon_json))
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}

    def state(shell="sh"):
        done = subprocess.run([shell, "-c", command], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        calls = tmp_path / "docker.calls"
        asked = calls.read_text() if calls.exists() else ""
        calls.unlink(missing_ok=True)
        return NvidiaState().process(done.stdout.splitlines()), asked

    try:
        yield daemon, pid_file, daemon_json, state
    finally:
        daemon.kill()
        daemon.wait()


def set_mtime(path: Path, seconds: float):
    os.utime(path, ns=(int(seconds * 1e9), int(seconds * 1e9)))


def test_docker_started_after_daemon_json_was_written_is_not_asked(docker_files):
    daemon, pid_file, daemon_json, state = docker_files
    pid_file.write_text(str(daemon.pid))  # as dockerd writes it: no final newline
    set_mtime(daemon_json, 1_700_000_000.1)
    set_mtime(pid_file, 1_700_000_000.2)  # a tenth of a second later: enough
    found, asked = state()
    assert found["runtimes_current"] is True and found["runtimes"] is None
    assert asked == ""  # no docker command at all


def test_docker_is_asked_when_daemon_json_is_newer_or_the_pid_file_is_not_dockerd(docker_files):
    daemon, pid_file, daemon_json, state = docker_files
    pid_file.write_text(f"{daemon.pid}\n")
    set_mtime(pid_file, 1_700_000_000.1)
    set_mtime(daemon_json, 1_700_000_000.2)  # written after Docker started (or reloaded)
    found, asked = state()
    assert found["runtimes_current"] is False and "nvidia" in found["runtimes"]
    assert asked.startswith("info --format")
    set_mtime(daemon_json, 1_600_000_000)
    pid_file.write_text(f"{os.getpid()}\n")  # alive, but not dockerd (a stale pid file)
    found, asked = state()
    assert found["runtimes_current"] is False and asked.startswith("info")
    pid_file.unlink()  # Docker not running
    found, asked = state()
    assert found["runtimes_current"] is False and asked.startswith("info")


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_docker_is_asked_when_there_is_no_daemon_json(docker_files, shell):
    # As `find PID -newer daemon.json` said: nothing, so Docker is asked. bash's -nt (and
    # newer dash's) is true when the second file is missing: the command must not rely on it.
    daemon, pid_file, daemon_json, state = docker_files
    pid_file.write_text(str(daemon.pid))
    daemon_json.unlink()
    found, asked = state(shell)
    assert found["runtimes_current"] is False and asked.startswith("info")


def test_docker_started_after_daemon_json_counts_as_having_loaded_it():
    def started_after(daemon):
        lines = state_output(runtimes=None, daemon=daemon)
        lines.insert(lines.index(f"{MARKER}runtimes") + 1, f"{MARKER}runtimes-current")
        host = FakeHost("h").os("ubuntu22").set(nvidia_key_fingerprint=REPO_KEY_FINGERPRINT)
        return host.fact("nvidia-state", lines)

    assert changes(plan(DEPLOY, [started_after(merged(DOCKER_DAEMON, NVIDIA_CTK_JSON))])) == []
    # Loaded, but daemon.json has no nvidia runtime: configured, and Docker restarted for it.
    assert changes(plan(DEPLOY, [started_after(DOCKER_DAEMON)]))[:2] == [
        "Docker gets the nvidia runtime (nvidia-ctk runtime configure)",
        "Restart Docker for the nvidia runtime"]
