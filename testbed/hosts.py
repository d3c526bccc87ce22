"""
The e2e fleet's hosts: their names, the settings each gets, their preparation before sdinfra
(an admin user, stand-in GPU device nodes, the stand-in NVIDIA driver) and how to reach them
(ssh, pyinfra, testinfra). The end-to-end tests, `make demo` (testbed/demo.py) and the
benchmark (bench/fleet.py) use these.

What AMD, NVIDIA and Docker Hub would serve is built by testbed/standins/ and served on each
host's own gateway address; the deploys reach it through their ordinary settings (mirror URLs,
keys, checksums), as a homelab mirror would. The rocm host is Debian 12 and uses the explicit
override for distributions AMD does not support; it has stand-in /dev/kfd and /dev/dri nodes
(copies of /dev/null) so that the rocm service's device mappings can be exercised.

Hosts that build the web UI image (``settings_for(..., build=...)``) reach the stand-in
"internet" at one address for the whole fleet, INTERNET (192.0.2.1, TEST-NET-1: nobody's), as
real hosts all reach github.com and PyTorch's index at the same names: the settings that go
into the image (the repository URL, the torch command) are then the same on every host, and so
is the image's tag. Inside each host's network namespace, traffic to INTERNET (from the host
and from its containers: a build's RUN lines) is sent to that host's own gateway, where the
stand-in server listens; nothing leaves for 192.0.2.1 itself.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import paramiko

from testbed.standins.common import program

REPO = Path(__file__).resolve().parents[1]
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
NAMES = ["cpu1", "rocm1", "cuda1"]
USER = "alice"  # an existing admin user, as on a real server
INTERNET = "192.0.2.1"


def backend_of(name: str) -> str:
    """The backend a fleet host is named for: cpu1, cpu2 -> cpu; rocm1 -> rocm; cuda3 -> cuda;
    a prefix before a dash is another fleet's mark: f-cpu -> cpu, f-rocm2 -> rocm."""
    backend = name.rsplit("-", 1)[-1].rstrip("0123456789")
    if backend not in ("cpu", "rocm", "cuda"):
        raise ValueError(f"host {name!r}: the fleet names hosts [PREFIX-]cpuN, rocmN or cudaN")
    return backend


def settings_for(fleet, stand_ins, server, name: str, build=None) -> dict:
    """Every setting a host of the e2e fleet gets: all through ordinary, documented settings.
    The host's name says its backend (cpu1, rocm2, ...). ``build``: the stand-in build's
    sources (testbed.standins.image_build.build_sources): the host builds the web UI image
    from INTERNET as a real host builds it from the internet (its Docker Hub mirror, the web
    UI's repository, PyTorch's index there); by default it loads the stand-in image's archive."""
    base = f"http://{fleet.host(name).gateway}:{server.port}"
    image = {
        "webui_image": stand_ins.image.tag,
        "webui_image_archive": str(stand_ins.root / stand_ins.image_path),
    }
    if build is not None:
        internet = f"http://{INTERNET}:{server.port}"
        image = {
            "docker_daemon_options": {**_docker_defaults(), "registry-mirrors": [internet]},
            "webui_repo_url": build.webui_repo_url(internet),
            "webui_version": build.webui_version,
            "webui_torch_command": build.torch_command(internet, TORCH_BUILD[backend_of(name)]),
        }
    common = {
        "docker_source": "distro",  # Docker's own repository cannot be reached from here
        "docker_users": [USER],
        **image,
        "webui_models": [{"name": "standin.safetensors",
                          "url": stand_ins.url(base, stand_ins.model_path),
                          "sha256": stand_ins.model.sha256}],
    }
    per_backend = {
        "cpu": {"accelerator": "cpu"},
        "rocm": {
            "accelerator": "rocm",
            "rocm_allow_unsupported_distro": True,
            "rocm_repo_url": stand_ins.url(base, stand_ins.amdgpu_base_path),
            "rocm_installer_sha256": stand_ins.amdgpu_sha256,
            "rocm_dkms": False,
            "rocm_pre_vega": True,
            "rocm_users": [USER],
            # As in inventories/home.py. Left to the preflight, the VRAM flag would follow the
            # facts, and rocminfo only exists after the first run installed ROCm.
            "webui_vram": "med",
        },
        "cuda": {
            "accelerator": "cuda",
            "nvidia_repo_url": stand_ins.url(base, stand_ins.apt_flat_path),
            "nvidia_key_url": stand_ins.url(base, stand_ins.nvidia_gpgkey_path),
            "nvidia_key_fingerprint": stand_ins.key.fingerprint,
            "nvidia_verify": False,  # no GPU here: the stand-in hook mounts nothing
            "webui_vram": "low",
            # No /dev/nvidia* reaches the container (the stand-in hook injects nothing): the
            # web UI's launcher would stop on its torch GPU test, as the real one does.
            "webui_extra_args": ["--skip-torch-cuda-test"],
        },
    }
    return {**common, **per_backend[backend_of(name)]}


