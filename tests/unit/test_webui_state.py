"""The web UI stack as Docker's files and commands show it: the state fact's command run here
against a Docker root and a /proc laid out as Docker leaves them, and the start's wait for
Docker's healthy."""

import subprocess

import pytest

from roles.summary import STATUSES
from roles.webui import HEALTH_SAID
from tests.unit.test_webui import CONTAINER_ID, IMAGE_ID, config_v2


# --- the running services, from Docker's files (the state fact's command, run here) -----------


@pytest.fixture
def docker_root(tmp_path):
    """A Docker root and a /proc under tmp_path, a docker command that logs its calls, and the
    docker part of the ProjectState fact pointed at them: state() runs it, (what the fact
    read of Docker, the docker commands it ran)."""
    from roles.webui import DOCKER_ROOT, PROC, ProjectState

    root, proc, bin_dir = tmp_path / "docker", tmp_path / "proc", tmp_path / "bin"
    (root / "image" / "overlay2").mkdir(parents=True)
    (root / "containers" / CONTAINER_ID).mkdir(parents=True)
    (proc / "4242").mkdir(parents=True)
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(
        f"#!/bin/sh\necho \"$@\" >> {tmp_path}/calls\n"
        f"case \"$1\" in ps) cat {tmp_path}/ps 2>/dev/null ;; image) exit 1 ;;\n"
        f"inspect) cat {tmp_path}/inspect 2>/dev/null ;; esac\n")
    (bin_dir / "docker").chmod(0o755)
    command = ProjectState().command("/nowhere", ["/nowhere"], ["sdinfra/webui:cpu-v1.10.1"])
    command = command.replace(DOCKER_ROOT, str(root)).replace(f"{PROC}/\"$p\"/", f"{proc}/\"$p\"/")
    assert str(proc) in command

    def write(config=None, cgroup=f"0::/docker/{CONTAINER_ID}\n",
              tags={"sdinfra/webui:cpu-v1.10.1": IMAGE_ID}):
        import json

        (root / "containers" / CONTAINER_ID / "config.v2.json").write_text(config or config_v2())
        (proc / "4242" / "cgroup").write_text(cgroup)
        (root / "image" / "overlay2" / "repositories.json").write_text(json.dumps(
            {"Repositories": {"sdinfra/webui": tags}}, separators=(",", ":")))

    def state():
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                              env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
        calls = tmp_path / "calls"
        asked = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        found = ProjectState().process(done.stdout.splitlines())
        return {key: found[key] for key in ("running", "health", "images") if found[key]}, asked

    return write, state, tmp_path


def test_a_running_service_and_its_image_are_read_from_dockers_files(docker_root):
    write, state, _ = docker_root
    write()
    assert state() == ({"running": ["cpu"], "health": {"cpu": HEALTH_SAID["healthy"]},
                        "images": ["sdinfra/webui:cpu-v1.10.1"]}, [])  # no docker command
    for health in ("starting", "unhealthy"):
        write(config_v2(health=health))
        assert state()[0]["health"] == {"cpu": HEALTH_SAID[health]}


def test_dockers_files_are_trusted_only_for_a_live_process_of_that_container(docker_root):
    write, state, tmp = docker_root
    (tmp / "ps").write_text("")
    for config, cgroup in [
        (config_v2(), "0::/system.slice/ssh.service\n"),  # the pid is someone else's now
        (config_v2(running=False), f"0::/docker/{CONTAINER_ID}\n"),  # stopped
        (config_v2(pid=0), f"0::/docker/{CONTAINER_ID}\n"),  # restarting
        (config_v2(project="other"), f"0::/docker/{CONTAINER_ID}\n"),  # not ours
    ]:
        write(config, cgroup)
        lines, asked = state()
        assert lines == {} and asked[0].startswith("ps --filter "), (config, cgroup)
        assert asked[1:] == ["image inspect sdinfra/webui:cpu-v1.10.1"]
    # docker ps answers when the files do not: a service it lists counts.
    (tmp / "ps").write_text("cpu|sdinfra/webui:cpu-v1.10.1\n")
    assert state()[0] == {"running": ["cpu"], "images": ["sdinfra/webui:cpu-v1.10.1"]}


