"""
"ok" means healthy, end to end, on a fleet of its own (h-cpu, h-cuda): deploy/site.py waits
until Docker reports each started container healthy. h-cuda's web UI stops at start as the real
one does on a host whose GPU does not reach the container (the stand-in hook injects no
/dev/nvidia*, and --skip-torch-cuda-test is not given): it restarts in a loop, and only that
host fails, with the container's last log lines in the summary; h-cpu ends healthy in the same
run. The run after that starts nothing on h-cpu and reads its health from Docker's files.
A daemon.json with a trailing comma on h-cpu then fails h-cpu only, naming the file;
deploy/status.py reports each host; a slow download prints progress; a restart storm does not
wedge Docker; a full disk under webui_dir is named as such on h-cpu only, and a re-run converges.
"""

from __future__ import annotations

import pytest

from testbed import standins
from testbed.hosts import prepare, settings_for, ssh, write_settings
from tests.e2e.conftest import booted
from tests.e2e.test_faults import changed, host_lines, report, site, summary

NAMES = ["h-cpu", "h-cuda"]


@pytest.fixture(scope="module")
def health_fleet(tmp_path_factory, stand_ins):
    with booted(tmp_path_factory, "health-fleet", NAMES) as fleet:
        addresses = [h.gateway for h in fleet.hosts] + ["127.0.0.1"]
        with standins.serve(stand_ins.root, addresses) as server:
            prepare(fleet, stand_ins, server, NAMES)
            data = {name: settings_for(fleet, stand_ins, server, name) for name in NAMES}
            data["h-cuda"]["webui_extra_args"] = []  # the launcher's torch GPU test stops it
            write_settings(fleet, data)
            yield fleet


@pytest.fixture(scope="module")
def runs(health_fleet):
    return site(health_fleet), site(health_fleet)


def test_a_crash_looping_container_fails_only_its_host_with_its_log_lines(runs, health_fleet):
    first, _ = runs
    assert first.returncode != 0
    table = summary(first)
    assert table["h-cpu"][2] == "healthy", first.stderr[-3000:]
    status = table["h-cuda"][2]
    assert status.startswith("unhealthy: "), first.stderr[-3000:]
    assert "exited with code" in status or "restart" in status, status
    assert report(first)["failed_hosts"] == ["h-cuda"]
    # The container's own words under the table: the launcher's GPU test.
    details = first.stderr.split("--> sdinfra summary:", 1)[1]
    assert "h-cuda: the container's last log lines:" in details
    assert "Torch is not able to use GPU" in details, details[-3000:]
    # The wait said how it went while it ran (without -v).
    assert "waiting for cpu to turn healthy" in host_lines(first, "h-cpu") or \
        "sdinfra-health: healthy" in host_lines(first, "h-cpu")


def test_the_run_after_reads_health_without_starting_anything(runs, health_fleet):
    _, second = runs
    assert summary(second)["h-cpu"][2] == "healthy"
    assert "Stable Diffusion web UI | Start the cpu service" not in changed(second, "h-cpu")
    state = ssh(health_fleet, "h-cpu", "docker inspect -f '{{.State.Health.Status}}' "
                                       "$(docker ps -q --filter label=com.docker.compose.service=cpu)")
    assert state.strip() == "healthy"


def test_a_broken_daemon_json_fails_its_host_only_with_the_file_and_the_parser(runs,
                                                                                health_fleet):
    fleet = health_fleet
    ssh(fleet, "h-cpu", "cp /etc/docker/daemon.json /root/daemon.json.good && "
                        "printf '{\\n \"log-driver\": \"json-file\",\\n}\\n' > /etc/docker/daemon.json")
    try:
        result = site(fleet)
    finally:
        ssh(fleet, "h-cpu", "cp /root/daemon.json.good /etc/docker/daemon.json")
    status = summary(result)["h-cpu"][2]
    assert "/etc/docker/daemon.json is not valid JSON: " in status, result.stderr[-3000:]
    assert "line 3 column 1" in status, status
    assert "Traceback" not in result.stderr
    assert "h-cuda" in summary(result)  # the other host was run, not lost
    again = site(fleet)
    assert summary(again)["h-cpu"][2] == "healthy", again.stderr[-3000:]