# The torch build each backend's image gets on the test fleet (the preflight's choice there:
# the stand-in NVIDIA driver is new enough for cu121).
TORCH_BUILD = {"cpu": "cpu", "rocm": "rocm5.6", "cuda": "cu121"}


def _docker_defaults() -> dict:
    from roles.docker.settings import SETTINGS
    return next(s.default for s in SETTINGS if s.name == "docker_daemon_options")


# The stand-in lspci of the rocm hosts: the RX 460 the stand-in rocminfo lists.
LSPCI_STANDIN = program("lspci.sh")


def write_settings(fleet, data: dict) -> None:
    fleet.host_data_path.write_text(json.dumps(data, indent=1))


def reach_internet(fleet, name: str) -> None:
    """INTERNET, in host ``name``'s namespace, is its gateway (the stand-in server's address):
    for the host's own connections (OUTPUT: dockerd pulling from its mirror) and for its
    containers' (PREROUTING: a build's RUN lines)."""
    host = fleet.host(name)
    for chain in ("OUTPUT", "PREROUTING"):
        subprocess.run(["ip", "netns", "exec", host.netns, "iptables", "-w", "-t", "nat", "-A",
                        chain, "-d", INTERNET, "-p", "tcp", "-j", "DNAT", "--to-destination",
                        host.gateway], check=True, capture_output=True)


def prepare(fleet, stand_ins, server, names: list[str] | None = None, build=None) -> None:
    """The fleet before sdinfra: an admin user on every host; stand-in GPU device nodes on the
    rocm hosts; the stand-in NVIDIA driver on the cuda hosts (the toolkit needs a working driver
    already there); each host's settings in host_data.json. ``names``: the fleet's hosts by
    default, each named for its backend (cpu1, rocm1, cuda1, cpu2, ...). ``build``: the hosts
    build the web UI image from the stand-in internet (see settings_for)."""
    names = list(names) if names is not None else [h.name for h in fleet.hosts]
    if build is not None:
        for name in names:
            reach_internet(fleet, name)
    for name in names:
        ssh(fleet, name, f"id {USER} >/dev/null 2>&1 || useradd -m -s /bin/bash {USER}")
    for name in [n for n in names if backend_of(n) == "cuda"]:
        driver = f"http://{fleet.host(name).gateway}:{server.port}/" + str(
            stand_ins.nvidia_driver_deb.relative_to(stand_ins.root))
        ssh(fleet, name, "python3 -c 'import sys, urllib.request; urllib.request.urlretrieve("
                         f"sys.argv[1], \"/tmp/driver.deb\")' {driver} && dpkg -i "
                         "/tmp/driver.deb && rm /tmp/driver.deb && nvidia-smi -L")
    for name in [n for n in names if backend_of(n) == "rocm"]:
        ssh(fleet, name, "mknod -m 666 /dev/kfd c 1 3 2>/dev/null; mkdir -p /dev/dri && "
                         "{ mknod -m 666 /dev/dri/renderD128 c 1 3 2>/dev/null; true; }")
        # The card a real host's lspci shows before ROCm is there, so the preflight knows its
        # family (and the launch plan its flags) from the first run, as on real hardware.
        ssh(fleet, name, f"printf '%s' {shlex.quote(LSPCI_STANDIN)} > /usr/local/bin/lspci && "
                         "chmod 755 /usr/local/bin/lspci")
    write_settings(fleet, {name: settings_for(fleet, stand_ins, server, name, build)
                           for name in names})


def run_pyinfra(fleet, deploy: str, *args: str, timeout: float = 900):
    return subprocess.run(
        [PYINFRA, str(fleet.inventory_path), deploy, *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYINFRA_PROGRESS": "off"},
    )


def ssh(fleet, name: str, command: str, check: bool = True) -> str:
    status, out, err = fleet.run(name, command)
    if check and status != 0:
        raise AssertionError(f"{name}: {command!r} exited {status}: {err or out}")
    return out


def remote(fleet, name: str):
    """A testinfra host over paramiko that checks the host key against the fleet's known_hosts
    (testinfra's own paramiko backend would accept any key)."""
    import testinfra

    host = fleet.host(name)
    client = paramiko.SSHClient()
    client.load_host_keys(str(fleet.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host.address, port=host.ssh_port, username="root",
                   key_filename=str(fleet.ssh_key), timeout=10, allow_agent=False,
                   look_for_keys=False)
    tested = testinfra.get_host(f"paramiko://root@{host.address}")
    tested.backend.__dict__["client"] = client
    return tested
