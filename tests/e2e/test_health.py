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
from testbed.hosts import REPO, prepare, settings_for, ssh, write_settings
from tests.e2e.conftest import booted
from tests.e2e.health_helpers import (KNOBS, MODELS_DIR, SLOW_DPKG, CutLink, Watched,
                                      container_health, kept, killed_mid_apt, partials, set_data,
                                      until, with_cut_model)
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
    # h-cuda, untouched too, still restarts in a loop: said so, not "starting".
    assert summary(second)["h-cuda"][2].startswith("unhealthy: restart loop: "), \
        second.stderr[-3000:]
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


# --------------------------------------------------------------------------------------------
# slow starts, a link cut mid-download, an interrupted run, a re-run racing a killed run's apt,
# what deploy/status.py costs; each on the fleet as the tests above left it


def test_a_slow_start_is_waited_for_and_ends_healthy(runs, health_fleet):
    """The web UI takes 25 s to listen (2.5 healthcheck intervals): the run waits, says how it
    goes every 5 s without -v, and ends healthy once Docker says so."""
    fleet = health_fleet
    ssh(fleet, "h-cpu", f"echo '{{\"start_delay\": 25}}' > {KNOBS} && docker stop "
                        "$(docker ps -q --filter label=com.docker.compose.service=cpu)")
    run = Watched(fleet, "deploy/site.py", "--limit", "h-cpu")
    result = run.wait()
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary(result)["h-cpu"][2] == "healthy"
    said = host_lines(result, "h-cpu")
    progress = [line for line in said.splitlines()
                if "waiting for cpu to turn healthy: running, starting, " in line]
    assert len(progress) >= 4, said[-3000:]  # 0, 5, 10, 15, 20 s ...
    # Waited the stand-in's 25 s out, and no longer than the healthcheck after it needs.
    waited = run.at("sdinfra-health: healthy") - run.at("waiting for cpu to turn healthy")
    assert 20 <= waited <= 25 + 10 + 15, waited
    assert container_health(fleet, "h-cpu") == "running/healthy"