def test_status_reports_every_host_truly(runs, health_fleet, stand_ins, tmp_path):
    """deploy/status.py: a crash-looping container, then a running one whose GPU device is
    missing (h-cuda with --skip-torch-cuda-test), a healthy cpu host, then a stopped one."""
    import json
    import os

    from testbed.hosts import run_pyinfra

    fleet = health_fleet
    out = tmp_path / "status.json"
    os.environ["SDINFRA_STATUS_JSON"] = str(out)
    try:
        def status():
            done = run_pyinfra(fleet, "deploy/status.py", "-y")
            assert done.returncode == 0, done.stderr[-3000:]
            assert "--> sdinfra status:" in done.stderr
            return json.loads(out.read_text()), done

        found, done = status()
        cpu, cuda = found["h-cpu"], found["h-cuda"]
        assert (cpu["backend"], cpu["state"], cpu["health"]) == ("cpu", "running", "healthy")
        assert cpu["gpu_visible"] is False  # torch on the cpu backend sees no GPU
        assert cpu["models"] == ["standin.safetensors"]
        assert cpu["published"].strip() == "127.0.0.1:7860"
        assert cpu["image"] == stand_ins.image.tag and cpu["image_id"].startswith("sha256:")
        assert cpu["uptime_s"] >= 0 and cpu["restarts"] == 0 and cpu["free_bytes"] > 0
        assert cpu["models_bytes"] > 0
        assert cuda["backend"] == "cuda" and cuda["state"] in ("restarting", "exited", "running")
        assert cuda["restarts"] > 0

        # h-cuda told to skip the launcher's GPU test: it runs, and torch sees no GPU there.
        data = json.loads(fleet.host_data_path.read_text())
        data["h-cuda"]["webui_extra_args"] = ["--skip-torch-cuda-test"]
        write_settings(fleet, data)
        assert summary(site(fleet))["h-cuda"][2] == "healthy"
        ssh(fleet, "h-cpu", "docker stop $(docker ps -q --filter "
                            "label=com.docker.compose.service=cpu)")
        found, done = status()
        assert found["h-cuda"]["state"] == "running" and found["h-cuda"]["gpu_visible"] is False
        assert found["h-cpu"]["state"] == "exited" and found["h-cpu"]["uptime_s"] is None
        assert found["h-cpu"]["gpu_visible"] is None  # nothing to ask: no running container
        # status.py changed nothing: the container it found stopped is still stopped.
        assert ssh(fleet, "h-cpu", "docker ps -q").strip() == ""
    finally:
        os.environ.pop("SDINFRA_STATUS_JSON", None)


def test_a_long_download_prints_progress_without_verbose(runs, health_fleet, stand_ins):
    """A 256 KiB model served at ~24 KiB/s to h-cpu (about 10 s): pyinfra, without -v, prints
    the bytes that arrived every 3 s and how long it took; the model is kept (sha256)."""
    import hashlib
    import http.server
    import json
    import threading
    import time

    content = bytes(range(256)) * 1024
    digest = hashlib.sha256(content).hexdigest()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            for at in range(0, len(content), 8192):
                self.wfile.write(content[at:at + 8192])
                self.wfile.flush()
                time.sleep(1 / 3)

        def log_message(self, *args):
            pass

    fleet = health_fleet
    gateway = fleet.host("h-cpu").gateway
    httpd = http.server.ThreadingHTTPServer((gateway, 0), Slow)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        data = json.loads(fleet.host_data_path.read_text())
        data["h-cpu"]["webui_models"].append(
            {"name": "slow.safetensors", "sha256": digest,
             "url": f"http://{gateway}:{httpd.server_address[1]}/slow.safetensors"})
        write_settings(fleet, data)
        result = site(fleet, "--limit", "h-cpu")
    finally:
        httpd.shutdown()
        httpd.server_close()
    said = host_lines(result, "h-cpu")
    progress = [line for line in said.splitlines() if "downloading slow.safetensors: " in line]
    assert len(progress) >= 2, said[-3000:]
    assert "downloaded slow.safetensors: 256 KiB in " in said
    assert ssh(fleet, "h-cpu", "sha256sum /opt/stable-diffusion/models/Stable-diffusion/"
                               "slow.safetensors").split()[0] == digest


def test_a_restart_storm_does_not_wedge_docker(runs, health_fleet):
    """Docker restarted five times in a row hits systemd's start limit (docker.service:
    StartLimitBurst=3 in 60 s) and stays failed; the next run starts it anyway and ends
    healthy."""
    fleet = health_fleet
    ssh(fleet, "h-cpu", "for i in 1 2 3 4 5; do systemctl restart docker 2>/dev/null; done; true")
    said = ssh(fleet, "h-cpu", "systemctl show -p ActiveState -p Result docker")
    assert "Result=start-limit-hit" in said, said
    result = site(fleet)
    assert "Docker Engine | Docker is enabled and running" in changed(result, "h-cpu")
    assert summary(result)["h-cpu"][2] == "healthy", result.stderr[-3000:]
    assert ssh(fleet, "h-cpu", "systemctl is-active docker").strip() == "active"


def test_a_full_disk_fails_its_host_only_naming_the_disk_and_leaves_nothing(runs,
                                                                            health_fleet):
    import json

    fleet = health_fleet
    directory = "/opt/stable-diffusion"
    ssh(fleet, "h-cpu", f"mkdir -p /root/sd && cp -a {directory}/. /root/sd/ && "
                        f"mount -t tmpfs -o size=2m tmpfs {directory} && "
                        f"cp -a /root/sd/. {directory}/ && "
                        f"{{ dd if=/dev/zero of={directory}/filler bs=64k 2>/dev/null; true; }}")
    data = json.loads(fleet.host_data_path.read_text())
    data["h-cpu"]["webui_timezone"] = "Europe/Berlin"  # webui.env changes
    write_settings(fleet, data)
    result = site(fleet)
    status = summary(result)["h-cpu"][2]
    assert f"no space left on device: {directory} has 0 KiB free, webui.env needs" in status, \
        result.stderr[-3000:]
    assert "size mismatch" not in result.stderr
    assert "h-cuda" not in report(result)["failed_hosts"]  # the other host went on
    assert ssh(fleet, "h-cpu", f"ls -A {directory} | grep -c sdinfra-new || true").strip() == "0"
    ssh(fleet, "h-cpu", f"rm {directory}/filler")
    again = site(fleet)
    assert summary(again)["h-cpu"][2] == "healthy", again.stderr[-3000:]
    assert "TZ='Europe/Berlin'" in ssh(fleet, "h-cpu", f"cat {directory}/webui.env")