def test_a_large_config_is_read_in_time_linear_in_its_size(docker_root):
    """Docker keeps a container's last five health check outputs (up to 4 KB each) and its
    whole environment in config.v2.json: the shell must not cut that line with a pattern that
    tries every prefix (dash's ${j##*PATTERN} took ~40 ms on a 6 KB line, minutes on this one)."""
    import json
    import time

    write, state, _ = docker_root
    config = json.loads(config_v2())
    config["State"]["Health"]["Log"] = [{"ExitCode": 0, "Output": "x" * 4096}] * 5
    config["Config"]["Env"] += [f"VAR{i}={'y' * 200}" for i in range(200)]
    # Docker writes NetworkSettings, MountPoints and more after the "Image" key (6 KB, 3.4 KB
    # after it, on the test fleet's stand-in container): that tail is what the prefix scan paid.
    config["MountPoints"] = {f"/data/volume{i}": {"Source": f"/opt/stable-diffusion/{'z' * 400}",
                                                 "Destination": f"/data/volume{i}", "RW": True}
                             for i in range(100)}
    big = json.dumps(config, separators=(",", ":"))
    assert len(big) - big.rindex('"Image":"sha256:') > 40_000
    assert len(big) > 100_000
    write(big)
    started = time.monotonic()
    assert state() == ({"running": ["cpu"], "health": {"cpu": HEALTH_SAID["healthy"]},
                        "images": ["sdinfra/webui:cpu-v1.10.1"]}, [])
    assert time.monotonic() - started < 2


def _wait(tmp_path, states: list[str], logs: str = "", timeout: int = 30, late: int = 0):
    """health_wait run here against a docker that answers ``states`` (one per inspect, the
    last one repeated) and ``logs``; each sleep wakes ``late`` centiseconds late, as on a
    loaded host."""
    from roles.webui import health_wait

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "states").write_text("\n".join(states) + "\n")
    (tmp_path / "logs").write_text(logs)
    (bin_dir / "docker").write_text(f"""#!/bin/sh
case "$1" in
ps) echo 5ab42e484adb ;;
inspect) n=$(cat {tmp_path}/n 2>/dev/null || echo 1); echo $((n + 1)) > {tmp_path}/n
         sed -n "${{n}}p" {tmp_path}/states | grep . || tail -n 1 {tmp_path}/states ;;
logs) cat {tmp_path}/logs ;;
esac
""")
    (bin_dir / "docker").chmod(0o755)
    # No real waiting here: the wait reads its clock from /proc/uptime, here a file that
    # sleep moves on by its argument (whole seconds, or 0.NN as coreutils' sleep takes them).
    uptime = tmp_path / "uptime"
    uptime.write_text("100.00 0\n")
    (bin_dir / "sleep").write_text(f"""#!/bin/sh
read -r u _ < {uptime}; now=$(( ${{u%.*}} * 100 + 1${{u#*.}} - 100 ))
case "$1" in
*.??) d=$(( ${{1%.*}} * 100 + 1${{1#*.}} - 100 )) ;;
*[!0-9]*) echo "sleep: invalid time interval '$1'" >&2; exit 1 ;;
*) d=$(( $1 * 100 )) ;;
esac
now=$(( now + d + {late} )); printf '%d.%02d 0\\n' $(( now / 100 )) $(( now % 100 )) > {uptime}
""")
    (bin_dir / "sleep").chmod(0o755)
    (tmp_path / "secrets").mkdir(exist_ok=True)
    (tmp_path / "secrets" / "webui-auth").write_text("alice:s3cret-pass\n")
    script = health_wait(str(tmp_path), "cpu", timeout).replace("/proc/uptime", str(uptime))
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})


def test_the_start_waits_until_docker_says_healthy(tmp_path):
    done = _wait(tmp_path, ["running starting 0 0"] * 12 + ["running healthy 0 0"])
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[-1] == "sdinfra-health: healthy"
    assert "waiting for cpu to turn healthy: running, starting, 5 s" in lines


def test_a_slow_start_is_reported_as_starting_after_the_bound(tmp_path):
    done = _wait(tmp_path, ["running starting 0 0"], timeout=40)
    assert done.returncode == 0
    assert done.stdout.splitlines()[-1] == "sdinfra-health: starting (waited 40 s)"


def test_late_wake_ups_on_a_loaded_host_do_not_push_the_wait_past_its_bound(tmp_path):
    # Each second slept takes 1.95 s: a whole second slept from 29.25 s would wake at
    # 31.2 s, and the summary said 31 of a 30 s bound (seen in CI).
    done = _wait(tmp_path, ["running starting 0 0"], timeout=30, late=95)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "sdinfra-health: starting (waited 30 s)"
    assert float((tmp_path / "uptime").read_text().split()[0]) < 131


