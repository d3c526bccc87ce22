"""
deploy/site.py end to end when things go wrong, on a fleet of its own (f-cpu, f-rocm, f-cuda),
so that no fault here disturbs the converge and idempotence tests of test_site.py.

One run after another, each fault on a fleet in the state the previous one left:

1. bad input: ``accelerator: gpu`` and other refused values (a system webui_dir, --share inside
   one extra arg, a login typed into webui_auth_file, Docker's API on tcp, a misspelt setting)
   on two hosts stop the run before any host changes, and the summary says so;
2. a key URL serving a key with another fingerprint: the key is not kept;
3. in one run: a sha256 that does not match the amdgpu-install download (f-rocm), a repository
   signed with another key (f-cuda), while f-cpu converges in the same run;
4. a host down when the run starts (f-rocm): the others converge, the summary names it;
5. that host started again and the run killed (pyinfra and the host's apt-get and dpkg,
   SIGKILL) while it installs docker.io: the next run finishes the interrupted dpkg run and
   converges it, the one after changes nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time

import pytest

from testbed import standins
from testbed.hosts import (PYINFRA, REPO, prepare, run_pyinfra, settings_for, ssh,
                           write_settings)
from tests.e2e.conftest import booted

NAMES = ["f-cpu", "f-rocm", "f-cuda"]
SITE = "deploy/site.py"
KEYRING = "/etc/apt/keyrings/nvidia-container-toolkit.asc"
SOURCES = "/etc/apt/sources.list.d/nvidia-container-toolkit.sources"
ROCM_CACHE = "/var/cache/sdinfra/rocm/jammy"  # roles.rocm: CACHE/<codename>/amdgpu-install_*.deb
CONTAINER = {"f-cpu": "sdinfra_cpu_1", "f-rocm": "sdinfra_rocm_1", "f-cuda": "sdinfra_cuda_1"}


# --------------------------------------------------------------------------------------------
# the fault fleet and its helpers


@pytest.fixture(scope="module")
def faults_fleet(tmp_path_factory):
    with booted(tmp_path_factory, "faults-fleet", NAMES) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def faults_server(faults_fleet, stand_ins):
    addresses = [h.gateway for h in faults_fleet.hosts] + ["127.0.0.1"]
    with standins.serve(stand_ins.root, addresses) as srv:
        yield srv


@pytest.fixture(scope="module")
def fleet_ready(faults_fleet, stand_ins, faults_server):
    prepare(faults_fleet, stand_ins, faults_server, NAMES)
    return faults_fleet


def configure(fleet, stand_ins, server, **faults: dict) -> None:
    """Every host's good settings, with the given hosts' settings changed (f_rocm=...)."""
    data = {name: settings_for(fleet, stand_ins, server, name) for name in NAMES}
    for key, changes in faults.items():
        data[key.replace("_", "-")].update(changes)
    write_settings(fleet, data)


def base_url(fleet, server, name: str) -> str:
    return f"http://{fleet.host(name).gateway}:{server.port}"


def site(fleet, *args: str) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = run_pyinfra(fleet, SITE, "-y", "--json", *args, timeout=600)
    result.seconds = time.monotonic() - started
    print(f"deploy/site.py {' '.join(args)}: exit {result.returncode} in {result.seconds:.1f} s")
    return result


def report(result) -> dict:
    """pyinfra's --json results (empty when the run stopped before executing)."""
    try:
        return json.loads(result.stdout)["results"]
    except (ValueError, KeyError):
        return {}


def changed(result, name: str) -> list[str]:
    """Names of the operations that changed the host in this run."""
    return [op["name"] for op in report(result).get("operations", []) if name in op["success"]]