def test_a_start_slower_than_the_bound_says_starting_and_how_long_truly(runs, health_fleet):
    """webui_start_timeout = 30 (the least allowed) and a web UI that takes 45 s: the run ends
    (exit 0: slow is not broken) saying 'starting (waited N s)', N the seconds it waited; Docker
    says starting then, and healthy soon after, as the README's table says; the next run, which
    starts nothing, reads healthy."""
    import re

    fleet = health_fleet
    ssh(fleet, "h-cpu", f"echo '{{\"start_delay\": 45}}' > {KNOBS}")
    set_data(fleet, "h-cpu", webui_start_timeout=30)  # the compose file changes: recreated
    run = Watched(fleet, "deploy/site.py", "--limit", "h-cpu")
    result = run.wait()
    state_then = container_health(fleet, "h-cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    status = summary(result)["h-cpu"][2]
    found = re.fullmatch(r"starting \(waited (\d+) s\)", status)
    assert found, status
    said = int(found.group(1))
    assert said == 30  # the bound, reached
    waited = run.at("sdinfra-health: starting") - run.at("waiting for cpu to turn healthy")
    assert abs(waited - said) <= 2, (waited, said)  # the seconds it says are the ones it waited
    assert state_then == "running/starting"
    assert report(result).get("failed_hosts") == []
    readme = (REPO / "README.md").read_text()
    assert "| `starting (waited N s)` | still loading after `webui_start_timeout`; not a " \
           "failure |" in readme
    until(lambda: container_health(fleet, "h-cpu") == "running/healthy", 60,
          "the slow web UI did not turn healthy after the run said starting")
    ssh(fleet, "h-cpu", f"rm -f {KNOBS}")
    again = site(fleet, "--limit", "h-cpu")
    assert summary(again)["h-cpu"][2] == "healthy", again.stderr[-3000:]
    assert "Stable Diffusion web UI | Start the cpu service" not in changed(again, "h-cpu")


@pytest.fixture(scope="module")
def cut_link(health_fleet):
    link = CutLink(health_fleet.host("h-cpu").gateway)
    yield link
    link.close()


def test_a_link_cut_mid_download_fails_its_host_on_the_stall_bound_the_other_finishes(
        runs, health_fleet, cut_link):
    """h-cpu's new model stops arriving half way; h-cuda's web UI was stopped, so its start
    is pending behind that download. The stall bound (download_stall_timeout: 5 s, one retry)
    fails h-cpu, named, with the reason; h-cuda gets its start and ends healthy."""
    fleet = health_fleet
    with_cut_model(fleet, cut_link, download_stall_timeout=5, download_retries=1)
    ssh(fleet, "h-cuda", "docker stop $(docker ps -q --filter "
                         "label=com.docker.compose.service=cuda)")
    result = kept(fleet)
    assert result.seconds < 180, result.seconds
    table = summary(result)
    assert report(result).get("failed_hosts") == ["h-cpu"], result.stderr[-3000:]
    why = (f"download of {cut_link.url} failed: no data for 5 s or no connection within 30 s, "
           f"2 attempts (exit 28); {MODELS_DIR}/cut.safetensors was not changed")
    assert table["h-cpu"][2] == ("failed at Stable Diffusion web UI | Download model "
                                 f"cut.safetensors: {why}"), table["h-cpu"]
    assert cut_link.requests == 2
    assert table["h-cuda"][2] == "healthy"
    # pyinfra names an operation after the first host that planned it: "Start the cpu service"
    assert any(op.startswith("Stable Diffusion web UI | Start the ")
               for op in changed(result, "h-cuda"))
    assert partials(fleet, "h-cpu") == []  # the failed attempt removed its own
    assert "cut.safetensors" not in ssh(fleet, "h-cpu", f"ls -A {MODELS_DIR}")


def test_an_interrupted_download_says_interrupted_and_the_next_run_converges(
        runs, health_fleet, cut_link):
    """Ctrl-C (SIGINT to pyinfra) while h-cpu's download hangs on the cut link (the default
    60 s stall bound) and h-cuda's start waits behind it: neither host says ok, both say
    interrupted (exit 130). On the host the download stops when its progress line finds no
    reader, its partial file removed (it went on alone, holding the file, before); with the
    link back, the next run downloads the model and keeps it with its sha256."""
    import signal

    fleet = health_fleet
    with_cut_model(fleet, cut_link, download_stall_timeout=60, download_retries=3)
    ssh(fleet, "h-cuda", "docker stop $(docker ps -q --filter "
                         "label=com.docker.compose.service=cuda)")
    before = cut_link.requests
    run = Watched(fleet)
    until(lambda: run.said("downloading cut.safetensors: 128 KiB"), 120,
          "h-cpu's download never showed its first half arriving")
    run.proc.send_signal(signal.SIGINT)
    result = run.wait(timeout=60)
    assert result.returncode == 130, result.stderr[-3000:]
    table = summary(result)
    assert table["h-cpu"][2] == "interrupted" and table["h-cuda"][2] == "interrupted", table
    assert cut_link.requests == before + 1
    until(lambda: not partials(fleet, "h-cpu") and not ssh(
        fleet, "h-cpu", "pgrep -f '[c]ut.safetensors.sdinfra-part' || true").strip(), 20,
        "the interrupted download went on on h-cpu, or left its partial file")

    cut_link.cut = False  # the link is back
    again = kept(fleet)
    assert again.returncode == 0, again.stderr[-3000:]
    assert cut_link.requests == before + 2
    assert partials(fleet, "h-cpu") == []
    assert ssh(fleet, "h-cpu", f"sha256sum {MODELS_DIR}/cut.safetensors").split()[0] == \
        cut_link.sha256
    assert summary(again)["h-cpu"][2] == "healthy" and summary(again)["h-cuda"][2] == "healthy"


def test_a_rerun_racing_a_killed_runs_apt_waits_for_it_and_converges(runs, health_fleet):
    """The run after a killed one, started at once, finds the killed run's apt-get still
    installing on h-cpu: it waits for the lock (apt_lock_timeout, 600 s by default) instead of
    failing on it, and converges; the other host is not held up by more than that wait."""
    import re

    fleet = health_fleet
    try:
        pids = killed_mid_apt(fleet, 20)
        # -vvv: the wait says so on stderr of a command that succeeds, printed only then
        result = kept(fleet, "-vvv")
    finally:
        ssh(fleet, "h-cpu", f"rm -f {SLOW_DPKG}")
    assert result.returncode == 0, result.stderr[-4000:]
    waited = re.search(r"waiting up to 600 s \(apt_lock_timeout\): process (\d+) \(apt-get\) "
                       r"holds /var/lib/dpkg/lock-frontend", result.stderr)
    assert waited and waited.group(1) in pids, result.stderr[-4000:]
    assert summary(result)["h-cpu"][2] == "healthy"
    assert report(result).get("failed_hosts") == []
    assert ssh(fleet, "h-cpu", "dpkg-query -W -f='${Status}' docker-compose") == \
        "install ok installed"
    assert ssh(fleet, "h-cpu", "dpkg --audit; pgrep -a 'apt-get|dpkg' || true").strip() == ""


def test_a_lock_held_past_the_bound_shows_apts_reason_in_the_summary(runs, health_fleet):
    """The same race with apt_lock_timeout = 3 on h-cpu: h-cpu alone fails, and the summary's
    line is the one that says why (the E: line naming the lock and the killed run's apt-get),
    not a line after it; h-cuda ends healthy in the same run."""
    fleet = health_fleet
    set_data(fleet, "h-cpu", apt_lock_timeout=3)
    try:
        pids = killed_mid_apt(fleet, 25)
        result = kept(fleet)
        # The killed run's apt finishes on its own; nothing is left half done.
        until(lambda: ssh(fleet, "h-cpu", "pgrep apt-get || echo none").strip() == "none", 90,
              "the killed run's apt-get did not end")
    finally:
        ssh(fleet, "h-cpu", f"rm -f {SLOW_DPKG}")
        set_data(fleet, "h-cpu", apt_lock_timeout=600)
    assert report(result).get("failed_hosts") == ["h-cpu"], result.stderr[-4000:]
    status = summary(result)["h-cpu"][2]
    prefix = ("failed at Docker Engine | Install missing packages | Refresh package lists: "
              "E: /var/lib/dpkg/lock-frontend is still held by process ")
    assert status.startswith(prefix), status
    assert status[len(prefix):].split()[0] in pids
    assert status.endswith("(apt-get) after 3 s (apt_lock_timeout): another package run is "
                           "going on; let it finish and run the deploy again, or raise "
                           "apt_lock_timeout"), status
    assert "h-cuda" in summary(result)  # run to its end, whatever its web UI does
    assert ssh(fleet, "h-cpu", "dpkg-query -W -f='${Status}' docker-compose") == \
        "install ok installed"


def test_status_costs_what_a_no_change_run_costs(runs, health_fleet, tmp_path, monkeypatch):
    """deploy/status.py against a no-change deploy/site.py on the same converged fleet: remote
    commands per host (pyinfra's SSH connector logs each with --debug, as bench/fleet.py
    counts them) at most one more, and about the same wall time."""
    from bench.fleet import COMMAND_LINE, UPLOAD_LINE

    from testbed.hosts import run_pyinfra

    fleet = health_fleet
    monkeypatch.setenv("SDINFRA_STATUS_JSON", str(tmp_path / "status.json"))

    def counted(deploy: str, *args: str):
        import time

        started = time.monotonic()
        done = run_pyinfra(fleet, deploy, "-y", "--debug", *args)
        seconds = time.monotonic() - started
        assert done.returncode == 0, done.stderr[-3000:]
        per_host = {name: 0 for name in NAMES}
        for line in done.stderr.splitlines():
            found = COMMAND_LINE.search(line)
            if found:
                per_host[found.group(1)] += 1
            assert not UPLOAD_LINE.search(line), line
        return done, seconds, per_host

    nochange, nochange_s, site_commands = counted("deploy/site.py", "--json")
    operations = [op for op in report(nochange)["operations"] if op["success"]]
    assert operations == [], operations  # converged: the count is that of a no-change run
    status, status_s, status_commands = counted("deploy/status.py")
    assert "--> sdinfra status:" in status.stderr
    print(f"no-change deploy/site.py: {nochange_s:.1f} s, commands per host {site_commands}; "
          f"deploy/status.py: {status_s:.1f} s, commands per host {status_commands}")
    for name in NAMES:
        assert 0 < status_commands[name] <= site_commands[name] + 1, (name, status_commands,
                                                                        site_commands)
    assert status_s <= 2 * nochange_s + 10, (status_s, nochange_s)