@pytest.mark.parametrize("answer,why", [
    ("exited none 0 3", "exited with code 3"),
    ("restarting starting 4 1", "restarting: exited with code 1, restarted 4 times"),
    ("running starting 2 1", "restart loop: exited with code 1, restarted 2 times"),
    ("running unhealthy 0 0", "Docker's healthcheck (/internal/ping) fails"),
])
def test_a_container_that_fails_fails_its_host_with_its_log_lines_and_no_secret(tmp_path,
                                                                                answer, why):
    logs = ("Launching Web UI with arguments: --gradio-auth alice:s3cret-pass\n"
            "Traceback (most recent call last):\nRuntimeError: no checkpoint\n")
    done = _wait(tmp_path, ["running starting 0 0", answer], logs)
    assert done.returncode == 1
    err = done.stderr.splitlines()
    assert err[-1] == f"sdinfra-health: unhealthy: {why}"
    assert err[:3] == ["sdinfra-log: Launching Web UI with arguments: --gradio-auth ***",
                       "sdinfra-log: Traceback (most recent call last):",
                       "sdinfra-log: RuntimeError: no checkpoint"]
    assert "s3cret" not in done.stderr + done.stdout


def test_a_tag_moved_to_another_image_is_asked_for(docker_root):
    write, state, _ = docker_root
    write(tags={"sdinfra/webui:cpu-v1.10.1": "sha256:" + "99" * 32})
    lines, asked = state()
    assert lines == {"running": ["cpu"], "health": {"cpu": HEALTH_SAID["healthy"]}}
    # (the running container's image is not that tag's any more)
    assert asked == ["image inspect sdinfra/webui:cpu-v1.10.1"]
    write(tags={})  # no repositories.json entry (the containerd image store, say)
    assert state() == ({"running": ["cpu"], "health": {"cpu": HEALTH_SAID["healthy"]}},
                       ["image inspect sdinfra/webui:cpu-v1.10.1"])


def test_a_crash_loop_docker_ps_shows_between_two_crashes_reads_as_one(docker_root):
    """Docker's files show no live process (it died a moment ago), docker ps shows the
    restarted container starting again: its restart count, which ps does not show, tells."""
    write, state, tmp = docker_root
    write(config_v2(), "0::/system.slice/ssh.service\n")  # the pid is gone
    (tmp / "ps").write_text("cpu|Up 1 second (health: starting)|sdinfra/webui:cpu-v1.10.1\n")
    (tmp / "inspect").write_text("cpu|4\n")
    found, asked = state()
    assert found["health"] == {"cpu": STATUSES["unhealthy"].format(
        why="restart loop: restarted 4 times")}
    assert asked[1].startswith("ps -q --filter label=com.docker.compose.project=sdinfra")
    assert asked[2].startswith("inspect -f ")
    # never restarted: starting is starting; healthy stays healthy whatever the count
    for count, status in (("0", "Up 1 second (health: starting)"), ("4", "Up 2 hours (healthy)")):
        (tmp / "ps").write_text(f"cpu|{status}|sdinfra/webui:cpu-v1.10.1\n")
        (tmp / "inspect").write_text(f"cpu|{count}\n")
        assert "health" not in state()[0]


def test_without_dockers_files_docker_ps_is_asked(docker_root):
    _, state, tmp = docker_root
    (tmp / "ps").write_text("rocm|sdinfra/webui:rocm-v1.10.1\n")
    lines, asked = state()  # nothing written under the Docker root
    assert lines == {"running": ["rocm"]}
    assert asked[0].startswith("ps --filter label=com.docker.compose.project=sdinfra")


def test_a_container_its_policy_restarted_reads_as_a_restart_loop_not_starting():
    """A crash loop seen between two crashes: Docker's files say running, its health starting
    again, and count the restarts; without a live process docker ps says Restarting. A
    no-change run says it restarts in a loop (it said "starting"); a container that crashed
    once and came back healthy is healthy."""
    import json

    from roles.parsers import parts
    from roles.webui import DOCKER_PARTS, docker_state

    def said(lines):
        return docker_state(parts(lines, DOCKER_PARTS))["health"].get("cpu")

    looping = json.loads(config_v2(health="starting"))
    looping["RestartCount"] = 4
    assert said(["### container", json.dumps(looping)]) == \
        "unhealthy: restart loop: restarted 4 times"
    looping["State"]["Health"]["Status"] = "healthy"
    assert said(["### container", json.dumps(looping)]) == "healthy"
    assert said(["### container", config_v2(health="starting")]) == HEALTH_SAID["starting"]
    found = docker_state(parts(["### ps", "cpu|Restarting (1) 2 seconds ago|sdinfra/webui:cpu"],
                               DOCKER_PARTS))
    assert found["current"] == {"cpu": "sdinfra/webui:cpu"}
    assert found["health"] == {"cpu": "unhealthy: restart loop: Docker shows it restarting"}
    found = docker_state(parts(["### ps", "cpu|Up 3 minutes (healthy)|sdinfra/webui:cpu"],
                               DOCKER_PARTS))
    assert found["current"] == {"cpu": "sdinfra/webui:cpu"} and found["health"] == {}