def summary(result) -> dict[str, tuple[str, str, str]]:
    """The "--> sdinfra summary:" table: host -> (backend, web UI, status), cut at the header's
    columns (the web UI column has spaces in it)."""
    assert "--> sdinfra summary:" in result.stderr, result.stderr[-3000:]
    lines = result.stderr.split("--> sdinfra summary:\n", 1)[1].splitlines()
    header, rows = lines[0], lines[1:]
    at = [header.index(word) for word in ("host", "backend", "web UI", "status")]
    table = {}
    for row in rows:
        if not row.strip():
            break
        cells = [row[a:b].strip() for a, b in zip(at, at[1:] + [None])]
        table[cells[0]] = tuple(cells[1:])
    return table


def host_lines(result, name: str) -> str:
    """What pyinfra printed for one host during the run."""
    prefix = f"[{name}]"
    return "\n".join(line for line in result.stderr.splitlines() if line.strip().startswith(prefix))


def installed(fleet, name: str, package: str) -> bool:
    status = ssh(fleet, name, f"dpkg-query -W -f='${{Status}}' {package} 2>/dev/null || true")
    return status.strip() == "install ok installed"


def exists(fleet, name: str, path: str) -> bool:
    return ssh(fleet, name, f"test -e {shlex.quote(path)} && echo yes || echo no").strip() == "yes"


def webui_running(fleet, name: str) -> bool:
    names = ssh(fleet, name, "docker ps --format '{{.Names}}' 2>/dev/null || true").split()
    return CONTAINER[name] in names


# --------------------------------------------------------------------------------------------
# the runs, in order: each starts from the state the one before left


@pytest.fixture(scope="module")
def bad_input_run(fleet_ready, stand_ins, faults_server):
    # One mistake of each kind the settings check knows on two hosts; f-cpu has none.
    configure(fleet_ready, stand_ins, faults_server,
              f_cuda={"accelerator": "gpu", "webui_dir": "/etc",
                      "webui_auth_file": "alice:hunter2"},
              f_rocm={"webui_extra_args": ["--xformers --share"],
                      "docker_daemon_options": {"hosts": ["tcp://0.0.0.0:2375"]},
                      "acelerator": "cpu"})
    return site(fleet_ready)


@pytest.fixture(scope="module")
def wrong_fingerprint_run(bad_input_run, fleet_ready, stand_ins, faults_server):
    """f-cuda's key URL serves another key than the pinned fingerprint's."""
    url = stand_ins.url(base_url(fleet_ready, faults_server, "f-cuda"), stand_ins.wrong_key_path)
    configure(fleet_ready, stand_ins, faults_server, f_cuda={"nvidia_key_url": url})
    return site(fleet_ready, "--limit", "f-cuda"), url


@pytest.fixture(scope="module")
def faulty_run(wrong_fingerprint_run, fleet_ready, stand_ins, faults_server):
    """f-rocm pins the sha256 of another file (the cpu-only installer); f-cuda's repository is
    signed with another key than the pinned one; f-cpu has nothing wrong."""
    repo = stand_ins.url(base_url(fleet_ready, faults_server, "f-cuda"),
                         stand_ins.apt_flat_wrong_key_path)
    configure(fleet_ready, stand_ins, faults_server,
              f_rocm={"rocm_installer_sha256": stand_ins.amdgpu_cpuonly_sha256},
              f_cuda={"nvidia_repo_url": repo})
    return site(fleet_ready)


@pytest.fixture(scope="module")
def down_run(faulty_run, fleet_ready, stand_ins, faults_server):
    """Good settings everywhere; f-rocm is powered off."""
    fleet_ready.stop("f-rocm")
    configure(fleet_ready, stand_ins, faults_server)
    return site(fleet_ready)


@pytest.fixture(scope="module")
def killed_run(down_run, fleet_ready, stand_ins, faults_server):
    """f-rocm boots again; a run is killed once dpkg unpacks on it for `apt-get install
    docker.io`: the pyinfra process, then the host's apt-get and dpkg (SIGKILL all), as a crash
    or power cut would. Returns what was running then and what dpkg and apt say afterwards."""
    fleet = fleet_ready
    fleet.start("f-rocm")
    prepare(fleet, stand_ins, faults_server, ["f-rocm"])  # its /dev nodes went with the boot
    configure(fleet, stand_ins, faults_server)
    log = fleet.workdir / "killed-run.log"
    with open(log, "w") as err:
        run = subprocess.Popen([PYINFRA, str(fleet.inventory_path), SITE, "-y"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                               env={**os.environ, "PYINFRA_PROGRESS": "off"})
        try:
            deadline = time.monotonic() + 300
            seen = ""
            while time.monotonic() < deadline and run.poll() is None:
                seen = ssh(fleet, "f-rocm", "pgrep -a 'apt-get|dpkg' || true")
                unpacking = [line for line in seen.splitlines() if "dpkg" in line
                             and ("--unpack" in line or "--configure" in line)]
                if "docker.io" in seen and unpacking:
                    break
                time.sleep(0.1)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    if run.returncode != -signal.SIGKILL:
        pytest.fail(f"the run ended ({run.returncode}) before dpkg unpacked docker.io on f-rocm; "
                    f"last seen: {seen!r}; see {log}")
    ssh(fleet, "f-rocm", "for i in 1 2 3; do pids=$(pgrep -x 'apt-get|dpkg'); "
                         "[ -z \"$pids\" ] || kill -9 $pids; sleep 0.3; done; "
                         "! pgrep -x 'apt-get|dpkg'")
    audit = ssh(fleet, "f-rocm", "dpkg --audit; ls /var/lib/dpkg/updates", check=False)
    apt = ssh(fleet, "f-rocm", "apt-get check 2>&1 || true")
    print(f"killed while: {seen.strip()}\ndpkg --audit: {audit.strip()}\napt-get check: "
          f"{apt.strip()}")
    return {"killed_while": seen, "audit": audit, "apt": apt}


@pytest.fixture(scope="module")
def recovery_runs(killed_run, fleet_ready):
    """The run after the kill, then one more."""
    return site(fleet_ready), site(fleet_ready)


# --------------------------------------------------------------------------------------------
# 5. bad input end to end


def test_an_unknown_backend_on_one_host_stops_the_run_before_any_host_changes(
        bad_input_run, fleet_ready):
    result = bad_input_run
    assert result.returncode != 0
    assert "host f-cuda: accelerator = 'gpu'" in result.stderr, result.stderr[-2000:]
    assert "'auto', 'rocm', 'cuda', 'cpu'" in result.stderr  # says what is allowed
    assert "no host was changed" in result.stderr
    for line in ["host f-cuda: webui_dir = '/etc': allowed is an absolute, normalised path",
                 "host f-rocm: webui_extra_args: --share is set through webui_listen",
                 "host f-cuda: webui_auth_file = (value hidden): allowed is an absolute path",
                 "host f-rocm: docker_daemon_options: hosts with tcp:// and no tlsverify",
                 "host f-rocm: acelerator: no such setting (did you mean accelerator?)"]:
        assert line in result.stderr, line
    assert "hunter2" not in result.stderr + result.stdout
    assert "host f-cpu:" not in result.stderr
    assert {name: status for name, (_, _, status) in summary(result).items()} == {
        name: "not changed: the run was refused before any change (bad settings on f-cuda, "
              "f-rocm, listed above)" for name in NAMES}
    for name in NAMES:
        # Not even apt-get update ran (the image has no package lists), nothing installed.
        assert not installed(fleet_ready, name, "docker.io"), name
        assert not installed(fleet_ready, name, "curl"), name
        lists = ssh(fleet_ready, name, "ls /var/lib/apt/lists | grep -c _Packages || true")
        assert lists.strip() == "0", name
        assert ssh(fleet_ready, name, "ls -A /etc/apt/keyrings /etc/apt/sources.list.d") \
            .split() == ["/etc/apt/keyrings:", "/etc/apt/sources.list.d:"], name
        for path in ("/var/cache/sdinfra", "/opt/stable-diffusion", "/etc/docker"):
            assert not exists(fleet_ready, name, path), (name, path)


# --------------------------------------------------------------------------------------------
# 3. a key with another fingerprint, a repository signed with another key


def test_a_key_with_another_fingerprint_is_not_kept(wrong_fingerprint_run, fleet_ready,
                                                     stand_ins):
    result, url = wrong_fingerprint_run
    assert result.returncode != 0
    status = summary(result)["f-cuda"][2]
    assert status.startswith("failed at ") and "Key of the nvidia-container-toolkit" in status
    message = f"the key at {url} does not have the pinned fingerprint {stand_ins.key.fingerprint}"
    assert message in status
    assert message in host_lines(result, "f-cuda")
    # Neither kept nor left as a temporary file; no source refers to it; nothing installed.
    assert ssh(fleet_ready, "f-cuda", "ls -A /etc/apt/keyrings").strip() == ""
    assert not exists(fleet_ready, "f-cuda", SOURCES)
    assert not installed(fleet_ready, "f-cuda", "nvidia-container-toolkit")
    # --limit: the other hosts were not touched.
    assert "f-cpu" not in result.stderr.split("--> sdinfra summary:")[0]
    assert not installed(fleet_ready, "f-cpu", "curl")


def test_a_repository_signed_with_another_key_is_refused(faulty_run, fleet_ready, stand_ins):
    result = faulty_run
    assert result.returncode != 0
    assert "f-cuda" in report(result)["failed_hosts"]
    status = summary(result)["f-cuda"][2]
    assert status.startswith("failed at NVIDIA driver and Container Toolkit | Signed apt "
                             "repository | Install missing packages | Refresh package lists")
    said = host_lines(result, "f-cuda")
    wrong_id = stand_ins.wrong_key.fingerprint[-16:]
    assert f"NO_PUBKEY {wrong_id}" in said, said[-3000:]
    assert "The following signatures couldn't be verified" in said
    assert f"{stand_ins.apt_flat_wrong_key_path}  InRelease' is not signed" in said
    # The right key was fetched and kept (it is the pinned one); apt trusted nothing else.
    fingerprints = ssh(fleet_ready, "f-cuda",
                       f"gpg --show-keys --with-colons {KEYRING} | grep ^fpr | cut -d: -f10")
    assert fingerprints.split()[0] == stand_ins.key.fingerprint
    assert not installed(fleet_ready, "f-cuda", "nvidia-container-toolkit")
    assert not exists(fleet_ready, "f-cuda", "/usr/bin/nvidia-ctk")
    assert not installed(fleet_ready, "f-cuda", "docker.io")  # the host stopped there
    assert not any("Install nvidia-container-toolkit" in op for op in changed(result, "f-cuda"))


def test_the_summary_says_why_apt_refused_the_repository(faulty_run):
    status = summary(faulty_run)["f-cuda"][2]
    assert "not signed" in status or "NO_PUBKEY" in status, status


# --------------------------------------------------------------------------------------------
# 2. a checksum that does not match


def test_a_checksum_mismatch_stops_the_host_before_installing(faulty_run, fleet_ready,
                                                              stand_ins, faults_server):
    result = faulty_run
    assert result.returncode != 0
    assert "f-rocm" in report(result)["failed_hosts"]
    url = stand_ins.url(base_url(fleet_ready, faults_server, "f-rocm"), stand_ins.amdgpu_deb_path)
    why = (f"checksum mismatch for {url}: expected sha256 {stand_ins.amdgpu_cpuonly_sha256}, "
           f"got {stand_ins.amdgpu_sha256}")
    status = summary(result)["f-rocm"][2]
    assert status.startswith("failed at ROCm | Download amdgpu-install"), status
    assert why in status
    assert why in host_lines(result, "f-rocm")
    # Stopped before installing: no installer package, it never ran, nothing after it.
    assert not installed(fleet_ready, "f-rocm", "amdgpu-install")
    assert not exists(fleet_ready, "f-rocm", "/var/log/amdgpu-install.args")
    assert not exists(fleet_ready, "f-rocm", "/opt/rocm")
    assert not installed(fleet_ready, "f-rocm", "docker.io")
    assert not any(op.startswith(("ROCm | Install amdgpu-install", "ROCm | amdgpu-install"))
                   for op in changed(result, "f-rocm"))
    # The download is not kept, neither where a good one goes nor as a temporary file.
    assert ssh(fleet_ready, "f-rocm", f"ls -A {ROCM_CACHE}").strip() == ""


def test_the_other_host_converges_in_the_same_run(faulty_run, fleet_ready):
    table = summary(faulty_run)
    assert table["f-cpu"][0] == "cpu" and table["f-cpu"][2] == "healthy"
    assert "f-cpu" not in report(faulty_run)["failed_hosts"]
    assert webui_running(fleet_ready, "f-cpu")


# --------------------------------------------------------------------------------------------
# 1. a host that is down when the run starts


def test_a_host_down_at_the_start_is_named_and_the_others_converge(down_run, fleet_ready,
                                                                   stand_ins):
    result = down_run
    assert result.returncode != 0
    assert "Could not connect" in host_lines(result, "f-rocm")
    table = summary(result)
    assert table["f-rocm"] == ("-", "-", "unreachable")
    assert table["f-cpu"][2] == "healthy" and table["f-cuda"][2] == "healthy"
    assert report(result)["failed_hosts"] == ["f-rocm"]
    # f-cuda, refused in the run before, converged in this one.
    assert installed(fleet_ready, "f-cuda", "nvidia-container-toolkit")
    assert webui_running(fleet_ready, "f-cuda") and webui_running(fleet_ready, "f-cpu")


def test_the_host_that_was_down_converges_once_started(recovery_runs, fleet_ready):
    # Started again (killed_run), then the run after the kill: see the next test.
    after_kill, _ = recovery_runs
    assert after_kill.returncode == 0, after_kill.stderr[-4000:]
    backend, _, status = summary(after_kill)["f-rocm"]
    assert (backend, status) == ("rocm", "healthy")
    assert installed(fleet_ready, "f-rocm", "amdgpu-install")
    assert webui_running(fleet_ready, "f-rocm")


# --------------------------------------------------------------------------------------------
# 4. a run killed in the middle of installing


def test_a_run_killed_while_dpkg_installs_docker_is_finished_by_the_next(killed_run,
                                                                         recovery_runs,
                                                                         fleet_ready):
    # The kill did leave dpkg interrupted: apt refused to install anything.
    assert "docker.io" in killed_run["killed_while"]
    assert killed_run["audit"].strip(), "dpkg was not left interrupted: the kill came too late"
    assert "dpkg --configure -a" in killed_run["apt"], killed_run["apt"]
    after_kill, third = recovery_runs
    assert after_kill.returncode == 0, after_kill.stderr[-4000:]
    assert "Finish the interrupted dpkg run (dpkg --configure -a)" in " ".join(
        changed(after_kill, "f-rocm"))
    assert all(status == "healthy" for _, _, status in summary(after_kill).values())
    assert installed(fleet_ready, "f-rocm", "docker.io")
    assert ssh(fleet_ready, "f-rocm", "dpkg --audit; ls /var/lib/dpkg/updates").strip() == ""
    assert ssh(fleet_ready, "f-rocm", "systemctl is-active docker").strip() == "active"


def test_the_run_after_that_changes_nothing(recovery_runs):
    _, third = recovery_runs
    assert third.returncode == 0, third.stderr[-3000:]
    operations = report(third)["operations"]
    assert [(op["name"], op["success"]) for op in operations if op["success"]] == []
    assert [(op["name"], op["error"]) for op in operations if op["error"]] == []
    assert all(status == "healthy" for _, _, status in summary(third).values())
